/* Op builders: check the operands, create the result node. The kernels live in ops_*.c and are
 * registered in the op table at the end of this file, one row per op. */
#include "internal.h"
#include "ops_kernels.h"

#include <inttypes.h>
#include <math.h>

/* Builders return NULL when the context already failed or an input is NULL (an earlier builder
 * failed): the first error stays the one reported. */
static bool usable(rg_ctx *ctx, const rg_tensor *a, const rg_tensor *b, int need_b, const char *op) {
    if (ctx == NULL || ctx->status != RG_OK) return false;
    if (a == NULL || (need_b && b == NULL)) {
        rg_set_error(ctx, RG_E_ARG, "%s: NULL operand", op);
        return false;
    }
    return true;
}

static bool check_float(rg_ctx *ctx, const rg_tensor *t, const char *op, const char *which) {
    if (!rg_is_float_type(t->type)) {
        rg_set_error(ctx, RG_E_TYPE, "%s: %s '%s' is %s; element-wise ops take F32 or F16", op, which, t->name,
                     rg_type_name(t->type));
        return false;
    }
    return true;
}

static rg_tensor *unary(rg_ctx *ctx, int op, rg_tensor *a, float param) {
    const char *name = rg_op_table[op].name;
    if (!usable(ctx, a, NULL, 0, name) || !check_float(ctx, a, name, "input")) return NULL;
    rg_tensor *t = rg_new_op_tensor(ctx, op, RG_TYPE_F32, a->n_dims, a->ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->fparams[0] = param;
    return t;
}

rg_tensor *rg_scale(rg_ctx *ctx, rg_tensor *a, float s) { return unary(ctx, RG_OP_SCALE, a, s); }
rg_tensor *rg_neg(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_NEG, a, 0); }
rg_tensor *rg_exp(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_EXP, a, 0); }
rg_tensor *rg_one_minus_x(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_ONE_MINUS_X, a, 0); }
rg_tensor *rg_sigmoid(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_SIGMOID, a, 0); }
rg_tensor *rg_silu(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_SILU, a, 0); }
rg_tensor *rg_relu(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_RELU, a, 0); }
rg_tensor *rg_sqr(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_SQR, a, 0); }
rg_tensor *rg_sqrt(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_SQRT, a, 0); }
rg_tensor *rg_tanh(rg_ctx *ctx, rg_tensor *a) { return unary(ctx, RG_OP_TANH, a, 0); }

static rg_tensor *binary(rg_ctx *ctx, int op, rg_tensor *a, rg_tensor *b) {
    const char *name = rg_op_table[op].name;
    if (!usable(ctx, a, b, 1, name) || !check_float(ctx, a, name, "a") || !check_float(ctx, b, name, "b")) return NULL;
    int64_t ne[RG_MAX_DIMS];
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        if (a->ne[i] != b->ne[i] && a->ne[i] != 1 && b->ne[i] != 1) {
            rg_set_error(ctx, RG_E_SHAPE,
                         "%s: shapes (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ") and (%" PRId64 ", %" PRId64
                         ", %" PRId64 ", %" PRId64 ") do not broadcast (dim %d)",
                         name, a->ne[0], a->ne[1], a->ne[2], a->ne[3], b->ne[0], b->ne[1], b->ne[2], b->ne[3], i);
            return NULL;
        }
        ne[i] = a->ne[i] > b->ne[i] ? a->ne[i] : b->ne[i];
    }
    const int n_dims = a->n_dims > b->n_dims ? a->n_dims : b->n_dims;
    rg_tensor *t = rg_new_op_tensor(ctx, op, RG_TYPE_F32, n_dims, ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

rg_tensor *rg_add(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) { return binary(ctx, RG_OP_ADD, a, b); }
rg_tensor *rg_sub(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) { return binary(ctx, RG_OP_SUB, a, b); }
rg_tensor *rg_mul(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) { return binary(ctx, RG_OP_MUL, a, b); }
rg_tensor *rg_div(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) { return binary(ctx, RG_OP_DIV, a, b); }
rg_tensor *rg_max(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) { return binary(ctx, RG_OP_MAX, a, b); }

static bool check_affine(rg_ctx *ctx, const rg_tensor *x, const rg_tensor *p, const char *op, const char *which) {
    if (p == NULL) return true;
    if (p->type != RG_TYPE_F32 || rg_tensor_n_elements(p) != x->ne[0] || !rg_tensor_is_contiguous(p)) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: %s '%s' must be a contiguous F32 vector of %" PRId64 " elements", op, which,
                     p->name, x->ne[0]);
        return false;
    }
    return true;
}

