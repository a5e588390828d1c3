/* AVX-512 kernels of the block-quantized types for CPUs with AVX512_VNNI (Ice Lake, Sapphire Rapids,
 * Zen 4, ...), against activation rows in the RG_TYPE_Q8_ACT layout (quant/quant.h). Without VNNI the
 * AVX2 entries stay in the table.
 *
 * A pair of weight blocks A, B unpacks to two vectors of 32 codes, [A0..15 | B0..15] (the low nibbles)
 * and [A16..31 | B16..31] (the high nibbles), which is how the activation row stores the pair, so two
 * vpdpbusd against two 32-byte loads give the pair's exact partial sums: i32 lanes 0-3 block A, 4-7
 * block B. vpdpbusd multiplies unsigned by signed bytes, so the codes stay unsigned and the _0 types'
 * offset comes out in integers per block: sum (u - off) x = sum u x - off * sum x (Q8_0's signed codes
 * are made unsigned by xor 0x80, off 128; the _1 types have no offset).
 *
 * Eight pairs make a group of 16 blocks: in-lane unpack-and-add trees reduce them to one i32 per block
 * and the scales of all 16 blocks are applied at once in a 512-bit vector (the weights' d and m read by
 * scalar loads, the activation row's arrays by plain loads): acc += float(isum - off * sum_x) *
 * (d_w * d_x) (+ m_w * s_x). The dot products stay at 256 bits: on Zen 4 a 512-bit op costs two 256-bit
 * ones and cross-lane shuffles more, and the in-lane version measured faster (about 0.65 ns per Q4_0
 * block there, enough for one core to keep up with memory). */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "k_quant_vnni.h"

/* The weights of one group: up to 8 pairs' codes, [A0..15 | B0..15] in lo and [A16..31 | B16..31] in hi
 * (the order of the two 32-byte halves of an activation pair; an odd last block as [A0..15 | A16..31] in
 * lo alone), and the blocks' d and m as floats. Unpacked once, used against every activation row. */
typedef struct {
    __m256i lo[8], hi[8];
    __m512 dw, mw;
} wgroup;

RG_VNNI_INLINE void pair_codes(const uint8_t *wa, const qtype t, __m256i *lo, __m256i *hi) {
    const uint8_t *wb = wa + t.wbytes;
    if (t.kind == 2) {
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        *lo = _mm256_xor_si256(_mm256_set_m128i(load128(wb + t.qs), load128(wa + t.qs)), flip);
        *hi = _mm256_xor_si256(_mm256_set_m128i(load128(wb + t.qs + 16), load128(wa + t.qs + 16)), flip);
        return;
    }
    const __m256i q = _mm256_set_m128i(load128(wb + t.qs), load128(wa + t.qs));
    *lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
    if (t.kind == 1) {
        const uint32_t a = rg_load_u32(wa + t.qh), b = rg_load_u32(wb + t.qh);
        *lo = _mm256_mask_add_epi8(*lo, (__mmask32)((a & 0xFFFFu) | (b << 16)), *lo, _mm256_set1_epi8(16));
        *hi = _mm256_mask_add_epi8(*hi, (__mmask32)((a >> 16) | (b & 0xFFFF0000u)), *hi, _mm256_set1_epi8(16));
    }
}

/* np pairs from pair p and, with odd, the plain last block after them (nbk = 2 np + odd blocks). */
RG_VNNI_INLINE void load_group(const uint8_t *w, int64_t p, const int np, const int odd, int64_t nb, const qtype t,
                               wgroup *g) {
    const int nbk = 2 * np + odd;
    for (int i = 0; i < np; i++) pair_codes(w + 2 * (p + i) * t.wbytes, t, &g->lo[i], &g->hi[i]);
    if (odd) g->lo[np] = single_codes(w + (nb - 1) * t.wbytes, t);
    /* d (low half) and m (high half) of each block: one dword per block, by scalar loads (a vpgatherdd
     * is slower on Zen 4 and no faster elsewhere for 16 dwords) */
    uint32_t dm[16] = {0};
    for (int i = 0; i < nbk; i++) dm[i] = rg_load_u32(w + (2 * p + i) * t.wbytes);
    const __m512i v = _mm512_loadu_si512(dm);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    if (t.has_min) g->mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
}

