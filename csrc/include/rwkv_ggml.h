/*
 * rwkv_ggml engine: the only public C API.
 *
 * A ggml-style compute-graph engine: tensors live in an arena context, ops build graph nodes,
 * a graph is built once and computed many times by a persistent thread pool.
 *
 * This header is also the cffi cdef (build.py strips the preprocessor lines), so declarations
 * must stay plain C: no macros inside declarations, no inline functions, no variadics.
 *
 * Conventions
 *  - Tensor dimensions are listed fastest-varying first (ggml order): ne[0] is the row length.
 *    A PyTorch/numpy array of shape (M, K) is a tensor with ne = {K, M}.
 *  - Strides nb[i] are in bytes. For block-quantized types nb[0] is the block size in bytes
 *    and ne[0] must be a multiple of the block length.
 *  - Builders (rg_add, rg_view, ...) return NULL on failure and record a status and a message
 *    on the context (rg_ctx_status / rg_ctx_error). A builder given a NULL input returns NULL
 *    without overwriting the first error, so a chain of builder calls can be checked once.
 *  - Functions returning rg_status report failure through the status and a message on the
 *    object that failed (or on the rg_err the caller passed to a constructor). Nothing aborts,
 *    nothing prints.
 */
#ifndef RWKV_GGML_H
#define RWKV_GGML_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    RG_OK = 0,
    RG_E_ARG = 1,
    RG_E_SHAPE = 2,
    RG_E_TYPE = 3,
    RG_E_NOMEM = 4,
    RG_E_IO = 5,
    RG_E_FORMAT = 6,
    RG_E_UNSUPPORTED = 7,
    RG_E_BUSY = 8,
    RG_E_INTERNAL = 9
} rg_status;

/* Type ids equal the rwkv.cpp file-format ids, so a file record's type maps 1:1. */
typedef enum {
    RG_TYPE_F32 = 0,
    RG_TYPE_F16 = 1,
    RG_TYPE_Q4_0 = 2,
    RG_TYPE_Q4_1 = 3,
    RG_TYPE_Q5_0 = 7,
    RG_TYPE_Q5_1 = 8,
    RG_TYPE_Q8_0 = 9,
    /* K-quants (256-element super-blocks): read from GGUF files; rwkv.cpp's ids for them */
    RG_TYPE_Q4_K = 13,
    RG_TYPE_Q5_K = 14,
    RG_TYPE_Q6_K = 15,
    RG_TYPE_I32 = 20,
    /* Engine-internal, never in files: activation rows quantized for the integer dot products with the
     * block types (the numbers of ggml's Q8_0/Q8_1 activation blocks, stored as arrays; a conversion of
     * n elements makes one row). */
    RG_TYPE_Q8_ACT = 21
} rg_type;

typedef struct rg_ctx rg_ctx;
typedef struct rg_tensor rg_tensor;
typedef struct rg_graph rg_graph;
typedef struct rg_pool rg_pool;

/* Error report for constructors, which have no object yet to carry the message. */
typedef struct {
    rg_status status;
    char msg[256];
} rg_err;

/* Callbacks of the map ops: called once per row with the row length n (elements),
 * contiguous float rows, and the user pointer given when the op was built. */
typedef void (*rg_map_unary_fn)(int64_t n, float *dst, const float *src, void *userdata);
typedef void (*rg_map_binary_fn)(int64_t n, float *dst, const float *a, const float *b, void *userdata);

/* ---- type table ---- */
int rg_type_is_valid(int type);
const char *rg_type_name(int type);
int64_t rg_type_block_size(int type);  /* elements per block (1 for F32/F16/I32) */
size_t rg_type_block_bytes(int type);  /* bytes per block */
int rg_type_is_quantized(int type);
/* Size in bytes of a row of n elements; 0 if n is not a multiple of the block length. */
size_t rg_type_row_bytes(int type, int64_t n);
/* Convert n elements between f32 and a storage type (F32, F16 or a block type; n a multiple of the
 * block length). Used by tools (quantize, conversion) and tests. */
rg_status rg_type_from_f32(int type, const float *src, void *dst, int64_t n);
rg_status rg_type_to_f32(int type, const void *src, float *dst, int64_t n);