static rg_tensor *norm(rg_ctx *ctx, int op, rg_tensor *x, int64_t n_groups, rg_tensor *w, rg_tensor *b, float eps) {
    const char *name = rg_op_table[op].name;
    if (!usable(ctx, x, NULL, 0, name) || !check_float(ctx, x, name, "input")) return NULL;
    if (!check_affine(ctx, x, w, name, "weight") || !check_affine(ctx, x, b, name, "bias")) return NULL;
    if (n_groups < 1 || x->ne[0] % n_groups != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: row length %" PRId64 " cannot be split into %" PRId64 " groups", name,
                     x->ne[0], n_groups);
        return NULL;
    }
    if (!(eps >= 0.0f)) {
        rg_set_error(ctx, RG_E_ARG, "%s: eps must be >= 0", name);
        return NULL;
    }
    rg_tensor *t = rg_new_op_tensor(ctx, op, RG_TYPE_F32, x->n_dims, x->ne);
    if (t == NULL) return NULL;
    t->src[0] = x;
    t->src[1] = w;
    t->src[2] = b;
    t->fparams[0] = eps;
    t->iparams[0] = n_groups;
    return t;
}

rg_tensor *rg_layer_norm(rg_ctx *ctx, rg_tensor *x, rg_tensor *w, rg_tensor *b, float eps) {
    return norm(ctx, RG_OP_LAYER_NORM, x, 1, w, b, eps);
}

rg_tensor *rg_group_norm(rg_ctx *ctx, rg_tensor *x, int64_t n_groups, rg_tensor *w, rg_tensor *b, float eps) {
    return norm(ctx, RG_OP_GROUP_NORM, x, n_groups, w, b, eps);
}

rg_tensor *rg_sum_rows(rg_ctx *ctx, rg_tensor *x) {
    if (!usable(ctx, x, NULL, 0, "sum_rows") || !check_float(ctx, x, "sum_rows", "input")) return NULL;
    const int64_t ne[4] = {1, x->ne[1], x->ne[2], x->ne[3]};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_SUM_ROWS, RG_TYPE_F32, x->n_dims, ne);
    if (t == NULL) return NULL;
    t->src[0] = x;
    return t;
}

/* l2_norm: y = x / max(||x_group||_2, eps) per group of a row, PyTorch's F.normalize(x, p=2, eps) per
 * group; RWKV-7 uses it per head for its in-context learning key (architecture.md V7.7, eps = 1e-12). */
rg_tensor *rg_l2_norm(rg_ctx *ctx, rg_tensor *x, int64_t n_groups, float eps) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    if (x == NULL) {
        rg_set_error(ctx, RG_E_ARG, "l2_norm: NULL operand");
        return NULL;
    }
    if (!rg_is_float_type(x->type)) {
        rg_set_error(ctx, RG_E_TYPE, "l2_norm: input '%s' is %s; it must be F32 or F16", x->name, rg_type_name(x->type));
        return NULL;
    }
    if (n_groups < 1 || x->ne[0] % n_groups != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "l2_norm: row length %" PRId64 " cannot be split into %" PRId64 " groups",
                     x->ne[0], n_groups);
        return NULL;
    }
    if (!(eps >= 0.0f) || isinf(eps)) {
        rg_set_error(ctx, RG_E_ARG, "l2_norm: eps must be finite and >= 0");
        return NULL;
    }
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_L2_NORM, RG_TYPE_F32, x->n_dims, x->ne);
    if (t == NULL) return NULL;
    t->src[0] = x;
    t->fparams[0] = eps;
    t->iparams[0] = n_groups;
    return t;
}

rg_tensor *rg_mul_mat(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) {
    if (!usable(ctx, a, b, 1, "mul_mat")) return NULL;
    if (rg_traits(a->type)->to_f32 == NULL || a->type == RG_TYPE_I32) {
        rg_set_error(ctx, RG_E_UNSUPPORTED, "mul_mat: weight type %s is not supported", rg_type_name(a->type));
        return NULL;
    }
    if (b->type != RG_TYPE_F32) {
        rg_set_error(ctx, RG_E_TYPE, "mul_mat: b '%s' must be F32, got %s", b->name, rg_type_name(b->type));
        return NULL;
    }
    if (a->ne[0] != b->ne[0]) {
        rg_set_error(ctx, RG_E_SHAPE, "mul_mat: a '%s' has rows of %" PRId64 ", b '%s' has rows of %" PRId64, a->name,
                     a->ne[0], b->name, b->ne[0]);
        return NULL;
    }
    for (int i = 2; i < RG_MAX_DIMS; i++) {
        if (a->ne[i] != b->ne[i] && a->ne[i] != 1) {
            rg_set_error(ctx, RG_E_SHAPE, "mul_mat: dim %d: a has %" PRId64 ", b has %" PRId64 " (a broadcasts only from 1)",
                         i, a->ne[i], b->ne[i]);
            return NULL;
        }
    }
    if (a->nb[0] != rg_traits(a->type)->block_bytes) {
        rg_set_error(ctx, RG_E_SHAPE, "mul_mat: the rows of a '%s' must be contiguous", a->name);
        return NULL;
    }
    const int64_t ne[4] = {a->ne[1], b->ne[1], b->ne[2], b->ne[3]};
    const int n_dims = b->n_dims > 2 ? b->n_dims : 2;
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_MUL_MAT, RG_TYPE_F32, n_dims, ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    t->prepare = rg_mul_mat_needs_prepare(t);
    return t;
}

