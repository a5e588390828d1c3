/* Mat-mat micro-kernels for F32 operands with f32 accumulation (prompt ingestion).
 *
 * c[t * ldc + m] = sum_k a[m * lda + k] * b[t * ldb + k] for a tile of mr <= 4 weight rows and nr <= RG_GEMM_NR
 * activation rows. Both operands are contiguous along k (weights as stored, activations as rows), so
 * each (m, t) pair keeps a vector of partial sums over k lanes and is reduced once at the end: per
 * k-step a tile loads 4 + 6 vectors for 24 FMAs, which keeps the FMA units busy instead of waiting on
 * loads (the one-row kernels load two vectors per FMA).
 *
 * The k-lane partial sums and their final reduction are the same for every tile shape, so an element's
 * value does not depend on which tile computed it. */
#include "kernels.h"

static void gemm_tile_scalar(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr, int64_t k,
                             float *c, int64_t ldc) {
    for (int t = 0; t < nr; t++)
        for (int m = 0; m < mr; m++) c[t * ldc + m] = rg_dot_f32_ref(a + m * lda, b + t * ldb, k);
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* The summation order of the AVX-512 mat-vec (dot_*_rows4 in k_vec_avx512.c), so that a column of a
 * mat-mat equals the mat-vec of that column bit for bit (a batch of B sequences equals B single evals):
 * per (m, t) two accumulators take alternate 16-lane chunks of 32-element steps, a 16-element step goes
 * into the first, a masked tail into the second, and the result is reduce_add(s0 + s1). Columns are taken
 * three at a time: 4 x 3 x 2 accumulators in 24 of the 32 zmm registers, and per 32-element step
 * 8 + 6 loads for 24 FMAs. */
RG_AVX512 static void gemm_tile_avx512(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                       int64_t k, float *c, int64_t ldc) {
    for (int t0 = 0; t0 < nr; t0 += 3) {
        const int nt = nr - t0 < 3 ? nr - t0 : 3;
        const float *bt = b + t0 * ldb;
        __m512 s0[4][3], s1[4][3];
        for (int m = 0; m < 4; m++)
            for (int t = 0; t < 3; t++) s0[m][t] = s1[m][t] = _mm512_setzero_ps();
        int64_t i = 0;
        if (mr == 4 && nt == 3) {
            for (; i + 32 <= k; i += 32) {
                __m512 x0[3], x1[3];
                for (int t = 0; t < 3; t++) {
                    x0[t] = _mm512_loadu_ps(bt + t * ldb + i);
                    x1[t] = _mm512_loadu_ps(bt + t * ldb + i + 16);
                }
                for (int m = 0; m < 4; m++) {
                    const __m512 a0 = _mm512_loadu_ps(a + m * lda + i), a1 = _mm512_loadu_ps(a + m * lda + i + 16);
                    for (int t = 0; t < 3; t++) {
                        s0[m][t] = _mm512_fmadd_ps(a0, x0[t], s0[m][t]);
                        s1[m][t] = _mm512_fmadd_ps(a1, x1[t], s1[m][t]);
                    }
                }
            }
        } else {
            for (; i + 32 <= k; i += 32)
                for (int t = 0; t < nt; t++) {
                    const __m512 x0 = _mm512_loadu_ps(bt + t * ldb + i), x1 = _mm512_loadu_ps(bt + t * ldb + i + 16);
                    for (int m = 0; m < mr; m++) {
                        s0[m][t] = _mm512_fmadd_ps(_mm512_loadu_ps(a + m * lda + i), x0, s0[m][t]);
                        s1[m][t] = _mm512_fmadd_ps(_mm512_loadu_ps(a + m * lda + i + 16), x1, s1[m][t]);
                    }
                }
        }
        if (i + 16 <= k) {
            for (int t = 0; t < nt; t++) {
                const __m512 x0 = _mm512_loadu_ps(bt + t * ldb + i);
                for (int m = 0; m < mr; m++) s0[m][t] = _mm512_fmadd_ps(_mm512_loadu_ps(a + m * lda + i), x0, s0[m][t]);
            }
            i += 16;
        }
        if (i < k) {
            const __mmask16 msk = (__mmask16)((1u << (k - i)) - 1u);
            for (int t = 0; t < nt; t++) {
                const __m512 x0 = _mm512_maskz_loadu_ps(msk, bt + t * ldb + i);
                for (int m = 0; m < mr; m++)
                    s1[m][t] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(msk, a + m * lda + i), x0, s1[m][t]);
            }
        }
        for (int t = 0; t < nt; t++)
            for (int m = 0; m < mr; m++) c[(t0 + t) * ldc + m] = _mm512_reduce_add_ps(_mm512_add_ps(s0[m][t], s1[m][t]));
    }
}

