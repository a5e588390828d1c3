/* AVX2 kernels of the block-quantized types (target attributes, like k_vec_avx2.c), against activation rows
 * in the RG_TYPE_Q8_ACT layout (quant/quant.h).
 *
 * A pair of weight blocks A, B unpacks to two vectors of codes, [A0..15, B0..15] and [A16..31, B16..31],
 * which is how the activation row stores the pair, so each multiplies one 32-byte load. maddubs (u8 x s8
 * -> i16 pairs) and madd (-> i32) keep the sums exact. Four pairs make a group of 8 blocks: three hadds
 * reduce their lanes to one i32 per block, and the scales of all 8 blocks are applied at once:
 * acc += float(isum - off * sum_x) * (d_w * d_x) (+ m_w * s_x). */
#include "kernels.h"
#include "../quant/quant.h"


#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* Parameters of a weight type, compile-time constants after inlining.
 * kind: 0 = 4-bit codes, 1 = 5-bit codes (fifth bit in qh), 2 = int8 codes (Q8_0). */
typedef struct {
    int wbytes, qs, qh, kind, off, has_min;
} qtype;

RG_AVX2_INLINE float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

RG_AVX2_INLINE int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

RG_AVX2_INLINE __m128i load128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }

/* Bit e of m -> 0x10 in byte e, 0 elsewhere (an odd last block's fifth bits). */
RG_AVX2_INLINE __m256i bits_to_bytes(uint32_t m) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), spread);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel), _mm256_set1_epi8(0x10));
}

/* The fifth bits of a pair, a = A's qh and b = B's: 0x10 in the bytes of lo = [A0..15 | B0..15] and
 * hi = [A16..31 | B16..31] whose bit is set. One broadcast feeds both byte spreads. */
RG_AVX2_INLINE void pair_bits(uint32_t a, uint32_t b, __m256i *lo, __m256i *hi) {
    const __m256i v = _mm256_set1_epi64x((long long)((uint64_t)a | ((uint64_t)b << 32)));
    /* byte k of lo takes bit k%8 of source byte: A's bytes 0, 1 (lane 0), B's bytes 4, 5 (lane 1) */
    const __m256i spread_lo = _mm256_set_epi64x(0x0505050505050505LL, 0x0404040404040404LL, 0x0101010101010101LL, 0);
    const __m256i spread_hi = _mm256_set_epi64x(0x0707070707070707LL, 0x0606060606060606LL, 0x0303030303030303LL,
                                                0x0202020202020202LL);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i bit = _mm256_set1_epi8(0x10);
    *lo = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread_lo), sel), sel), bit);
    *hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread_hi), sel), sel), bit);
}

/* The codes of the weight pair at wa: lo = [A0..15 | B0..15], hi = [A16..31 | B16..31], the order of the
 * two 32-byte halves of an activation pair. Unsigned 0..31 for the 4/5-bit types, signed for Q8_0. */
RG_AVX2_INLINE void pair_codes(const uint8_t *wa, const qtype t, __m256i *lo, __m256i *hi) {
    const uint8_t *wb = wa + t.wbytes;
    if (t.kind == 2) {
        *lo = _mm256_set_m128i(load128(wb + t.qs), load128(wa + t.qs));
        *hi = _mm256_set_m128i(load128(wb + t.qs + 16), load128(wa + t.qs + 16));
        return;
    }
    const __m256i v = _mm256_set_m128i(load128(wb + t.qs), load128(wa + t.qs));
    *lo = _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
    if (t.kind == 1) {
        __m256i blo, bhi;
        pair_bits(rg_load_u32(wa + t.qh), rg_load_u32(wb + t.qh), &blo, &bhi);
        *lo = _mm256_or_si256(*lo, blo);
        *hi = _mm256_or_si256(*hi, bhi);
    }
}

