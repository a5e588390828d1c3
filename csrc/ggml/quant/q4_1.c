/* Q4_1: 32 elements as 4-bit codes q in [0, 15], an f16 scale d and an f16 minimum m; value q * d + m
 * (formats.md §5). */
#include "quant.h"
#include "../simd/kernels.h"

#include <float.h>

static_assert(sizeof(rg_block_q4_1) == RG_Q4_1_BYTES, "Q4_1 block must be 20 bytes");
static_assert(offsetof(rg_block_q4_1, m) == RG_Q4_1_M && offsetof(rg_block_q4_1, qs) == RG_Q4_1_QS, "Q4_1 layout");

/* §5.3: d = (max - min) / 15, m = fp16(min), q = min(15, trunc((x - min) / d + 0.5)). */
void rg_quantize_q4_1_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q4_1_BYTES) {
        float mn = FLT_MAX, mx = -FLT_MAX;
        for (int e = 0; e < RG_QK; e++) {
            if (x[e] < mn) mn = x[e];
            if (x[e] > mx) mx = x[e];
        }
        const float d = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        rg_store_u16(y + RG_Q4_1_M, rg_f32_to_f16_scalar(mn));
        for (int j = 0; j < RG_QK / 2; j++) {
            const float s0 = (x[j] - mn) * id, s1 = (x[j + 16] - mn) * id;
            int32_t q0 = rg_trunc_i32(s0 + 0.5f), q1 = rg_trunc_i32(s1 + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[RG_Q4_1_QS + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
        }
    }
}

void rg_dequantize_q4_1(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q4_1_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        const float m = rg_f16_to_f32_scalar(rg_load_u16(x + RG_Q4_1_M));
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = x[RG_Q4_1_QS + j];
            const float v0 = (float)(q & 0xF) * d, v1 = (float)(q >> 4) * d;
            y[j] = v0 + m;
            y[j + 16] = v1 + m;
        }
    }
}