/* One i32 per block for the 4 pairs r[0..3] (8 blocks), in block order; in-lane shuffles only. */
RG_VNNI_INLINE __m256i reduce8(const __m256i r[4]) {
    const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(r[0], r[1]), _mm256_unpackhi_epi32(r[0], r[1]));
    const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(r[2], r[3]), _mm256_unpackhi_epi32(r[2], r[3]));
    /* 128-bit lane 0: blocks A of pairs 0..3, lane 1: blocks B */
    const __m256i v = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* acc += the group's blocks against the activation row xr (blocks from b0 = 2p). */
RG_VNNI_INLINE __m512 dot_group(const wgroup *g, const uint8_t *xr, int64_t p, const int np, const int odd,
                                int64_t nb, const qtype t, __m512 acc) {
    const int64_t b0 = 2 * p;
    const int nbk = 2 * np + odd;
    __m256i r[8];
    for (int i = 0; i < 8; i++) {
        if (i < np) {
            const int8_t *xq = (const int8_t *)xr + 64 * (p + i);
            const __m256i s =
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), g->lo[i], _mm256_loadu_si256((const __m256i *)xq));
            r[i] = _mm256_dpbusd_epi32(s, g->hi[i], _mm256_loadu_si256((const __m256i *)(xq + 32)));
        } else if (odd && i == np) {
            /* block 2 np of the group is pair np's block A: its 8 lanes summed into lanes 0-3 */
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), g->lo[i],
                                                  _mm256_loadu_si256((const __m256i *)(xr + 32 * (nb - 1))));
            r[i] = _mm256_castsi128_si256(_mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
        } else {
            r[i] = _mm256_setzero_si256();
        }
    }
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(reduce8(r)), reduce8(r + 4), 1);
    const __mmask16 m = (__mmask16)((1u << nbk) - 1u);
    if (t.off) {
        const __m512i xs = _mm512_maskz_loadu_epi32(m, xr + rg_act_sum_off(nb) + 4 * b0);
        v = _mm512_sub_epi32(v, _mm512_slli_epi32(xs, t.off == 8 ? 3 : t.off == 16 ? 4 : 7));
    }
    const __m512 dx = _mm512_maskz_loadu_ps(m, xr + rg_act_d_off(nb) + 4 * b0);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(g->dw, dx), acc);
    if (t.has_min) acc = _mm512_fmadd_ps(g->mw, _mm512_maskz_loadu_ps(m, xr + rg_act_s_off(nb) + 4 * b0), acc);
    return acc;
}

/* A full group of 8 pairs for several activation rows: each pair's codes in one 512-bit vector
 * [A0..15 | B0..15 | A16..31 | B16..31] (the activation pair's 64 bytes in the same order), unpacked
 * once and used against every row. */
typedef struct {
    __m512i c[8];
    __m512 dw;
} wgroup8;

RG_VNNI_INLINE void load_group8(const uint8_t *w, int64_t p, const qtype t, wgroup8 *g) {
    for (int i = 0; i < 8; i++) {
        __m256i lo, hi;
        pair_codes(w + 2 * (p + i) * t.wbytes, t, &lo, &hi);
        g->c[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    uint32_t dm[16];
    for (int i = 0; i < 16; i++) dm[i] = rg_load_u32(w + (2 * p + i) * t.wbytes);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_loadu_si512(dm)));
}

/* In each 128-bit lane: dwords 0, 2 partial sums of a's four, dwords 1, 3 of b's. */
RG_VNNI_INLINE __m512i pair_sum32(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

/* Two pair_sum32 results to each lane's totals of their four inputs, in input order (a's two, b's two);
 * a blend and one shuffle instead of two (port 5, the only 512-bit shuffle port, is the busy one). */
RG_VNNI_INLINE __m512i pair_sum64(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_mask_blend_epi64(0xAA, a, b), _mm512_alignr_epi8(b, a, 8));
}

/* dot_group's result for a full group, one 512-bit vpdpbusd per pair: the same integers per block (sums
 * of integers are exact whatever their order), the same f32 steps, so bit-identical to it. */