rg_tensor *rg_mul_mat_bf16(rg_ctx *ctx, rg_tensor *a, rg_tensor *b) {
    rg_tensor *t = rg_mul_mat(ctx, a, b);
    if (t == NULL) return NULL;
    t->iparams[0] = RG_MUL_MAT_BF16;
    t->prepare = rg_mul_mat_needs_prepare(t);
    return t;
}

rg_tensor *rg_get_rows(rg_ctx *ctx, rg_tensor *table, rg_tensor *ids) {
    if (!usable(ctx, table, ids, 1, "get_rows")) return NULL;
    if (rg_traits(table->type)->to_f32 == NULL || table->type == RG_TYPE_I32) {
        rg_set_error(ctx, RG_E_UNSUPPORTED, "get_rows: table type %s is not supported", rg_type_name(table->type));
        return NULL;
    }
    if (ids->type != RG_TYPE_I32 || ids->ne[1] * ids->ne[2] * ids->ne[3] != 1) {
        rg_set_error(ctx, RG_E_TYPE, "get_rows: ids must be an I32 vector");
        return NULL;
    }
    if (table->ne[2] * table->ne[3] != 1) {
        rg_set_error(ctx, RG_E_SHAPE, "get_rows: table must be 2-D");
        return NULL;
    }
    const int64_t ne[2] = {table->ne[0], ids->ne[0]};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_GET_ROWS, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    t->src[0] = table;
    t->src[1] = ids;
    return t;
}

rg_tensor *rg_concat(rg_ctx *ctx, rg_tensor *a, rg_tensor *b, int dim) {
    if (!usable(ctx, a, b, 1, "concat") || !check_float(ctx, a, "concat", "a") || !check_float(ctx, b, "concat", "b"))
        return NULL;
    if (dim < 0 || dim >= RG_MAX_DIMS) {
        rg_set_error(ctx, RG_E_ARG, "concat: dim must be 0..3, got %d", dim);
        return NULL;
    }
    int64_t ne[RG_MAX_DIMS];
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        if (i != dim && a->ne[i] != b->ne[i]) {
            rg_set_error(ctx, RG_E_SHAPE, "concat: dim %d differs (%" PRId64 " vs %" PRId64 ")", i, a->ne[i], b->ne[i]);
            return NULL;
        }
        ne[i] = i == dim ? a->ne[i] + b->ne[i] : a->ne[i];
    }
    int n_dims = a->n_dims > b->n_dims ? a->n_dims : b->n_dims;
    if (dim + 1 > n_dims) n_dims = dim + 1;
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_CONCAT, RG_TYPE_F32, n_dims, ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    t->iparams[0] = dim;
    return t;
}

rg_tensor *rg_cont(rg_ctx *ctx, rg_tensor *src) {
    if (!usable(ctx, src, NULL, 0, "cont")) return NULL;
    if (rg_traits(src->type)->to_f32 == NULL || src->type == RG_TYPE_I32) {
        rg_set_error(ctx, RG_E_UNSUPPORTED, "cont: type %s is not supported", rg_type_name(src->type));
        return NULL;
    }
    const int type = rg_is_float_type(src->type) ? src->type : RG_TYPE_F32;
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_CONT, type, src->n_dims, src->ne);
    if (t == NULL) return NULL;
    t->src[0] = src;
    return t;
}

/* The node of an op that writes src into dst (cpy, set_rows). It owns no memory: it stands for dst
 * after the write, so it is a view of dst; src[0] = src, src[1] = dst. */
