/* Element-wise ops: unary math, broadcasting binary ops, and the user-callback map ops.
 * Work is split by rows; each row is computed by one thread, so results do not depend on the
 * thread count. */
#include "ops_kernels.h"
#include "simd/kernels.h"

#include <math.h>

static void unary_row(int op, float param, int64_t n, float *restrict y, const float *restrict x) {
    switch (op) {
    case RG_OP_SCALE:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * param;
        break;
    case RG_OP_NEG:
        for (int64_t i = 0; i < n; i++) y[i] = -x[i];
        break;
    case RG_OP_EXP:
        rg_kernels.vec_exp(x, y, n);
        break;
    case RG_OP_ONE_MINUS_X:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f - x[i];
        break;
    case RG_OP_SIGMOID:
    case RG_OP_SILU:
        rg_kernels.vec_sigmoid(x, y, n, op == RG_OP_SILU);
        break;
    case RG_OP_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes through */
        break;
    case RG_OP_SQR:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
        break;
    case RG_OP_SQRT:
        for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
        break;
    case RG_OP_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    default:
        break;
    }
}

void rg_fwd_unary(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        const float *x = rg_load_row_f32(src, i1, i2, i3, buf);
        unary_row(dst->op, dst->fparams[0], dst->ne[0], rg_row_ptr(dst, i1, i2, i3), x);
    }
}

static inline float apply_binary(int op, float a, float b) {
    switch (op) {
    case RG_OP_ADD: return a + b;
    case RG_OP_SUB: return a - b;
    case RG_OP_MUL: return a * b;
    case RG_OP_DIV: return a / b;
    default: return (a > b || a != a) ? a : b; /* RG_OP_MAX; a NaN in either operand propagates */
    }
}

/* y = a op b over n elements, where a or b may be a single broadcast value (stride 0). */
static void binary_row(int op, int64_t n, float *restrict y, const float *a, int64_t sa, const float *b, int64_t sb) {
    if (sa == 1 && sb == 1) {
        switch (op) { /* separate loops so the compiler vectorises the common cases */
        case RG_OP_ADD: for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i]; return;
        case RG_OP_SUB: for (int64_t i = 0; i < n; i++) y[i] = a[i] - b[i]; return;
        case RG_OP_MUL: for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i]; return;
        default: break;
        }
    }
    for (int64_t i = 0; i < n; i++) y[i] = apply_binary(op, a[i * sa], b[i * sb]);
}

void rg_fwd_binary(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    float *buf_a = rg_thread_scratch(p);
    float *buf_b = buf_a + dst->ne[0]; /* dst rows are the longest: operands broadcast up to them */
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        const float *ra = rg_load_row_f32(a, i1 % a->ne[1], i2 % a->ne[2], i3 % a->ne[3], buf_a);
        const float *rb = rg_load_row_f32(b, i1 % b->ne[1], i2 % b->ne[2], i3 % b->ne[3], buf_b);
        binary_row(dst->op, dst->ne[0], rg_row_ptr(dst, i1, i2, i3), ra, a->ne[0] == 1 ? 0 : 1, rb, b->ne[0] == 1 ? 0 : 1);
    }
}

void rg_fwd_map_unary(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    const rg_map_unary_fn fn = (rg_map_unary_fn)dst->fn;
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        fn(dst->ne[0], rg_row_ptr(dst, i1, i2, i3), rg_load_row_f32(src, i1, i2, i3, buf), dst->userdata);
    }
}

void rg_fwd_map_binary(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_map_binary_fn fn = (rg_map_binary_fn)dst->fn;
    float *buf_a = rg_thread_scratch(p);
    float *buf_b = buf_a + dst->ne[0];
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        fn(dst->ne[0], rg_row_ptr(dst, i1, i2, i3), rg_load_row_f32(a, i1, i2, i3, buf_a),
           rg_load_row_f32(b, i1, i2, i3, buf_b), dst->userdata);
    }
}
