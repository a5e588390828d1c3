/* AVX-512 VNNI kernels of the K-quant weight types (formats.md §7.4) against activation rows in the
 * RG_TYPE_Q8_ACT layout (quant/quant.h); without AVX512_VNNI the AVX2 ones (k_kquant_avx2.c) stay.
 *
 * A super-block meets 8 activation blocks, stored as 4 pairs [A0..15, B0..15, A16..31, B16..31] of 64
 * bytes. Its codes are unpacked straight into that order, one 512-bit vector per pair (the pair's weight
 * bytes put in place by one 128-bit-lane shuffle, then nibbles, high bits), so one vpdpbusd per pair gives
 * exact partial sums: i32 lanes 0-3 and 8-11 block A, 4-7 and 12-15 block B. Q6_K's signed codes q - 32
 * come out as sum u x - 32 sum x (u = q in 0..63), and its per-16-element scales are applied to the lanes
 * (each group of 4 lanes is one half of one block) before the reduction, in integers. A tree of adds
 * reduces the 4 pair vectors to the 8 blocks' sums in one 256-bit vector; the 8 blocks' f32 terms are
 * then made at once with exactly the scalar kernel's operations (k_kquant_scalar.c) and added to the
 * running sum one by one in block order, so every level gives the same bits (kernels.h).
 *
 * The mat-mat form unpacks each super-block once for up to RG_QDOT_MAX_NX activation rows, whose running
 * sums are independent chains. */
#include "kernels.h"
#include "../quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* The 32 bytes at p as the 128-bit lanes [p0..15, p0..15, p16..31, p16..31]: a pair's A and B halves. */
RG_VNNI_INLINE __m512i pair_spread(const uint8_t *p) {
    const __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 1, 0, 0));
}

/* The 8 blocks' sums from the 4 pairs' vpdpbusd lanes, each lane scaled by its scale word first: lanes
 * hold sums of 4 products below 2^15 in magnitude (|code| <= 32, |x| <= 128), so a pack to i16 and a
 * vpmaddwd scale them and add neighbours in one step, exactly. Scale words: s01 holds per 128-bit lane k
 * of pairs 0, 1 the scale of pair 0's lane-k group four times, then pair 1's (s23 likewise); lane k of a
 * pair is A's first half, B's first half, A's second half, B's second half. Result: [block 0 .. block 7]
 * (pair p's A is block 2p, B is 2p + 1). */
RG_VNNI_INLINE __m256i scaled_block_sums(const __m512i *lanes, __m512i s01, __m512i s23) {
    const __m512i m01 = _mm512_madd_epi16(_mm512_packs_epi32(lanes[0], lanes[1]), s01);
    const __m512i m23 = _mm512_madd_epi16(_mm512_packs_epi32(lanes[2], lanes[3]), s23);
    /* 128-bit lane 0: halves of A's (blocks 0, 2 | 4, 6), lane 1: B's (1, 3 | 5, 7), two dwords each */
    const __m256i n01 = _mm256_add_epi32(_mm512_castsi512_si256(m01), _mm512_extracti64x4_epi64(m01, 1));
    const __m256i n23 = _mm256_add_epi32(_mm512_castsi512_si256(m23), _mm512_extracti64x4_epi64(m23, 1));
    const __m256i h = _mm256_hadd_epi32(n01, n23); /* [0, 2, 4, 6 | 1, 3, 5, 7] */
    return _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* vpermw indices making those scale words from a row of scale words: Q4_K / Q5_K's 8 (a block's one
 * scale, A = block 2p, B = 2p + 1, for both halves), Q6_K's 16 (the half's: A's first 4p, B's first 4p + 2,
 * A's second 4p + 1, B's second 4p + 3). */
#define RG_W8(a, b) a, a, a, a, b, b, b, b
static const uint16_t SCALE_IDX[4][32] = {
    {RG_W8(0, 2), RG_W8(1, 3), RG_W8(0, 2), RG_W8(1, 3)},       /* Q4_K / Q5_K, pairs 0, 1 */
    {RG_W8(4, 6), RG_W8(5, 7), RG_W8(4, 6), RG_W8(5, 7)},       /* pairs 2, 3 */
    {RG_W8(0, 4), RG_W8(2, 6), RG_W8(1, 5), RG_W8(3, 7)},       /* Q6_K, pairs 0, 1 */
    {RG_W8(8, 12), RG_W8(10, 14), RG_W8(9, 13), RG_W8(11, 15)}, /* pairs 2, 3 */
};
#undef RG_W8
RG_VNNI_INLINE __m512i scale_words(__m512i words, int which) {
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(SCALE_IDX[which]), words);
}

/* The activation row's codes of pair p (blocks 2p, 2p + 1) of super-block sb. */
RG_VNNI_INLINE __m512i act_pair(const uint8_t *xr, int64_t sb, int p) {
    return _mm512_loadu_si512(xr + 64 * (4 * sb + p));
}

