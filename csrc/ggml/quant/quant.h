/* Block-quantized types (formats.md §5): block layouts, reference codecs, and the activation rows of
 * the integer dot products.
 *
 * Each weight type has its own file (q4_0.c ... q8_0.c) with a reference quantizer that follows §5.3
 * literally, so our files are byte-identical to rwkv.cpp's, and a dequantizer (§5.2). q8_act.c quantizes
 * activation rows for the dot products with the numbers of ggml's x86 Q8_0/Q8_1 code (§5.4): round half
 * to even with the factor 127/amax, which is not the weight quantizer's rule.
 *
 * Block data is read through byte pointers and memcpy, never through the structs below: a tensor in a
 * mapped model file may start at any byte offset, and an 18-byte block puts every other scale at an odd
 * address anyway. The structs only document the layouts and pin their sizes. */
#ifndef RG_QUANT_H
#define RG_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../unaligned.h"

#define RG_QK 32

/* Weight blocks (also the file layouts). d and m are IEEE half floats. */
typedef struct {
    uint16_t d;
    uint8_t qs[RG_QK / 2]; /* element j: low nibble of qs[j]; element j+16: high nibble */
} rg_block_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[RG_QK / 2];
} rg_block_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* little-endian u32: bit e is bit 4 of element e's code */
    uint8_t qs[RG_QK / 2];
} rg_block_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[RG_QK / 2];
} rg_block_q5_1;
typedef struct {
    uint16_t d;
    int8_t qs[RG_QK];
} rg_block_q8_0;
/* ---- activation rows (engine-internal, never in files; RG_TYPE_Q8_ACT) ----
 * One row of K = 32 * nb activations, quantized per 32-block exactly as ggml's Q8_0 and Q8_1 blocks are
 * (same q, d and s values), but stored as arrays so the kernels can apply 16 blocks' scales at once:
 *
 *   int8  qs[32 * nb]   codes; blocks 2p and 2p+1 are interleaved by halves as
 *                       [A0..15, B0..15, A16..31, B16..31], which is the order a pair of 4-bit weight
 *                       blocks unpacks to (low nibbles, then high nibbles); an odd last block is plain
 *   float d[nb]         fp32(fp16(amax / 127)): Q8_0's / Q8_1's d
 *   float s[nb]         fp32(fp16(d * sum q)) with the unrounded d: Q8_1's s (the _1 types' m * s term)
 *   int32 sum[nb]       sum q, exact: the offset term of the _0 types (sum (q_w - 8) q = ... - 8 sum q)
 *
 * 44 bytes per block, so rg_type_row_bytes works as for a block type; the arrays start at 4-byte
 * multiples of the row start. A row is one unit: conversions of n elements make one row of n. */
#define RG_Q8_ACT_BYTES 44
/* Byte offset of code e (0..31) of block b in a row of nb blocks. */
static inline int64_t rg_act_pos(int64_t b, int e, int64_t nb) {
    if ((nb & 1) && b == nb - 1) return 32 * b + e;
    return 64 * (b >> 1) + (e < 16 ? 16 * (b & 1) + e : 32 + 16 * (b & 1) + (e - 16));
}
/* Byte offsets of the d, s and sum arrays in a row of nb blocks. */
static inline size_t rg_act_d_off(int64_t nb) { return (size_t)(32 * nb); }
static inline size_t rg_act_s_off(int64_t nb) { return (size_t)(36 * nb); }
static inline size_t rg_act_sum_off(int64_t nb) { return (size_t)(40 * nb); }