static rg_tensor *write_node(rg_ctx *ctx, rg_op op, rg_tensor *src, rg_tensor *dst) {
    rg_tensor *t = rg_tensor_alloc_struct(ctx);
    if (t == NULL) return NULL;
    t->type = dst->type;
    t->n_dims = dst->n_dims;
    memcpy(t->ne, dst->ne, sizeof t->ne);
    memcpy(t->nb, dst->nb, sizeof t->nb);
    t->op = op;
    t->src[0] = src;
    t->src[1] = dst;
    t->view_src = dst;
    t->view_offs = 0;
    t->data = dst->data;
    rg_tensor_set_name(t, dst->name);
    return t;
}

rg_tensor *rg_cpy(rg_ctx *ctx, rg_tensor *src, rg_tensor *dst) {
    if (!usable(ctx, src, dst, 1, "cpy") || !check_float(ctx, src, "cpy", "src")) return NULL;
    if (!rg_is_float_type(dst->type) && !(rg_traits(dst->type)->quantized && rg_traits(dst->type)->from_f32)) {
        rg_set_error(ctx, RG_E_TYPE, "cpy: cannot write into a %s tensor", rg_type_name(dst->type));
        return NULL;
    }
    if (rg_tensor_n_elements(src) != rg_tensor_n_elements(dst)) {
        rg_set_error(ctx, RG_E_SHAPE, "cpy: src has %" PRId64 " elements, dst %" PRId64, rg_tensor_n_elements(src),
                     rg_tensor_n_elements(dst));
        return NULL;
    }
    bool same_shape = true;
    for (int i = 0; i < RG_MAX_DIMS; i++) same_shape = same_shape && src->ne[i] == dst->ne[i];
    if (!same_shape && !(rg_tensor_is_contiguous(src) && rg_tensor_is_contiguous(dst))) {
        rg_set_error(ctx, RG_E_SHAPE, "cpy: shapes differ, so src and dst must both be contiguous");
        return NULL;
    }
    if (rg_traits(dst->type)->quantized && !rg_tensor_is_contiguous(dst)) {
        rg_set_error(ctx, RG_E_SHAPE, "cpy: a quantized dst must be contiguous");
        return NULL;
    }
    if (!rg_tensor_claim_write(ctx, dst, "cpy")) return NULL;
    return write_node(ctx, RG_OP_CPY, src, dst);
}

rg_tensor *rg_set_rows(rg_ctx *ctx, rg_tensor *dst, rg_tensor *src, rg_tensor *ids) {
    if (!usable(ctx, src, dst, 1, "set_rows") || !usable(ctx, ids, NULL, 0, "set_rows")) return NULL;
    if (src->type != RG_TYPE_F32 || !rg_tensor_is_contiguous(src) || dst->type != RG_TYPE_F32 ||
        dst->nb[0] != sizeof(float)) {
        rg_set_error(ctx, RG_E_TYPE, "set_rows: src must be contiguous F32 and dst F32 with contiguous rows");
        return NULL;
    }
    if (ids->type != RG_TYPE_I32 || !rg_tensor_is_contiguous(ids) || ids->ne[1] * ids->ne[2] * ids->ne[3] != 1) {
        rg_set_error(ctx, RG_E_TYPE, "set_rows: ids must be a contiguous I32 vector");
        return NULL;
    }
    if (dst->ne[2] * dst->ne[3] != 1 || src->ne[0] != dst->ne[0] || src->ne[1] != ids->ne[0] ||
        src->ne[2] * src->ne[3] != 1) {
        rg_set_error(ctx, RG_E_SHAPE,
                     "set_rows: need dst {n, rows}, src {n, B}, ids {B}; got dst {%" PRId64 ", %" PRId64
                     "}, src {%" PRId64 ", %" PRId64 "}, ids {%" PRId64 "}",
                     dst->ne[0], dst->ne[1], src->ne[0], src->ne[1], ids->ne[0]);
        return NULL;
    }
    if (!rg_tensor_claim_write(ctx, dst, "set_rows")) return NULL;
    rg_tensor *t = write_node(ctx, RG_OP_SET_ROWS, src, dst);
    if (t != NULL) t->src[2] = ids;
    return t;
}

rg_tensor *rg_map_unary(rg_ctx *ctx, rg_tensor *a, rg_map_unary_fn fn, void *userdata) {
    if (!usable(ctx, a, NULL, 0, "map_unary") || !check_float(ctx, a, "map_unary", "input")) return NULL;
    if (fn == NULL) {
        rg_set_error(ctx, RG_E_ARG, "map_unary: NULL function");
        return NULL;
    }
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_MAP_UNARY, RG_TYPE_F32, a->n_dims, a->ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->fn = (void *)fn;
    t->userdata = userdata;
    return t;
}