/* Asks for the weight bytes RG_KQ_PREFETCH ahead of the super-block at w (bytes long; past a row's end
 * that is the next row's, the next call's data). The in-order f32 additions are a long dependency chain
 * that fills the out-of-order window, so the loads of the weights alone go out too late to keep memory
 * busy: a 1.5B Q4_K_M token took 89 ms without this, 44 ms with it (Sapphire Rapids, 2 threads, A/B
 * alternating three times; 1024 and 2048 bytes ahead helped less, 8192 no more). */
#define RG_KQ_PREFETCH 4096
RG_VNNI_INLINE void prefetch_ahead(const uint8_t *w, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(w + RG_KQ_PREFETCH + o), _MM_HINT_T0);
}

/* Adds the 8 f32 terms to *sum in block order (the scalar kernel's order). */
RG_VNNI_INLINE float add_in_order(float sum, __m256 terms) {
    float t[8];
    _mm256_storeu_ps(t, terms);
    for (int b = 0; b < 8; b++) sum += t[b];
    return sum;
}

/* Q4_K / Q5_K: one weight row against nx (1..RG_QDOT_MAX_NX) activation rows x + j * ldx. */
RG_VNNI_INLINE void dot_q45_k(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out,
                              const int five_bits) {
    const int64_t nb = n / RG_QK;
    const int bytes = five_bits ? RG_Q5_K_BYTES : RG_Q4_K_BYTES, qs = five_bits ? RG_Q5_K_QS : RG_Q4_K_QS;
    const size_t d_off = rg_act_d_off(nb), sum_off = rg_act_sum_off(nb);
    float sum[RG_QDOT_MAX_NX] = {0};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += bytes) {
        prefetch_ahead(w, bytes);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w)));
        const __m256 dmin = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w + 2)));
        /* the eight 6-bit scales and mins (rg_kquant_scale_min), four bytes at a time */
        const uint32_t a = rg_load_u32(w + RG_QK_SCALES), b = rg_load_u32(w + RG_QK_SCALES + 4);
        const uint32_t c = rg_load_u32(w + RG_QK_SCALES + 8);
        const uint64_t sc8 = (a & 0x3F3F3F3Fu) | (uint64_t)((c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u)) << 32;
        const uint64_t m8 = (b & 0x3F3F3F3Fu) | (uint64_t)(((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u)) << 32;
        const __m512i sc_words = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
        const __m512i s01 = scale_words(sc_words, 0), s23 = scale_words(sc_words, 1);
        const __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m8));
        __m512i u[4];
        /* Q5_K's fifth bits: bit 2p of qh for A, 2p + 1 for B; B's lanes shifted by one so both test bit 2p
         * (what the 16-bit shift moves into a byte's bit 7 is never tested) */
        __m512i qh = _mm512_setzero_si512();
        if (five_bits) {
            const __m512i h = pair_spread(w + RG_Q5_K_QH);
            qh = _mm512_mask_blend_epi64(0xCC, h, _mm512_srli_epi16(h, 1));
        }
        for (int p = 0; p < 4; p++) {
            const __m512i v = pair_spread(w + qs + 32 * p); /* A: the low nibbles, B: the high ones */
            u[p] = _mm512_and_si512(_mm512_mask_blend_epi64(0xCC, v, _mm512_srli_epi16(v, 4)), _mm512_set1_epi8(0x0F));
            if (five_bits) {
                const __mmask64 set = _mm512_test_epi8_mask(qh, _mm512_set1_epi8((char)(1 << (2 * p))));
                u[p] = _mm512_mask_add_epi8(u[p], set, u[p], _mm512_set1_epi8(16));
            }
        }
        for (int j = 0; j < nx; j++) {
            const uint8_t *xr = x + (size_t)j * ldx;
            __m512i lanes[4];
            for (int p = 0; p < 4; p++) lanes[p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[p], act_pair(xr, sb, p));
            const __m256i sc_isum = scaled_block_sums(lanes, s01, s23);
            const __m256 dx = _mm256_loadu_ps((const float *)(xr + d_off) + 8 * sb);
            /* m * sum x: |sum x| <= 4096 sits in the low word of its dword (the high word is its sign, times 0) */
            const __m256i m_xs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xr + sum_off + 32 * sb)), m);
            __m256 plus = _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sc_isum));
            __m256 minus = _mm256_mul_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(m_xs));
            /* two rounded products, then the difference, as in the scalar kernel: no fused multiply-subtract */
            __asm__("" : "+v"(plus), "+v"(minus));
            sum[j] = add_in_order(sum[j], _mm256_sub_ps(plus, minus));
        }
    }
    for (int j = 0; j < nx; j++) out[j] = sum[j];
}

/* Q6_K: as above; the lanes of pair p are block 2p's first half, 2p + 1's first, 2p's second, 2p + 1's
 * second, 4 lanes each, so the scales are [s4p, s4p+2, s4p+1, s4p+3], each 4 times. */
