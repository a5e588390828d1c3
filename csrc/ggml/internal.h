/* Engine internals shared by the engine source files: the tensor, context and graph structs,
 * the op table, error helpers.
 *
 * Stride locals follow ggml's convention: ne0..ne3 / nb0..nb3 for the destination, ne00.. / nb01..
 * for src0, ne10.. for src1 (source index first, then the dimension). */
#ifndef RG_INTERNAL_H
#define RG_INTERNAL_H

#include "../include/rwkv_ggml.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define RG_MAX_DIMS 4
#define RG_MAX_SRC 8 /* rwkv_wkv7 reads 7 operands and may write an 8th */
#define RG_MAX_TYPE 32
#define RG_ALIGN 64
#define RG_NAME_LEN 48
/* Bytes of each thread's private scratch slice in the work buffer are rounded to this. */
#define RG_CACHE_LINE 64

#define RG_INTERNAL_API __attribute__((visibility("hidden")))

/* ---- ops ---- */
typedef enum {
    RG_OP_NONE = 0, /* a leaf: data is input/weights */
    RG_OP_VIEW,     /* view/reshape/permute/transpose: no compute, data follows view_src */
    RG_OP_CPY,
    RG_OP_CONT,
    RG_OP_ADD,
    RG_OP_SUB,
    RG_OP_MUL,
    RG_OP_DIV,
    RG_OP_MAX,
    RG_OP_SCALE,
    RG_OP_NEG,
    RG_OP_EXP,
    RG_OP_ONE_MINUS_X,
    RG_OP_SIGMOID,
    RG_OP_SILU,
    RG_OP_RELU,
    RG_OP_SQR,
    RG_OP_SQRT,
    RG_OP_TANH,
    RG_OP_LAYER_NORM,
    RG_OP_GROUP_NORM,
    RG_OP_SUM_ROWS,
    RG_OP_MUL_MAT,
    RG_OP_GET_ROWS,
    RG_OP_CONCAT,
    RG_OP_MAP_UNARY,
    RG_OP_MAP_BINARY,
    RG_OP_RWKV_WKV4,
    RG_OP_RWKV_WKV5,
    RG_OP_RWKV_WKV7,
    RG_OP_L2_NORM,
    RG_OP_SET_ROWS,
    RG_OP_RWKV_WKV4_BATCH,
    RG_OP_RWKV_WKV5_BATCH,
    RG_OP_RWKV_WKV7_BATCH,
    RG_OP_COUNT
} rg_op;

struct rg_tensor {
    int type;
    int n_dims;
    int64_t ne[RG_MAX_DIMS];
    size_t nb[RG_MAX_DIMS];
    int op;
    float fparams[4];
    int64_t iparams[4];
    void *fn;       /* map ops: the user callback */
    void *userdata; /* map ops: the user pointer */
    rg_tensor *src[RG_MAX_SRC];
    rg_tensor *view_src; /* views: the tensor whose memory this one reads */
    size_t view_offs;
    void *data;
    bool external; /* leaf with caller-owned data (rg_new_tensor_ext) */
    bool prepare;  /* ops with a prepare phase: this node needs it (e.g. its input must be repacked) */
    bool planned;  /* its data was placed by a graph's memory plan (no_alloc contexts) */
    bool constant; /* external whose memory no compute writes (weights): rg_tensor_set_constant */
    bool readonly; /* external over read-only memory (rg_new_tensor_ext_readonly, rg_tensor_set_data_readonly) */
    bool written;  /* a compute writes its memory (an rg_cpy destination): it may not become read-only */
    uint32_t visit;
    char name[RG_NAME_LEN];
};

struct rg_ctx {
    uint8_t *mem;
    size_t mem_size;
    size_t used;
    size_t data_required; /* no_alloc mode: data bytes tensors would have needed */
    size_t n_tensors;
    bool no_alloc;
    /* Heap blocks owned by the context besides the arena: the buffers of planned graphs. */
    void **heap;
    int n_heap, cap_heap;
    rg_status status;
    char err[256];
};