/* ---- the column-panel mat-mat (ops_matmul_panel.c, simd/k_quant_panel.c) ----
 * Integer dot products with the activation columns in the vector lanes: per block, vpdpbusd multiplies
 * 16 columns' unsigned codes by one weight row's four codes broadcast from memory, so no weight data is
 * shuffled and no per-block horizontal sums are needed.
 *
 * A panel holds RG_QP_LANES activation columns, one record of RG_QP_REC_BYTES per block:
 *   uint8 codes[8][16][4]   slot k, lane c: column c's codes 4k..4k+3 of the block, plus 128 (unsigned)
 *   float dx[16], sx[16]    the columns' d and s (as in the activation rows)
 * A tile holds RG_QT_ROWS decoded weight rows, one record of RG_QT_REC_BYTES per block:
 *   int8  codes[12][32]     signed codes, natural element order (the _0 types' offset subtracted)
 *   float dw[12], mw[12]    the rows' d and m (m = 0 for the _0 types)
 *   int32 corr[12]          -128 * sum of the row's codes: undoes the +128 of the activation codes
 * Rows past the matrix and lanes past the activations are zeros (their results are discarded). */
#define RG_QP_LANES 16
#define RG_QP_REC_BYTES 640
#define RG_QP_DX 512
#define RG_QP_SX 576
#define RG_QT_ROWS 12
#define RG_QT_REC_BYTES 528
#define RG_QT_DW 384
#define RG_QT_MW 432
#define RG_QT_CORR 480
/* The narrow panel of batched decode (ops_matmul.c's ROUTE_QNARROW, simd/k_quant_narrow.c): up to
 * RG_QN_LANES activation columns, one record of RG_QN_REC_BYTES per block:
 *   int8  codes[8][8][4]    slot k, lane c: column c's codes 4k..4k+3 of the block (signed, as in the rows)
 *   float dx[8]             the columns' d
 *   int32 corr[8]           -off * sum q: the offset term of the weights' unsigned codes (off = 128 for
 *                           Q8_0, 8 for Q4_0, 16 for Q5_0, 0 for the _1 types)
 *   float sx[8]             the columns' s (the _1 types' m_w s_x term)
 * Lanes past the activations are zeros. */
#define RG_QN_LANES 8
#define RG_QN_REC_BYTES 352
#define RG_QN_DX 256
#define RG_QN_CORR 288
#define RG_QN_SX 320
/* The K-quants' tiles: a tile block is one 32-element sub-block of a super-block (the route walks whole
 * super-blocks: its k-blocks are multiples of 8 blocks).
 *   Q4_K / Q5_K: the tile above exactly, codes q (0..31), dw = d * sc, mw = -dmin * m (both exact in
 *                f32: an f16 times a 6-bit integer); the panels' sx is then fp32(d_x * sum q_x), not the
 *                f16-rounded s of Q8_1 (ops_matmul_panel.c rewrites it), so the min term is as exact as the
 *                one-row kernels'.
 *   Q6_K:        16-element halves with their own int8 scales, so the record has two of everything:
 *                int8  codes[12][32]     signed codes q - 32
 *                float dlo[12], dhi[12]  d * scales of the first and second 16 elements (exact in f32)
 *                int32 corr_lo[12], corr_hi[12]   -128 * sum of each half's codes
 * RG_QT_MAX_REC_BYTES is the larger record, what a tile's scratch is sized by. */
#define RG_QT6_REC_BYTES 576
#define RG_QT6_DLO 384
#define RG_QT6_DHI 432
#define RG_QT6_CORR_LO 480
#define RG_QT6_CORR_HI 528
#define RG_QT_MAX_REC_BYTES RG_QT6_REC_BYTES

/* Block sizes in bytes and the byte offsets of the fields inside a block. */
#define RG_Q4_0_BYTES 18
#define RG_Q4_1_BYTES 20
#define RG_Q5_0_BYTES 22
#define RG_Q5_1_BYTES 24
#define RG_Q8_0_BYTES 34
#define RG_Q4_0_QS 2
#define RG_Q4_1_M 2
#define RG_Q4_1_QS 4
#define RG_Q5_0_QH 2
#define RG_Q5_0_QS 6
#define RG_Q5_1_M 2
#define RG_Q5_1_QH 4
#define RG_Q5_1_QS 8
#define RG_Q8_0_QS 2

