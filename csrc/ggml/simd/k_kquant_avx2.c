/* AVX2 kernels of the K-quant weight types (formats.md §7.4), against activation rows in the
 * RG_TYPE_Q8_ACT layout (quant/quant.h); used at the AVX2 and AVX-512 levels.
 *
 * Per activation block the 32 weight codes are unpacked into one vector of unsigned bytes in natural order
 * (the activation block's two 16-byte halves are loaded next to each other), maddubs (u8 x s8 -> i16 pairs)
 * and madd (-> i32) keep the sums exact, and each block adds the same f32 term as the scalar kernel
 * (k_kquant_scalar.c) in the same order: the integer part exact, then one scaling; the mat-mat form
 * unpacks each weight block once for up to 4 activation rows. Q6_K's signed codes
 * q - 32 are handled as sum u x - 32 sum x with u = q in 0..63, per 16-element half. */
#include "kernels.h"
#include "../quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

RG_AVX2_INLINE int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static inline float load_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Activation block b's codes in natural order. */
RG_AVX2_INLINE __m256i act_block(const uint8_t *xq, int64_t b, int64_t nb) {
    const __m128i lo = _mm_loadu_si128((const __m128i *)(xq + rg_act_pos(b, 0, nb)));
    const __m128i hi = _mm_loadu_si128((const __m128i *)(xq + rg_act_pos(b, 16, nb)));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* Per i32 lane: the exact sum of 4 products of unsigned codes u and activation codes x. */
RG_AVX2_INLINE __m256i dot_lanes(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

/* The weight row against nx (1..4) activation rows x + j * ldx: each weight block is unpacked once for all
 * of them, and each row's sum takes the same f32 terms in the same order as a single-row call. */
RG_AVX2 static void dot_q45_k_avx2(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out,
                                   int five_bits) {
    const int64_t nb = n / RG_QK;
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += bytes) {
        const float d = _cvtsh_ss(rg_load_u16(w)), dmin = _cvtsh_ss(rg_load_u16(w + 2));
        const __m256i qh = five_bits ? _mm256_loadu_si256((const __m256i *)(w + RG_Q5_K_QH)) : _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            const int64_t b = 8 * sb + s;
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(w + qs + 32 * (s / 2)));
            __m256i u = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(packed, 4) : packed, low4);
            if (five_bits) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << s));
                const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            int sc, m;
            rg_kquant_scale_min(w + RG_QK_SCALES, s, &sc, &m);
            for (int j = 0; j < nx; j++) {
                const uint8_t *xr = x + (size_t)j * ldx;
                const int32_t isum = hsum_i32(dot_lanes(u, act_block(xr, b, nb)));
                const float dx = load_f32(xr + rg_act_d_off(nb) + 4 * b);
                const int32_t xs = load_i32(xr + rg_act_sum_off(nb) + 4 * b);
                const float dd = d * dx, dm = dmin * dx;
                const float plus = dd * (float)(sc * isum), minus = dm * (float)(m * xs);
                sum[j] += plus - minus;
            }
        }
    }
    for (int j = 0; j < nx; j++) out[j] = sum[j];
}

RG_AVX2 static void dot_q6_k_avx2(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out) {
    const int64_t nb = n / RG_QK;
    const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(0x03), k32 = _mm256_set1_epi8(32);
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += RG_Q6_K_BYTES) {
        const float d = _cvtsh_ss(rg_load_u16(w + RG_Q6_K_D));
        const int8_t *scales = (const int8_t *)(w + RG_Q6_K_SCALES);
        for (int s = 0; s < 8; s++) {
            const int64_t b = 8 * sb + s;
            const int h = s / 4, g = s % 4;
            const __m256i ql = _mm256_loadu_si256((const __m256i *)(w + RG_Q6_K_QL + 64 * h + 32 * (g & 1)));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + RG_Q6_K_QH + 32 * h));
            const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
            const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), two);
            const __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
            /* lanes 0..3: elements 0..15, lanes 4..7: elements 16..31; times their half's scale */
            const __m256i sc = _mm256_setr_epi32(scales[2 * s], scales[2 * s], scales[2 * s], scales[2 * s],
                                                 scales[2 * s + 1], scales[2 * s + 1], scales[2 * s + 1],
                                                 scales[2 * s + 1]);
            for (int j = 0; j < nx; j++) {
                const uint8_t *xr = x + (size_t)j * ldx;
                const __m256i xv = act_block(xr, b, nb);
                const __m256i lanes = _mm256_sub_epi32(dot_lanes(u, xv), dot_lanes(k32, xv));
                const int32_t t = hsum_i32(_mm256_mullo_epi32(lanes, sc));
                const float dd = d * load_f32(xr + rg_act_d_off(nb) + 4 * b);
                sum[j] += dd * (float)t;
            }
        }
    }
    for (int j = 0; j < nx; j++) out[j] = sum[j];
}

static float vec_dot_q4_k(int64_t n, const void *w, const void *x) {
    float r;
    dot_q45_k_avx2(n, w, x, 0, 1, &r, 0);
    return r;
}
static float vec_dot_q5_k(int64_t n, const void *w, const void *x) {
    float r;
    dot_q45_k_avx2(n, w, x, 0, 1, &r, 1);
    return r;
}
static float vec_dot_q6_k(int64_t n, const void *w, const void *x) {
    float r;
    dot_q6_k_avx2(n, w, x, 0, 1, &r);
    return r;
}
/* The kernels above take up to 4 activation rows; the table's contract is up to RG_QDOT_MAX_NX. */
#define RG_IN_FOURS(call)                                                                                         \
    for (int j = 0; j < nx; j += 4) {                                                                             \
        const uint8_t *xj = (const uint8_t *)x + (size_t)j * ldx;                                                \
        const int nj = nx - j < 4 ? nx - j : 4;                                                                   \
        call;                                                                                                     \
    }
static void vec_dot_q4_k_xn(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    RG_IN_FOURS(dot_q45_k_avx2(n, w, xj, ldx, nj, out + j, 0))
}
static void vec_dot_q5_k_xn(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    RG_IN_FOURS(dot_q45_k_avx2(n, w, xj, ldx, nj, out + j, 1))
}
static void vec_dot_q6_k_xn(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    RG_IN_FOURS(dot_q6_k_avx2(n, w, xj, ldx, nj, out + j))
}
#undef RG_IN_FOURS

void rg_kernels_fill_kquant_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)features;
    if (level < 1) return;
    k->vec_dot_q4_k = vec_dot_q4_k;
    k->vec_dot_q5_k = vec_dot_q5_k;
    k->vec_dot_q6_k = vec_dot_q6_k;
    k->vec_dot_q4_k_xn = vec_dot_q4_k_xn;
    k->vec_dot_q5_k_xn = vec_dot_q5_k_xn;
    k->vec_dot_q6_k_xn = vec_dot_q6_k_xn;
}

#else

void rg_kernels_fill_kquant_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}

#endif
