/* AVX2 + FMA + F16C kernels. Each function carries a target attribute, so this file compiles on any
 * x86-64 compiler without -mavx2 and the code only runs after cpu.c has seen the features. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

RG_AVX2 static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

RG_AVX2 static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += rg_load_f32(a + i) * b[i];
    return s;
}

RG_AVX2 static float dot_f16_f32_avx2(const uint16_t *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 16))), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 24))), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += rg_f16_to_f32_scalar(rg_load_u16(a + i)) * b[i];
    return s;
}

RG_AVX2 static void f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = rg_f16_to_f32_scalar(rg_load_u16(src + i));
}

RG_AVX2 static void f32_to_f16_avx2(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    /* The tail goes through the exact scalar routine, which also gives NaN the canonical 0x7e00. */
    for (; i < n; i++) dst[i] = rg_f32_to_f16_scalar(src[i]);
}

RG_AVX2 static void dot_f32_x4_avx2(const float *a, const float *b, int64_t ldb, int nb, int64_t n, float *out) {
    if (nb != 4) {
        for (int j = 0; j < nb; j++) out[j] = dot_f32_avx2(a, b + j * ldb, n);
        return;
    }
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 va = _mm256_loadu_ps(a + i);
        s0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(va, _mm256_loadu_ps(b + ldb + i), s1);
        s2 = _mm256_fmadd_ps(va, _mm256_loadu_ps(b + 2 * ldb + i), s2);
        s3 = _mm256_fmadd_ps(va, _mm256_loadu_ps(b + 3 * ldb + i), s3);
    }
    float r[4] = {hsum256(s0), hsum256(s1), hsum256(s2), hsum256(s3)};
    for (; i < n; i++)
        for (int j = 0; j < 4; j++) r[j] += rg_load_f32(a + i) * b[j * ldb + i];
    for (int j = 0; j < 4; j++) out[j] = r[j];
}

/* Mat-vec over up to four weight rows; per-row arithmetic independent of nr (see k_vec_avx512.c). */
#define RG_ROWS4_BODY2(LOAD, SCALAR)                                                                   \
    __m256 s0[4], s1[4];                                                                               \
    for (int j = 0; j < 4; j++) s0[j] = s1[j] = _mm256_setzero_ps();                                 \
    int64_t i = 0;                                                                                     \
    for (; i + 16 <= n; i += 16) {                                                                     \
        const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);                    \
        for (int j = 0; j < nr; j++) {                                                                 \
            s0[j] = _mm256_fmadd_ps(LOAD(a + j * lda, i), x0, s0[j]);                                  \
            s1[j] = _mm256_fmadd_ps(LOAD(a + j * lda, i + 8), x1, s1[j]);                              \
        }                                                                                              \
    }                                                                                                  \
    if (i + 8 <= n) {                                                                                  \
        const __m256 x0 = _mm256_loadu_ps(x + i);                                                      \
        for (int j = 0; j < nr; j++) s0[j] = _mm256_fmadd_ps(LOAD(a + j * lda, i), x0, s0[j]);       \
        i += 8;                                                                                        \
    }                                                                                                  \
    for (int j = 0; j < nr; j++) {                                                                     \
        float s = hsum256(_mm256_add_ps(s0[j], s1[j]));                                                \
        for (int64_t t = i; t < n; t++) s += SCALAR(a + j * lda, t) * x[t];                           \
        out[j] = s;                                                                                    \
    }

#define RG_LOAD8_F32(p, i) _mm256_loadu_ps((p) + (i))
#define RG_SCALAR_F32(p, t) rg_load_f32((p) + (t))
#define RG_LOAD8_F16(p, i) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((p) + (i))))
#define RG_SCALAR_F16(p, t) rg_f16_to_f32_scalar(rg_load_u16((p) + (t)))

RG_AVX2 static void dot_f32_rows4_avx2(const float *a, int64_t lda, const float *x, int64_t n, int nr, float *out) {
    RG_ROWS4_BODY2(RG_LOAD8_F32, RG_SCALAR_F32)
}