typedef struct {
    int ith, nth;
    int phase;     /* 0 = prepare (only for ops with two phases), 1 = compute */
    void *wdata;   /* the whole work buffer (shared region first, then per-thread slices) */
    size_t wshared; /* bytes of the shared region at the start of wdata */
    size_t wthread; /* bytes of each thread's private slice */
    /* A compute-time failure (e.g. a token id out of range) sets this, first writer wins. */
    _Atomic int *error_flag;
    char *error_msg;
    /* This node's work counter for dynamic splits (rg_claim), zeroed before each compute. */
    _Atomic int64_t *counter;
} rg_compute_params;

/* Dynamic split: claims the next `chunk` items of n (threads that finish early take more, so a node
 * ends when its work does, not when its slowest thread's fixed share does). Every item is still
 * computed whole by one thread with the same kernel, so results do not depend on who computed it.
 * Use it for at most one loop per node (one counter per node and compute). */
static inline bool rg_claim(const rg_compute_params *p, int64_t n, int64_t chunk, int64_t *start, int64_t *end) {
    const int64_t s = atomic_fetch_add_explicit(p->counter, chunk, memory_order_relaxed);
    if (s >= n) return false;
    *start = s;
    *end = s + chunk < n ? s + chunk : n;
    return true;
}

static inline void *rg_thread_scratch(const rg_compute_params *p) {
    return (uint8_t *)p->wdata + p->wshared + (size_t)p->ith * p->wthread;
}

typedef void (*rg_forward_fn)(const rg_compute_params *p, rg_tensor *dst);
typedef struct {
    size_t shared;     /* bytes used by all threads (filled during phase 0) */
    size_t per_thread; /* bytes of private scratch for each thread */
} rg_work;
typedef rg_work (*rg_work_fn)(const rg_tensor *dst, int nth);

typedef struct {
    const char *name;
    rg_forward_fn forward; /* NULL for leaves and views */
    rg_work_fn work;       /* NULL = no scratch */
    int n_phases;          /* 2 if the op may need a prepare phase + barrier (then node->prepare says) */
    int writes_src; /* 1 + index of a source the op updates in place besides its result (0: none; the
                       source may be NULL, an optional output the node does not have) */
} rg_op_info;

RG_INTERNAL_API extern const rg_op_info rg_op_table[RG_OP_COUNT];

