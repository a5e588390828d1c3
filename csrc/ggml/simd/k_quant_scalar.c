/* Portable reference kernels of the block-quantized types: activation quantizers and the integer dot
 * products of formats.md §5.4. Per block the integer sum is exact, and the block's contribution is
 * (d_w * d_x) * isum (+ m_w * s_x for the _1 types), accumulated in block order. */
#include "kernels.h"
#include "../quant/quant.h"

static inline float h2f(const uint8_t *p) { return rg_f16_to_f32_scalar(rg_load_u16(p)); }

/* Codes of weight element j and j + 16 of a block whose low/high nibbles are in qs[j]. */
static float vec_dot_q4_0_scalar(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / RG_QK; b++, w += RG_Q4_0_BYTES, x += RG_Q8_0_BYTES) {
        const int8_t *xq = (const int8_t *)(x + RG_Q8_0_QS);
        int32_t isum = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = w[RG_Q4_0_QS + j];
            isum += ((q & 0xF) - 8) * xq[j] + ((q >> 4) - 8) * xq[j + 16];
        }
        const float dd = h2f(w) * h2f(x);
        sum += dd * (float)isum;
    }
    return sum;
}

static float vec_dot_q4_1_scalar(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / RG_QK; b++, w += RG_Q4_1_BYTES, x += RG_Q8_1_BYTES) {
        const int8_t *xq = (const int8_t *)(x + RG_Q8_1_QS);
        int32_t isum = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = w[RG_Q4_1_QS + j];
            isum += (q & 0xF) * xq[j] + (q >> 4) * xq[j + 16];
        }
        const float dd = h2f(w) * h2f(x);
        const float ms = h2f(w + RG_Q4_1_M) * h2f(x + RG_Q8_1_S);
        sum += dd * (float)isum + ms;
    }
    return sum;
}

static float vec_dot_q5_0_scalar(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / RG_QK; b++, w += RG_Q5_0_BYTES, x += RG_Q8_0_BYTES) {
        const int8_t *xq = (const int8_t *)(x + RG_Q8_0_QS);
        const uint32_t qh = rg_load_u32(w + RG_Q5_0_QH);
        int32_t isum = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = w[RG_Q5_0_QS + j];
            const int32_t q0 = (int32_t)((q & 0xFu) | (((qh >> j) & 1u) << 4));
            const int32_t q1 = (int32_t)(((uint32_t)q >> 4) | (((qh >> (j + 16)) & 1u) << 4));
            isum += (q0 - 16) * xq[j] + (q1 - 16) * xq[j + 16];
        }
        const float dd = h2f(w) * h2f(x);
        sum += dd * (float)isum;
    }
    return sum;
}

static float vec_dot_q5_1_scalar(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / RG_QK; b++, w += RG_Q5_1_BYTES, x += RG_Q8_1_BYTES) {
        const int8_t *xq = (const int8_t *)(x + RG_Q8_1_QS);
        const uint32_t qh = rg_load_u32(w + RG_Q5_1_QH);
        int32_t isum = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = w[RG_Q5_1_QS + j];
            const int32_t q0 = (int32_t)((q & 0xFu) | (((qh >> j) & 1u) << 4));
            const int32_t q1 = (int32_t)(((uint32_t)q >> 4) | (((qh >> (j + 16)) & 1u) << 4));
            isum += q0 * xq[j] + q1 * xq[j + 16];
        }
        const float dd = h2f(w) * h2f(x);
        const float ms = h2f(w + RG_Q5_1_M) * h2f(x + RG_Q8_1_S);
        sum += dd * (float)isum + ms;
    }
    return sum;
}

static float vec_dot_q8_0_scalar(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / RG_QK; b++, w += RG_Q8_0_BYTES, x += RG_Q8_0_BYTES) {
        const int8_t *wq = (const int8_t *)(w + RG_Q8_0_QS), *xq = (const int8_t *)(x + RG_Q8_0_QS);
        int32_t isum = 0;
        for (int e = 0; e < RG_QK; e++) isum += wq[e] * xq[e];
        const float dd = h2f(w) * h2f(x);
        sum += dd * (float)isum;
    }
    return sum;
}

#define RG_X4_FROM_SINGLE(name)                                                                          \
    static void name##_x4_scalar(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) { \
        for (int j = 0; j < nx; j++) out[j] = name##_scalar(n, w, (const uint8_t *)x + (size_t)j * ldx);    \
    }
RG_X4_FROM_SINGLE(vec_dot_q4_0)
RG_X4_FROM_SINGLE(vec_dot_q4_1)
RG_X4_FROM_SINGLE(vec_dot_q5_0)
RG_X4_FROM_SINGLE(vec_dot_q5_1)
RG_X4_FROM_SINGLE(vec_dot_q8_0)
#undef RG_X4_FROM_SINGLE

void rg_kernels_fill_quant_scalar(rg_kernel_table *k) {
    k->quantize_act_q8_0 = rg_quantize_act_q8_0_ref;
    k->quantize_act_q8_1 = rg_quantize_act_q8_1_ref;
    k->vec_dot_q4_0 = vec_dot_q4_0_scalar;
    k->vec_dot_q4_1 = vec_dot_q4_1_scalar;
    k->vec_dot_q5_0 = vec_dot_q5_0_scalar;
    k->vec_dot_q5_1 = vec_dot_q5_1_scalar;
    k->vec_dot_q8_0 = vec_dot_q8_0_scalar;
    k->vec_dot_q4_0_x4 = vec_dot_q4_0_x4_scalar;
    k->vec_dot_q4_1_x4 = vec_dot_q4_1_x4_scalar;
    k->vec_dot_q5_0_x4 = vec_dot_q5_0_x4_scalar;
    k->vec_dot_q5_1_x4 = vec_dot_q5_1_x4_scalar;
    k->vec_dot_q8_0_x4 = vec_dot_q8_0_x4_scalar;
}
