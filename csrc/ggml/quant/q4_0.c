/* Q4_0: 32 elements as 4-bit codes q in [0, 15] and one f16 scale d; value (q - 8) * d (formats.md §5). */
#include "quant.h"
#include "../simd/kernels.h"

#include <math.h>

static_assert(sizeof(rg_block_q4_0) == RG_Q4_0_BYTES, "Q4_0 block must be 18 bytes");
static_assert(offsetof(rg_block_q4_0, qs) == RG_Q4_0_QS, "Q4_0 layout");

/* §5.3: d = (signed value of largest magnitude, first occurrence) / -8, so the extreme maps to code 0;
 * q = min(15, trunc(x / d + 8.5)) with 1/d taken from the unrounded d. */
void rg_quantize_q4_0_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q4_0_BYTES) {
        float amax = 0.0f, mx = 0.0f;
        for (int e = 0; e < RG_QK; e++) {
            if (amax < fabsf(x[e])) {
                amax = fabsf(x[e]);
                mx = x[e];
            }
        }
        const float d = mx / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        for (int j = 0; j < RG_QK / 2; j++) {
            /* each product is its own statement: one f32 rounding, then the addition (no FMA) */
            const float s0 = x[j] * id, s1 = x[j + 16] * id;
            int32_t q0 = rg_trunc_i32(s0 + 8.5f), q1 = rg_trunc_i32(s1 + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[RG_Q4_0_QS + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
        }
    }
}

void rg_dequantize_q4_0(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q4_0_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = x[RG_Q4_0_QS + j];
            y[j] = (float)((q & 0xF) - 8) * d;
            y[j + 16] = (float)((q >> 4) - 8) * d;
        }
    }
}
