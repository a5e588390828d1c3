/* The column-panel mat-mat of the block-quantized types at the AVX2 level: the same panels, tiles and
 * outputs as the AVX512_VNNI kernels of k_quant_panel.c (layouts in quant/quant.h; kernels.h: qgemm_decode,
 * qgemm_tile), with vpdpbusd on ymm where the CPU has AVX-VNNI (Alder Lake and later Intel cores, Zen 5),
 * else with vpmaddubsw + vpmaddwd (Zen 2/3, Intel before Alder Lake).
 *
 * A panel's 16 columns take two ymm vectors per slot of four codes. Per block, three tile rows at a time
 * keep 3 x 2 integer sums and 3 x 2 float accumulators in registers (with the two panel vectors and the
 * broadcast weight quad, 15 of the 16 ymm registers): eight slots of six vpdpbusd give the exact integer
 * sums, then fp32(d_w d_x) * isum (+ m_w s_x) is added with the operations, in the order, of the AVX-512
 * kernel, so both levels give the same bits, whatever the tile, panel or thread.
 *
 * Without AVX-VNNI, vpmaddubsw adds two u8 x s8 products into an i16 with saturation, and the panels'
 * activations are unsigned (+128, up to 255). Q4_0 and Q5_0 codes (|w| <= 16) make a pair of at most
 * 2 * 255 * 16 = 8160, so the pairs of 4 slots add up in i16 before one vpmaddwd widens them to i32: the
 * integer sums, and then the outputs, are those of vpdpbusd bit for bit. The other types stay on the
 * one-row kernels there (qgemm_types), which measured as fast or faster (Sapphire Rapids at level 1,
 * 256 columns, 1 thread, GFLOP/s panels / rows: Q4_0 135-141 / 129-130; Q5_1, 0..31 codes, pairs of 2
 * slots, 117-120 / 124-129; Q8_0 with the activations split into nibbles, two vpmaddubsw per slot, 58 /
 * 72). */
#include "kernels.h"
#include "../../include/rwkv_ggml.h"
#include "../quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define RG_TARGET_AVX_VNNI RG_TARGET_AVX2 ",avxvnni"
#define RG_AVXVNNI __attribute__((target(RG_TARGET_AVX_VNNI)))
#define RG_AVXVNNI_INLINE __attribute__((target(RG_TARGET_AVX_VNNI), always_inline)) static inline

/* A weight type, compile-time constants after inlining (as in k_quant_avx2.c): block bytes, field offsets,
 * kind (0 = 4-bit codes, 1 = 5-bit with the fifth bits in qh, 2 = int8 codes), the _0 types' offset
 * (codes stored as u = code + off; Q8_0's signed codes are made unsigned by xor 0x80, off 128). */
typedef struct {
    int wbytes, qs, qh, kind, off, has_min;
} qtype;

/* Bit e of m -> 0x10 in byte e (a block's fifth bits). */
RG_AVX2_INLINE __m256i fifth_bits(uint32_t m) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), spread);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel), _mm256_set1_epi8(0x10));
}

/* The 32 codes of one block, unsigned (u), natural element order. */
RG_AVX2_INLINE __m256i block_codes(const uint8_t *w, const qtype t) {
    if (t.kind == 2)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + t.qs)), _mm256_set1_epi8((char)0x80));
    const __m128i q = _mm_loadu_si128((const __m128i *)(w + t.qs));
    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
    if (t.kind == 1) u = _mm256_or_si256(u, fifth_bits(rg_load_u32(w + t.qh)));
    return u;
}

/* Tile records (quant.h) of `rows` weight rows over nb blocks; rows past them are zeros. */
RG_AVX2_INLINE void decode_rows(const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile, const qtype t) {
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
            const __m256i u = block_codes(blk, t);
            _mm256_storeu_si256((__m256i *)(rec + 32 * r), _mm256_sub_epi8(u, _mm256_set1_epi8((char)t.off)));
            const __m256i s4 = _mm256_sad_epu8(u, _mm256_setzero_si256());
            const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
            const int32_t sum_u = (int32_t)(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1));
            corr[r] = -128 * (sum_u - 32 * t.off);
            dw[r] = _cvtsh_ss(rg_load_u16(blk));
            mw[r] = t.has_min ? _cvtsh_ss(rg_load_u16(blk + 2)) : 0.0f;
        }
    }
}