RG_VNNI_INLINE void dot_q6_k(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, int nx, float *out) {
    const int64_t nb = n / RG_QK;
    const size_t d_off = rg_act_d_off(nb);
    const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30), k32 = _mm512_set1_epi8(32);
    const __m512i two = _mm512_set1_epi16(2), four = _mm512_set1_epi16(4);
    float sum[RG_QDOT_MAX_NX] = {0};
    for (int64_t sb = 0; sb < n / RG_QK_K; sb++, w += RG_Q6_K_BYTES) {
        prefetch_ahead(w, RG_Q6_K_BYTES);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(rg_load_u16(w + RG_Q6_K_D)));
        const __m512i sc_words = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + RG_Q6_K_SCALES))));
        const __m512i s01 = scale_words(sc_words, 2), s23 = scale_words(sc_words, 3);
        __m512i u[4];
        for (int p = 0; p < 4; p++) {
            const int h = p / 2, odd = p & 1; /* sub-blocks 2p, 2p + 1: groups g = 2 odd, 2 odd + 1 of half h */
            const __m512i l64 = _mm512_loadu_si512(w + RG_Q6_K_QL + 64 * h);
            const __m512i ql = _mm512_shuffle_i64x2(l64, l64, _MM_SHUFFLE(3, 1, 2, 0));
            const __m512i lo = _mm512_and_si512(odd ? _mm512_srli_epi16(ql, 4) : ql, low4);
            /* high bits 2g, 2g + 1 (g = 2 odd for A's lanes, 2 odd + 1 for B's) moved to bits 4, 5: A's by
             * 4 - 4 odd to the left, B's by 2 - 4 odd (even pairs shift left, odd ones right; what a 16-bit
             * shift moves across into bits 4, 5 of a byte comes from that byte) */
            const __m512i qh = pair_spread(w + RG_Q6_K_QH + 32 * h);
            const __m512i hi = odd ? _mm512_srlv_epi16(qh, _mm512_mask_blend_epi64(0xCC, _mm512_setzero_si512(), two))
                                   : _mm512_sllv_epi16(qh, _mm512_mask_blend_epi64(0xCC, four, two));
            u[p] = _mm512_ternarylogic_epi32(lo, hi, bits45, 0xF8); /* lo | (hi & bits45) */
        }
        for (int j = 0; j < nx; j++) {
            const uint8_t *xr = x + (size_t)j * ldx;
            __m512i lanes[4];
            for (int p = 0; p < 4; p++) {
                const __m512i xv = act_pair(xr, sb, p);
                const __m512i off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k32, xv); /* 32 sum x */
                const __m512i qx = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[p], xv);
                lanes[p] = _mm512_sub_epi32(qx, off);
            }
            const __m256i t = scaled_block_sums(lanes, s01, s23);
            const __m256 dx = _mm256_loadu_ps((const float *)(xr + d_off) + 8 * sb);
            sum[j] = add_in_order(sum[j], _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(t)));
        }
    }
    for (int j = 0; j < nx; j++) out[j] = sum[j];
}

RG_VNNI static float vec_dot_q4_k_vnni(int64_t n, const void *w, const void *x) {
    float r;
    dot_q45_k(n, w, x, 0, 1, &r, 0);
    return r;
}
RG_VNNI static float vec_dot_q5_k_vnni(int64_t n, const void *w, const void *x) {
    float r;
    dot_q45_k(n, w, x, 0, 1, &r, 1);
    return r;
}
RG_VNNI static float vec_dot_q6_k_vnni(int64_t n, const void *w, const void *x) {
    float r;
    dot_q6_k(n, w, x, 0, 1, &r);
    return r;
}
RG_VNNI static void vec_dot_q4_k_xn_vnni(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    dot_q45_k(n, w, x, ldx, nx, out, 0);
}
RG_VNNI static void vec_dot_q5_k_xn_vnni(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    dot_q45_k(n, w, x, ldx, nx, out, 1);
}
RG_VNNI static void vec_dot_q6_k_xn_vnni(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {
    dot_q6_k(n, w, x, ldx, nx, out);
}

void rg_kernels_fill_kquant_avx512(rg_kernel_table *k, int level, unsigned features) {
    if (level < 2 || !(features & RG_CPU_AVX512_VNNI)) return; /* no AVX512_VNNI: keep the AVX2 kernels */
    k->vec_dot_q4_k = vec_dot_q4_k_vnni;
    k->vec_dot_q5_k = vec_dot_q5_k_vnni;
    k->vec_dot_q6_k = vec_dot_q6_k_vnni;
    k->vec_dot_q4_k_xn = vec_dot_q4_k_xn_vnni;
    k->vec_dot_q5_k_xn = vec_dot_q5_k_xn_vnni;
    k->vec_dot_q6_k_xn = vec_dot_q6_k_xn_vnni;
}

#else

void rg_kernels_fill_kquant_avx512(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}

#endif