/* ---- CPU features and kernel dispatch (the one process-wide table) ---- */
/* Levels: 0 scalar, 1 AVX2 (+FMA, F16C), 2 AVX-512 (F, BW, VL). */
int rg_simd_level(void);
/* Highest level this CPU supports (ignores RWKV_GGML_FORCE_SCALAR). */
int rg_simd_max_level(void);
/* Caps the level used from now on (for tests and benchmarks); returns the level in effect.
 * The environment variable RWKV_GGML_FORCE_SCALAR=1 forces level 0 at start-up. */
int rg_simd_select(int max_level);
/* Bits of rg_cpu_features(). Level 1 needs AVX2, FMA and F16C; level 2 also AVX512F, AVX512BW and
 * AVX512VL. The Python binding reads these names (rwkv_ggml.ggml.cpu_features). */
enum {
    RG_CPU_AVX2 = 1 << 0,
    RG_CPU_FMA = 1 << 1,
    RG_CPU_F16C = 1 << 2,
    RG_CPU_AVX512F = 1 << 3,
    RG_CPU_AVX512BW = 1 << 4,
    RG_CPU_AVX512VL = 1 << 5,
    RG_CPU_AVX512_VNNI = 1 << 6,
    RG_CPU_AVX_VNNI = 1 << 7,
    RG_CPU_AVX512_BF16 = 1 << 8,
    RG_CPU_AMX_INT8 = 1 << 9
};
/* Bitmask of the features in effect (RG_CPU_*): those detected less the hidden ones (rg_cpu_mask). */
unsigned rg_cpu_features(void);
/* Runs as a CPU without the features in `hidden` (RG_CPU_* bits; 0 shows all again; each call replaces the
 * last), e.g. an AVX2 machine without AVX-VNNI on one that has it: the levels and the kernel table follow
 * from what remains, capped by the last rg_simd_select. Process-wide, for tests and benchmarks, like
 * rg_simd_select. Returns rg_cpu_features(). The environment variable RWKV_GGML_CPU_MASK (comma-separated
 * lower-case names without the prefix, e.g. "avx_vnni,avx512_bf16") sets the mask at start-up. */
unsigned rg_cpu_mask(unsigned hidden);

/* ---- context (arena) ---- */
/* Allocates mem_size bytes up front; every tensor, view, graph and work buffer built in the
 * context is carved from it. With no_alloc != 0, tensors get no data (rg_new_tensor leaves data
 * NULL) and the context only counts the bytes they would need: build a graph once in such a
 * context to learn rg_ctx_required(), then build it for real in a context of exactly that size -- or
 * compute it right there: rg_graph_build in a no_alloc context plans the memory of every tensor of the
 * graph that has none, reusing an intermediate's memory once its last reader has run, in one buffer
 * owned by the context. A planned tensor belongs to that one graph (building a second graph over it
 * fails); compute a prefix with rg_graph_compute_partial instead. */
rg_ctx *rg_ctx_new(size_t mem_size, int no_alloc, rg_err *err);
void rg_ctx_free(rg_ctx *ctx);
rg_status rg_ctx_status(const rg_ctx *ctx);
const char *rg_ctx_error(const rg_ctx *ctx);
void rg_ctx_clear_error(rg_ctx *ctx);
size_t rg_ctx_size(const rg_ctx *ctx);
size_t rg_ctx_used(const rg_ctx *ctx);
/* Bytes a context with no_alloc == 0 needs for everything built so far. */
size_t rg_ctx_required(const rg_ctx *ctx);
size_t rg_ctx_n_tensors(const rg_ctx *ctx);

/* ---- tensors ---- */
rg_tensor *rg_new_tensor(rg_ctx *ctx, int type, int n_dims, const int64_t *ne);
/* A tensor whose data lives elsewhere (mapped weights, caller-owned buffers); the caller keeps
 * the memory alive as long as the context. nbytes is checked against the tensor's size. */
rg_tensor *rg_new_tensor_ext(rg_ctx *ctx, int type, int n_dims, const int64_t *ne, void *data, size_t nbytes);
/* rg_new_tensor_ext over memory that must not be written (a read-only mapping, an immutable buffer):
 * building a write into it (an rg_cpy destination, or a view of it as one) fails with RG_E_ARG. */
rg_tensor *rg_new_tensor_ext_readonly(rg_ctx *ctx, int type, int n_dims, const int64_t *ne, const void *data,
                                      size_t nbytes);
/* Repoints a tensor made by rg_new_tensor_ext (not a view, not an op result); views of it follow
 * at the next compute. Lets one built graph read and write different buffers on each compute. */