RG_AVX2 static void qgemm_decode_avx2(int type, const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile) {
    switch (type) {
    case RG_TYPE_Q4_0: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0}); break;
    case RG_TYPE_Q4_1: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1}); break;
    case RG_TYPE_Q5_0:
        decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0});
        break;
    case RG_TYPE_Q5_1:
        decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1});
        break;
    case RG_TYPE_Q8_0: decode_rows(w, ldw, rows, nb, tile, (qtype){RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 128, 0}); break;
    default: break; /* no other type reaches this level's panels (rg_mm_qpanel_shape) */
    }
}

/* Tile rows r0 .. r0+2 against one panel over nb blocks; out holds the panel's RG_QT_ROWS x 16 outputs. */
#define ROWS3 3
RG_AVXVNNI_INLINE void rows3(const uint8_t *tile, int r0, const uint8_t *panel, int64_t nb, const int has_min,
                             int accumulate, float *out) {
    __m256 acc[ROWS3][2];
    for (int r = 0; r < ROWS3; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = accumulate ? _mm256_loadu_ps(out + (r0 + r) * RG_QP_LANES + 8 * h) : _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wt = tile + b * RG_QT_REC_BYTES, *xp = panel + b * RG_QP_REC_BYTES;
        const int32_t *corr = (const int32_t *)(wt + RG_QT_CORR) + r0;
        const float *dw = (const float *)(wt + RG_QT_DW) + r0, *mw = (const float *)(wt + RG_QT_MW) + r0;
        const uint8_t *codes = wt + 32 * r0;
        __m256i s[ROWS3][2];
        for (int r = 0; r < ROWS3; r++) s[r][0] = s[r][1] = _mm256_set1_epi32(corr[r]);
        for (int k = 0; k < 8; k++) {
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xp + 64 * k));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xp + 64 * k + 32));
            for (int r = 0; r < ROWS3; r++) {
                const __m256i wv = _mm256_set1_epi32((int)rg_load_u32(codes + 32 * r + 4 * k));
                s[r][0] = _mm256_dpbusd_avx_epi32(s[r][0], x0, wv);
                s[r][1] = _mm256_dpbusd_avx_epi32(s[r][1], x1, wv);
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m256 dx = _mm256_loadu_ps((const float *)(xp + RG_QP_DX) + 8 * h);
            for (int r = 0; r < ROWS3; r++) {
                const __m256 scale = _mm256_mul_ps(dx, _mm256_set1_ps(dw[r])); /* fp32(d_w d_x) per column */
                acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][h]), scale, acc[r][h]);
            }
            if (has_min) {
                const __m256 sx = _mm256_loadu_ps((const float *)(xp + RG_QP_SX) + 8 * h);
                for (int r = 0; r < ROWS3; r++) acc[r][h] = _mm256_fmadd_ps(sx, _mm256_set1_ps(mw[r]), acc[r][h]);
            }
        }
    }
    for (int r = 0; r < ROWS3; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(out + (r0 + r) * RG_QP_LANES + 8 * h, acc[r][h]);
}

RG_AVXVNNI static void qgemm_tile_avx2(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np,
                                       int64_t nb, int has_min, int accumulate, float *out) {
    for (int j = 0; j < np; j++)
        for (int r0 = 0; r0 < RG_QT_ROWS; r0 += ROWS3) {
            float *o = out + j * RG_QT_ROWS * RG_QP_LANES;
            if (has_min) rows3(tile, r0, panel + j * panel_bytes, nb, 1, accumulate, o);
            else rows3(tile, r0, panel + j * panel_bytes, nb, 0, accumulate, o);
        }
}

