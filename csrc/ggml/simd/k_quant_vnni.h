/* What the AVX512-VNNI kernels of the block types share (k_quant_avx512.c: one weight row against
 * activation rows; k_quant_panel.c: the column-panel mat-mat): the description of a
 * weight type, and the unpacking of one block's codes. Include only inside an x86-64 guard. */
#ifndef RG_K_QUANT_VNNI_H
#define RG_K_QUANT_VNNI_H

#include <immintrin.h>

#include "kernels.h"
#include "../quant/quant.h"

/* Parameters of a weight type, compile-time constants after inlining: block bytes, field offsets,
 * kind (0 = 4-bit codes, 1 = 5-bit codes with the fifth bit in qh, 2 = int8 codes (Q8_0)), the offset
 * of the _0 types (codes are stored as u = signed code + off) and whether blocks carry a minimum. */
typedef struct {
    int wbytes, qs, qh, kind, off, has_min;
} qtype;

RG_VNNI_INLINE __m128i load128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }

/* The 32 codes of one block, unsigned (u; Q8_0's signed codes xor 0x80), natural element order. */
RG_VNNI_INLINE __m256i single_codes(const uint8_t *w, const qtype t) {
    if (t.kind == 2)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + t.qs)), _mm256_set1_epi8((char)0x80));
    const __m128i q = load128(w + t.qs);
    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
    if (t.kind == 1) u = _mm256_mask_add_epi8(u, (__mmask32)rg_load_u32(w + t.qh), u, _mm256_set1_epi8(16));
    return u;
}

/* The sum of a vector's 16 lanes in a fixed tree, ((l0 + l8) + (l4 + l12)) + ((l2 + l10) + (l6 + l14)) + (the
 * same from l1): what GCC's _mm512_reduce_add_ps computes, spelt out because the AMX kernel (k_quant_amx.c)
 * repeats this tree with the lanes in separate vectors and must get the same sums. */
RG_VNNI_INLINE float rg_qdot_reduce16(__m512 v) {
    const __m256 t8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
                                    _mm512_castps512_ps256(v));
    const __m128 t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    const __m128 t2 = _mm_add_ps(t4, _mm_shuffle_ps(t4, t4, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(t2) + _mm_cvtss_f32(_mm_shuffle_ps(t2, t2, 1));
}

#endif