/* Exact i32 partial sums (lanes 0-3 block A, 4-7 block B) of a pair's codes against its activations. */
RG_AVX2_INLINE __m256i pair_dot(__m256i lo, __m256i hi, const int8_t *xq, const qtype t) {
    const __m256i x0 = _mm256_loadu_si256((const __m256i *)xq), x1 = _mm256_loadu_si256((const __m256i *)(xq + 32));
    const __m256i ones = _mm256_set1_epi16(1);
    if (t.kind == 2) {
        /* |w| as unsigned, the sign moved onto x (the activation codes are never -128 for finite input);
         * each half on its own, as two of these i16 sums could reach 2^15 */
        const __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(x0, lo));
        const __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(hi, hi), _mm256_sign_epi8(x1, hi));
        return _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
    }
    /* codes <= 31: both halves' pair sums fit one i16 (2 * 2 * 31 * 127 < 2^15) */
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1)), ones);
}

/* The odd last block (stored plainly, [A0..15 | A16..31]): exact partial sums in 8 lanes. */
RG_AVX2_INLINE __m256i single_dot(const uint8_t *wa, const int8_t *xq, const qtype t) {
    const __m256i xv = _mm256_loadu_si256((const __m256i *)xq);
    if (t.kind == 2) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(wa + t.qs));
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(xv, u)),
                                 _mm256_set1_epi16(1));
    }
    const __m128i v = load128(wa + t.qs);
    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
    if (t.kind == 1) u = _mm256_or_si256(u, bits_to_bytes(rg_load_u32(wa + t.qh)));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), _mm256_set1_epi16(1));
}

/* One i32 per block of 4 pairs (8 blocks) in block order. */
RG_AVX2_INLINE __m256i reduce8(const __m256i r[4]) {
    /* hadd of hadds: lanes hold blocks [0, 2, 4, 6, 1, 3, 5, 7] of the group */
    const __m256i v = _mm256_hadd_epi32(_mm256_hadd_epi32(r[0], r[1]), _mm256_hadd_epi32(r[2], r[3]));
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* A group of 4 pairs (8 blocks) of one weight row: codes and f16 scales, unpacked once for all rows x. */
typedef struct {
    __m256i lo[4], hi[4];
    __m256 dw, mw;
} wgroup;

RG_AVX2_INLINE __m256 half8(const uint8_t *w, int field, const int nbk, const qtype t) {
    uint16_t h[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < nbk; i++) h[i] = rg_load_u16(w + i * t.wbytes + field);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* d and m (adjacent f16 fields at the start of a block) of 8 full blocks: one 32-bit load per block, then
 * one shuffle and one permute part them into [d0..d7 | m0..m7] (half the loads of two half8 calls). */
RG_AVX2_INLINE void dm8(const uint8_t *w, const qtype t, __m256 *dw, __m256 *mw) {
    __m128i a = _mm_cvtsi32_si128((int)rg_load_u32(w)), b = _mm_cvtsi32_si128((int)rg_load_u32(w + 4 * t.wbytes));
    a = _mm_insert_epi32(a, (int)rg_load_u32(w + t.wbytes), 1);
    b = _mm_insert_epi32(b, (int)rg_load_u32(w + 5 * t.wbytes), 1);
    a = _mm_insert_epi32(a, (int)rg_load_u32(w + 2 * t.wbytes), 2);
    b = _mm_insert_epi32(b, (int)rg_load_u32(w + 6 * t.wbytes), 2);
    a = _mm_insert_epi32(a, (int)rg_load_u32(w + 3 * t.wbytes), 3);
    b = _mm_insert_epi32(b, (int)rg_load_u32(w + 7 * t.wbytes), 3);
    /* per 128-bit lane [d d d d | m m m m], then the lanes' quarters reordered to [d0-3 d4-7 m0-3 m4-7] */
    const __m256i part = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13,
                                          2, 3, 6, 7, 10, 11, 14, 15);
    const __m256i v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_set_m128i(b, a), part), _MM_SHUFFLE(3, 1, 2, 0));
    *dw = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    *mw = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
}

