/* Activation rows of the integer dot products (formats.md §5.4; layout in quant.h): the numbers of
 * ggml's x86 Q8_0 and Q8_1 activation blocks, stored as arrays. Engine-internal, never in files. */
#include "quant.h"
#include "../simd/kernels.h"

#include <math.h>

static inline float f16_round(float v) { return rg_f16_to_f32_scalar(rg_f32_to_f16_scalar(v)); }

void rg_quantize_act_ref(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    const int64_t nb = n / RG_QK;
    for (int64_t b = 0; b < nb; b++, x += RG_QK) {
        float amax = 0.0f;
        for (int e = 0; e < RG_QK; e++) amax = fabsf(x[e]) > amax ? fabsf(x[e]) : amax;
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int e = 0; e < RG_QK; e++) {
            const int8_t q = rg_round_act_i8(x[e] * id);
            y[rg_act_pos(b, e, nb)] = (uint8_t)q;
            sum += q;
        }
        const float dr = f16_round(d), sr = f16_round(d * (float)sum);
        memcpy(y + rg_act_d_off(nb) + 4 * b, &dr, sizeof dr);
        memcpy(y + rg_act_s_off(nb) + 4 * b, &sr, sizeof sr);
        memcpy(y + rg_act_sum_off(nb) + 4 * b, &sum, sizeof sum);
    }
}

/* q * d per element in natural order (for tests and the generic row loader). */
void rg_dequantize_act(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    const int64_t nb = n / RG_QK;
    for (int64_t b = 0; b < nb; b++, y += RG_QK) {
        float d;
        memcpy(&d, x + rg_act_d_off(nb) + 4 * b, sizeof d);
        for (int e = 0; e < RG_QK; e++) y[e] = (float)(int8_t)x[rg_act_pos(b, e, nb)] * d;
    }
}

void rg_qpanel_put(const void *vact, int64_t nb, uint8_t *panel, int lane) {
    const uint8_t *act = vact;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *rec = panel + b * RG_QP_REC_BYTES;
        for (int k = 0; k < 8; k++) {
            /* four consecutive codes of a block are adjacent in the row layout too (16-code halves) */
            const uint32_t v = act ? rg_load_u32(act + rg_act_pos(b, 4 * k, nb)) ^ 0x80808080u : 0x80808080u;
            rg_store_u32(rec + 64 * k + 4 * lane, v);
        }
        const float d = act ? rg_load_f32(act + rg_act_d_off(nb) + 4 * b) : 0.0f;
        const float s = act ? rg_load_f32(act + rg_act_s_off(nb) + 4 * b) : 0.0f;
        memcpy(rec + RG_QP_DX + 4 * lane, &d, sizeof d);
        memcpy(rec + RG_QP_SX + 4 * lane, &s, sizeof s);
    }
}

void rg_qnarrow_put(const void *vact, int64_t nb, uint8_t *panel, int lane, int off) {
    const uint8_t *act = vact;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *rec = panel + b * RG_QN_REC_BYTES;
        for (int k = 0; k < 8; k++) /* four consecutive codes of a block are adjacent in the row too */
            rg_store_u32(rec + 32 * k + 4 * lane, act ? rg_load_u32(act + rg_act_pos(b, 4 * k, nb)) : 0u);
        const float d = act ? rg_load_f32(act + rg_act_d_off(nb) + 4 * b) : 0.0f;
        const float sx = act ? rg_load_f32(act + rg_act_s_off(nb) + 4 * b) : 0.0f;
        const int32_t corr = act ? -off * (int32_t)rg_load_u32(act + rg_act_sum_off(nb) + 4 * b) : 0;
        memcpy(rec + RG_QN_DX + 4 * lane, &d, sizeof d);
        memcpy(rec + RG_QN_CORR + 4 * lane, &corr, sizeof corr);
        memcpy(rec + RG_QN_SX + 4 * lane, &sx, sizeof sx);
    }
}
