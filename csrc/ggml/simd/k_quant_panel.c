/* Column-panel mat-mat kernels for the block-quantized types (AVX512_VNNI; layouts in quant/quant.h).
 *
 * The one-row kernels (k_quant_avx512.c) put a weight row's codes in the vector lanes, so every block ends
 * in a horizontal sum; against many activation columns that reduction and the unpacking cost more than
 * the dot products. Here the lanes hold 16 activation columns instead: per block and weight row, eight
 * vpdpbusd multiply the columns' codes (unsigned, +128) by the row's codes broadcast four at a time
 * straight from the decoded tile, giving 16 exact integer sums at once; the scales are then applied in
 * three vector operations, fp32(d_w d_x) * isum (+ m_w s_x), the numbers of formats.md §5.4. Six rows
 * share each loaded activation vector and each broadcast serves two panels (24 accumulators).
 *
 * Per output element the blocks are added in order with the same operations whatever the tile, panel
 * or thread, so results do not depend on the thread count; they differ from the one-row kernels only in
 * the order of the f32 additions. */
#include "kernels.h"
#include "../../include/rwkv_ggml.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "k_quant_vnni.h"

/* -128 * (sum of the 32 unsigned codes u - 32 off) (the +128 of the panels' codes undone), and the same
 * for the two 16-code halves. */
RG_VNNI_INLINE int32_t corr_of(__m256i u, int off) {
    const __m256i s4 = _mm256_sad_epu8(u, _mm256_setzero_si256());
    const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
    return -128 * ((int32_t)(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1)) - 32 * off);
}
RG_VNNI_INLINE void corr_halves(__m256i u, int off, int32_t *lo, int32_t *hi) {
    const __m256i s4 = _mm256_sad_epu8(u, _mm256_setzero_si256()); /* u64 sums of bytes 0-7, 8-15, 16-23, 24-31 */
    const __m128i a = _mm256_castsi256_si128(s4), b = _mm256_extracti128_si256(s4, 1);
    *lo = -128 * ((int32_t)(_mm_cvtsi128_si64(a) + _mm_extract_epi64(a, 1)) - 16 * off);
    *hi = -128 * ((int32_t)(_mm_cvtsi128_si64(b) + _mm_extract_epi64(b, 1)) - 16 * off);
}

RG_VNNI_INLINE void decode_rows(const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile, const qtype t) {
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *rec = tile + b * RG_QT_REC_BYTES;
        float *dw = (float *)(rec + RG_QT_DW), *mw = (float *)(rec + RG_QT_MW);
        int32_t *corr = (int32_t *)(rec + RG_QT_CORR);
        for (int r = 0; r < RG_QT_ROWS; r++) {
            if (r >= rows) {
                _mm256_storeu_si256((__m256i *)(rec + 32 * r), _mm256_setzero_si256());
                dw[r] = mw[r] = 0.0f;
                corr[r] = 0;
                continue;
            }
            const uint8_t *blk = w + (size_t)r * ldw + b * t.wbytes;
            const __m256i u = single_codes(blk, t);
            _mm256_storeu_si256((__m256i *)(rec + 32 * r), _mm256_sub_epi8(u, _mm256_set1_epi8((char)t.off)));
            corr[r] = corr_of(u, t.off);
            dw[r] = _cvtsh_ss(rg_load_u16(blk));
            mw[r] = t.has_min ? _cvtsh_ss(rg_load_u16(blk + 2)) : 0.0f;
        }
    }
}

/* A tile's rows past the matrix: zero codes, scales and corrections (the same offsets in both records). */
RG_VNNI_INLINE void zero_row(uint8_t *tile, size_t rec_bytes, int r, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *rec = tile + b * rec_bytes;
        _mm256_storeu_si256((__m256i *)(rec + 32 * r), _mm256_setzero_si256());
        ((float *)(rec + RG_QT_DW))[r] = ((float *)(rec + RG_QT_MW))[r] = 0.0f;
        ((int32_t *)(rec + RG_QT_CORR))[r] = 0;
        if (rec_bytes == RG_QT6_REC_BYTES) ((int32_t *)(rec + RG_QT6_CORR_HI))[r] = 0;
    }
}

/* Q4_K / Q5_K rows (nb / 8 super-blocks each) into the has-min tile: sub-block s of a super-block is
 * one tile block with dw = d sc_s and mw = -dmin m_s, exact in f32 (formats.md §7.4). */
