/* AVX-512 kernels of the block-quantized types, for CPUs with AVX512_VNNI (Ice Lake, Sapphire Rapids,
 * Zen 4, ...): two 32-element blocks per 64-byte step, products summed by vpdpbusd (u8 x s8, 4 products
 * per i32 lane). Without VNNI the AVX2 entries stay in the table.
 *
 * vpdpbusd multiplies an unsigned byte by a signed one, so the signed weight codes are kept unsigned and
 * the offset is taken out afterwards: sum (u - off) x = dpbusd(u, x) - dpbusd(off, x), with u the raw
 * 4/5-bit code (off 8 or 16) or the Q8_0 byte xor 0x80 (off 128). The _1 types need no offset.
 *
 * Lanes 0-7 of a step hold block A's partial sums and lanes 8-15 block B's, so the per-block scales are
 * applied per lane: acc += float(isum) * (d_w * d_x), with the scales spread over the lanes by one word
 * permute of the block bytes. For the _1 types lanes 0 and 8 carry m_w * s_x instead: their integer
 * partial sums are first folded into lanes 1 and 9 and the float is replaced by 1.0. */
#include "kernels.h"
#include "../quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define RG_VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define RG_VNNI __attribute__((target(RG_VNNI_TARGET)))
#define RG_VNNI_INLINE __attribute__((target(RG_VNNI_TARGET), always_inline)) static inline

RG_VNNI_INLINE float h2f(const uint8_t *p) { return _cvtsh_ss(rg_load_u16(p)); }

/* Word indices for a permute: lane 0 <- a0, lanes 1-7 <- a, lane 8 <- b0, lanes 9-15 <- b. */
RG_VNNI_INLINE __m256i word_idx(short a0, short a, short b0, short b) {
    return _mm256_setr_epi16(a0, a, a, a, a, a, a, a, b0, b, b, b, b, b, b, b);
}

/* Two blocks' nibbles (16 bytes each) -> 64 codes 0..15: bytes 0-31 block A in element order, 32-63 B. */
RG_VNNI_INLINE __m512i nibbles2(const uint8_t *qs_a, const uint8_t *qs_b) {
    const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qs_a)),
                                              _mm_loadu_si128((const __m128i *)qs_b), 1);
    const __m512i t = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
    /* t = [A lo, B lo, A hi, B hi] (128-bit lanes) -> [A lo, A hi, B lo, B hi] */
    return _mm512_and_si512(_mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(0x0F));
}

RG_VNNI_INLINE __m256i nibbles1(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

/* Parameters of one weight type, all compile-time constants after inlining.
 * kind: 0 = 4-bit codes, 1 = 5-bit codes (fifth bit in qh), 2 = int8 codes (Q8_0). */
typedef struct {
    int wbytes, qs, qh, kind, off, has_min, xbytes, xqs;
} qtype;

/* The weights of blocks A, B (at w, w + wbytes) as unsigned bytes for dpbusd. */
RG_VNNI_INLINE __m512i weights2(const uint8_t *w, const qtype t) {
    if (t.kind == 2) {
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w + t.qs))),
                                             _mm256_loadu_si256((const __m256i *)(w + t.wbytes + t.qs)), 1);
        return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    }
    __m512i u = nibbles2(w + t.qs, w + t.wbytes + t.qs);
    if (t.kind == 1) {
        const __mmask64 k = (__mmask64)rg_load_u32(w + t.qh) | ((__mmask64)rg_load_u32(w + t.wbytes + t.qh) << 32);
        u = _mm512_mask_add_epi8(u, k, u, _mm512_set1_epi8(16));
    }
    return u;
}

RG_VNNI_INLINE __m256i weights1(const uint8_t *w, const qtype t) {
    if (t.kind == 2) return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + t.qs)), _mm256_set1_epi8((char)0x80));
    __m256i u = nibbles1(w + t.qs);
    if (t.kind == 1) u = _mm256_mask_add_epi8(u, (__mmask32)rg_load_u32(w + t.qh), u, _mm256_set1_epi8(16));
    return u;
}

/* d_w (lanes 0-7 A, 8-15 B), or for the _1 types m_w in lanes 0 and 8, as floats. */
RG_VNNI_INLINE __m512 wscales2(const uint8_t *w, const qtype t) {
    const short a = 0, b = (short)(t.wbytes / 2);
    const __m256i idx = t.has_min ? word_idx(1, a, (short)(b + 1), b) : word_idx(a, a, b, b);
    __m256i words;
    if (b + t.has_min < 16) { /* the words needed lie in the first 32 bytes of the pair */
        words = _mm256_permutexvar_epi16(idx, _mm256_loadu_si256((const __m256i *)w));
    } else { /* Q8_0: block B's d is word 17 */
        words = _mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_castsi256_si512(idx), _mm512_loadu_si512(w)));
    }
    return _mm512_cvtph_ps(words);
}

/* d_x per lane, or for Q8_1 s_x in lanes 0 and 8 (an activation pair spans 68 or 72 bytes). */
RG_VNNI_INLINE __m512 xscales2(const uint8_t *x, const qtype t) {
    const short b = (short)(t.xbytes / 2);
    const __m256i idx = t.has_min ? word_idx(1, 0, (short)(b + 1), b) : word_idx(0, 0, b, b);
    const __m512i words = _mm512_permutexvar_epi16(_mm512_castsi256_si512(idx), _mm512_loadu_si512(x));
    return _mm512_cvtph_ps(_mm512_castsi512_si256(words));
}