rg_tensor *rg_map_binary(rg_ctx *ctx, rg_tensor *a, rg_tensor *b, rg_map_binary_fn fn, void *userdata) {
    if (!usable(ctx, a, b, 1, "map_binary") || !check_float(ctx, a, "map_binary", "a") ||
        !check_float(ctx, b, "map_binary", "b"))
        return NULL;
    if (fn == NULL) {
        rg_set_error(ctx, RG_E_ARG, "map_binary: NULL function");
        return NULL;
    }
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        if (a->ne[i] != b->ne[i]) {
            rg_set_error(ctx, RG_E_SHAPE, "map_binary: a and b must have the same shape (dim %d: %" PRId64 " vs %" PRId64 ")",
                         i, a->ne[i], b->ne[i]);
            return NULL;
        }
    }
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_MAP_BINARY, RG_TYPE_F32, a->n_dims, a->ne);
    if (t == NULL) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    t->fn = (void *)fn;
    t->userdata = userdata;
    return t;
}

const rg_op_info rg_op_table[RG_OP_COUNT] = {
    [RG_OP_NONE] = {"none", NULL, NULL, 1},
    [RG_OP_VIEW] = {"view", NULL, NULL, 1},
    [RG_OP_CPY] = {"cpy", rg_fwd_cpy, rg_work_rows2, 1},
    [RG_OP_CONT] = {"cont", rg_fwd_cont, rg_work_rows2, 1},
    [RG_OP_ADD] = {"add", rg_fwd_binary, rg_work_rows2, 1},
    [RG_OP_SUB] = {"sub", rg_fwd_binary, rg_work_rows2, 1},
    [RG_OP_MUL] = {"mul", rg_fwd_binary, rg_work_rows2, 1},
    [RG_OP_DIV] = {"div", rg_fwd_binary, rg_work_rows2, 1},
    [RG_OP_MAX] = {"max", rg_fwd_binary, rg_work_rows2, 1},
    [RG_OP_SCALE] = {"scale", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_NEG] = {"neg", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_EXP] = {"exp", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_ONE_MINUS_X] = {"one_minus_x", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_SIGMOID] = {"sigmoid", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_SILU] = {"silu", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_RELU] = {"relu", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_SQR] = {"sqr", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_SQRT] = {"sqrt", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_TANH] = {"tanh", rg_fwd_unary, rg_work_rows2, 1},
    [RG_OP_LAYER_NORM] = {"layer_norm", rg_fwd_norm, rg_work_rows2, 1},
    [RG_OP_GROUP_NORM] = {"group_norm", rg_fwd_norm, rg_work_rows2, 1},
    [RG_OP_SUM_ROWS] = {"sum_rows", rg_fwd_sum_rows, rg_work_rows2, 1},
    [RG_OP_MUL_MAT] = {"mul_mat", rg_fwd_mul_mat, rg_work_mul_mat, 2},
    [RG_OP_GET_ROWS] = {"get_rows", rg_fwd_get_rows, NULL, 1},
    [RG_OP_CONCAT] = {"concat", rg_fwd_concat, rg_work_rows2, 1},
    [RG_OP_MAP_UNARY] = {"map_unary", rg_fwd_map_unary, rg_work_rows2, 1},
    [RG_OP_MAP_BINARY] = {"map_binary", rg_fwd_map_binary, rg_work_rows2, 1},
    /* the single-sequence WKV ops write their new state into src 5 / 6 / 7 when they have one */
    [RG_OP_RWKV_WKV4] = {"rwkv_wkv4", rg_fwd_rwkv_wkv4, NULL, 1, 6},
    [RG_OP_RWKV_WKV5] = {"rwkv_wkv5", rg_fwd_rwkv_wkv5, NULL, 1, 7},
    [RG_OP_RWKV_WKV7] = {"rwkv_wkv7", rg_fwd_rwkv_wkv7, NULL, 1, 8},
    [RG_OP_L2_NORM] = {"l2_norm", rg_fwd_l2_norm, rg_work_rows2, 1},
    [RG_OP_SET_ROWS] = {"set_rows", rg_fwd_set_rows, NULL, 1},
    /* the batched WKV ops update their state table (src 4 / 5 / 6) in place */
    [RG_OP_RWKV_WKV4_BATCH] = {"rwkv_wkv4_batch", rg_fwd_rwkv_wkv4_batch, NULL, 1, 5},
    [RG_OP_RWKV_WKV5_BATCH] = {"rwkv_wkv5_batch", rg_fwd_rwkv_wkv5_batch, NULL, 1, 6},
    [RG_OP_RWKV_WKV7_BATCH] = {"rwkv_wkv7_batch", rg_fwd_rwkv_wkv7_batch, NULL, 1, 7},
};