/* The f16 d of 8 full Q4_0 blocks (18 bytes each: d at 18 b) from the four 32-byte quarters of the group's
 * first 128 bytes, which hold d of blocks 2j and 2j + 1 at bytes 4j and 4j + 18 of quarter j: the low half
 * of dword j and the high half of dword j + 4. Three dword blends gather them into one vector whose low
 * lane has d0, d2, d4, d6 at halfwords 0, 2, 4, 6 and whose high lane has d1, d3, d5, d7 at 1, 3, 5, 7,
 * so one halfword blend of the two lanes gives d0..d7 in order. Half the port-5 work of eight scalar
 * loads moved into a vector one at a time (which bounded the mat-vec loop); the same values. */
RG_AVX2_INLINE __m256 d8_q4_0(const uint8_t *w) {
    const __m256i q0 = _mm256_loadu_si256((const __m256i *)w), q1 = _mm256_loadu_si256((const __m256i *)(w + 32));
    const __m256i q2 = _mm256_loadu_si256((const __m256i *)(w + 64)), q3 = _mm256_loadu_si256((const __m256i *)(w + 96));
    const __m256i v = _mm256_blend_epi32(_mm256_blend_epi32(q0, q1, 0x22), _mm256_blend_epi32(q2, q3, 0x88), 0xCC);
    return _mm256_cvtph_ps(_mm_blend_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1), 0xAA));
}

/* d of the 8 full blocks from w (and m, for the types with one): in block order. */
RG_AVX2_INLINE void dm8_any(const uint8_t *w, const qtype t, __m256 *dw, __m256 *mw) {
    if (t.has_min) {
        dm8(w, t, dw, mw);
    } else if (t.wbytes == RG_Q4_0_BYTES && t.kind == 0) {
        *dw = *mw = d8_q4_0(w);
    } else {
        *dw = *mw = half8(w, 0, 8, t);
    }
}

RG_AVX2_INLINE void load_group(const uint8_t *w, int64_t b0, const int np, const qtype t, wgroup *g) {
    for (int p = 0; p < np; p++) pair_codes(w + (b0 + 2 * p) * t.wbytes, t, &g->lo[p], &g->hi[p]);
    if (np == 4) {
        dm8_any(w + b0 * t.wbytes, t, &g->dw, &g->mw);
        return;
    }
    g->dw = half8(w + b0 * t.wbytes, 0, 2 * np, t);
    g->mw = t.has_min ? half8(w + b0 * t.wbytes, 2, 2 * np, t) : g->dw;
}

RG_AVX2_INLINE __m256i mask8(int nbk) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(nbk), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* acc += np pairs' exact sums r (blocks from b0) scaled by the weights' dw, mw and the row x's arrays. */
RG_AVX2_INLINE __m256 scale_group(const __m256i r[4], __m256 dw, __m256 mw, const uint8_t *x, int64_t nb, int64_t b0,
                                  const int np, const qtype t, __m256 acc) {
    __m256i v = reduce8(r);
    const int full = np == 4;
    const __m256i m = mask8(2 * np);
    const int *xs_p = (const int *)(x + rg_act_sum_off(nb) + 4 * b0);
    const float *dx_p = (const float *)(x + rg_act_d_off(nb) + 4 * b0);
    if (t.off) {
        const __m256i xs = full ? _mm256_loadu_si256((const __m256i *)xs_p) : _mm256_maskload_epi32(xs_p, m);
        v = _mm256_sub_epi32(v, _mm256_slli_epi32(xs, t.off == 8 ? 3 : 4)); /* off is 8 or 16 */
    }
    const __m256 dx = full ? _mm256_loadu_ps(dx_p) : _mm256_maskload_ps(dx_p, m);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(dw, dx), acc);
    if (t.has_min) {
        const float *sx_p = (const float *)(x + rg_act_s_off(nb) + 4 * b0);
        acc = _mm256_fmadd_ps(mw, full ? _mm256_loadu_ps(sx_p) : _mm256_maskload_ps(sx_p, m), acc);
    }
    return acc;
}