rg_status rg_tensor_set_data(rg_ctx *ctx, rg_tensor *t, void *data, size_t nbytes);
/* rg_tensor_set_data with read-only memory: fails (RG_E_ARG) if a graph writes t (an rg_cpy destination). */
rg_status rg_tensor_set_data_readonly(rg_ctx *ctx, rg_tensor *t, const void *data, size_t nbytes);
/* 1 if the memory of t (or of the tensor it views) is read-only. */
int rg_tensor_is_readonly(const rg_tensor *t);
/* Declares that no compute writes the memory of t (made by rg_new_tensor_ext), e.g. model weights.
 * Graphs then run nodes that read it beside other nodes without a barrier; other external buffers are
 * assumed to possibly alias each other (an eval may read and write one state buffer). */
rg_status rg_tensor_set_constant(rg_ctx *ctx, rg_tensor *t);
int rg_tensor_type(const rg_tensor *t);
int rg_tensor_n_dims(const rg_tensor *t);
int64_t rg_tensor_ne(const rg_tensor *t, int dim);
size_t rg_tensor_nb(const rg_tensor *t, int dim);
int64_t rg_tensor_n_elements(const rg_tensor *t);
size_t rg_tensor_nbytes(const rg_tensor *t); /* bytes spanned by the tensor's elements */
void *rg_tensor_data(const rg_tensor *t);
int rg_tensor_is_contiguous(const rg_tensor *t);
const char *rg_tensor_op_name(const rg_tensor *t);
void rg_tensor_set_name(rg_tensor *t, const char *name);
const char *rg_tensor_name(const rg_tensor *t);

/* ---- views and layout ---- */
/* A strided view into src: n_dims sizes, byte strides nb[1..n_dims-1] (nb[0] is the type size),
 * starting offset bytes into src. Bounds-checked against src's memory. */
rg_tensor *rg_view(rg_ctx *ctx, rg_tensor *src, int n_dims, const int64_t *ne, const size_t *nb, size_t offset);
rg_tensor *rg_reshape(rg_ctx *ctx, rg_tensor *src, int n_dims, const int64_t *ne);
/* axis i of src becomes axis perm[i] of the result (ggml convention). */
rg_tensor *rg_permute(rg_ctx *ctx, rg_tensor *src, int p0, int p1, int p2, int p3);
rg_tensor *rg_transpose(rg_ctx *ctx, rg_tensor *src);
/* Contiguous copy (same type for F32/F16 sources; F32 for anything else). */
rg_tensor *rg_cont(rg_ctx *ctx, rg_tensor *src);
/* Writes src into dst (same element count; F32 <-> F16 conversion, quantization from F32). Returns a
 * node standing for dst after the write: depend on it to order reads after the write. */
rg_tensor *rg_cpy(rg_ctx *ctx, rg_tensor *src, rg_tensor *dst);

