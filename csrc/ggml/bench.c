/* The benchmark helpers of rwkv_ggml_bench.h. */
#include "../include/rwkv_ggml_bench.h"
#include "internal.h"
#include "pool.h"
#include "simd/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    const uint8_t *buf;
    size_t nbytes;
    double partial[512];
    int64_t iters;
    int kind;
} bench_job;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double read_avx512(const uint8_t *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        a0 = _mm512_xor_si512(a0, _mm512_loadu_si512(p + i));
        a1 = _mm512_xor_si512(a1, _mm512_loadu_si512(p + i + 64));
        a2 = _mm512_xor_si512(a2, _mm512_loadu_si512(p + i + 128));
        a3 = _mm512_xor_si512(a3, _mm512_loadu_si512(p + i + 192));
    }
    a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    return (double)_mm512_reduce_add_epi64(a0);
}

__attribute__((target("avx2"))) static double read_avx2(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    int64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a0);
    return (double)(out[0] + out[1] + out[2] + out[3]);
}
#endif

static double read_scalar(const uint8_t *p, size_t n) {
    uint64_t a = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        a ^= v;
    }
    return (double)a;
}

static void read_thread(void *arg, int ith, int nth) {
    bench_job *job = arg;
    int64_t s, e;
    rg_split((int64_t)(job->nbytes / 4096), ith, nth, &s, &e); /* page-sized chunks per thread */
    const uint8_t *p = job->buf + (size_t)s * 4096;
    const size_t n = (size_t)(e - s) * 4096;
    double r;
#if defined(__x86_64__)
    const int level = rg_simd_level();
    r = level >= 2 ? read_avx512(p, n) : level == 1 ? read_avx2(p, n) : read_scalar(p, n);
#else
    r = read_scalar(p, n);
#endif
    job->partial[ith] = r;
}

double rg_bench_read(const void *buf, size_t nbytes, rg_pool *pool, int n_threads) {
    if (buf == NULL || n_threads < 1 || n_threads > 512 || (pool == NULL && n_threads > 1)) return -1.0;
    bench_job job = {.buf = buf, .nbytes = nbytes};
    rg_pool_run(pool, read_thread, &job, n_threads);
    double s = 0;
    for (int i = 0; i < n_threads; i++) s += job.partial[i];
    return s;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double fma_avx512(int64_t iters) {
    __m512 a[8];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < 8; j++) a[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    __m512 s = a[0];
    for (int j = 1; j < 8; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s) != 12345.0f ? (double)iters * 8 * 16 * 2 : 0.0;
}

/* Independent chains of vdpbf16ps / vpdpbusd: 2 multiply-adds per f32 lane, or 4 per i32 lane. */
__attribute__((target("avx512f,avx512bf16"))) static double bf16_avx512(int64_t iters) {
    __m512 a[12];
    const __m512bh m = (__m512bh)_mm512_set1_epi32(0x3f803f80), c = (__m512bh)_mm512_set1_epi32(0x33d633d6);
    for (int j = 0; j < 12; j++) a[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = _mm512_dpbf16_ps(a[j], m, c);
    __m512 s = a[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s) != 12345.0f ? (double)iters * 12 * 16 * 4 : 0.0;
}

__attribute__((target("avx512f,avx512vnni"))) static double vnni_avx512(int64_t iters) {
    __m512i a[12];
    const __m512i m = _mm512_set1_epi8(3), c = _mm512_set1_epi8(-2);
    for (int j = 0; j < 12; j++) a[j] = _mm512_set1_epi32(j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = _mm512_dpbusd_epi32(a[j], m, c);
    __m512i s = a[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_epi32(s, a[j]);
    return _mm512_reduce_add_epi32(s) != 12345 ? (double)iters * 12 * 16 * 8 : 0.0;
}

/* The AVX2 int8 unit: 12 chains of vpmaddubsw (32 u8 x s8 products -> 16 i16 pair sums), vpmaddwd
 * against ones (-> 8 i32) and vpaddd, 32 multiply-adds per step; each step's bytes are its chain's
 * accumulator so that nothing is loop-invariant. */
__attribute__((target("avx2"))) static double int8_avx2(int64_t iters) {
    __m256i a[12];
    const __m256i c = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
    for (int j = 0; j < 12; j++) a[j] = _mm256_set1_epi32(j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(_mm256_maddubs_epi16(a[j], c), ones));
    __m256i s = a[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_epi32(s, a[j]);
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] != 12345 ? (double)iters * 12 * 32 * 2 : 0.0;
}

/* The same with AVX-VNNI (vpdpbusd on ymm, VEX-encoded): 12 chains, 32 multiply-adds per instruction. */
__attribute__((target("avx2,avxvnni"))) static double vnni_avx2(int64_t iters) {
    __m256i a[12];
    const __m256i m = _mm256_set1_epi8(3), c = _mm256_set1_epi8(-2);
    for (int j = 0; j < 12; j++) a[j] = _mm256_set1_epi32(j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) a[j] = _mm256_dpbusd_avx_epi32(a[j], m, c);
    __m256i s = a[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_epi32(s, a[j]);
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] != 12345 ? (double)iters * 12 * 32 * 2 : 0.0;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(int64_t iters) {
    __m256 a[8];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < 8; j++) a[j] = _mm256_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    __m256 s = a[0];
    for (int j = 1; j < 8; j++) s = _mm256_add_ps(s, a[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] != 12345.0f ? (double)iters * 8 * 8 * 2 : 0.0;
}
#endif

static void fma_thread(void *arg, int ith, int nth) {
    (void)nth;
    bench_job *job = arg;
    double r = 0;
#if defined(__x86_64__)
    const int level = rg_simd_level();
    const unsigned f = rg_cpu_features();
    if (job->kind == RG_PEAK_BF16) {
        if (level >= 2 && (f & RG_CPU_AVX512_BF16)) r = bf16_avx512(job->iters);
    } else if (job->kind == RG_PEAK_INT8) {
        if (level >= 2 && (f & RG_CPU_AVX512_VNNI))
            r = vnni_avx512(job->iters);
        else if (level >= 1 && (f & RG_CPU_AVX_VNNI))
            r = vnni_avx2(job->iters);
        else if (level >= 1)
            r = int8_avx2(job->iters);
    } else if (level >= 2) {
        r = fma_avx512(job->iters);
    } else if (level == 1) {
        r = fma_avx2(job->iters);
    }
#endif
    job->partial[ith] = r;
}

double rg_bench_peak(int kind, int64_t iters, rg_pool *pool, int n_threads) {
    if (kind < RG_PEAK_F32 || kind > RG_PEAK_INT8 || iters < 0 || n_threads < 1 || n_threads > 512 ||
        (pool == NULL && n_threads > 1))
        return -1.0;
    bench_job job = {.iters = iters, .kind = kind};
    rg_pool_run(pool, fma_thread, &job, n_threads);
    double s = 0;
    for (int i = 0; i < n_threads; i++) s += job.partial[i];
    return s;
}