/* ---- context helpers ---- */
RG_INTERNAL_API void *rg_ctx_alloc(rg_ctx *ctx, size_t size);
/* A zeroed heap block of size bytes (64-byte aligned) freed with the context. */
RG_INTERNAL_API void *rg_ctx_alloc_heap(rg_ctx *ctx, size_t size);
RG_INTERNAL_API void rg_set_error(rg_ctx *ctx, rg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
RG_INTERNAL_API void rg_err_set(rg_err *err, rg_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Creates the result tensor of an op: contiguous, F32 unless type says otherwise, data in the arena. */
RG_INTERNAL_API rg_tensor *rg_new_op_tensor(rg_ctx *ctx, int op, int type, int n_dims, const int64_t *ne);
RG_INTERNAL_API rg_tensor *rg_tensor_alloc_struct(rg_ctx *ctx);
RG_INTERNAL_API void rg_tensor_set_contiguous_strides(rg_tensor *t);
/* Records that an op writes dst's memory (the root tensor it views); fails with a message, for the op
 * named, when that memory is read-only or constant. */
RG_INTERNAL_API bool rg_tensor_claim_write(rg_ctx *ctx, rg_tensor *dst, const char *op);

/* ---- type table ---- */
typedef void (*rg_to_f32_fn)(const void *src, float *dst, int64_t n);
typedef void (*rg_from_f32_fn)(const float *src, void *dst, int64_t n);
typedef struct {
    const char *name;
    int64_t block_size;
    size_t block_bytes;
    bool quantized;
    rg_to_f32_fn to_f32;     /* n elements (multiple of block_size) */
    rg_from_f32_fn from_f32; /* may be NULL (I32) */
    /* Block-quantized weights: mul_mat converts each activation row with vec_dot_type's from_f32 and
     * calls vec_dot / vec_dot_xn (kernel table, formats.md §5.4); NULL for the other types. */
    int vec_dot_type;
    float (*vec_dot)(int64_t n, const void *w_row, const void *x_row);
    /* out[j] = vec_dot(n, w_row, x + j * ldx) for j < nx (1..RG_QDOT_MAX_NX), the weight row read once */
    void (*vec_dot_xn)(int64_t n, const void *w_row, const void *x, size_t ldx, int nx, float *out);
} rg_type_traits;

RG_INTERNAL_API const rg_type_traits *rg_traits(int type);

static inline bool rg_is_float_type(int type) { return type == RG_TYPE_F32 || type == RG_TYPE_F16; }

/* ---- row helpers used by element-wise kernels ---- */
static inline int64_t rg_nrows(const rg_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }
static inline void rg_split(int64_t n, int ith, int nth, int64_t *start, int64_t *end) {
    int64_t per = (n + nth - 1) / nth;
    *start = per * ith < n ? per * ith : n;
    *end = *start + per < n ? *start + per : n;
}

/* Counters each node has (a cache line of them): rg_claim uses the first, rg_claim_parts one per thread. */
#define RG_NODE_COUNTERS 8

/* Dynamic split that keeps each thread's reads contiguous: the n items are cut into one part per
 * thread, each thread claims chunks of its own part in order (one unbroken stream for the hardware
 * prefetcher, instead of chunks interleaved with the other threads'), then helps with the other parts.
 * *cursor starts at 0 and holds the caller's position between calls. Needs nth <= RG_NODE_COUNTERS
 * (otherwise behaves as rg_claim). */
static inline bool rg_claim_parts(const rg_compute_params *p, int64_t n, int64_t chunk, int *cursor, int64_t *start,
                                  int64_t *end) {
    if (p->nth > RG_NODE_COUNTERS) return *cursor == 0 ? rg_claim(p, n, chunk, start, end) : false;
    for (; *cursor < p->nth; ++*cursor) {
        const int part = (p->ith + *cursor) % p->nth;
        int64_t lo, hi;
        rg_split(n, part, p->nth, &lo, &hi);
        const int64_t len = hi - lo, s = atomic_fetch_add_explicit(p->counter + part, chunk, memory_order_relaxed);
        if (s < len) {
            *start = lo + s;
            *end = lo + (s + chunk < len ? s + chunk : len);
            return true;
        }
    }
    return false;
}

/* The (i1, i2, i3) coordinates of row r of t (rows numbered with dim 1 fastest). */
static inline void rg_row_coords(const rg_tensor *t, int64_t r, int64_t *i1, int64_t *i2, int64_t *i3) {
    *i1 = r % t->ne[1];
    *i2 = (r / t->ne[1]) % t->ne[2];
    *i3 = r / (t->ne[1] * t->ne[2]);
}
/* The rows of dst one thread computes in a row-wise op: an even split of rg_nrows(dst) over the threads,
 * walked in order. Each row is computed whole by one thread, so results do not depend on the thread count.
 *     rg_rows rows = rg_thread_rows(p, dst);
 *     int64_t i1, i2, i3;
 *     while (rg_next_row(&rows, dst, &i1, &i2, &i3)) { ... row (i1, i2, i3) ... } */
typedef struct {
    int64_t next, end;
} rg_rows;
static inline rg_rows rg_thread_rows(const rg_compute_params *p, const rg_tensor *dst) {
    rg_rows rows;
    rg_split(rg_nrows(dst), p->ith, p->nth, &rows.next, &rows.end);
    return rows;
}
static inline bool rg_next_row(rg_rows *rows, const rg_tensor *dst, int64_t *i1, int64_t *i2, int64_t *i3) {
    if (rows->next >= rows->end) return false;
    rg_row_coords(dst, rows->next++, i1, i2, i3);
    return true;
}
static inline void *rg_row_ptr(const rg_tensor *t, int64_t i1, int64_t i2, int64_t i3) {
    return (uint8_t *)t->data + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}
/* Reads element i0 of a row (any stride) of an F32/F16 tensor as float. */
RG_INTERNAL_API float rg_get_f32_1d(const rg_tensor *t, const void *row, int64_t i0);
/* Loads row (i1,i2,i3) of an F32/F16/quantized tensor into a contiguous float buffer (or returns a
 * pointer into the tensor when it already is a contiguous F32 row). */
RG_INTERNAL_API const float *rg_load_row_f32(const rg_tensor *t, int64_t i1, int64_t i2, int64_t i3, float *buf);
RG_INTERNAL_API void rg_report_compute_error(const rg_compute_params *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Bytes of per-thread scratch an op needs to load rows of its sources as floats. */
RG_INTERNAL_API size_t rg_row_scratch_bytes(const rg_tensor *dst, int n_rows_of_len);

#endif
