/* AVX2 kernels of the block-quantized types (target attributes, like k_avx2.c): one 32-element block
 * per step. Weights are unpacked to bytes in block order, the products go through maddubs (u8 x s8 ->
 * pairs of i16) and madd (-> i32), which is exact here: every pair sum stays below 2^15. */
#include "kernels.h"
#include "../quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define RG_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RG_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

RG_AVX2_INLINE float h2f(const uint8_t *p) { return _cvtsh_ss(rg_load_u16(p)); }

RG_AVX2_INLINE float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* 16 bytes of nibbles -> 32 codes 0..15 in block order (low nibbles are elements 0..15). */
RG_AVX2_INLINE __m256i nibbles(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

/* Bit e of the little-endian u32 at qh -> 0x10 in byte e, 0 elsewhere. */
RG_AVX2_INLINE __m256i fifth_bits(const uint8_t *qh) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)rg_load_u32(qh)), spread);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel), _mm256_set1_epi8(0x10));
}

/* sum_e (u_e - off) * x_e in 8 i32 lanes, u in [0, 31], x in [-128, 127]; off may be 0. */
RG_AVX2_INLINE __m256i dot_offset(__m256i u, __m256i x, int off) {
    __m256i p = _mm256_maddubs_epi16(u, x);
    if (off) p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8((char)off), x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* sum_e w_e * x_e for signed w (Q8_0 weights): |w| as unsigned, the sign moved onto x. The activation
 * quantizer never produces -128 from finite input, so sign(x, w) cannot overflow. */
RG_AVX2_INLINE __m256i dot_signed(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
                             _mm256_set1_epi16(1));
}

/* The generic loop: weight block b unpacked once (CODES), then against NX activation rows. KIND:
 * 0 = nibbles - off, 1 = nibbles + fifth bit - off, 2 = int8; MIN: the _1 types' m * s term. */
RG_AVX2_INLINE void dot_rows(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, const int nx, float *out,
                             const int wbytes, const int qs_off, const int qh_off, const int kind, const int off,
                             const int has_min, const int xbytes) {
    const int xqs = has_min ? RG_Q8_1_QS : RG_Q8_0_QS;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float msum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t b = 0; b < n / RG_QK; b++, w += wbytes) {
        __m256i u;
        if (kind == 2) {
            u = _mm256_loadu_si256((const __m256i *)(w + qs_off));
        } else {
            u = nibbles(w + qs_off);
            if (kind == 1) u = _mm256_or_si256(u, fifth_bits(w + qh_off));
        }
        const float dw = h2f(w);
        for (int j = 0; j < nx; j++) {
            const uint8_t *xb = x + (size_t)j * ldx + (size_t)b * (size_t)xbytes;
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + xqs));
            const __m256i isum = kind == 2 ? dot_signed(u, xv) : dot_offset(u, xv, off);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * h2f(xb)), acc[j]);
            if (has_min) msum[j] += h2f(w + 2) * h2f(xb + RG_Q8_1_S);
        }
    }
    for (int j = 0; j < nx; j++) out[j] = hsum256(acc[j]) + msum[j];
}

#define RG_DEFINE_DOT(name, wbytes, qs_off, qh_off, kind, off, has_min, xbytes)                                   \
    RG_AVX2 static float name##_avx2(int64_t n, const void *w, const void *x) {                                   \
        float r;                                                                                                  \
        dot_rows(n, w, x, 0, 1, &r, wbytes, qs_off, qh_off, kind, off, has_min, xbytes);                          \
        return r;                                                                                                 \
    }                                                                                                             \
    RG_AVX2 static void name##_x4_avx2(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) { \
        if (nx == 4) {                                                                                            \
            dot_rows(n, w, x, ldx, 4, out, wbytes, qs_off, qh_off, kind, off, has_min, xbytes);                   \
            return;                                                                                               \
        }                                                                                                         \
        for (int j = 0; j < nx; j++) out[j] = name##_avx2(n, w, (const uint8_t *)x + (size_t)j * ldx);            \
    }
RG_DEFINE_DOT(vec_dot_q4_0, RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0, RG_Q8_0_BYTES)
RG_DEFINE_DOT(vec_dot_q4_1, RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1, RG_Q8_1_BYTES)
RG_DEFINE_DOT(vec_dot_q5_0, RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0, RG_Q8_0_BYTES)
RG_DEFINE_DOT(vec_dot_q5_1, RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1, RG_Q8_1_BYTES)
RG_DEFINE_DOT(vec_dot_q8_0, RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 0, 0, RG_Q8_0_BYTES)
#undef RG_DEFINE_DOT

/* Activation quantizer (formats.md §5.4), bit-identical to rg_quantize_act_q8_*_ref: the same f32
 * operations per element, cvtps2dq rounds half to even, packs saturate like the scalar clamp. */
RG_AVX2_INLINE void quantize_act(const float *x, uint8_t *y, int64_t n, const int with_sum) {
    const int bytes = with_sum ? RG_Q8_1_BYTES : RG_Q8_0_BYTES, qs = with_sum ? RG_Q8_1_QS : RG_Q8_0_QS;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / RG_QK; b++, x += RG_QK, y += bytes) {
        __m256 v[4];
        for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(x + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                                 _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
        /* packs interleave 128-bit lanes; the final permute restores element order */
        const __m256i q01 = _mm256_packs_epi32(q[0], q[1]), q23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i q8 = _mm256_packs_epi16(q01, q23);
        q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(y + qs), q8);
        rg_store_u16(y, rg_f32_to_f16_scalar(d));
        if (with_sum) {
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q8);
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
            rg_store_u16(y + RG_Q8_1_S, rg_f32_to_f16_scalar(d * (float)_mm_cvtsi128_si32(s)));
        }
    }
}

RG_AVX2 static void quantize_act_q8_0_avx2(const float *x, void *y, int64_t n) { quantize_act(x, y, n, 0); }
RG_AVX2 static void quantize_act_q8_1_avx2(const float *x, void *y, int64_t n) { quantize_act(x, y, n, 1); }

void rg_kernels_fill_quant_avx2(rg_kernel_table *k) {
    k->quantize_act_q8_0 = quantize_act_q8_0_avx2;
    k->quantize_act_q8_1 = quantize_act_q8_1_avx2;
    k->vec_dot_q4_0 = vec_dot_q4_0_avx2;
    k->vec_dot_q4_1 = vec_dot_q4_1_avx2;
    k->vec_dot_q5_0 = vec_dot_q5_0_avx2;
    k->vec_dot_q5_1 = vec_dot_q5_1_avx2;
    k->vec_dot_q8_0 = vec_dot_q8_0_avx2;
    k->vec_dot_q4_0_x4 = vec_dot_q4_0_x4_avx2;
    k->vec_dot_q4_1_x4 = vec_dot_q4_1_x4_avx2;
    k->vec_dot_q5_0_x4 = vec_dot_q5_0_x4_avx2;
    k->vec_dot_q5_1_x4 = vec_dot_q5_1_x4_avx2;
    k->vec_dot_q8_0_x4 = vec_dot_q8_0_x4_avx2;
}

#else
void rg_kernels_fill_quant_avx2(rg_kernel_table *k) { (void)k; }
#endif
