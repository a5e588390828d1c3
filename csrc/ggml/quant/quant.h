/* Block-quantized types (formats.md §5): block layouts, reference codecs, the activation types of the
 * integer dot products, and the scalar block arithmetic every SIMD level must agree with.
 *
 * Each weight type has its own file (q4_0.c ... q8_0.c) with a reference quantizer that follows §5.3
 * literally, so our files are byte-identical to rwkv.cpp's, and a dequantizer (§5.2). q8_1.c and the
 * activation half of q8_0.c quantize activation rows for the dot products the way ggml's x86 code does
 * (§5.4): round half to even with the factor 127/amax, which is not the weight quantizer's rule.
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
/* Activations for the _1 weight types only (never in files): s = fp16(d * sum(qs)). */
typedef struct {
    uint16_t d, s;
    int8_t qs[RG_QK];
} rg_block_q8_1;

/* Block sizes in bytes and the byte offsets of the fields inside a block. */
#define RG_Q4_0_BYTES 18
#define RG_Q4_1_BYTES 20
#define RG_Q5_0_BYTES 22
#define RG_Q5_1_BYTES 24
#define RG_Q8_0_BYTES 34
#define RG_Q8_1_BYTES 36
#define RG_Q4_0_QS 2
#define RG_Q4_1_M 2
#define RG_Q4_1_QS 4
#define RG_Q5_0_QH 2
#define RG_Q5_0_QS 6
#define RG_Q5_1_M 2
#define RG_Q5_1_QH 4
#define RG_Q5_1_QS 8
#define RG_Q8_0_QS 2
#define RG_Q8_1_S 2
#define RG_Q8_1_QS 4

#define RG_QUANT_API __attribute__((visibility("hidden")))

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
RG_QUANT_API void rg_dequantize_q8_1(const void *x, float *y, int64_t n);

/* ---- activation quantizers (formats.md §5.4, ggml's x86 rule), the scalar reference ----
 * Per block: amax = max |x|, d = amax / 127, id = amax != 0 ? 127 / amax : 0, q = round-half-even(x * id)
 * saturated to int8 (a NaN gives -128, as cvtps2dq + signed saturation do). Q8_1 also stores
 * s = fp16(d * sum(q)) with the unrounded d. The SIMD versions are bit-identical. */
RG_QUANT_API void rg_quantize_act_q8_0_ref(const float *x, void *y, int64_t n);
RG_QUANT_API void rg_quantize_act_q8_1_ref(const float *x, void *y, int64_t n);

/* ---- small helpers shared by the codecs and the kernels ---- */
static inline uint16_t rg_load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t rg_load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void rg_store_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, sizeof v); }
static inline void rg_store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }

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
