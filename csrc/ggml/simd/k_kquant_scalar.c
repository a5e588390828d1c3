/* Dot products of the K-quant weight types (quant/q_k.c, formats.md §7.4) with activation rows (the
 * RG_TYPE_Q8_ACT rows of quant/quant.h, 32-element blocks): portable kernels, used at every level.
 *
 * A super-block of 256 weights meets 8 activation blocks. Per activation block b the sum is exact in
 * integers and then scaled once:
 *   Q4_K / Q5_K:  (d_w d_x) * (sc_s * sum q x) - (dmin_w d_x) * (m_s * sum x)
 *   Q6_K:         (d_w d_x) * (scales[2s] * sum_{first 16} q x + scales[2s+1] * sum_{last 16} q x)
 * with sum x the activation block's exact code sum; the f32 terms are added in block order. */
#include "kernels.h"
#include "../quant/quant.h"

static inline float h2f(const uint8_t *p) { return rg_f16_to_f32_scalar(rg_load_u16(p)); }
static inline float load_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Activation block b's 32 codes (natural order) of a row of nb blocks. */
static inline void act_codes(const int8_t *xq, int64_t b, int64_t nb, int16_t *xv) {
    const int8_t *lo = xq + rg_act_pos(b, 0, nb), *hi = xq + rg_act_pos(b, 16, nb);
    for (int j = 0; j < 16; j++) {
        xv[j] = lo[j];
        xv[j + 16] = hi[j];
    }
}

static inline int32_t isum_range(const int16_t *c, const int16_t *xv, int from, int to) {
    int32_t s = 0;
    for (int e = from; e < to; e++) s += (int32_t)c[e] * (int32_t)xv[e];
    return s;
}

static float dot_q45_k(int64_t n, const uint8_t *w, const uint8_t *x, int five_bits) {
    const int64_t nb = n / RG_QK;
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    const int8_t *xq = (const int8_t *)x;
    float sum = 0.0f;
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += bytes) {
        const float d = h2f(w), dmin = h2f(w + 2);
        for (int s = 0; s < 8; s++) {
            const int64_t b = 8 * sb + s;
            int16_t c[RG_QK], xv[RG_QK];
            const uint8_t *q = w + qs + 32 * (s / 2);
            const int shift = (s & 1) ? 4 : 0;
            for (int l = 0; l < RG_QK; l++) c[l] = (int16_t)((q[l] >> shift) & 0xF);
            if (five_bits) {
                for (int l = 0; l < RG_QK; l++) c[l] = (int16_t)(c[l] | (((w[RG_Q5_K_QH + l] >> s) & 1) << 4));
            }
            act_codes(xq, b, nb, xv);
            int sc, m;
            rg_kquant_scale_min(w + RG_QK_SCALES, s, &sc, &m);
            const float dx = load_f32(x + rg_act_d_off(nb) + 4 * b);
            const int32_t xs = load_i32(x + rg_act_sum_off(nb) + 4 * b);
            sum += (d * dx) * (float)(sc * isum_range(c, xv, 0, RG_QK)) - (dmin * dx) * (float)(m * xs);
        }
    }
    return sum;
}

static float dot_q6_k(int64_t n, const uint8_t *w, const uint8_t *x) {
    const int64_t nb = n / RG_QK;
    const int8_t *xq = (const int8_t *)x;
    float sum = 0.0f;
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += RG_Q6_K_BYTES) {
        const float d = h2f(w + RG_Q6_K_D);
        const int8_t *scales = (const int8_t *)(w + RG_Q6_K_SCALES);
        for (int s = 0; s < 8; s++) {
            const int64_t b = 8 * sb + s;
            const int h = s / 4, g = s % 4;
            const uint8_t *ql = w + RG_Q6_K_QL + 64 * h + 32 * (g & 1), *qh = w + RG_Q6_K_QH + 32 * h;
            const int shift_lo = g < 2 ? 0 : 4, shift_hi = 2 * g;
            int16_t c[RG_QK], xv[RG_QK];
            for (int l = 0; l < RG_QK; l++) {
                c[l] = (int16_t)((((ql[l] >> shift_lo) & 0xF) | (((qh[l] >> shift_hi) & 3) << 4)) - 32);
            }
            act_codes(xq, b, nb, xv);
            const int32_t t = scales[2 * s] * isum_range(c, xv, 0, 16) + scales[2 * s + 1] * isum_range(c, xv, 16, 32);
            sum += (d * load_f32(x + rg_act_d_off(nb) + 4 * b)) * (float)t;
        }
    }
    return sum;
}

static float vec_dot_q4_k(int64_t n, const void *w, const void *x) { return dot_q45_k(n, w, x, 0); }
static float vec_dot_q5_k(int64_t n, const void *w, const void *x) { return dot_q45_k(n, w, x, 1); }
static float vec_dot_q6_k(int64_t n, const void *w, const void *x) { return dot_q6_k(n, w, x); }

#define RG_DEFINE_XN(name)                                                                                        \
    static void name##_xn(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {             \
        for (int j = 0; j < nx; j++) out[j] = name(n, w, (const uint8_t *)x + (size_t)j * ldx);                   \
    }
RG_DEFINE_XN(vec_dot_q4_k)
RG_DEFINE_XN(vec_dot_q5_k)
RG_DEFINE_XN(vec_dot_q6_k)
#undef RG_DEFINE_XN

void rg_kernels_fill_kquant_scalar(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->vec_dot_q4_k = vec_dot_q4_k;
    k->vec_dot_q5_k = vec_dot_q5_k;
    k->vec_dot_q6_k = vec_dot_q6_k;
    k->vec_dot_q4_k_xn = vec_dot_q4_k_xn;
    k->vec_dot_q5_k_xn = vec_dot_q5_k_xn;
    k->vec_dot_q6_k_xn = vec_dot_q6_k_xn;
}
