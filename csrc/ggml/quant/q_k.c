/* The K-quant weight types of GGUF files (formats.md §7.4): 256-element super-blocks with a per-super-block
 * f16 scale and small per-sub-block scales. We read them (dequantize here, dot products in
 * simd/k_kquant_scalar.c) but do not write them: there is no quantizer. Layouts, with byte offsets:
 *
 *   Q4_K, 144 bytes: d f16 @0, dmin f16 @2, scales[12] @4 (eight 6-bit scales and eight 6-bit mins),
 *                    qs[128] @16 (4-bit codes: sub-block s in the low (s even) or high nibbles of
 *                    qs[32 (s / 2) .. + 31]); value d * sc_s * q - dmin * m_s
 *   Q5_K, 176 bytes: as Q4_K with qh[32] @16 and qs[128] @48; bit s of qh[l] is bit 4 of element
 *                    32 s + l's code
 *   Q6_K, 210 bytes: ql[128] @0 (low 4 bits), qh[64] @128 (high 2 bits), scales int8[16] @192 (one per 16
 *                    elements), d f16 @208; value d * scales[e / 16] * (q - 32). For element e of half
 *                    h = e / 128, group g = (e % 128) / 32, l = e % 32: the low bits are the (g < 2 ? low :
 *                    high) nibble of ql[64 h + 32 (g & 1) + l], the high bits bits 2g, 2g+1 of qh[32 h + l]. */
#include "quant.h"
#include "../simd/kernels.h"

static inline float h2f(const uint8_t *p) { return rg_f16_to_f32_scalar(rg_load_u16(p)); }

void rg_kquant_scale_min(const uint8_t *q, int s, int *sc, int *m) {
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4);
        *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
    }
}

int rg_q6_k_code(const uint8_t *w, int e) {
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    const uint8_t lo = w[RG_Q6_K_QL + 64 * h + 32 * (g & 1) + l];
    const int low = g < 2 ? (lo & 0xF) : (lo >> 4);
    const int high = (w[RG_Q6_K_QH + 32 * h + l] >> (2 * g)) & 3;
    return (low | (high << 4)) - 32;
}

/* Q4_K and Q5_K: five_bits selects Q5_K's layout. */
static void dequantize_q45_k(const uint8_t *x, float *y, int64_t n, int five_bits) {
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    for (int64_t b = 0; b < n / RG_QK_K; b++, x += bytes, y += RG_QK_K) {
        const float d = h2f(x), dmin = h2f(x + 2);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            rg_kquant_scale_min(x + RG_QK_SCALES, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                const uint8_t byte = x[qs + 32 * (s / 2) + l];
                int q = (s & 1) ? byte >> 4 : byte & 0xF;
                if (five_bits) q |= ((x[RG_Q5_K_QH + l] >> s) & 1) << 4;
                y[32 * s + l] = d1 * (float)q - m1;
            }
        }
    }
}

void rg_dequantize_q4_k(const void *x, float *y, int64_t n) { dequantize_q45_k(x, y, n, 0); }
void rg_dequantize_q5_k(const void *x, float *y, int64_t n) { dequantize_q45_k(x, y, n, 1); }

void rg_dequantize_q6_k(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    for (int64_t b = 0; b < n / RG_QK_K; b++, x += RG_Q6_K_BYTES, y += RG_QK_K) {
        const float d = h2f(x + RG_Q6_K_D);
        for (int e = 0; e < RG_QK_K; e++) {
            const float sd = d * (float)(int8_t)x[RG_Q6_K_SCALES + e / 16];
            y[e] = sd * (float)rg_q6_k_code(x, e);
        }
    }
}