RG_VNNI_INLINE __m512i xcodes2(const uint8_t *x, const qtype t) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x + t.xqs))),
                              _mm256_loadu_si256((const __m256i *)(x + t.xbytes + t.xqs)), 1);
}

/* One step's contribution: the per-lane integer sums as floats (1.0 in the m * s lanes). */
RG_VNNI_INLINE __m512 block_sums2(__m512i u, __m512i xv, const qtype t) {
    __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
    if (t.off) isum = _mm512_sub_epi32(isum, _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)t.off), xv));
    if (!t.has_min) return _mm512_cvtepi32_ps(isum);
    isum = _mm512_mask_add_epi32(isum, 0x0202, isum, _mm512_alignr_epi32(isum, isum, 15));
    return _mm512_mask_mov_ps(_mm512_cvtepi32_ps(isum), 0x0101, _mm512_set1_ps(1.0f));
}

/* The last block of an odd count: exact integer sum, then the scalar formula. */
RG_VNNI_INLINE float tail_block(__m256i u, const uint8_t *w, const uint8_t *x, const qtype t) {
    const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + t.xqs));
    __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xv);
    if (t.off) s = _mm256_sub_epi32(s, _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)t.off), xv));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    const float dd = h2f(w) * h2f(x);
    float r = dd * (float)_mm_cvtsi128_si32(s4);
    if (t.has_min) r += h2f(w + 2) * h2f(x + RG_Q8_1_S);
    return r;
}

/* One weight row against NX activation rows (x + j * ldx). */
RG_VNNI_INLINE void dot_rows(int64_t n, const uint8_t *w, const uint8_t *x, size_t ldx, const int nx, float *out,
                             const qtype t) {
    const int64_t nb = n / RG_QK;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *wb = w + (size_t)b * (size_t)t.wbytes;
        const __m512i u = weights2(wb, t);
        const __m512 dw = wscales2(wb, t);
        for (int j = 0; j < nx; j++) {
            const uint8_t *xb = x + (size_t)j * ldx + (size_t)b * (size_t)t.xbytes;
            const __m512 scale = _mm512_mul_ps(dw, xscales2(xb, t));
            acc[j] = _mm512_fmadd_ps(block_sums2(u, xcodes2(xb, t), t), scale, acc[j]);
        }
    }
    for (int j = 0; j < nx; j++) out[j] = _mm512_reduce_add_ps(acc[j]);
    if (b < nb) {
        const uint8_t *wb = w + (size_t)b * (size_t)t.wbytes;
        const __m256i u = weights1(wb, t);
        for (int j = 0; j < nx; j++) out[j] += tail_block(u, wb, x + (size_t)j * ldx + (size_t)b * (size_t)t.xbytes, t);
    }
}

#define RG_DEFINE_DOT(name, ...)                                                                                  \
    RG_VNNI static float name##_vnni(int64_t n, const void *w, const void *x) {                                   \
        const qtype t = {__VA_ARGS__};                                                                            \
        float r;                                                                                                  \
        dot_rows(n, w, x, 0, 1, &r, t);                                                                           \
        return r;                                                                                                 \
    }                                                                                                             \
    RG_VNNI static void name##_x4_vnni(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) { \
        const qtype t = {__VA_ARGS__};                                                                            \
        if (nx == 4) {                                                                                            \
            dot_rows(n, w, x, ldx, 4, out, t);                                                                    \
            return;                                                                                               \
        }                                                                                                         \
        for (int j = 0; j < nx; j++) out[j] = name##_vnni(n, w, (const uint8_t *)x + (size_t)j * ldx);            \
    }
/*            wbytes          qs          qh          kind off has_min xbytes         xqs */
RG_DEFINE_DOT(vec_dot_q4_0, RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0, RG_Q8_0_BYTES, RG_Q8_0_QS)
RG_DEFINE_DOT(vec_dot_q4_1, RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1, RG_Q8_1_BYTES, RG_Q8_1_QS)
RG_DEFINE_DOT(vec_dot_q5_0, RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0, RG_Q8_0_BYTES, RG_Q8_0_QS)
RG_DEFINE_DOT(vec_dot_q5_1, RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1, RG_Q8_1_BYTES, RG_Q8_1_QS)
RG_DEFINE_DOT(vec_dot_q8_0, RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 128, 0, RG_Q8_0_BYTES, RG_Q8_0_QS)
#undef RG_DEFINE_DOT

void rg_kernels_fill_quant_avx512(rg_kernel_table *k, unsigned features) {
    if (!(features & 64u)) return; /* no AVX512_VNNI: keep the AVX2 kernels */
    k->vec_dot_q4_0 = vec_dot_q4_0_vnni;
    k->vec_dot_q4_1 = vec_dot_q4_1_vnni;
    k->vec_dot_q5_0 = vec_dot_q5_0_vnni;
    k->vec_dot_q5_1 = vec_dot_q5_1_vnni;
    k->vec_dot_q8_0 = vec_dot_q8_0_vnni;
    k->vec_dot_q4_0_x4 = vec_dot_q4_0_x4_vnni;
    k->vec_dot_q4_1_x4 = vec_dot_q4_1_x4_vnni;
    k->vec_dot_q5_0_x4 = vec_dot_q5_0_x4_vnni;
    k->vec_dot_q5_1_x4 = vec_dot_q5_1_x4_vnni;
    k->vec_dot_q8_0_x4 = vec_dot_q8_0_x4_vnni;
}

#else
void rg_kernels_fill_quant_avx512(rg_kernel_table *k, unsigned features) {
    (void)k;
    (void)features;
}
#endif
