/* Q5_0: 32 elements as 5-bit codes q in [0, 31] (4 bits in qs, the fifth in qh) and one f16 scale d;
 * value (q - 16) * d (formats.md §5). */
#include "quant.h"
#include "../simd/kernels.h"

#include <math.h>

static_assert(sizeof(rg_block_q5_0) == RG_Q5_0_BYTES, "Q5_0 block must be 22 bytes");
static_assert(offsetof(rg_block_q5_0, qh) == RG_Q5_0_QH && offsetof(rg_block_q5_0, qs) == RG_Q5_0_QS, "Q5_0 layout");

/* §5.3: as Q4_0 with d = mx / -16 and q = min(31, trunc(x / d + 16.5)). */
void rg_quantize_q5_0_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q5_0_BYTES) {
        float amax = 0.0f, mx = 0.0f;
        for (int e = 0; e < RG_QK; e++) {
            if (amax < fabsf(x[e])) {
                amax = fabsf(x[e]);
                mx = x[e];
            }
        }
        const float d = mx / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        uint32_t qh = 0;
        for (int j = 0; j < RG_QK / 2; j++) {
            const float s0 = x[j] * id, s1 = x[j + 16] * id;
            int32_t q0 = rg_trunc_i32(s0 + 16.5f), q1 = rg_trunc_i32(s1 + 16.5f);
            q0 = q0 < 31 ? q0 : 31;
            q1 = q1 < 31 ? q1 : 31;
            y[RG_Q5_0_QS + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (((uint32_t)q0 >> 4) & 1u) << j;
            qh |= (((uint32_t)q1 >> 4) & 1u) << (j + 16);
        }
        rg_store_u32(y + RG_Q5_0_QH, qh);
    }
}

void rg_dequantize_q5_0(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q5_0_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        const uint32_t qh = rg_load_u32(x + RG_Q5_0_QH);
        for (int j = 0; j < RG_QK / 2; j++) {
            const uint8_t q = x[RG_Q5_0_QS + j];
            const int q0 = (int)((q & 0xF) | (((qh >> j) & 1u) << 4));
            const int q1 = (int)((q >> 4) | (((qh >> (j + 16)) & 1u) << 4));
            y[j] = (float)(q0 - 16) * d;
            y[j + 16] = (float)(q1 - 16) * d;
        }
    }
}
