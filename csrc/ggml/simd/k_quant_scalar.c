/* Portable reference kernels of the block-quantized types: the integer dot products of formats.md §5.4
 * against activation rows (layout in quant/quant.h). Per block the integer sum is exact and the block
 * adds (d_w * d_x) * isum (+ m_w * s_x for the _1 types), accumulated in block order. The _0 types'
 * offset is taken out in integers: sum (q - off) x = sum q x - off * sum x. */
#include "kernels.h"
#include "../quant/quant.h"

/* Parameters of a weight type. kind: 0 = 4-bit codes, 1 = 5-bit codes (fifth bit in qh), 2 = int8. */
typedef struct {
    int wbytes, qs, qh, kind, off, has_min;
} qtype;

static inline float h2f(const uint8_t *p) { return rg_f16_to_f32_scalar(rg_load_u16(p)); }
static inline float load_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Exact sum_e code_e * x_e of weight block w against activation block b of a row of nb blocks. Codes and
 * activations are unpacked to int16 first, so the multiply-add loop is plain enough for the compiler to
 * vectorize even at the baseline instruction set (4x faster for Q4_0 and Q8_0 than an interleaved loop). */
static inline int32_t block_isum(const uint8_t *w, const int8_t *xq, int64_t b, int64_t nb, const qtype t) {
    const int8_t *lo = xq + rg_act_pos(b, 0, nb), *hi = xq + rg_act_pos(b, 16, nb);
    int16_t c[RG_QK], xv[RG_QK];
    if (t.kind == 2) {
        for (int e = 0; e < RG_QK; e++) c[e] = (int8_t)w[t.qs + e];
    } else {
        for (int j = 0; j < 16; j++) {
            c[j] = (int16_t)(w[t.qs + j] & 0xF);
            c[j + 16] = (int16_t)(w[t.qs + j] >> 4);
        }
        if (t.kind == 1) {
            const uint32_t qh = rg_load_u32(w + t.qh);
            for (int e = 0; e < RG_QK; e++) c[e] = (int16_t)(c[e] | (int16_t)(((qh >> e) & 1u) << 4));
        }
    }
    for (int j = 0; j < 16; j++) {
        xv[j] = lo[j];
        xv[j + 16] = hi[j];
    }
    int32_t isum = 0;
    for (int e = 0; e < RG_QK; e++) isum += (int32_t)c[e] * (int32_t)xv[e];
    return isum;
}

static inline float dot_row(int64_t n, const uint8_t *w, const uint8_t *x, const qtype t) {
    const int64_t nb = n / RG_QK;
    const int8_t *xq = (const int8_t *)x;
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += t.wbytes) {
        int32_t isum = block_isum(w, xq, b, nb, t);
        if (t.off) {
            int32_t xs;
            memcpy(&xs, x + rg_act_sum_off(nb) + 4 * b, sizeof xs);
            isum -= t.off * xs;
        }
        const float dd = h2f(w) * load_f32(x + rg_act_d_off(nb) + 4 * b);
        float c = dd * (float)isum;
        if (t.has_min) c += h2f(w + 2) * load_f32(x + rg_act_s_off(nb) + 4 * b);
        sum += c;
    }
    return sum;
}

#define RG_DEFINE_DOT(name, ...)                                                                                  \
    static float name##_scalar(int64_t n, const void *w, const void *x) {                                         \
        const qtype t = {__VA_ARGS__};                                                                            \
        return dot_row(n, w, x, t);                                                                               \
    }                                                                                                             \
    static void name##_xn_scalar(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {      \
        for (int j = 0; j < nx; j++) out[j] = name##_scalar(n, w, (const uint8_t *)x + (size_t)j * ldx);          \
    }
/*            wbytes          qs          qh       kind off has_min */
RG_DEFINE_DOT(vec_dot_q4_0, RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0)
RG_DEFINE_DOT(vec_dot_q4_1, RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1)
RG_DEFINE_DOT(vec_dot_q5_0, RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0)
RG_DEFINE_DOT(vec_dot_q5_1, RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1)
RG_DEFINE_DOT(vec_dot_q8_0, RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 0, 0)
#undef RG_DEFINE_DOT

void rg_kernels_fill_quant_scalar(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->quantize_act = rg_quantize_act_ref;
    k->vec_dot_q4_0 = vec_dot_q4_0_scalar;
    k->vec_dot_q4_1 = vec_dot_q4_1_scalar;
    k->vec_dot_q5_0 = vec_dot_q5_0_scalar;
    k->vec_dot_q5_1 = vec_dot_q5_1_scalar;
    k->vec_dot_q8_0 = vec_dot_q8_0_scalar;
    k->vec_dot_q4_0_xn = vec_dot_q4_0_xn_scalar;
    k->vec_dot_q4_1_xn = vec_dot_q4_1_xn_scalar;
    k->vec_dot_q5_0_xn = vec_dot_q5_0_xn_scalar;
    k->vec_dot_q5_1_xn = vec_dot_q5_1_xn_scalar;
    k->vec_dot_q8_0_xn = vec_dot_q8_0_xn_scalar;
}
