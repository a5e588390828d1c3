/* RWKV-7's state update, one head and one token at a time, per kernel level (rwkv_wkv_rows.h).
 *
 * A row of the state is read whole (the sa dot product) before it is rewritten, so an update in place
 * needs no copy. The scalar kernel keeps 8 partial sums per dot product (fixed order, no fused
 * multiply-add); the SIMD ones hold a row in N/16 (AVX-512) or N/8 (AVX2) registers, use fused
 * multiply-adds and reduce each dot product's lanes in a fixed tree. Levels therefore differ in the last
 * bits, but within a level every call gives each row the same arithmetic. */
#include "rwkv_wkv_rows.h"

#include "ggml/simd/kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

/* Sum of x[j] * y[j], j < n, with 8 fixed partial sums (the compiler can vectorise them; the order of
 * operations does not depend on anything but n). */
static inline float dot8(int64_t n, const float *x, const float *y) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (int l = 0; l < 8; l++) acc[l] += x[j + l] * y[j + l];
    }
    for (; j < n; j++) acc[j & 7] += x[j] * y[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static void rows_scalar(int64_t N, int64_t n_rows, const float *s_in, float *s_out, const float *r, const float *w,
                        const float *k, const float *a, const float *b, const float *v, float *y) {
    for (int64_t i = 0; i < n_rows; i++) {
        const float *si = s_in + i * N;
        float *so = s_out + i * N;
        const float sa = dot8(N, si, a); /* (V7.10) with the old state */
        const float vi = v[i];
        for (int64_t j = 0; j < N; j++) so[j] = si[j] * w[j] + sa * b[j] + vi * k[j];
        y[i] = dot8(N, so, r); /* (V7.11) with the new state */
    }
}

/* RWKV-5/6 (rwkv_wkv5_token_fn). In place (s_in == s_out) and apart are separate loops, each with
 * pointers that do not alias, so the compiler vectorises both without run-time overlap checks. */
__attribute__((always_inline)) static inline void wkv5_token_body(int64_t N, int64_t j0, int64_t j1,
                                                                  const float *s_in, float *s_out,
                                                                  const float *r, const float *k,
                                                                  const float *restrict v, const float *u,
                                                                  int64_t u_step, const float *w, int64_t w_step,
                                                                  float *restrict y) {
    for (int64_t j = j0; j < j1; j++) y[j] = 0.0f;
    for (int64_t i = 0; i < N; i++) {
        const float ri = r[i], ki = k[i], ui = u[i * u_step], wi = w[i * w_step];
        if (s_in == s_out) {
            float *restrict s = s_out + i * N;
            for (int64_t j = j0; j < j1; j++) {
                const float kv = ki * v[j], sij = s[j];
                y[j] += ri * (ui * kv + sij); /* (V5.4) */
                s[j] = wi * sij + kv;         /* (V5.5) */
            }
        } else {
            const float *restrict si = s_in + i * N;
            float *restrict so = s_out + i * N;
            for (int64_t j = j0; j < j1; j++) {
                const float kv = ki * v[j], sij = si[j];
                y[j] += ri * (ui * kv + sij);
                so[j] = wi * sij + kv;
            }
        }
    }
}

#define RWKV_WKV5_ARGS                                                                                                 \
    int64_t N, int64_t j0, int64_t j1, const float *s_in, float *s_out, const float *r, const float *k,            \
        const float *v, const float *u, int64_t u_step, const float *w, int64_t w_step, float *y
#define RWKV_WKV5_PASS N, j0, j1, s_in, s_out, r, k, v, u, u_step, w, w_step, y

static void wkv5_token_scalar(RWKV_WKV5_ARGS) { wkv5_token_body(RWKV_WKV5_PASS); }

#if defined(__x86_64__) || defined(_M_X64)

/* NV = N / 16 vectors per row, a compile-time constant in each instantiation so a row lives in
 * registers. */
RG_AVX512_INLINE void rows_avx512_nv(int NV, int64_t n_rows, const float *s_in, float *s_out, const float *r,
                                     const float *w, const float *k, const float *a, const float *b, const float *v,
                                     float *y) {
    const int64_t N = 16 * (int64_t)NV;
    for (int64_t i = 0; i < n_rows; i++) {
        const float *si = s_in + i * N;
        float *so = s_out + i * N;
        __m512 s[8];
        __m512 pa = _mm512_setzero_ps();
        for (int c = 0; c < NV; c++) {
            s[c] = _mm512_loadu_ps(si + 16 * c);
            pa = _mm512_fmadd_ps(s[c], _mm512_loadu_ps(a + 16 * c), pa);
        }
        const __m512 sa = _mm512_set1_ps(_mm512_reduce_add_ps(pa)), vi = _mm512_set1_ps(v[i]);
        __m512 py = _mm512_setzero_ps();
        for (int c = 0; c < NV; c++) {
            __m512 t = _mm512_mul_ps(s[c], _mm512_loadu_ps(w + 16 * c));
            t = _mm512_fmadd_ps(sa, _mm512_loadu_ps(b + 16 * c), t);
            t = _mm512_fmadd_ps(vi, _mm512_loadu_ps(k + 16 * c), t);
            _mm512_storeu_ps(so + 16 * c, t);
            py = _mm512_fmadd_ps(t, _mm512_loadu_ps(r + 16 * c), py);
        }
        y[i] = _mm512_reduce_add_ps(py);
    }
}

#define RWKV_ROWS_ARGS                                                                                                 \
    int64_t N, int64_t n_rows, const float *s_in, float *s_out, const float *r, const float *w, const float *k,     \
        const float *a, const float *b, const float *v, float *y
#define RWKV_ROWS_PASS n_rows, s_in, s_out, r, w, k, a, b, v, y

RG_AVX512 static void rows_avx512_16(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx512_nv(1, RWKV_ROWS_PASS);
}
RG_AVX512 static void rows_avx512_32(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx512_nv(2, RWKV_ROWS_PASS);
}
RG_AVX512 static void rows_avx512_64(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx512_nv(4, RWKV_ROWS_PASS);
}
RG_AVX512 static void rows_avx512_128(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx512_nv(8, RWKV_ROWS_PASS);
}

/* The sum of a ymm's 8 lanes in a fixed tree. */
RG_AVX2_INLINE float hsum256(__m256 x) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* NV = N / 8 vectors per row; two accumulators per dot product halve the chain of dependent adds. */
RG_AVX2_INLINE void rows_avx2_nv(int NV, int64_t n_rows, const float *s_in, float *s_out, const float *r,
                                 const float *w, const float *k, const float *a, const float *b, const float *v,
                                 float *y) {
    const int64_t N = 8 * (int64_t)NV;
    for (int64_t i = 0; i < n_rows; i++) {
        const float *si = s_in + i * N;
        float *so = s_out + i * N;
        __m256 s[16];
        __m256 pa0 = _mm256_setzero_ps(), pa1 = _mm256_setzero_ps();
        for (int c = 0; c < NV; c++) {
            s[c] = _mm256_loadu_ps(si + 8 * c);
            if (c & 1) pa1 = _mm256_fmadd_ps(s[c], _mm256_loadu_ps(a + 8 * c), pa1);
            else pa0 = _mm256_fmadd_ps(s[c], _mm256_loadu_ps(a + 8 * c), pa0);
        }
        const __m256 sa = _mm256_set1_ps(hsum256(_mm256_add_ps(pa0, pa1))), vi = _mm256_set1_ps(v[i]);
        __m256 py0 = _mm256_setzero_ps(), py1 = _mm256_setzero_ps();
        for (int c = 0; c < NV; c++) {
            __m256 t = _mm256_mul_ps(s[c], _mm256_loadu_ps(w + 8 * c));
            t = _mm256_fmadd_ps(sa, _mm256_loadu_ps(b + 8 * c), t);
            t = _mm256_fmadd_ps(vi, _mm256_loadu_ps(k + 8 * c), t);
            _mm256_storeu_ps(so + 8 * c, t);
            if (c & 1) py1 = _mm256_fmadd_ps(t, _mm256_loadu_ps(r + 8 * c), py1);
            else py0 = _mm256_fmadd_ps(t, _mm256_loadu_ps(r + 8 * c), py0);
        }
        y[i] = hsum256(_mm256_add_ps(py0, py1));
    }
}

RG_AVX2 static void rows_avx2_16(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx2_nv(2, RWKV_ROWS_PASS);
}
RG_AVX2 static void rows_avx2_32(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx2_nv(4, RWKV_ROWS_PASS);
}
RG_AVX2 static void rows_avx2_64(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx2_nv(8, RWKV_ROWS_PASS);
}
RG_AVX2 static void rows_avx2_128(RWKV_ROWS_ARGS) {
    (void)N;
    rows_avx2_nv(16, RWKV_ROWS_PASS);
}

RG_AVX2 static void wkv5_token_avx2(RWKV_WKV5_ARGS) { wkv5_token_body(RWKV_WKV5_PASS); }
RG_AVX512 static void wkv5_token_avx512(RWKV_WKV5_ARGS) { wkv5_token_body(RWKV_WKV5_PASS); }

#endif

rwkv_wkv5_token_fn rwkv_wkv5_token_for(void) {
#if defined(__x86_64__) || defined(_M_X64)
    const int level = rg_simd_level();
    if (level >= 2) return wkv5_token_avx512;
    if (level >= 1) return wkv5_token_avx2;
#endif
    return wkv5_token_scalar;
}

rwkv_wkv7_rows_fn rwkv_wkv7_rows_for(int64_t N) {
#if defined(__x86_64__) || defined(_M_X64)
    /* head sizes other than these (none in released models, which use 64) take the scalar loop */
    const int level = rg_simd_level();
    if (level >= 2) {
        if (N == 64) return rows_avx512_64;
        if (N == 32) return rows_avx512_32;
        if (N == 128) return rows_avx512_128;
        if (N == 16) return rows_avx512_16;
    }
    if (level >= 1) {
        if (N == 64) return rows_avx2_64;
        if (N == 32) return rows_avx2_32;
        if (N == 128) return rows_avx2_128;
        if (N == 16) return rows_avx2_16;
    }
#else
    (void)N;
#endif
    return rows_scalar;
}
