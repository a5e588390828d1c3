/* AVX2 kernels of the K-quant weight types (formats.md §7.4), against activation rows in the
 * RG_TYPE_Q8_ACT layout (quant/quant.h); used at the AVX2 level and at AVX-512 without AVX512_VNNI.
 *
 * Per activation block the 32 weight codes are unpacked into one vector of unsigned bytes in natural order
 * (the activation block's two 16-byte halves are loaded next to each other), and maddubs (u8 x s8 -> i16
 * pairs) and madd (-> i32) keep the sums exact. A super-block's 8 blocks are reduced to one vector of
 * exact block sums and their f32 terms made at once with the scalar kernel's operations (k_kquant_scalar.c),
 * then added to the running sum one by one in block order, so every level gives the same bits. That
 * in-order chain of 8 additions per super-block bounds one row's rate (11-12 GB/s of Q4_K per Sapphire
 * Rapids core with the weights in cache); the mat-mat form unpacks each super-block once for up to 4
 * activation rows, whose sums are independent chains. Q6_K's signed codes q - 32 are handled as
 * sum u x - 32 sum x with u = q in 0..63, per 16-element half. */
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

/* Asks for the weight bytes RG_KQ_PREFETCH ahead of the super-block at w (bytes long; past a row's end that
 * is the next row's, the next call's data; prefetches never fault). The in-order f32 additions of the
 * blocks are a dependency chain that fills the out-of-order window, so the weight loads alone go out too
 * late to keep memory busy (as in k_kquant_avx512.c): a 2048-wide Q4_K mat-vec from memory on one core
 * went from 2.2-4.4 GB/s without to 9.8-10.4 with it (Sapphire Rapids at the AVX2 level; 2 KB and 8 KB
 * ahead were no better). */
#ifndef RG_KQ_PREFETCH
#define RG_KQ_PREFETCH 4096
#endif
RG_AVX2_INLINE void prefetch_ahead(const uint8_t *w, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(w + RG_KQ_PREFETCH + o), _MM_HINT_T0);
}

/* The 8 blocks' sums [block 0 .. block 7] from 8 vectors of 8 i32 lanes, one vector per block. */
RG_AVX2_INLINE __m256i block_sums8(const __m256i r[8]) {
    /* [low-lane part of blocks 0..3 | high-lane part of blocks 0..3], then the same for blocks 4..7 */
    const __m256i g03 = _mm256_hadd_epi32(_mm256_hadd_epi32(r[0], r[1]), _mm256_hadd_epi32(r[2], r[3]));
    const __m256i g47 = _mm256_hadd_epi32(_mm256_hadd_epi32(r[4], r[5]), _mm256_hadd_epi32(r[6], r[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(g03, g47, 0x20), _mm256_permute2x128_si256(g03, g47, 0x31));
}

/* Adds the 8 f32 terms to sum in block order (the scalar kernel's order). */
RG_AVX2_INLINE float add_in_order(float sum, __m256 terms) {
    float t[8];
    _mm256_storeu_ps(t, terms);
    for (int b = 0; b < 8; b++) sum += t[b];
    return sum;
}

/* The weight row against nx (1..4) activation rows x + j * ldx: each super-block's codes are unpacked once
 * for all of them, the 8 blocks' exact sums and f32 terms are made in vectors with the scalar kernel's
 * operations, and the terms are added in block order, so each row's sum has the scalar kernel's bits. */
RG_AVX2 static void dot_q45_k_avx2(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out,
                                   int five_bits) {
    const int64_t nb = n / RG_QK;
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += bytes) {
        if (RG_KQ_PREFETCH) prefetch_ahead(w, bytes);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w))), dmin = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w + 2)));
        /* the eight 6-bit scales and mins (rg_kquant_scale_min), four bytes at a time */
        const uint32_t a = rg_load_u32(w + RG_QK_SCALES), b = rg_load_u32(w + RG_QK_SCALES + 4);
        const uint32_t c = rg_load_u32(w + RG_QK_SCALES + 8);
        const uint64_t sc8 = (a & 0x3F3F3F3Fu) | (uint64_t)((c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u)) << 32;
        const uint64_t m8 = (b & 0x3F3F3F3Fu) | (uint64_t)(((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u)) << 32;
        const __m256i sc = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc8));
        const __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m8));
        const __m256i qh = five_bits ? _mm256_loadu_si256((const __m256i *)(w + RG_Q5_K_QH)) : _mm256_setzero_si256();
        __m256i u[8];
        for (int s = 0; s < 8; s++) {
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(w + qs + 32 * (s / 2)));
            u[s] = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(packed, 4) : packed, low4);
            if (five_bits) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << s));
                const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                u[s] = _mm256_or_si256(u[s], _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
        }
        for (int j = 0; j < nx; j++) {
            const uint8_t *xr = x + (size_t)j * ldx;
            __m256i r[8];
            for (int s = 0; s < 8; s++) r[s] = dot_lanes(u[s], act_block(xr, 8 * sb + s, nb));
            const __m256i sc_isum = _mm256_mullo_epi32(sc, block_sums8(r));
            const __m256 dx = _mm256_loadu_ps((const float *)(xr + rg_act_d_off(nb)) + 8 * sb);
            /* m * sum x: |sum x| <= 4064 sits in the low word of its dword (the high word is its sign, times 0) */
            const __m256i m_xs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xr + rg_act_sum_off(nb) + 32 * sb)), m);
            __m256 plus = _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sc_isum));
            __m256 minus = _mm256_mul_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(m_xs));
            /* two rounded products, then the difference, as in the scalar kernel: no fused multiply-subtract */
            __asm__("" : "+x"(plus), "+x"(minus));
            sum[j] = add_in_order(sum[j], _mm256_sub_ps(plus, minus));
        }
    }
    for (int j = 0; j < nx; j++) out[j] = sum[j];
}