RG_VNNI_INLINE void decode_k45_rows(const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile,
                                    const int five_bits) {
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    for (int r = 0; r < RG_QT_ROWS; r++) {
        if (r >= rows) {
            zero_row(tile, RG_QT_REC_BYTES, r, nb);
            continue;
        }
        for (int64_t sb = 0; sb < nb / 8; sb++) {
            const uint8_t *blk = w + (size_t)r * ldw + (size_t)sb * (size_t)bytes;
            const float d = _cvtsh_ss(rg_load_u16(blk)), dmin = _cvtsh_ss(rg_load_u16(blk + 2));
            const __m256i qh = five_bits ? _mm256_loadu_si256((const __m256i *)(blk + RG_Q5_K_QH)) : _mm256_setzero_si256();
            for (int s = 0; s < 8; s++) {
                uint8_t *rec = tile + (8 * sb + s) * RG_QT_REC_BYTES;
                const __m256i packed = _mm256_loadu_si256((const __m256i *)(blk + qs + 32 * (s / 2)));
                __m256i u = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(packed, 4) : packed, _mm256_set1_epi8(0x0F));
                if (five_bits)
                    u = _mm256_mask_add_epi8(u, _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << s))), u,
                                             _mm256_set1_epi8(16));
                _mm256_storeu_si256((__m256i *)(rec + 32 * r), u);
                int sc, m;
                rg_kquant_scale_min(blk + RG_QK_SCALES, s, &sc, &m);
                ((float *)(rec + RG_QT_DW))[r] = d * (float)sc;
                ((float *)(rec + RG_QT_MW))[r] = -(dmin * (float)m);
                ((int32_t *)(rec + RG_QT_CORR))[r] = corr_of(u, 0);
            }
        }
    }
}

/* Q6_K rows into the halves tile (RG_QT6_*): codes q - 32, per 16-element half d * scale (exact in f32). */
RG_VNNI_INLINE void decode_q6k_rows(const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile) {
    for (int r = 0; r < RG_QT_ROWS; r++) {
        if (r >= rows) {
            zero_row(tile, RG_QT6_REC_BYTES, r, nb);
            continue;
        }
        for (int64_t sb = 0; sb < nb / 8; sb++) {
            const uint8_t *blk = w + (size_t)r * ldw + (size_t)sb * RG_Q6_K_BYTES;
            const float d = _cvtsh_ss(rg_load_u16(blk + RG_Q6_K_D));
            const int8_t *scales = (const int8_t *)(blk + RG_Q6_K_SCALES);
            for (int s = 0; s < 8; s++) {
                const int h = s / 4, g = s % 4;
                uint8_t *rec = tile + (8 * sb + s) * RG_QT6_REC_BYTES;
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(blk + RG_Q6_K_QL + 64 * h + 32 * (g & 1)));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + RG_Q6_K_QH + 32 * h));
                const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0F));
                const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), _mm256_set1_epi8(3));
                const __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                _mm256_storeu_si256((__m256i *)(rec + 32 * r), _mm256_sub_epi8(u, _mm256_set1_epi8(32)));
                ((float *)(rec + RG_QT6_DLO))[r] = d * (float)scales[2 * s];
                ((float *)(rec + RG_QT6_DHI))[r] = d * (float)scales[2 * s + 1];
                corr_halves(u, 32, (int32_t *)(rec + RG_QT6_CORR_LO) + r, (int32_t *)(rec + RG_QT6_CORR_HI) + r);
            }
        }
    }
}

RG_VNNI static void qgemm_decode_vnni(int type, const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile) {
    switch (type) {
    case RG_TYPE_Q4_0: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0}); break;
    case RG_TYPE_Q4_1: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1}); break;
    case RG_TYPE_Q5_0:
        decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0});
        break;
    case RG_TYPE_Q5_1:
        decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1});
        break;
    case RG_TYPE_Q4_K: decode_k45_rows(w, ldw, rows, nb, tile, 0); break;
    case RG_TYPE_Q5_K: decode_k45_rows(w, ldw, rows, nb, tile, 1); break;
    case RG_TYPE_Q6_K: decode_q6k_rows(w, ldw, rows, nb, tile); break;
    default: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 128, 0}); break;
    }
}

/* Rows r0 .. r0+5 of the tile against NP (1 or 2) panels: each broadcast weight quad feeds NP vpdpbusd
 * (a broadcast costs a vector-pipe slot on Zen 4), 6 x 2 integer and 6 x 2 float accumulators. KIND: 0 the
 * plain tile, 1 with minimums, 2 the halves tile of Q6_K, whose first half is scaled and added after
 * four quads, by the scale at the offset the others keep dw at (RG_QT6_DLO = RG_QT_DW), and the second at
 * the end, by the one at RG_QT6_DHI = RG_QT_MW (the correction of each at RG_QT_CORR, RG_QT6_CORR_HI). */
