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

#endif