RG_VNNI_INLINE __m512 dot_group8(const wgroup8 *g, const uint8_t *xr, int64_t p, int64_t nb, const qtype t,
                                 __m512 acc) {
    __m512i r[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), g->c[i],
                                   _mm512_loadu_si512((const void *)(xr + 64 * (p + i))));
    /* u0, u1: in 128-bit lane l (A low half, B low, A high, B high), dword i the lane's sum for pair
     * i of pairs 0-3 (u0) and 4-7 (u1) */
    const __m512i u0 = pair_sum64(pair_sum32(r[0], r[1]), pair_sum32(r[2], r[3]));
    const __m512i u1 = pair_sum64(pair_sum32(r[4], r[5]), pair_sum32(r[6], r[7]));
    /* block 2i is pair i's A (lanes 0 + 2), block 2i + 1 its B (lanes 1 + 3); indices >= 16 are u1's */
    const __m512i lo = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 16, 20, 17, 21, 18, 22, 19, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    __m512i v = _mm512_add_epi32(_mm512_permutex2var_epi32(u0, lo, u1), _mm512_permutex2var_epi32(u0, hi, u1));
    const int64_t b0 = 2 * p;
    if (t.off) {
        const __m512i xs = _mm512_loadu_si512(xr + rg_act_sum_off(nb) + 4 * b0);
        v = _mm512_sub_epi32(v, _mm512_slli_epi32(xs, t.off == 8 ? 3 : t.off == 16 ? 4 : 7));
    }
    const __m512 dx = _mm512_loadu_ps(xr + rg_act_d_off(nb) + 4 * b0);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(g->dw, dx), acc);
}

/* Bytes ahead of the mat-vec loop that each group asks the cache for. The 4- and 5-bit kernels compute
 * for about half the time their bytes take to arrive, and the hardware prefetcher alone lets the stream
 * stall behind that work: asking 4 KB ahead made RWKV-4/7 1.5B Q4_0 and Q5_1 per-token evals 5-7%
 * faster (A/B on the same pages; 1 KB less, 8 KB the same). Q8_0 (less work per byte) and F16 measured
 * slower with it, so they do without. Prefetches never fault: reaching past the matrix is fine. */
#define RG_QDOT_PREFETCH 4096
#ifndef RG_QDOT_XN_PREFETCH
#define RG_QDOT_XN_PREFETCH 4096
#endif
/* The mat-vec loop: each pair's codes go straight into vpdpbusd (keeping a whole group's codes for later
 * costs registers the single row does not need). */
RG_VNNI_INLINE __m512 dot_group_streaming(const uint8_t *w, const uint8_t *x, int64_t p, int64_t nb, const qtype t,
                                          __m512 acc) {
    __m256i r[8];
    if (t.kind != 2) /* Q8_0 streams fine without (asking measured 5% slower) */
        for (int i = 0; i < 16 * t.wbytes; i += 64)
            _mm_prefetch((const char *)w + 2 * p * t.wbytes + RG_QDOT_PREFETCH + i, _MM_HINT_T0);
    for (int i = 0; i < 8; i++) {
        __m256i lo, hi;
        pair_codes(w + 2 * (p + i) * t.wbytes, t, &lo, &hi);
        const int8_t *xq = (const int8_t *)x + 64 * (p + i);
        const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i *)xq));
        r[i] = _mm256_dpbusd_epi32(s, hi, _mm256_loadu_si256((const __m256i *)(xq + 32)));
    }
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(reduce8(r)), reduce8(r + 4), 1);
    const int64_t b0 = 2 * p;
    if (t.off) {
        const __m512i xs = _mm512_loadu_si512(x + rg_act_sum_off(nb) + 4 * b0);
        v = _mm512_sub_epi32(v, _mm512_slli_epi32(xs, t.off == 8 ? 3 : t.off == 16 ? 4 : 7));
    }
    uint32_t dm[16];
    for (int i = 0; i < 16; i++) dm[i] = rg_load_u32(w + (b0 + i) * t.wbytes);
    const __m512i g = _mm512_loadu_si512(dm);
    const __m512 dx = _mm512_loadu_ps(x + rg_act_d_off(nb) + 4 * b0);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)), dx), acc);
    if (t.has_min) {
        const __m512 mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
        acc = _mm512_fmadd_ps(mw, _mm512_loadu_ps(x + rg_act_s_off(nb) + 4 * b0), acc);
    }
    return acc;
}