RG_AVX2 static void dot_f16_rows4_avx2(const uint16_t *a, int64_t lda, const float *x, int64_t n, int nr,
                                       float *out) {
    RG_ROWS4_BODY2(RG_LOAD8_F16, RG_SCALAR_F16)
}

/* The rows against nt columns: one mat-vec pass per column (16 ymm registers hold the accumulators of
 * one column), the rows coming from memory for the first and from L1/L2 for the next. No prefetches
 * here (pf is ignored): spread over these passes, into L1 or L2, they made the 8-column products 7-19%
 * slower (F16 65536x2048 18.6 -> 21-22 ms, Zen 4 at this level), where the AVX-512 kernel gains. */
RG_AVX2 static void dot_f32_rows4_cols_avx2(const float *a, int64_t lda, const float *x, int64_t ldx, int nt,
                                            int64_t n, int nr, float *out, const void *pf, int64_t pf_lines) {
    (void)pf, (void)pf_lines;
    for (int t = 0; t < nt; t++) dot_f32_rows4_avx2(a, lda, x + t * ldx, n, nr, out + t * 4);
}

RG_AVX2 static void dot_f16_rows4_cols_avx2(const uint16_t *a, int64_t lda, const float *x, int64_t ldx, int nt,
                                            int64_t n, int nr, float *out, const void *pf, int64_t pf_lines) {
    (void)pf, (void)pf_lines;
    for (int t = 0; t < nt; t++) dot_f16_rows4_avx2(a, lda, x + t * ldx, n, nr, out + t * 4);
}

/* exp(x) (RG_EXP_* in kernels.h). Without vscalefps, 2^n is built from exponent bits in two halves,
 * 2^n1 * 2^n2 (each in the normal range for n in [-150, 128]), so results in the subnormal range are
 * rounded once, by the last multiply, and large ones overflow to inf. The clamps keep NaN (min/max
 * return their second operand when one is NaN). */
RG_AVX2 static inline __m256 exp_ps_avx2(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(RG_EXP_X_MIN), _mm256_min_ps(_mm256_set1_ps(RG_EXP_X_MAX), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(RG_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(RG_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(RG_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(RG_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(RG_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(RG_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(RG_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(RG_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(RG_EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n); /* NaN lanes give INT_MIN: p is NaN there anyway */
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* Whole vectors, then the tail through a zero-padded copy, so every element takes the same path. */
RG_AVX2 static void vec_exp_avx2(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp_ps_avx2(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float buf[8] = {0};
        memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(buf, exp_ps_avx2(_mm256_loadu_ps(buf)));
        memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));
    }
}

RG_AVX2 static inline __m256 sigmoid_ps_avx2(__m256 v, int times_x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 d = _mm256_add_ps(one, exp_ps_avx2(_mm256_sub_ps(_mm256_setzero_ps(), v)));
    return _mm256_div_ps(times_x ? v : one, d);
}

RG_AVX2 static void vec_sigmoid_avx2(const float *x, float *y, int64_t n, int times_x) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, sigmoid_ps_avx2(_mm256_loadu_ps(x + i), times_x));
    if (i < n) {
        float buf[8] = {0};
        memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(buf, sigmoid_ps_avx2(_mm256_loadu_ps(buf), times_x));
        memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));
    }
}

void rg_kernels_fill_vec_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)features;
    if (level < 1) return;
    k->vec_exp = vec_exp_avx2;
    k->vec_sigmoid = vec_sigmoid_avx2;
    k->dot_f32 = dot_f32_avx2;
    k->dot_f16_f32 = dot_f16_f32_avx2;
    k->f16_to_f32 = f16_to_f32_avx2;
    k->f32_to_f16 = f32_to_f16_avx2;
    k->dot_f32_x4 = dot_f32_x4_avx2;
    k->dot_f32_rows4 = dot_f32_rows4_avx2;
    k->dot_f16_rows4 = dot_f16_rows4_avx2;
    k->dot_f32_rows4_cols = dot_f32_rows4_cols_avx2;
    k->dot_f16_rows4_cols = dot_f16_rows4_cols_avx2;
}

#else
void rg_kernels_fill_vec_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
