/* AVX-512 (F, BW, VL) kernels; see k_vec_avx2.c for why target attributes instead of build flags. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

RG_AVX512 static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) { /* masked tail keeps the whole sum in vector lanes */
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* exp(x) (RG_EXP_* in kernels.h), times 2^n by vscalefps, which also gives inf and 0 beyond the float
 * range. The clamps keep NaN (min/max return their second operand when one is NaN) and keep n finite
 * for infinite x. */
RG_AVX512 static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(RG_EXP_X_MIN), _mm512_min_ps(_mm512_set1_ps(RG_EXP_X_MAX), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(RG_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(RG_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(RG_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(RG_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(RG_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(RG_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(RG_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(RG_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(RG_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

RG_AVX512 static void vec_exp_avx512(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, exp_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

RG_AVX512 static void vec_sigmoid_avx512(const float *x, float *y, int64_t n, int times_x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        const __m512 d = _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v)));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(times_x ? v : one, d));
    }
}

RG_AVX512 static inline __m512 load_f16x16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

RG_AVX512 static float dot_f16_f32_avx512(const uint16_t *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(load_f16x16(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(load_f16x16(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(load_f16x16(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(load_f16x16(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load_f16x16(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 wa = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a + i));
        s1 = _mm512_fmadd_ps(wa, _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

RG_AVX512 static void f16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_f16x16(src + i));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

RG_AVX512 static void f32_to_f16_avx512(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = rg_f32_to_f16_scalar(src[i]);
}

RG_AVX512 static void dot_f32_x4_avx512(const float *a, const float *b, int64_t ldb, int nb, int64_t n, float *out) {
    if (nb != 4) {
        for (int j = 0; j < nb; j++) out[j] = dot_f32_avx512(a, b + j * ldb, n);
        return;
    }
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 va = _mm512_loadu_ps(a + i);
        s0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(b + ldb + i), s1);
        s2 = _mm512_fmadd_ps(va, _mm512_loadu_ps(b + 2 * ldb + i), s2);
        s3 = _mm512_fmadd_ps(va, _mm512_loadu_ps(b + 3 * ldb + i), s3);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 va = _mm512_maskz_loadu_ps(m, a + i);
        s0 = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, b + i), s0);
        s1 = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, b + ldb + i), s1);
        s2 = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, b + 2 * ldb + i), s2);
        s3 = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, b + 3 * ldb + i), s3);
    }
    out[0] = _mm512_reduce_add_ps(s0);
    out[1] = _mm512_reduce_add_ps(s1);
    out[2] = _mm512_reduce_add_ps(s2);
    out[3] = _mm512_reduce_add_ps(s3);
}

/* Mat-vec over up to four weight rows. Per row: two accumulators taking alternate 16-lane chunks of
 * 32-element steps, a 16-element step into the first, a masked tail into the second; the same for
 * nr = 1..4, so a row's result never depends on how rows were grouped. LOAD(row, i) yields 16 floats. */
#define RG_ROWS4_BODY(LOAD, LOADZ)                                                                     \
    __m512 s0[4], s1[4];                                                                               \
    for (int j = 0; j < 4; j++) s0[j] = s1[j] = _mm512_setzero_ps();                                 \
    int64_t i = 0;                                                                                     \
    if (nr == 4) {                                                                                     \
        for (; i + 32 <= n; i += 32) {                                                                 \
            const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);              \
            for (int j = 0; j < 4; j++) {                                                              \
                s0[j] = _mm512_fmadd_ps(LOAD(a + j * lda, i), x0, s0[j]);                              \
                s1[j] = _mm512_fmadd_ps(LOAD(a + j * lda, i + 16), x1, s1[j]);                         \
            }                                                                                          \
        }                                                                                              \
    } else {                                                                                           \
        for (; i + 32 <= n; i += 32) {                                                                 \
            const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);              \
            for (int j = 0; j < nr; j++) {                                                             \
                s0[j] = _mm512_fmadd_ps(LOAD(a + j * lda, i), x0, s0[j]);                              \
                s1[j] = _mm512_fmadd_ps(LOAD(a + j * lda, i + 16), x1, s1[j]);                         \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    if (i + 16 <= n) {                                                                                 \
        const __m512 x0 = _mm512_loadu_ps(x + i);                                                      \
        for (int j = 0; j < nr; j++) s0[j] = _mm512_fmadd_ps(LOAD(a + j * lda, i), x0, s0[j]);       \
        i += 16;                                                                                       \
    }                                                                                                  \
    if (i < n) {                                                                                       \
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);                                         \
        const __m512 x0 = _mm512_maskz_loadu_ps(m, x + i);                                             \
        for (int j = 0; j < nr; j++) s1[j] = _mm512_fmadd_ps(LOADZ(m, a + j * lda, i), x0, s1[j]);   \
    }                                                                                                  \
    for (int j = 0; j < nr; j++) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(s0[j], s1[j]));

#define RG_LOAD_F32(p, i) _mm512_loadu_ps((p) + (i))
#define RG_LOADZ_F32(m, p, i) _mm512_maskz_loadu_ps((m), (p) + (i))
#define RG_LOAD_F16(p, i) load_f16x16((p) + (i))
#define RG_LOADZ_F16(m, p, i) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (p) + (i)))

RG_AVX512 static void dot_f32_rows4_avx512(const float *a, int64_t lda, const float *x, int64_t n, int nr,
                                           float *out) {
    RG_ROWS4_BODY(RG_LOAD_F32, RG_LOADZ_F32)
}

RG_AVX512 static void dot_f16_rows4_avx512(const uint16_t *a, int64_t lda, const float *x, int64_t n, int nr,
                                           float *out) {
    RG_ROWS4_BODY(RG_LOAD_F16, RG_LOADZ_F16)
}

/* Spreads `lines` cache-line prefetches of each of four rows (p + j * stride bytes) evenly over `steps` calls
 * of pf_step: one line per row each time the count passes steps. Into L1 where four rows of the lines'
 * extent fit beside the activations (rows of up to 4 KB), else into L2. A one-core loop of the F16 row
 * streams at 8 columns from DRAM (4 KB rows) ran 66 GFLOP/s without, 81-83 with L1 prefetches and 75-77
 * with L2 ones (Zen 4; 88 with the matrix in L3); F32 rows of 8 KB gained more from L2 ones. */
typedef struct {
    const char *p;
    int64_t stride, lines, steps, count;
    int l1; /* into L1, else L2 */
} pf_spread;

RG_AVX512_INLINE pf_spread pf_begin(const void *p, int64_t stride, int64_t lines, int64_t steps,
                                    int64_t row_bytes) {
    pf_spread s = {(const char *)p, stride, p ? lines : 0, steps > 0 ? steps : 1, 0, row_bytes <= 4096};
    return s;
}

RG_AVX512_INLINE void pf_step(pf_spread *s) {
    for (s->count += s->lines; s->count >= s->steps; s->count -= s->steps, s->p += 64)
        for (int j = 0; j < 4; j++) {
            if (s->l1) __builtin_prefetch(s->p + j * s->stride, 0, 3);
            else __builtin_prefetch(s->p + j * s->stride, 0, 2);
        }
}

/* The mat-vec of up to 4 rows against nt (1..RG_ROWS4_MAX_COLS) columns at once: each (row, column) pair
 * keeps the mat-vec's two accumulators and chunk order, so every result equals dot_*_rows4 bit for bit,
 * while the rows stream from memory once for all the columns (batched decode). Rows past nr repeat the
 * last one (their sums are dropped). */
#define RG_ROWS4_COLS_BODY(LOAD, LOADZ, NT, PF)                                                        \
    const __typeof__(a) ar[4] = {a, a + (nr > 1) * lda, a + (nr > 2 ? 2 : nr - 1) * lda,              \
                                 a + (nr > 3 ? 3 : nr - 1) * lda};                                     \
    __m512 s0[4][NT], s1[4][NT];                                                                       \
    for (int j = 0; j < 4; j++)                                                                        \
        for (int t = 0; t < NT; t++) s0[j][t] = s1[j][t] = _mm512_setzero_ps();                       \
    pf_spread pfs = pf_begin(pf, lda * (int64_t)sizeof(*a), pf_lines, n / 32,                          \
                             n * (int64_t)sizeof(*a));                                                 \
    int64_t i = 0;                                                                                     \
    for (; i + 32 <= n; i += 32) {                                                                     \
        if (PF) pf_step(&pfs);                                                                         \
        __m512 x0[NT], x1[NT];                                                                         \
        for (int t = 0; t < NT; t++) {                                                                 \
            x0[t] = _mm512_loadu_ps(x + t * ldx + i);                                                  \
            x1[t] = _mm512_loadu_ps(x + t * ldx + i + 16);                                             \
        }                                                                                              \
        for (int j = 0; j < 4; j++) {                                                                  \
            const __m512 a0 = LOAD(ar[j], i), a1 = LOAD(ar[j], i + 16);                                \
            for (int t = 0; t < NT; t++) {                                                             \
                s0[j][t] = _mm512_fmadd_ps(a0, x0[t], s0[j][t]);                                       \
                s1[j][t] = _mm512_fmadd_ps(a1, x1[t], s1[j][t]);                                       \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    if (i + 16 <= n) {                                                                                 \
        for (int j = 0; j < 4; j++) {                                                                  \
            const __m512 a0 = LOAD(ar[j], i);                                                          \
            for (int t = 0; t < NT; t++)                                                               \
                s0[j][t] = _mm512_fmadd_ps(a0, _mm512_loadu_ps(x + t * ldx + i), s0[j][t]);            \
        }                                                                                              \
        i += 16;                                                                                       \
    }                                                                                                  \
    if (i < n) {                                                                                       \
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);                                         \
        for (int j = 0; j < 4; j++) {                                                                  \
            const __m512 a0 = LOADZ(m, ar[j], i);                                                      \
            for (int t = 0; t < NT; t++)                                                               \
                s1[j][t] = _mm512_fmadd_ps(a0, _mm512_maskz_loadu_ps(m, x + t * ldx + i), s1[j][t]);   \
        }                                                                                              \
    }                                                                                                  \
    for (int t = 0; t < NT; t++)                                                                       \
        for (int j = 0; j < nr; j++) out[t * 4 + j] = _mm512_reduce_add_ps(_mm512_add_ps(s0[j][t], s1[j][t]));

/* Each shape twice, with and without the prefetches (PF), so short rows, which get none, pay nothing. */
#define RG_ROWS4_COLS_FN(NAME, T, LOAD, LOADZ, NT, PF)                                                 \
    RG_AVX512 static void NAME(const T *a, int64_t lda, const float *x, int64_t ldx, int64_t n, int nr,   \
                               float *out, const void *pf, int64_t pf_lines) {                         \
        RG_ROWS4_COLS_BODY(LOAD, LOADZ, NT, PF)                                                        \
    }
RG_ROWS4_COLS_FN(f32_rows4_cols1, float, RG_LOAD_F32, RG_LOADZ_F32, 1, 0)
RG_ROWS4_COLS_FN(f32_rows4_cols2, float, RG_LOAD_F32, RG_LOADZ_F32, 2, 0)
RG_ROWS4_COLS_FN(f16_rows4_cols1, uint16_t, RG_LOAD_F16, RG_LOADZ_F16, 1, 0)
RG_ROWS4_COLS_FN(f16_rows4_cols2, uint16_t, RG_LOAD_F16, RG_LOADZ_F16, 2, 0)
RG_ROWS4_COLS_FN(f32_rows4_cols1_pf, float, RG_LOAD_F32, RG_LOADZ_F32, 1, 1)
RG_ROWS4_COLS_FN(f32_rows4_cols2_pf, float, RG_LOAD_F32, RG_LOADZ_F32, 2, 1)
RG_ROWS4_COLS_FN(f16_rows4_cols1_pf, uint16_t, RG_LOAD_F16, RG_LOADZ_F16, 1, 1)
RG_ROWS4_COLS_FN(f16_rows4_cols2_pf, uint16_t, RG_LOAD_F16, RG_LOADZ_F16, 2, 1)

RG_AVX512 static void dot_f32_rows4_cols_avx512(const float *a, int64_t lda, const float *x, int64_t ldx, int nt,
                                                int64_t n, int nr, float *out, const void *pf, int64_t pf_lines) {
    if (pf) (nt == 1 ? f32_rows4_cols1_pf : f32_rows4_cols2_pf)(a, lda, x, ldx, n, nr, out, pf, pf_lines);
    else (nt == 1 ? f32_rows4_cols1 : f32_rows4_cols2)(a, lda, x, ldx, n, nr, out, pf, pf_lines);
}

RG_AVX512 static void dot_f16_rows4_cols_avx512(const uint16_t *a, int64_t lda, const float *x, int64_t ldx, int nt,
                                                int64_t n, int nr, float *out, const void *pf, int64_t pf_lines) {
    if (pf) (nt == 1 ? f16_rows4_cols1_pf : f16_rows4_cols2_pf)(a, lda, x, ldx, n, nr, out, pf, pf_lines);
    else (nt == 1 ? f16_rows4_cols1 : f16_rows4_cols2)(a, lda, x, ldx, n, nr, out, pf, pf_lines);
}

void rg_kernels_fill_vec_avx512(rg_kernel_table *k, int level, unsigned features) {
    (void)features;
    if (level < 2) return;
    k->dot_f32 = dot_f32_avx512;
    k->dot_f16_f32 = dot_f16_f32_avx512;
    k->vec_exp = vec_exp_avx512;
    k->vec_sigmoid = vec_sigmoid_avx512;
    k->f16_to_f32 = f16_to_f32_avx512;
    k->f32_to_f16 = f32_to_f16_avx512;
    k->dot_f32_x4 = dot_f32_x4_avx512;
    k->dot_f32_rows4 = dot_f32_rows4_avx512;
    k->dot_f16_rows4 = dot_f16_rows4_avx512;
    k->dot_f32_rows4_cols = dot_f32_rows4_cols_avx512;
    k->dot_f16_rows4_cols = dot_f16_rows4_cols_avx512;
}

#else
void rg_kernels_fill_vec_avx512(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
