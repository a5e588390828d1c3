/* Portable reference kernels: plain C, built on every platform, forced with RWKV_GGML_FORCE_SCALAR=1. */
#include "kernels.h"

#include <math.h>

#include <string.h>

uint16_t rg_f32_to_f16_scalar(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                      /* normal half: rebias exponent, round 13 bits */
        uint32_t h = (ax - (112u << 23)) >> 13;
        const uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    /* Subnormal half: value = q * 2^-24. An f32 with biased exponent e and significand m (implicit
     * bit included) is m * 2^(e-150), so q = m >> (126 - e) before rounding. */
    const uint32_t e = ax >> 23;
    if (e < 102) return sign; /* below half the smallest subnormal: rounds to zero */
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q); /* q == 0x400 is the smallest normal: still the right encoding */
}

float rg_f16_to_f32_scalar(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal half: normalise */
        uint32_t e = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The dot products add their terms in the tree of the AVX2 kernels (k_vec_avx2.c): whole steps of 32
 * elements into 32 partial sums (element i into sum i % 32), whole steps of 8 into sums 0..7, the sums
 * folded as (s[j] + s[8 + j]) + (s[16 + j] + s[24 + j]) for j < 8, then halved three times like hsum256,
 * then the tail in order. Only the products' rounding differs (no FMA at the baseline instruction set).
 * Four chains of n / 4 terms each, as this level had before, round differently enough that in the 6v0
 * Q5_0 test model one activation of a later quantized product lands on the other side of a Q8 rounding
 * boundary, moving the logits by 0.01 (the rwkv.cpp sum criterion failed on the scalar path only). */
static inline float tree_dot(const void *a, int a_is_f16, const float *b, int64_t n) {
    float s[32] = {0};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 32; j++) {
            const float w = a_is_f16 ? rg_f16_to_f32_scalar(rg_load_u16((const uint16_t *)a + i + j))
                                     : rg_load_f32((const float *)a + i + j);
            s[j] += w * b[i + j];
        }
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            const float w = a_is_f16 ? rg_f16_to_f32_scalar(rg_load_u16((const uint16_t *)a + i + j))
                                     : rg_load_f32((const float *)a + i + j);
            s[j] += w * b[i + j];
        }
    float v[8];
    for (int j = 0; j < 8; j++) v[j] = (s[j] + s[8 + j]) + (s[16 + j] + s[24 + j]);
    const float w0 = v[0] + v[4], w1 = v[1] + v[5], w2 = v[2] + v[6], w3 = v[3] + v[7];
    float sum = (w0 + w2) + (w1 + w3);
    for (; i < n; i++) {
        const float w = a_is_f16 ? rg_f16_to_f32_scalar(rg_load_u16((const uint16_t *)a + i))
                                 : rg_load_f32((const float *)a + i);
        sum += w * b[i];
    }
    return sum;
}

float rg_dot_f32_ref(const float *a, const float *b, int64_t n) { return tree_dot(a, 0, b, n); }

static float dot_f16_f32_scalar(const uint16_t *a, const float *b, int64_t n) { return tree_dot(a, 1, b, n); }

static void f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = rg_f16_to_f32_scalar(rg_load_u16(src + i));
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = rg_f32_to_f16_scalar(src[i]);
}

static void dot_f32_x4_scalar(const float *a, const float *b, int64_t ldb, int nb, int64_t n, float *out) {
    for (int j = 0; j < nb; j++) out[j] = rg_dot_f32_ref(a, b + j * ldb, n);
}

static void dot_f32_rows4_scalar(const float *a, int64_t lda, const float *x, int64_t n, int nr, float *out) {
    for (int j = 0; j < nr; j++) out[j] = rg_dot_f32_ref(a + j * lda, x, n);
}

static void dot_f16_rows4_scalar(const uint16_t *a, int64_t lda, const float *x, int64_t n, int nr, float *out) {
    for (int j = 0; j < nr; j++) out[j] = dot_f16_f32_scalar(a + j * lda, x, n);
}

static void vec_exp_scalar(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

static void vec_sigmoid_scalar(const float *x, float *y, int64_t n, int times_x) {
    for (int64_t i = 0; i < n; i++) y[i] = (times_x ? x[i] : 1.0f) / (1.0f + expf(-x[i]));
}

void rg_kernels_fill_vec_scalar(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->vec_exp = vec_exp_scalar;
    k->vec_sigmoid = vec_sigmoid_scalar;
    k->dot_f32 = rg_dot_f32_ref;
    k->dot_f16_f32 = dot_f16_f32_scalar;
    k->f16_to_f32 = f16_to_f32_scalar;
    k->f32_to_f16 = f32_to_f16_scalar;
    k->dot_f32_x4 = dot_f32_x4_scalar;
    k->dot_f32_rows4 = dot_f32_rows4_scalar;
    k->dot_f16_rows4 = dot_f16_rows4_scalar;
    k->dot_f32_rows4_cols = NULL; /* the mat-mat tiles take few columns at this level */
    k->dot_f16_rows4_cols = NULL;
}
