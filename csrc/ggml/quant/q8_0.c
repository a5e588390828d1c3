/* Q8_0: 32 int8 codes and one f16 scale d; value q * d (formats.md §5). (The activations of the integer
 * dot products are quantized by another rule, in q8_act.c.) */
#include "quant.h"
#include "../simd/kernels.h"

#include <math.h>

static_assert(sizeof(rg_block_q8_0) == RG_Q8_0_BYTES, "Q8_0 block must be 34 bytes");
static_assert(offsetof(rg_block_q8_0, qs) == RG_Q8_0_QS, "Q8_0 layout");

/* §5.3 (weights, files): d = amax / 127, q = roundf(x / d) (half away from zero), 1/d from the unrounded d. */
void rg_quantize_q8_0_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += RG_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int e = 0; e < RG_QK; e++) amax = fabsf(x[e]) > amax ? fabsf(x[e]) : amax;
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        for (int e = 0; e < RG_QK; e++) {
            const float s = x[e] * id;
            /* the int8 store keeps the low byte of the converted int, as ggml's cast does on x86 */
            y[RG_Q8_0_QS + e] = (uint8_t)((uint32_t)rg_trunc_i32(roundf(s)) & 0xFFu);
        }
    }
}

void rg_dequantize_q8_0(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_Q8_0_BYTES, y += RG_QK) {
        const float d = rg_f16_to_f32_scalar(rg_load_u16(x));
        for (int e = 0; e < RG_QK; e++) y[e] = (float)(int8_t)x[RG_Q8_0_QS + e] * d;
    }
}