/* acc += the np pairs of g (blocks from b0) against the activation row x. */
RG_AVX2_INLINE __m256 dot_group(const wgroup *g, const uint8_t *x, int64_t nb, int64_t b0, const int np, const qtype t,
                                __m256 acc) {
    __m256i r[4];
    for (int p = 0; p < 4; p++)
        r[p] = p < np ? pair_dot(g->lo[p], g->hi[p], (const int8_t *)x + 32 * (b0 + 2 * p), t) : _mm256_setzero_si256();
    return scale_group(r, g->dw, g->mw, x, nb, b0, np, t, acc);
}

/* Bytes ahead of the mat-vec loop that each group asks the cache for. The AVX2 unpacking keeps a core busy
 * for most of the time the bytes take to arrive, and with the hardware prefetcher alone the stream stalled
 * behind it: asking 2 KB ahead made the 2048x8192 mat-vec 1.6x (Q4_0), 2.4x (Q5_1) and 1.15x (Q8_0)
 * faster on one core (Sapphire Rapids at the AVX2 level, A/B in one process; 1 and 1.5 KB slightly
 * slower, 3 KB and more clearly slower). Prefetches never fault: reaching past the matrix is fine. */
#define RG_QDOT_PREFETCH 2048

/* The mat-vec loop for a full group: each pair's codes go straight into the products. */
RG_AVX2_INLINE __m256 dot_group_streaming(const uint8_t *w, const uint8_t *x, int64_t nb, int64_t b0, const qtype t,
                                          __m256 acc) {
    __m256i r[4];
    for (int i = 0; i < 8 * t.wbytes; i += 64)
        _mm_prefetch((const char *)w + b0 * t.wbytes + RG_QDOT_PREFETCH + i, _MM_HINT_T0);
    for (int p = 0; p < 4; p++) {
        __m256i lo, hi;
        pair_codes(w + (b0 + 2 * p) * t.wbytes, t, &lo, &hi);
        r[p] = pair_dot(lo, hi, (const int8_t *)x + 32 * (b0 + 2 * p), t);
    }
    __m256 dw, mw;
    dm8_any(w + b0 * t.wbytes, t, &dw, &mw);
    return scale_group(r, dw, mw, x, nb, b0, 4, t, acc);
}

RG_AVX2_INLINE float load_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The odd last block of a row, by the scalar formula on its exact sum. */
RG_AVX2_INLINE float last_block(const uint8_t *w, const uint8_t *x, int64_t nb, const qtype t) {
    const int64_t b = nb - 1;
    const uint8_t *wb = w + b * t.wbytes;
    int32_t isum = hsum_i32(single_dot(wb, (const int8_t *)x + 32 * b, t));
    if (t.off) {
        int32_t xs;
        memcpy(&xs, x + rg_act_sum_off(nb) + 4 * b, sizeof xs);
        isum -= t.off * xs;
    }
    const float dd = _cvtsh_ss(rg_load_u16(wb)) * load_f32(x + rg_act_d_off(nb) + 4 * b);
    float c = dd * (float)isum;
    if (t.has_min) c += _cvtsh_ss(rg_load_u16(wb + 2)) * load_f32(x + rg_act_s_off(nb) + 4 * b);
    return c;
}

/* One weight row against NX activation rows x + j * ldx, each group of weights unpacked once. */
RG_AVX2_INLINE void dot_rows(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, const int nx, float *out,
                             const qtype t) {
    const int64_t nb = n / RG_QK, npairs = nb / 2;
    __m256 acc[RG_QDOT_MAX_NX];
    for (int j = 0; j < nx; j++) acc[j] = _mm256_setzero_ps();
    wgroup g;
    int64_t p = 0;
    if (nx == 1) {
        for (; p + 4 <= npairs; p += 4) acc[0] = dot_group_streaming(w, x, nb, 2 * p, t, acc[0]);
    }
    for (; p + 4 <= npairs; p += 4) {
        load_group(w, 2 * p, 4, t, &g);
        for (int j = 0; j < nx; j++) acc[j] = dot_group(&g, x + (size_t)j * ldx, nb, 2 * p, 4, t, acc[j]);
    }
    if (p < npairs) {
        const int np = (int)(npairs - p);
        load_group(w, 2 * p, np, t, &g);
        for (int j = 0; j < nx; j++) acc[j] = dot_group(&g, x + (size_t)j * ldx, nb, 2 * p, np, t, acc[j]);
    }
    for (int j = 0; j < nx; j++) {
        out[j] = hsum256(acc[j]);
        if (nb & 1) out[j] += last_block(w, x + (size_t)j * ldx, nb, t);
    }
}