/* One weight row against NX activation rows x + j * ldx, each group of weights unpacked once. */
RG_VNNI_INLINE void dot_rows(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, const int nx, float *out,
                             const qtype t) {
    const int64_t nb = n / RG_QK, npairs = nb / 2;
    __m512 acc[RG_QDOT_MAX_NX];
    for (int j = 0; j < nx; j++) acc[j] = _mm512_setzero_ps();
    wgroup g;
    wgroup8 g8;
    int64_t p = 0;
    if (nx == 1) {
        for (; p + 8 <= npairs; p += 8) acc[0] = dot_group_streaming(w, x, p, nb, t, acc[0]);
    }
    for (; p + 8 <= npairs; p += 8) {
        /* several columns of f32 work per group fill the out-of-order window and the loads of the next
         * groups stall behind it: ask for the weights ahead (Q8_0 included, unlike the single row) */
        for (int i = 0; i < 16 * t.wbytes; i += 64)
            _mm_prefetch((const char *)w + 2 * p * t.wbytes + RG_QDOT_XN_PREFETCH + i, _MM_HINT_T0);
        if (!t.has_min) {
            load_group8(w, p, t, &g8);
            for (int j = 0; j < nx; j++) acc[j] = dot_group8(&g8, x + (size_t)j * ldx, p, nb, t, acc[j]);
            continue;
        }
        load_group(w, p, 8, 0, nb, t, &g);
        for (int j = 0; j < nx; j++) acc[j] = dot_group(&g, x + (size_t)j * ldx, p, 8, 0, nb, t, acc[j]);
    }
    if (p < npairs || (nb & 1)) { /* fewer than 8 pairs left, and maybe an odd last block */
        const int np = (int)(npairs - p), odd = (int)(nb & 1);
        load_group(w, p, np, odd, nb, t, &g);
        for (int j = 0; j < nx; j++) acc[j] = dot_group(&g, x + (size_t)j * ldx, p, np, odd, nb, t, acc[j]);
    }
    for (int j = 0; j < nx; j++) out[j] = rg_qdot_reduce16(acc[j]);
}

#define RG_DEFINE_DOT(name, ...)                                                                                  \
    RG_VNNI static float name##_vnni(int64_t n, const void *w, const void *x) {                                   \
        const qtype t = {__VA_ARGS__};                                                                            \
        float r;                                                                                                  \
        dot_rows(n, w, x, 0, 1, &r, t);                                                                           \
        return r;                                                                                                 \
    }                                                                                                             \
    RG_VNNI static void name##_xn_vnni(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) { \
        const qtype t = {__VA_ARGS__};                                                                            \
        RG_QDOT_XN_SWITCH(dot_rows, n, w, x, ldx, nx, out, t);                                                     \
    }
/*            wbytes          qs          qh       kind off has_min */
RG_DEFINE_DOT(vec_dot_q4_0, RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0)
RG_DEFINE_DOT(vec_dot_q4_1, RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1)
RG_DEFINE_DOT(vec_dot_q5_0, RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0)
RG_DEFINE_DOT(vec_dot_q5_1, RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1)
RG_DEFINE_DOT(vec_dot_q8_0, RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 128, 0)
#undef RG_DEFINE_DOT

void rg_kernels_fill_quant_avx512(rg_kernel_table *k, int level, unsigned features) {
    if (level < 2 || !(features & RG_CPU_AVX512_VNNI)) return; /* no AVX512_VNNI: keep the AVX2 kernels */
    k->vec_dot_q4_0 = vec_dot_q4_0_vnni;
    k->vec_dot_q4_1 = vec_dot_q4_1_vnni;
    k->vec_dot_q5_0 = vec_dot_q5_0_vnni;
    k->vec_dot_q5_1 = vec_dot_q5_1_vnni;
    k->vec_dot_q8_0 = vec_dot_q8_0_vnni;
    k->vec_dot_q4_0_xn = vec_dot_q4_0_xn_vnni;
    k->vec_dot_q4_1_xn = vec_dot_q4_1_xn_vnni;
    k->vec_dot_q5_0_xn = vec_dot_q5_0_xn_vnni;
    k->vec_dot_q5_1_xn = vec_dot_q5_1_xn_vnni;
    k->vec_dot_q8_0_xn = vec_dot_q8_0_xn_vnni;
}

#else
void rg_kernels_fill_quant_avx512(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