/* ---- without AVX-VNNI: vpmaddubsw + vpmaddwd (the bounds in the header comment) ---- */

/* The integer sums of tile rows r0 .. r0+2 for the 8 columns of half h of one block (corr included): the
 * i16 pair sums of GROUP slots are added before widening (|w| <= 16: 4 x 8160 fits in an i16). */
#define GROUP 4
RG_AVX2_INLINE void isums3(const uint8_t *codes, const int32_t *corr, const uint8_t *xp, int h, __m256i s[ROWS3]) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < ROWS3; r++) s[r] = _mm256_set1_epi32(corr[r]);
    for (int k0 = 0; k0 < 8; k0 += GROUP) {
        __m256i p[ROWS3];
        for (int r = 0; r < ROWS3; r++) p[r] = _mm256_setzero_si256();
        for (int k = k0; k < k0 + GROUP; k++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(xp + 64 * k + 32 * h));
            for (int r = 0; r < ROWS3; r++) {
                const __m256i wv = _mm256_set1_epi32((int)rg_load_u32(codes + 32 * r + 4 * k));
                p[r] = _mm256_add_epi16(p[r], _mm256_maddubs_epi16(x, wv));
            }
        }
        for (int r = 0; r < ROWS3; r++) s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(p[r], ones));
    }
}

/* rows3 for the min-less types without AVX-VNNI: a half of the panel at a time (fewer registers), the same
 * f32 operations per output element in the same order. */
RG_AVX2_INLINE void rows3_mb(const uint8_t *tile, int r0, const uint8_t *panel, int64_t nb, int accumulate,
                             float *out) {
    __m256 acc[ROWS3][2];
    for (int r = 0; r < ROWS3; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = accumulate ? _mm256_loadu_ps(out + (r0 + r) * RG_QP_LANES + 8 * h) : _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wt = tile + b * RG_QT_REC_BYTES, *xp = panel + b * RG_QP_REC_BYTES;
        const int32_t *corr = (const int32_t *)(wt + RG_QT_CORR) + r0;
        const float *dw = (const float *)(wt + RG_QT_DW) + r0;
        for (int h = 0; h < 2; h++) {
            __m256i s[ROWS3];
            isums3(wt + 32 * r0, corr, xp, h, s);
            const __m256 dx = _mm256_loadu_ps((const float *)(xp + RG_QP_DX) + 8 * h);
            for (int r = 0; r < ROWS3; r++) {
                const __m256 scale = _mm256_mul_ps(dx, _mm256_set1_ps(dw[r])); /* fp32(d_w d_x) per column */
                acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), scale, acc[r][h]);
            }
        }
    }
    for (int r = 0; r < ROWS3; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(out + (r0 + r) * RG_QP_LANES + 8 * h, acc[r][h]);
}

/* Q4_0 and Q5_0 only (qgemm_types): has_min is always 0 here. */
RG_AVX2 static void qgemm_tile_avx2_mb(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np,
                                       int64_t nb, int has_min, int accumulate, float *out) {
    (void)has_min;
    for (int j = 0; j < np; j++)
        for (int r0 = 0; r0 < RG_QT_ROWS; r0 += ROWS3)
            rows3_mb(tile, r0, panel + j * panel_bytes, nb, accumulate, out + j * RG_QT_ROWS * RG_QP_LANES);
}

void rg_kernels_fill_quant_panel_avx2(rg_kernel_table *k, int level, unsigned features) {
    if (level == 1) {
        const int vnni = (features & RG_CPU_AVX_VNNI) != 0;
        k->qgemm_decode = qgemm_decode_avx2;
        k->qgemm_tile = vnni ? qgemm_tile_avx2 : qgemm_tile_avx2_mb;
        k->qgemm_types = vnni ? RG_QGEMM_BLOCK_TYPES : RG_QGEMM_TYPE(RG_TYPE_Q4_0) | RG_QGEMM_TYPE(RG_TYPE_Q5_0);
    }
}
#else
void rg_kernels_fill_quant_panel_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