#define RG_DEFINE_DOT(name, ...)                                                                                  \
    RG_AVX2 static float name##_avx2(int64_t n, const void *w, const void *x) {                                   \
        const qtype t = {__VA_ARGS__};                                                                            \
        float r;                                                                                                  \
        dot_rows(n, w, x, 0, 1, &r, t);                                                                           \
        return r;                                                                                                 \
    }                                                                                                             \
    RG_AVX2 static void name##_xn_avx2(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) { \
        const qtype t = {__VA_ARGS__};                                                                            \
        RG_QDOT_XN_SWITCH(dot_rows, n, w, x, ldx, nx, out, t);                                                     \
    }
/*            wbytes          qs          qh       kind off has_min */
RG_DEFINE_DOT(vec_dot_q4_0, RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0)
RG_DEFINE_DOT(vec_dot_q4_1, RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1)
RG_DEFINE_DOT(vec_dot_q5_0, RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0)
RG_DEFINE_DOT(vec_dot_q5_1, RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1)
RG_DEFINE_DOT(vec_dot_q8_0, RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 0, 0)
#undef RG_DEFINE_DOT

/* fp32(fp16(v)): F16C rounds to nearest even like rg_f32_to_f16_scalar; NaN (which F16C would keep with
 * its payload) goes through the scalar routine to get its canonical encoding. */
RG_AVX2_INLINE float f16_round(float v) {
    if (v != v) return _cvtsh_ss(rg_f32_to_f16_scalar(v));
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT)));
}

/* The activation quantizer, bit-identical to rg_quantize_act_ref for finite input (with a NaN the max
 * differs, and the row is garbage either way): the same f32 operations per element; cvtps2dq rounds
 * half to even and the packs saturate like the scalar clamp. */
RG_AVX2 static void quantize_act_avx2(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    const int64_t nb = n / RG_QK;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < nb; b++, x += RG_QK) {
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
        /* packs interleave 128-bit lanes; the permute restores element order */
        __m256i q8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm_storeu_si128((__m128i *)(y + rg_act_pos(b, 0, nb)), _mm256_castsi256_si128(q8));
        _mm_storeu_si128((__m128i *)(y + rg_act_pos(b, 16, nb)), _mm256_extracti128_si256(q8, 1));
        const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q8), _mm256_set1_epi16(1));
        const int32_t sum = hsum_i32(s32);
        const float dr = f16_round(d), sr = f16_round(d * (float)sum);
        memcpy(y + rg_act_d_off(nb) + 4 * b, &dr, sizeof dr);
        memcpy(y + rg_act_s_off(nb) + 4 * b, &sr, sizeof sr);
        memcpy(y + rg_act_sum_off(nb) + 4 * b, &sum, sizeof sum);
    }
}

void rg_kernels_fill_quant_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)features;
    if (level < 1) return;
    k->quantize_act = quantize_act_avx2;
    k->vec_dot_q4_0 = vec_dot_q4_0_avx2;
    k->vec_dot_q4_1 = vec_dot_q4_1_avx2;
    k->vec_dot_q5_0 = vec_dot_q5_0_avx2;
    k->vec_dot_q5_1 = vec_dot_q5_1_avx2;
    k->vec_dot_q8_0 = vec_dot_q8_0_avx2;
    k->vec_dot_q4_0_xn = vec_dot_q4_0_xn_avx2;
    k->vec_dot_q4_1_xn = vec_dot_q4_1_xn_avx2;
    k->vec_dot_q5_0_xn = vec_dot_q5_0_xn_avx2;
    k->vec_dot_q5_1_xn = vec_dot_q5_1_xn_avx2;
    k->vec_dot_q8_0_xn = vec_dot_q8_0_xn_avx2;
}

#else
void rg_kernels_fill_quant_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
