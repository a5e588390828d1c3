/* The kernel table: hot inner loops with one implementation per instruction-set level.
 * cpu.c detects the CPU once and fills rg_kernels (the engine's one process-wide global);
 * the scalar variants are always built and are the reference the others are tested against. */
#ifndef RG_KERNELS_H
#define RG_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../include/rwkv_ggml.h"
#include "../unaligned.h"

#define RG_KERNELS_API __attribute__((visibility("hidden")))

/* The instruction sets each SIMD kernel is compiled for, by target attribute (not by build flags, so one
 * binary runs everywhere and cpu.c picks the kernels at run time): the only definitions of these. */
#define RG_TARGET_AVX2 "avx2,fma,f16c"
#define RG_TARGET_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define RG_TARGET_AVX512_BF16 "avx512f,avx512bw,avx512vl,avx512bf16"
#define RG_TARGET_AVX512_VNNI "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define RG_TARGET_AMX "amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define RG_AVX2 __attribute__((target(RG_TARGET_AVX2)))
#define RG_AVX2_INLINE __attribute__((target(RG_TARGET_AVX2), always_inline)) static inline
#define RG_AVX512 __attribute__((target(RG_TARGET_AVX512)))
#define RG_AVX512_INLINE __attribute__((target(RG_TARGET_AVX512), always_inline)) static inline
#define RG_BF16 __attribute__((target(RG_TARGET_AVX512_BF16)))
#define RG_BF16_INLINE __attribute__((target(RG_TARGET_AVX512_BF16), always_inline)) static inline
#define RG_VNNI __attribute__((target(RG_TARGET_AVX512_VNNI)))
#define RG_VNNI_INLINE __attribute__((target(RG_TARGET_AVX512_VNNI), always_inline)) static inline

typedef float (*rg_vec_dot_fn)(int64_t n, const void *w_row, const void *x_row);
typedef void (*rg_vec_dot_xn_fn)(int64_t n, const void *w_row, const void *x, size_t ldx, int nx, float *out);

/* The SIMD exp of every level (Cephes' expf): x = n ln2 + r, ln2 in two parts so r is exact enough,
 * exp(r) = 1 + r + r^2 (P0 r^5 + ... + P5), then times 2^n. */
#define RG_EXP_LOG2E 1.44269504088896341f
#define RG_EXP_LN2_HI 0.693359375f
#define RG_EXP_LN2_LO -2.12194440e-4f
#define RG_EXP_P0 1.9875691500e-4f
#define RG_EXP_P1 1.3981999507e-3f
#define RG_EXP_P2 8.3334519073e-3f
#define RG_EXP_P3 4.1665795894e-2f
#define RG_EXP_P4 1.6666665459e-1f
#define RG_EXP_P5 5.0000001201e-1f
/* Inputs are clamped to this range first: below it exp is 0 in float, above it inf, and n stays finite. */
#define RG_EXP_X_MIN -104.0f
#define RG_EXP_X_MAX 89.0f

/* Columns one dot_*_rows4_cols call takes (4 rows x 2 columns x 2 accumulators; 2 rows x 4 columns,
 * which widens each F16 row once for four columns, measured 10-20% slower on Zen 4) */
#define RG_ROWS4_MAX_COLS 2

