/* Q5_1: 32 elements as 5-bit codes q in [0, 31] (4 bits in qs, the fifth in qh), an f16 scale d and an
 * f16 minimum m; value q * d + m (formats.md §5). */
#include "quant.h"
#include "../simd/kernels.h"

#include <float.h>

static_assert(sizeof(rg_block_q5_1) == RG_Q5_1_BYTES, "Q5_1 block must be 24 bytes");
static_assert(offsetof(rg_block_q5_1, m) == RG_Q5_1_M && offsetof(rg_block_q5_1, qh) == RG_Q5_1_QH &&
                  offsetof(rg_block_q5_1, qs) == RG_Q5_1_QS,
              "Q5_1 layout");

/* §5.3: d = (max - min) / 31, m = fp16(min), q = trunc((x - min) / d + 0.5); no clamp (ggml has none,
 * and q <= 31 by construction for finite input). */
void rg_quantize_q5_1_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q5_1_BYTES) {
        float mn = FLT_MAX, mx = -FLT_MAX;
        for (int e = 0; e < RG_QK; e++) {
            if (x[e] < mn) mn = x[e];
            if (x[e] > mx) mx = x[e];
        }
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        rg_store_u16(y + RG_Q5_1_M, rg_f32_to_f16_scalar(mn));
        uint32_t qh = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const float s0 = (x[j] - mn) * id, s1 = (x[j + 16] - mn) * id;
            const int32_t q0 = rg_trunc_i32(s0 + 0.5f), q1 = rg_trunc_i32(s1 + 0.5f);
            y[RG_Q5_1_QS + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (((uint32_t)q0 >> 4) & 1u) << j;
            qh |= (((uint32_t)q1 >> 4) & 1u) << (j + 16);
        }
        rg_store_u32(y + RG_Q5_1_QH, qh);
    }
}

void rg_dequantize_q5_1(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q5_1_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        const float m = rg_f16_to_f32_scalar(rg_load_u16(x + RG_Q5_1_M));
        const uint32_t qh = rg_load_u32(x + RG_Q5_1_QH);
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = x[RG_Q5_1_QS + j];
            const uint32_t q0 = (q & 0xFu) | (((qh >> j) & 1u) << 4);
            const uint32_t q1 = ((uint32_t)q >> 4) | (((qh >> (j + 16)) & 1u) << 4);
            const float v0 = (float)q0 * d, v1 = (float)q1 * d;
            y[j] = v0 + m;
            y[j + 16] = v1 + m;
        }
    }
}
