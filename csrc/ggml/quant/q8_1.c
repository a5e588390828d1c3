/* Q8_1: the activation type of the integer dot products with Q4_1 and Q5_1 weights (formats.md §5.4),
 * never stored in files: 32 int8 codes, an f16 scale d and s = fp16(d * sum(q)), which carries the
 * weights' minimum m through the dot product (sum_e (q_e d + m) x_e = d * sum q_e x_e + m * s). */
#include "quant.h"
#include "../simd/kernels.h"

#include <math.h>

static_assert(sizeof(rg_block_q8_1) == RG_Q8_1_BYTES, "Q8_1 block must be 36 bytes");
static_assert(offsetof(rg_block_q8_1, s) == RG_Q8_1_S && offsetof(rg_block_q8_1, qs) == RG_Q8_1_QS, "Q8_1 layout");

void rg_quantize_act_q8_1_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q8_1_BYTES) {
        float amax = 0.0f;
        for (int e = 0; e < RG_QK; e++) amax = fabsf(x[e]) > amax ? fabsf(x[e]) : amax;
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int e = 0; e < RG_QK; e++) {
            const int8_t q = rg_round_act_i8(x[e] * id);
            y[RG_Q8_1_QS + e] = (uint8_t)q;
            sum += q;
        }
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        rg_store_u16(y + RG_Q8_1_S, rg_f32_to_f16_scalar(d * (float)sum));
    }
}

void rg_dequantize_q8_1(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q8_1_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        for (int e = 0; e < RG_QK; e++) y[e] = (float)(int8_t)x[RG_Q8_1_QS + e] * d;
    }
}