typedef struct {
    /* sum_i a[i] * b[i] */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* sum_i f16(a[i]) * b[i]: F16 weights against F32 activations (activations stay F32) */
    float (*dot_f16_f32)(const uint16_t *a, const float *b, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    /* y[i] = exp(x[i]); and y[i] = 1 / (1 + exp(-x[i])) (sigmoid), times x[i] when times_x (silu).
     * exp within 2 ulp of the exact value, sigmoid and silu within 4 (SIMD versions: RG_EXP_*); inf,
     * 0, NaN and the overflow/underflow bounds as expf. x and y may be the same array. */
    void (*vec_exp)(const float *x, float *y, int64_t n);
    void (*vec_sigmoid)(const float *x, float *y, int64_t n, int times_x);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
    /* out[j] = sum_i a[i] * b[j][i] for nb contiguous rows b[j] = b + j * ldb (1 <= nb <= 4):
     * one weight row against several activation rows, loading the weight row once. */
    void (*dot_f32_x4)(const float *a, const float *b, int64_t ldb, int nb, int64_t n, float *out);
    /* out[j] = sum_i a_j[i] * x[i] for nr weight rows a_j = a + j * lda (1 <= nr <= 4) against one
     * activation vector x (mat-vec): x is loaded once per step for all rows. Each row's result is
     * bit-identical whatever nr is, so grouping rows never changes a result. */
    void (*dot_f32_rows4)(const float *a, int64_t lda, const float *x, int64_t n, int nr, float *out);
    void (*dot_f16_rows4)(const uint16_t *a, int64_t lda, const float *x, int64_t n, int nr, float *out);
    /* The same against nt (1..RG_ROWS4_MAX_COLS) activation vectors x + t * ldx at once, the rows read
     * once: out[t * 4 + j] equals dot_*_rows4's out[j] for column t bit for bit (batched decode with few
     * sequences). NULL where the level has none (the mat-mat tiles take those products).
     * Where pf is not NULL the call may also ask for pf_lines cache lines of each of the four rows
     * pf + j * lda (lda in elements of a), spread over its steps: the driver hands each call its share of
     * the next row quad, so that quad arrives while the calls that reuse this one from cache run (they
     * miss nothing, so the hardware prefetchers stand still). The AVX-512 kernels do; the AVX2 ones
     * ignore it (slower there). */
    void (*dot_f32_rows4_cols)(const float *a, int64_t lda, const float *x, int64_t ldx, int nt, int64_t n, int nr,
                               float *out, const void *pf, int64_t pf_lines);
    void (*dot_f16_rows4_cols)(const uint16_t *a, int64_t lda, const float *x, int64_t ldx, int nt, int64_t n,
                               int nr, float *out, const void *pf, int64_t pf_lines);
    /* Mat-mat tile (k_gemm_tile.c): c[t * ldc + m] = sum_i a[m * lda + i] * b[t * ldb + i] for m < mr <= 4,
     * t < nr (any count); each element equals dot_f32_rows4 / dot_f16_rows4 of its row and column bit for
     * bit. The F16 one takes the rows as stored (NULL at the scalar level: convert, then gemm_f32_tile). */
    void (*gemm_f32_tile)(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr, int64_t k,
                          float *c, int64_t ldc);
    void (*gemm_f16_tile)(const uint16_t *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr, int64_t k,
                          float *c, int64_t ldc);
    /* The same with bf16 operands of kp elements (a multiple of 32, zero-padded), f32 accumulation; and
     * the conversion of a float row to such a padded bf16 row. NULL without AVX512_BF16. */
    void (*gemm_bf16_tile)(const uint16_t *a, int64_t lda, int mr, const uint16_t *b, int64_t ldb, int nr,
                           int64_t kp, float *c, int64_t ldc);
    void (*f32_to_bf16_padded)(const float *src, uint16_t *dst, int64_t n, int64_t kp);
    void (*f16_to_bf16_padded)(const uint16_t *src, uint16_t *dst, int64_t n, int64_t kp);
    /* Column-panel mat-mat (k_gemm_panel.c, the f32 one at the AVX2 level k_gemm_panel_avx2.c; NULL at
     * the scalar level, the bf16 one without AVX512_BF16):
     * out[(r * RG_PANEL_MAX_NP + j) * RG_PANEL_LANES + c] = row r . column c of panel j, for RG_PANEL_ROWS
     * weight rows w + r * ldw (f32 at any alignment, or bf16) and np (1..4) panels of 16 columns, the
     * next xstride elements after each. f32 panels are k-major (x[i * 16 + c]), bf16 panels hold
     * pairs (x[(i / 2) * 32 + 2 c + i % 2]); k elements, or kpairs pairs. With accumulate, the sums
     * continue from the values in out (a product split along k gives the same result as one call). */
    void (*gemm_f32_panel)(const float *w, int64_t ldw, const float *x, size_t xstride, int np, int64_t k,
                           int accumulate, float *out);
    void (*gemm_bf16_panel)(const uint16_t *w, int64_t ldw, const uint16_t *x, size_t xstride, int np,
                            int64_t kpairs, int accumulate, float *out);

    /* ---- block-quantized weights (csrc/ggml/quant, k_quant_*.c) ---- */
    /* One activation row of n floats (a multiple of 32) quantized for the integer dot products
     * (formats.md §5.4; the RG_TYPE_Q8_ACT layout of quant/quant.h). Bit-identical at every level. */
    void (*quantize_act)(const float *x, void *y, int64_t n);
    /* sum over the n elements of one weight row and one activation row: per block the exact integer
     * sum times d_w * d_x (+ m_w * s_x); the levels differ only in how the f32 terms are added up. */
    rg_vec_dot_fn vec_dot_q4_0;
    rg_vec_dot_fn vec_dot_q4_1;
    rg_vec_dot_fn vec_dot_q5_0;
    rg_vec_dot_fn vec_dot_q5_1;
    rg_vec_dot_fn vec_dot_q8_0;
    /* The same against nx (1..RG_QDOT_MAX_NX) activation rows x + j * ldx (ldx in bytes), out[j] each: the
     * weight row is loaded and unpacked once for all of them (small-B mat-mat, batched decode). out[j]
     * equals the single vec_dot bit for bit. */
    rg_vec_dot_xn_fn vec_dot_q4_0_xn;
    rg_vec_dot_xn_fn vec_dot_q4_1_xn;
    rg_vec_dot_xn_fn vec_dot_q5_0_xn;
    rg_vec_dot_xn_fn vec_dot_q5_1_xn;
    rg_vec_dot_xn_fn vec_dot_q8_0_xn;
    /* The K-quants (k_kquant_*.c; formats.md §7.4), the same contract over 256-element super-blocks; every
     * level adds the same f32 block terms in the same order. */
    rg_vec_dot_fn vec_dot_q4_k;
    rg_vec_dot_fn vec_dot_q5_k;
    rg_vec_dot_fn vec_dot_q6_k;
    rg_vec_dot_xn_fn vec_dot_q4_k_xn;
    rg_vec_dot_xn_fn vec_dot_q5_k_xn;
    rg_vec_dot_xn_fn vec_dot_q6_k_xn;
    /* Mat-mat of the block types by column panels (k_quant_panel.c; layouts in quant/quant.h; at the AVX2
     * level k_quant_panel_avx2.c, without AVX-VNNI for Q4_0 and Q5_0 only; NULL otherwise). qgemm_decode: `rows` (<= RG_QT_ROWS) weight rows of nb blocks of `type` (an RG_TYPE
     * id), ldw bytes apart, into a tile. qgemm_tile: out[(j * RG_QT_ROWS + r) * RG_QP_LANES + c] = tile row
     * r . lane c of panel j (np = 1 or 2 panels, panel_bytes apart) over nb blocks, continuing from the
     * values in out with accumulate (blocks added in order either way). */
    void (*qgemm_decode)(int type, const uint8_t *w, size_t ldw, int rows, int64_t nb, uint8_t *tile);
    void (*qgemm_tile)(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np, int64_t nb, int has_min,
                       int accumulate, float *out);
    /* The same for Q6_K's tiles (RG_QT6_*: two 16-element halves per block, each with its own scale). Set
     * with the K-quants' bits in qgemm_types by panel kernels whose qgemm_decode also takes the K-quants
     * (nb a multiple of 8, whole super-blocks; their tiles in quant/quant.h). */
    void (*qgemm_tile_halves)(const uint8_t *tile, const uint8_t *panel, size_t panel_bytes, int np, int64_t nb,
                              int accumulate, float *out);
    /* The weight types the panel kernels take: bit RG_QGEMM_TYPE(t) for RG_TYPE t (the route asks per type;
     * the others take the one-row kernels). */
    uint32_t qgemm_types;
    /* Q8_0 rows on AMX (k_quant_amx.c; NULL without AMX-INT8): q8_0_amx_pack writes column col of the packed
     * activation tiles (nc = 8 or 16 columns each, tile_bytes apart) from a Q8_ACT row of nb blocks (NULL:
     * zeros); q8_0_amx gives out[col * ldo + r] for `rows` weight rows w + r * ldw and the nx columns
     * of ntiles tiles, each equal to vec_dot_q8_0 of its row and column bit for bit. */
    void (*q8_0_amx)(int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *xpack, size_t tile_bytes,
                     int ntiles, int nc, int nx, float *out, size_t ldo);
    void (*q8_0_amx_pack)(const uint8_t *act, int64_t nb, int nc, uint8_t *xpack, size_t tile_bytes, int col);
    /* Rows of a 32-element block type (RG_TYPE_Q4_0 .. Q8_0) against narrow panels (k_quant_narrow.c; NULL
     * without AVX512_VNNI): out[c * ldo + r] for `rows` (<= RG_QN_ROWS) weight rows w + r * ldw and the
     * first nx columns of np panels panel_bytes apart, each equal to vec_dot of its row and column bit
     * for bit; `next` bytes after the rows are prefetched. */
    void (*quant_narrow)(int type, int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *panels,
                         size_t panel_bytes, int np, int nx, float *out, size_t ldo, size_t next);
} rg_kernel_table;
#define RG_QGEMM_TYPE(t) (1u << (t))
/* The 32-element block types. */
#define RG_QGEMM_BLOCK_TYPES                                                                                             \
    (RG_QGEMM_TYPE(RG_TYPE_Q4_0) | RG_QGEMM_TYPE(RG_TYPE_Q4_1) | RG_QGEMM_TYPE(RG_TYPE_Q5_0) |                         \
     RG_QGEMM_TYPE(RG_TYPE_Q5_1) | RG_QGEMM_TYPE(RG_TYPE_Q8_0))
/* The K-quants (Q6_K through qgemm_tile_halves). */
#define RG_QGEMM_KQUANT_TYPES (RG_QGEMM_TYPE(RG_TYPE_Q4_K) | RG_QGEMM_TYPE(RG_TYPE_Q5_K) | RG_QGEMM_TYPE(RG_TYPE_Q6_K))

RG_KERNELS_API extern rg_kernel_table rg_kernels;

RG_KERNELS_API void rg_kernels_init(void);

/* The kernel files, one per kernel family (the axis of the split: what the kernels compute, so a family's
 * levels sit side by side and share their description). A family whose levels are long has one file per
 * level, k_<family>_<level>.c; a short one keeps its levels in k_<family>.c:
 *   k_vec_{scalar,avx2,avx512}.c     dot products of float rows, f16 conversions, exp and sigmoid
 *   k_quant_{scalar,avx2,avx512}.c   block-quantized rows against activation rows (avx512 = with VNNI)
 *   k_gemm_tile.c                    mat-mat tiles, f32 (every level) and bf16
 *   k_gemm_panel.c                   column-panel mat-mat of float weights, f32 and bf16 (AVX-512)
 *   k_gemm_panel_avx2.c              the f32 column-panel mat-mat at the AVX2 level (after k_gemm_panel.c)
 *   k_quant_panel.c                  column-panel mat-mat of the block types (AVX512_VNNI)
 *   k_quant_panel_avx2.c             the same at the AVX2 level (vpdpbusd, or vpmaddubsw for Q4_0/Q5_0)
 *   k_kquant_{scalar,avx2,avx512}.c  the K-quants' dot products (avx512 = with VNNI; without it the AVX2
 *                                    ones serve the AVX-512 level)
 *   k_quant_amx.c                    Q8_0 rows against a few activation columns on AMX-INT8
 *   k_quant_narrow.c                 block rows against a few activation columns on AVX512_VNNI
 * Each file has one fill function, all of this type: it sets its entries of the table for a kernel level
 * (0 scalar, 1 AVX2, 2 AVX-512) and the detected features (RG_CPU_*), and leaves the table alone where
 * the level or the features do not allow its kernels. cpu.c calls them in a fixed order (RG_FILLS). */
typedef void (*rg_kernels_fill_fn)(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_vec_scalar(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_vec_avx2(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_vec_avx512(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_scalar(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_avx2(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_avx512(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_gemm_tile(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_gemm_panel(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_gemm_panel_avx2(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_panel(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_panel_avx2(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_kquant_scalar(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_kquant_avx2(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_kquant_avx512(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_amx(rg_kernel_table *k, int level, unsigned features);
RG_KERNELS_API void rg_kernels_fill_quant_narrow(rg_kernel_table *k, int level, unsigned features);
#define RG_PANEL_ROWS 6
#define RG_PANEL_MAX_NP 4
#define RG_PANEL_LANES 16
#define RG_GEMM_MR 4
#define RG_GEMM_NR 6
/* Activation rows one vec_dot_*_xn call takes (one accumulator each, in registers). */
#define RG_QDOT_MAX_NX 8
/* Activation columns the AMX route (k_quant_amx.c) takes: fewer go to the narrow panels or vec_dot_*_xn
 * (ops_matmul.c says why). */
#define RG_QAMX_MIN_T 6
#define RG_QAMX_MAX_T 32
/* Weight rows one quant_narrow call takes at a time. */
#define RG_QN_ROWS 4
/* The body of a level's vec_dot_*_xn: `dot` (a per-level always-inline kernel taking the column count as
 * an argument) called with nx as a constant in each case, so its accumulators stay in registers. */
#define RG_QDOT_XN_SWITCH(dot, n, w, x, ldx, nx, out, t)                                                        \
    switch (nx) {                                                                                              \
    case 1: dot(n, w, x, ldx, 1, out, t); break;                                                               \
    case 2: dot(n, w, x, ldx, 2, out, t); break;                                                               \
    case 3: dot(n, w, x, ldx, 3, out, t); break;                                                               \
    case 4: dot(n, w, x, ldx, 4, out, t); break;                                                               \
    case 5: dot(n, w, x, ldx, 5, out, t); break;                                                               \
    case 6: dot(n, w, x, ldx, 6, out, t); break;                                                               \
    case 7: dot(n, w, x, ldx, 7, out, t); break;                                                               \
    default: dot(n, w, x, ldx, RG_QDOT_MAX_NX, out, t); break;                                                 \
    }
/* (The AVX-512 quantized-type entries need AVX512_VNNI and leave the AVX2 entries in place without it.) */

/* The portable f32 dot product (weights read alignment-safe): the scalar level's dot_f32. */
RG_KERNELS_API float rg_dot_f32_ref(const float *a, const float *b, int64_t n);

/* Scalar conversions, exact (round to nearest even, subnormals, overflow to inf). */
RG_KERNELS_API uint16_t rg_f32_to_f16_scalar(float f);
RG_KERNELS_API float rg_f16_to_f32_scalar(uint16_t h);

#endif