#define RG_QUANT_API __attribute__((visibility("hidden")))

/* ---- K-quants (q_k.c; formats.md §7.4): super-blocks of 256, read only (no quantizer) ---- */
#define RG_QK_K 256
#define RG_QK_SCALES 4 /* Q4_K / Q5_K: the 12 bytes of packed 6-bit scales and mins */
#define RG_Q4_K_BYTES 144
#define RG_Q4_K_QS 16
#define RG_Q5_K_BYTES 176
#define RG_Q5_K_QH 16
#define RG_Q5_K_QS 48
#define RG_Q6_K_BYTES 210
#define RG_Q6_K_QL 0
#define RG_Q6_K_QH 128
#define RG_Q6_K_SCALES 192
#define RG_Q6_K_D 208
RG_QUANT_API void rg_dequantize_q4_k(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q5_k(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q6_k(const void *x, float *y, int64_t n);
/* Sub-block s's (0..7) 6-bit scale and min from the 12 packed bytes q of a Q4_K / Q5_K block. */
RG_QUANT_API void rg_kquant_scale_min(const uint8_t *q, int s, int *sc, int *m);
/* Element e's (0..255) signed code (q - 32, in [-32, 31]) of a Q6_K block w. */
RG_QUANT_API int rg_q6_k_code(const uint8_t *w, int e);

/* ---- reference codecs: n elements, a multiple of RG_QK; rows of blocks in memory order ---- */
RG_QUANT_API void rg_quantize_q4_0_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_quantize_q4_1_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_quantize_q5_0_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_quantize_q5_1_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_quantize_q8_0_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_dequantize_q4_0(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q4_1(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q5_0(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q5_1(const void *x, float *y, int64_t n);
RG_QUANT_API void rg_dequantize_q8_0(const void *x, float *y, int64_t n);

/* ---- activation rows: the scalar reference quantizer (one row of n elements) and its inverse ----
 * Per block: amax = max |x|, d = amax / 127, id = amax != 0 ? 127 / amax : 0, q = round-half-even(x * id)
 * saturated to int8 (a NaN gives -128, as cvtps2dq + signed saturation do). The SIMD quantizers are
 * bit-identical. */
RG_QUANT_API void rg_quantize_act_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_dequantize_act(const void *x, float *y, int64_t n);

/* Column `lane` of a panel of nb blocks from one activation row (RG_TYPE_Q8_ACT), or zeros for act NULL. */
RG_QUANT_API void rg_qpanel_put(const void *act, int64_t nb, uint8_t *panel, int lane);
/* Lane `lane` of a narrow panel (RG_QN_*) from an activation row of nb blocks (act NULL: zeros), for
 * weights whose unsigned codes carry offset `off`. */
RG_QUANT_API void rg_qnarrow_put(const void *act, int64_t nb, uint8_t *panel, int lane, int off);


/* C's float -> int conversion is undefined out of range; x86's cvttss2si (what ggml's casts compile to)
 * returns INT32_MIN there and for NaN, and so does numpy on x86, which the reference quantizer uses.
 * Only reachable when a subnormal scale's reciprocal overflows or a range overflows to inf. */
static inline int32_t rg_trunc_i32(float v) {
    if (v > -2147483904.0f && v < 2147483648.0f) return (int32_t)v;
    return INT32_MIN;
}

/* Round half to even for |v| < 2^22 by the 1.5 * 2^23 trick (the default rounding mode does the work),
 * then saturate to int8 like the SIMD conversions; NaN gives -128. */
static inline int8_t rg_round_act_i8(float v) {
    if (!(v == v)) return -128;
    if (v >= 127.0f) return 127;
    if (v <= -128.0f) return -128;
    const float r = (v + 12582912.0f) - 12582912.0f;
    return (int8_t)(int32_t)r;
}

#endif