/* Q6_K: the lanes of blocks 2p and 2p + 1 (sums of 4 products, |.| <= 4 * 32 * 127 < 2^15) packed to i16,
 * [2p's first half, 2p + 1's first | 2p's second, 2p + 1's second], so one vpmaddwd with the halves' scale
 * words applies the scales and adds neighbours exactly; a tree of adds then gives the blocks' sums. */
RG_AVX2 static void dot_q6_k_avx2(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out) {
    const int64_t nb = n / RG_QK;
    const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(0x03), k32 = _mm256_set1_epi8(32);
    /* words 4p' and 4p' + 2 of a lane four times each, then (high lane) 4p' + 1 and 4p' + 3: p' = p % 2 */
    const __m256i pick[2] = {
        _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5, 2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7),
        _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 8, 9, 12, 13, 12, 13, 12, 13, 12, 13, 10, 11, 10, 11, 10, 11, 10, 11, 14, 15,
                         14, 15, 14, 15, 14, 15)};
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += RG_Q6_K_BYTES) {
        if (RG_KQ_PREFETCH) prefetch_ahead(w, RG_Q6_K_BYTES);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w + RG_Q6_K_D)));
        /* the 16 scales as words [0..7 | 8..15]; pair p's come from lane p / 2 */
        const __m256i sw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + RG_Q6_K_SCALES)));
        const __m256i sw_lo = _mm256_permute4x64_epi64(sw, 0x44), sw_hi = _mm256_permute4x64_epi64(sw, 0xEE);
        __m256i scw[4], u[8];
        for (int p = 0; p < 4; p++) scw[p] = _mm256_shuffle_epi8(p < 2 ? sw_lo : sw_hi, pick[p % 2]);
        for (int s = 0; s < 8; s++) {
            const int h = s / 4, g = s % 4;
            const __m256i ql = _mm256_loadu_si256((const __m256i *)(w + RG_Q6_K_QL + 64 * h + 32 * (g & 1)));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + RG_Q6_K_QH + 32 * h));
            const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
            const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), two);
            u[s] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
        }
        for (int j = 0; j < nx; j++) {
            const uint8_t *xr = x + (size_t)j * ldx;
            __m256i r[8], mp[4];
            for (int s = 0; s < 8; s++) {
                const __m256i xv = act_block(xr, 8 * sb + s, nb);
                r[s] = _mm256_sub_epi32(dot_lanes(u[s], xv), dot_lanes(k32, xv));
            }
            for (int p = 0; p < 4; p++) mp[p] = _mm256_madd_epi16(_mm256_packs_epi32(r[2 * p], r[2 * p + 1]), scw[p]);
            /* per lane [blocks 0..3 | 0..3] and [4..7 | 4..7], one half each */
            const __m256i h01 = _mm256_hadd_epi32(mp[0], mp[1]), h23 = _mm256_hadd_epi32(mp[2], mp[3]);
            const __m256i t = _mm256_add_epi32(_mm256_permute2x128_si256(h01, h23, 0x20),
                                               _mm256_permute2x128_si256(h01, h23, 0x31));
            const __m256 dx = _mm256_loadu_ps((const float *)(xr + rg_act_d_off(nb)) + 8 * sb);
            sum[j] = add_in_order(sum[j], _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(t)));
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