/* ---- element-wise ops (F32 result; F32 or F16 inputs) ---- */
/* Binary ops broadcast: for each dim, b.ne == a.ne or b.ne == 1 (a row, a column or a scalar). */
rg_tensor *rg_add(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
rg_tensor *rg_sub(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
rg_tensor *rg_mul(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
rg_tensor *rg_div(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
rg_tensor *rg_max(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
rg_tensor *rg_scale(rg_ctx *ctx, rg_tensor *a, float s);
rg_tensor *rg_neg(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_exp(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_one_minus_x(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_sigmoid(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_silu(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_relu(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_sqr(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_sqrt(rg_ctx *ctx, rg_tensor *a);
rg_tensor *rg_tanh(rg_ctx *ctx, rg_tensor *a);

/* ---- reductions, norms ---- */
/* Normalises each row (dim 0) to zero mean / unit variance (biased), then * w + b; w, b may be NULL
 * and are F32 vectors of ne[0] elements. */
rg_tensor *rg_layer_norm(rg_ctx *ctx, rg_tensor *x, rg_tensor *w, rg_tensor *b, float eps);
/* Splits each row into n_groups equal groups and normalises each group separately, then * w + b. */
rg_tensor *rg_group_norm(rg_ctx *ctx, rg_tensor *x, int64_t n_groups, rg_tensor *w, rg_tensor *b, float eps);
/* Sum of each row: result ne = {1, ne1, ne2, ne3}. */
rg_tensor *rg_sum_rows(rg_ctx *ctx, rg_tensor *x);
/* Splits each row into n_groups equal groups and divides each by max(its L2 norm, eps). */
rg_tensor *rg_l2_norm(rg_ctx *ctx, rg_tensor *x, int64_t n_groups, float eps);

/* ---- products and gathers ---- */
/* a: ne {K, M, n2, n3} of any type (weights), b: F32 ne {K, T, n2', n3'} (a broadcast over dims 2, 3
 * when its size there is 1). Result F32 {M, T, ...}: out[t][m] = sum_k a[m][k] * b[t][k]. */
rg_tensor *rg_mul_mat(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
/* rg_mul_mat, except that with F32/F16 weights, 2-D operands and T > 1 (mat-mat) the products use bf16
 * operands (rounded to nearest even; 8 significant bits) with f32 accumulation where the CPU has
 * AVX512_BF16: about twice the arithmetic rate, at a relative error of about 1e-2 per product. Elsewhere
 * (no AVX512_BF16, T = 1, quantized weights) it computes exactly as rg_mul_mat. Opt-in. */
rg_tensor *rg_mul_mat_bf16(rg_ctx *ctx, rg_tensor *a, rg_tensor *b);
/* table: ne {C, V} of any type; ids: I32 vector of n row indices. Result F32 {C, n}. Ids out of range
 * are reported by rg_graph_compute (the row is zero-filled). */
rg_tensor *rg_get_rows(rg_ctx *ctx, rg_tensor *table, rg_tensor *ids);
/* Concatenate along dim (0..3); other dims must match. */
rg_tensor *rg_concat(rg_ctx *ctx, rg_tensor *a, rg_tensor *b, int dim);
/* Scatter: row ids[b] of dst (F32 {n, rows}, contiguous rows at any stride) <- column b of src (contiguous
 * F32 {n, B}). The result stands for dst after the write (like rg_cpy). An id outside dst is a compute
 * error (that row is not written); duplicate ids leave one of their columns, unspecified which. */
rg_tensor *rg_set_rows(rg_ctx *ctx, rg_tensor *dst, rg_tensor *src, rg_tensor *ids);

/* ---- user callbacks as graph nodes (rows split across threads; fn must be thread-safe) ---- */
rg_tensor *rg_map_unary(rg_ctx *ctx, rg_tensor *a, rg_map_unary_fn fn, void *userdata);
rg_tensor *rg_map_binary(rg_ctx *ctx, rg_tensor *a, rg_tensor *b, rg_map_binary_fn fn, void *userdata);

/* ---- RWKV-specific fused ops (csrc/rwkv_wkv4.c, csrc/rwkv_wkv5_wkv7.c) ----
 * state_out: NULL, or where the new state goes: an F32 contiguous tensor of as many elements as state
 * (the state itself, for an update in place, or memory that does not overlap it). With it the result
 * is only the T output columns {C, T}, and no copy of the state is needed afterwards; without it the
 * new state follows the output columns in the result as described per op. */
/* RWKV-4 WKV over T tokens (architecture.md V4.4-V4.5), all F32, contiguous:
 * k, v: {C, T}; time_first u, time_decay w (already -exp): {C}; state: {C, 3} rows aa, bb, pp.
 * Result {C, T + 3}: columns 0..T-1 are wkv per token, columns T..T+2 the new aa, bb, pp. */
rg_tensor *rg_rwkv_wkv4(rg_ctx *ctx, rg_tensor *k, rg_tensor *v, rg_tensor *time_first, rg_tensor *time_decay,
                        rg_tensor *state, rg_tensor *state_out);
/* RWKV v5/v6 multi-head WKV over T tokens (architecture.md V5.4-V5.5, V6.7), all F32,
 * contiguous: r, k, v {C, T}; state: the H*N*N = C*N floats of S[h][i=key][j=value] (any shape; N is
 * inferred as n_elements / C). Decay w (in (0,1), i.e. already exp(-exp)): H floats (per head, v5.0/5.1),
 * C (per channel, v5.2) or C*T (per channel and token, v6). Bonus u: H or C floats.
 * Result {C, T + N}: columns 0..T-1 are y per token (element h*N + j), then the new state (H*N*N floats,
 * architecture.md §7 order). */
rg_tensor *rg_rwkv_wkv5(rg_ctx *ctx, rg_tensor *r, rg_tensor *k, rg_tensor *v, rg_tensor *w, rg_tensor *u,
                        rg_tensor *state, rg_tensor *state_out);
/* RWKV v7 state update over T tokens (architecture.md V7.10-V7.11), all F32, contiguous: r, w (decay in
 * (0,1)), k, v, a (= -kappa_hat), b (= kappa_hat * alpha): {C, T}; state: H*N*N = C*N floats of
 * S[h][i=value][j=key] (N inferred as n_elements / C). Result {C, T + N}: y per token (uses the updated
 * state), then the new state. */
rg_tensor *rg_rwkv_wkv7(rg_ctx *ctx, rg_tensor *r, rg_tensor *w, rg_tensor *k, rg_tensor *v, rg_tensor *a,
                        rg_tensor *b, rg_tensor *state, rg_tensor *state_out);

/* ---- B sequences of one token each (batched decode) ----
 * Sequence b's state is row slots[b] (I32 {B}, distinct) of `states`, an F32 table {S, capacity} with
 * contiguous rows at any row stride (e.g. a view of one layer's part of a bank of whole model states);
 * the ops update those rows in place and return y {C, B}. Each sequence gets exactly the arithmetic of
 * the single-sequence op for one token (bit-identical). Operands are {C, B} (column b = sequence b).
 * v4: S = 3*C (aa, bb, pp); v5/v6: S = C*N, decay w of H, C or C*B floats, bonus u of H or C;
 * v7: S = C*N. A slot outside the table is a compute error (its y is zero). */
rg_tensor *rg_rwkv_wkv4_batch(rg_ctx *ctx, rg_tensor *k, rg_tensor *v, rg_tensor *time_first, rg_tensor *time_decay,
                              rg_tensor *states, rg_tensor *slots);
rg_tensor *rg_rwkv_wkv5_batch(rg_ctx *ctx, rg_tensor *r, rg_tensor *k, rg_tensor *v, rg_tensor *w, rg_tensor *u,
                              rg_tensor *states, rg_tensor *slots);
rg_tensor *rg_rwkv_wkv7_batch(rg_ctx *ctx, rg_tensor *r, rg_tensor *w, rg_tensor *k, rg_tensor *v, rg_tensor *a,
                              rg_tensor *b, rg_tensor *states, rg_tensor *slots);

/* ---- graphs ---- */
/* Collects every node the outputs depend on (each once, topological order) and reserves the work
 * buffer for up to max_threads threads in the context. */
rg_graph *rg_graph_build(rg_ctx *ctx, rg_tensor *const *outputs, int n_outputs, int max_threads);
int rg_graph_n_nodes(const rg_graph *g);
rg_tensor *rg_graph_node(const rg_graph *g, int i);
size_t rg_graph_work_size(const rg_graph *g);
/* Barriers one compute passes between nodes: threads meet only where a node depends on memory that
 * another thread may still be writing or reading (graph_sync.c). */
int rg_graph_n_barriers(const rg_graph *g);
/* Computes every node with n_threads threads of the pool (n_threads <= the graph's max_threads and
 * <= the pool's size). Allocation-free. Returns RG_E_BUSY if the graph is being computed by another
 * thread. Results are bit-identical for any n_threads. */
rg_status rg_graph_compute(rg_graph *g, rg_pool *pool, int n_threads);
/* Computes only nodes 0..n_nodes-1 (a prefix of the dependency order): e.g. a graph built from
 * outputs {a, b} computes what a needs first, so its prefix yields a without b's extra work. */
rg_status rg_graph_compute_partial(rg_graph *g, rg_pool *pool, int n_threads, int n_nodes);
const char *rg_graph_error(const rg_graph *g);

/* ---- thread pool ---- */
/* A persistent pool of n_threads - 1 workers (the calling thread is thread 0). Workers spin briefly
 * after a compute, then sleep on a condition variable. */
rg_pool *rg_pool_new(int n_threads, rg_err *err);
void rg_pool_free(rg_pool *pool);
int rg_pool_n_threads(const rg_pool *pool);

/* ---- quantization ---- */
/* Converts n_rows rows of row_len floats (contiguous) to type (F16 or a block type; row_len a multiple
 * of its block length) into dst (n_rows * rg_type_row_bytes(type, row_len) bytes), split over n_threads
 * threads of pool (pool may be NULL when n_threads == 1). Block-quantized types use the reference
 * quantizer of formats.md §5.3, so the bytes equal rwkv.cpp's for any thread count. The pool must not
 * be computing a graph at the same time. */
rg_status rg_quantize_rows(int type, const float *src, void *dst, int64_t n_rows, int64_t row_len, rg_pool *pool,
                           int n_threads);

#ifdef __cplusplus
}
#endif

#endif /* RWKV_GGML_H */