RG_AVX2 static inline float hsum8(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* AVX2 has 16 registers: 4 x 2 accumulators. */
RG_AVX2 static void gemm_tile_avx2(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                   int64_t k, float *c, int64_t ldc) {
    for (int t0 = 0; t0 < nr; t0 += 2) {
        const int nt = nr - t0 < 2 ? nr - t0 : 2;
        __m256 acc[4][2];
        for (int m = 0; m < 4; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= k; i += 8) {
            for (int t = 0; t < nt; t++) {
                const __m256 bt = _mm256_loadu_ps(b + (t0 + t) * ldb + i);
                for (int m = 0; m < mr; m++)
                    acc[m][t] = _mm256_fmadd_ps(_mm256_loadu_ps(a + m * lda + i), bt, acc[m][t]);
            }
        }
        for (int t = 0; t < nt; t++)
            for (int m = 0; m < mr; m++) {
                float s = hsum8(acc[m][t]);
                for (int64_t j = i; j < k; j++) s += rg_load_f32(a + m * lda + j) * b[(t0 + t) * ldb + j];
                c[(t0 + t) * ldc + m] = s;
            }
    }
}

/* ---- bf16 operands (opt-in, AVX512_BF16): vdpbf16ps multiplies pairs of bf16 along k and adds both
 * products into an f32 lane, twice the arithmetic of an f32 FMA per instruction. Operand rows are
 * bf16, zero-padded to a multiple of 32 elements (kp), so the kernel has no tail. ---- */

RG_BF16 static void gemm_bf16_tile_avx512(const uint16_t *a, int64_t lda, int mr, const uint16_t *b, int64_t ldb,
                                          int nr, int64_t kp, float *c, int64_t ldc) {
    __m512 acc[4][6];
    for (int m = 0; m < 4; m++)
        for (int t = 0; t < 6; t++) acc[m][t] = _mm512_setzero_ps();
    if (mr == 4 && nr == 6) {
        for (int64_t i = 0; i < kp; i += 32) {
            const __m512bh a0 = (__m512bh)_mm512_loadu_si512(a + i), a1 = (__m512bh)_mm512_loadu_si512(a + lda + i);
            const __m512bh a2 = (__m512bh)_mm512_loadu_si512(a + 2 * lda + i);
            const __m512bh a3 = (__m512bh)_mm512_loadu_si512(a + 3 * lda + i);
            for (int t = 0; t < 6; t++) {
                const __m512bh bt = (__m512bh)_mm512_loadu_si512(b + t * ldb + i);
                acc[0][t] = _mm512_dpbf16_ps(acc[0][t], a0, bt);
                acc[1][t] = _mm512_dpbf16_ps(acc[1][t], a1, bt);
                acc[2][t] = _mm512_dpbf16_ps(acc[2][t], a2, bt);
                acc[3][t] = _mm512_dpbf16_ps(acc[3][t], a3, bt);
            }
        }
    } else {
        for (int64_t i = 0; i < kp; i += 32) {
            for (int t = 0; t < nr; t++) {
                const __m512bh bt = (__m512bh)_mm512_loadu_si512(b + t * ldb + i);
                for (int m = 0; m < mr; m++)
                    acc[m][t] = _mm512_dpbf16_ps(acc[m][t], (__m512bh)_mm512_loadu_si512(a + m * lda + i), bt);
            }
        }
    }
    for (int t = 0; t < nr; t++)
        for (int m = 0; m < mr; m++) c[t * ldc + m] = _mm512_reduce_add_ps(acc[m][t]);
}

/* n floats to bf16 (round to nearest even), then zeros up to kp. */
RG_BF16 static void f32_to_bf16_padded_avx512(const float *src, uint16_t *dst, int64_t n, int64_t kp) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v);
    }
    for (; i < kp; i += 32) {
        const int64_t left = n - i;
        const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
        const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16), _mm512_maskz_loadu_ps(lo, src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v);
    }
}

/* n halves to bf16 (each half is exact in f32, then rounded to nearest even), then zeros up to kp: one
 * pass instead of f16 -> f32 -> bf16 through memory. */
RG_BF16 static void f16_to_bf16_padded_avx512(const uint16_t *src, uint16_t *dst, int64_t n, int64_t kp) {
    for (int64_t i = 0; i < kp; i += 32) {
        const int64_t left = n - i;
        const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
        const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
        const __m512 f_lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lo, src + i));
        const __m512 f_hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(hi, src + i + 16));
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(f_hi, f_lo));
    }
}

void rg_kernels_fill_gemm_tile(rg_kernel_table *k, int level, unsigned features) {
    k->gemm_f32_tile = level >= 2 ? gemm_tile_avx512 : level == 1 ? gemm_tile_avx2 : gemm_tile_scalar;
    const int bf16 = level >= 2 && (features & RG_CPU_AVX512_BF16);
    k->gemm_bf16_tile = bf16 ? gemm_bf16_tile_avx512 : NULL;
    k->f32_to_bf16_padded = bf16 ? f32_to_bf16_padded_avx512 : NULL;
    k->f16_to_bf16_padded = bf16 ? f16_to_bf16_padded_avx512 : NULL;
}
#else
void rg_kernels_fill_gemm_tile(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->gemm_f32_tile = gemm_tile_scalar;
    k->gemm_bf16_tile = NULL;
    k->f32_to_bf16_padded = NULL;
    k->f16_to_bf16_padded = NULL;
}
#endif