#define HALF 6
_Static_assert(RG_QT6_DLO == RG_QT_DW && RG_QT6_DHI == RG_QT_MW && RG_QT6_CORR_LO == RG_QT_CORR, "tile layouts");
RG_VNNI_INLINE void tile_body(const uint8_t *tile, int r0, const uint8_t *panel, size_t panel_bytes, const int np,
                               int64_t nb, const int kind, int accumulate, float *out) {
    const size_t rec_bytes = kind == 2 ? RG_QT6_REC_BYTES : RG_QT_REC_BYTES;
    __m512 acc[HALF][2];
    for (int r = 0; r < HALF; r++)
        for (int j = 0; j < np; j++)
            acc[r][j] = accumulate ? _mm512_loadu_ps(out + (j * RG_QT_ROWS + r0 + r) * RG_QP_LANES)
                                   : _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wt = tile + b * rec_bytes, *xp = panel + b * RG_QP_REC_BYTES;
        const int32_t *corr = (const int32_t *)(wt + RG_QT_CORR) + r0;
        const float *dw = (const float *)(wt + RG_QT_DW) + r0, *mw = (const float *)(wt + RG_QT_MW) + r0;
        const uint8_t *codes = wt + 32 * r0;
        __m512i s[HALF][2];
        for (int r = 0; r < HALF; r++) s[r][0] = s[r][1] = _mm512_set1_epi32(corr[r]);
        for (int k = 0; k < 8; k++) {
            if (kind == 2 && k == 4) { /* the first half's sums, scaled, then the second half's */
                const int32_t *corr_hi = (const int32_t *)(wt + RG_QT6_CORR_HI) + r0;
                for (int j = 0; j < np; j++) {
                    const __m512 dx = _mm512_loadu_ps(xp + j * panel_bytes + RG_QP_DX);
                    for (int r = 0; r < HALF; r++) {
                        const __m512 scale = _mm512_mul_ps(dx, _mm512_set1_ps(dw[r]));
                        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r][j]), scale, acc[r][j]);
                        s[r][j] = _mm512_set1_epi32(corr_hi[r]);
                    }
                }
            }
            __m512i xk[2];
            for (int j = 0; j < np; j++) xk[j] = _mm512_loadu_si512(xp + j * panel_bytes + 64 * k);
            for (int r = 0; r < HALF; r++) {
                const __m512i wv = _mm512_set1_epi32(*(const int32_t *)(codes + 32 * r + 4 * k));
                for (int j = 0; j < np; j++) s[r][j] = _mm512_dpbusd_epi32(s[r][j], xk[j], wv);
            }
        }
        const float *dlast = kind == 2 ? mw : dw;
        for (int j = 0; j < np; j++) {
            const __m512 dx = _mm512_loadu_ps(xp + j * panel_bytes + RG_QP_DX);
            for (int r = 0; r < HALF; r++) {
                const __m512 scale = _mm512_mul_ps(dx, _mm512_set1_ps(dlast[r])); /* fp32(d_w d_x) per column */
                acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r][j]), scale, acc[r][j]);
            }
            if (kind == 1) {
                const __m512 sx = _mm512_loadu_ps(xp + j * panel_bytes + RG_QP_SX);
                for (int r = 0; r < HALF; r++) acc[r][j] = _mm512_fmadd_ps(sx, _mm512_set1_ps(mw[r]), acc[r][j]);
            }
        }
    }
    for (int r = 0; r < HALF; r++)
        for (int j = 0; j < np; j++) _mm512_storeu_ps(out + (j * RG_QT_ROWS + r0 + r) * RG_QP_LANES, acc[r][j]);
}

RG_VNNI static void qgemm_tile_vnni(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np, int64_t nb,
                                    int has_min, int accumulate, float *out) {
    for (int r0 = 0; r0 < RG_QT_ROWS; r0 += HALF) {
        if (np == 2) {
            if (has_min) tile_body(tile, r0, panel, panel_bytes, 2, nb, 1, accumulate, out);
            else tile_body(tile, r0, panel, panel_bytes, 2, nb, 0, accumulate, out);
        } else {
            if (has_min) tile_body(tile, r0, panel, panel_bytes, 1, nb, 1, accumulate, out);
            else tile_body(tile, r0, panel, panel_bytes, 1, nb, 0, accumulate, out);
        }
    }
}

RG_VNNI static void qgemm_tile_halves_vnni(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np,
                                           int64_t nb, int accumulate, float *out) {
    for (int r0 = 0; r0 < RG_QT_ROWS; r0 += HALF) {
        if (np == 2) tile_body(tile, r0, panel, panel_bytes, 2, nb, 2, accumulate, out);
        else tile_body(tile, r0, panel, panel_bytes, 1, nb, 2, accumulate, out);
    }
}

void rg_kernels_fill_quant_panel(rg_kernel_table *k, int level, unsigned features) {
    const int vnni = level >= 2 && (features & RG_CPU_AVX512_VNNI) != 0;
    k->qgemm_decode = vnni ? qgemm_decode_vnni : NULL;
    k->qgemm_tile = vnni ? qgemm_tile_vnni : NULL;
    k->qgemm_tile_halves = vnni ? qgemm_tile_halves_vnni : NULL;
    k->qgemm_types = vnni ? RG_QGEMM_BLOCK_TYPES | RG_QGEMM_KQUANT_TYPES : 0;
}
#else
void rg_kernels_fill_quant_panel(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->qgemm_decode = NULL;
    k->qgemm_tile = NULL;
    k->qgemm_tile_halves = NULL;
    k->qgemm_types = 0;
}
#endif
