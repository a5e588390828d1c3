/* Tensors: creation, accessors, and the layout ops (views, reshape, permute, transpose). */
#include "internal.h"
#include "simd/kernels.h"

#include <inttypes.h>

rg_tensor *rg_tensor_alloc_struct(rg_ctx *ctx) {
    rg_tensor *t = rg_ctx_alloc(ctx, sizeof(rg_tensor));
    if (t == NULL) return NULL;
    memset(t, 0, sizeof *t);
    ctx->n_tensors++;
    return t;
}

void rg_tensor_set_contiguous_strides(rg_tensor *t) {
    const rg_type_traits *tr = rg_traits(t->type);
    t->nb[0] = tr->block_bytes;
    t->nb[1] = t->nb[0] * (size_t)(t->ne[0] / tr->block_size);
    for (int i = 2; i < RG_MAX_DIMS; i++) t->nb[i] = t->nb[i - 1] * (size_t)t->ne[i - 1];
}

/* Validates type and shape; returns the byte size of a contiguous tensor or 0 after setting an error. */
static size_t checked_size(rg_ctx *ctx, int type, int n_dims, const int64_t *ne, const char *what) {
    if (!rg_type_is_valid(type)) {
        rg_set_error(ctx, RG_E_TYPE, "%s: unknown tensor type %d", what, type);
        return 0;
    }
    if (n_dims < 1 || n_dims > RG_MAX_DIMS || ne == NULL) {
        rg_set_error(ctx, RG_E_ARG, "%s: n_dims must be 1..4, got %d", what, n_dims);
        return 0;
    }
    const rg_type_traits *tr = rg_traits(type);
    /* Element counts are capped so that no byte count below can overflow size_t. */
    const int64_t limit = (int64_t)1 << 40;
    int64_t total = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1 || ne[i] > limit) {
            rg_set_error(ctx, RG_E_SHAPE, "%s: dimension %d has size %" PRId64 " (must be 1..2^40)", what, i, ne[i]);
            return 0;
        }
        if (total > limit / ne[i]) { /* tested before multiplying: the product itself could overflow */
            rg_set_error(ctx, RG_E_SHAPE, "%s: more than 2^40 elements", what);
            return 0;
        }
        total *= ne[i];
    }
    if (ne[0] % tr->block_size != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: row length %" PRId64 " is not a multiple of the %s block length %" PRId64,
                     what, ne[0], tr->name, tr->block_size);
        return 0;
    }
    return (size_t)(total / tr->block_size) * tr->block_bytes;
}

static rg_tensor *new_tensor_struct(rg_ctx *ctx, int type, int n_dims, const int64_t *ne) {
    rg_tensor *t = rg_tensor_alloc_struct(ctx);
    if (t == NULL) return NULL;
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < RG_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    rg_tensor_set_contiguous_strides(t);
    return t;
}

static rg_tensor *new_tensor_impl(rg_ctx *ctx, int op, int type, int n_dims, const int64_t *ne, const char *what) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    const size_t size = checked_size(ctx, type, n_dims, ne, what);
    if (size == 0) return NULL;
    rg_tensor *t = new_tensor_struct(ctx, type, n_dims, ne);
    if (t == NULL) return NULL;
    t->op = op;
    if (ctx->no_alloc) {
        ctx->data_required += (size + RG_ALIGN - 1) / RG_ALIGN * RG_ALIGN;
    } else {
        t->data = rg_ctx_alloc(ctx, size);
        if (t->data == NULL) return NULL;
    }
    return t;
}

rg_tensor *rg_new_op_tensor(rg_ctx *ctx, int op, int type, int n_dims, const int64_t *ne) {
    return new_tensor_impl(ctx, op, type, n_dims, ne, rg_op_table[op].name);
}

rg_tensor *rg_new_tensor(rg_ctx *ctx, int type, int n_dims, const int64_t *ne) {
    rg_tensor *t = new_tensor_impl(ctx, RG_OP_NONE, type, n_dims, ne, "new_tensor");
    if (t != NULL && t->data != NULL) memset(t->data, 0, rg_tensor_nbytes(t));
    return t;
}

rg_tensor *rg_new_tensor_ext(rg_ctx *ctx, int type, int n_dims, const int64_t *ne, void *data, size_t nbytes) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    const size_t size = checked_size(ctx, type, n_dims, ne, "new_tensor_ext");
    if (size == 0) return NULL;
    if (data == NULL && !ctx->no_alloc) {
        rg_set_error(ctx, RG_E_ARG, "new_tensor_ext: data is NULL");
        return NULL;
    }
    if (data != NULL && nbytes < size) {
        rg_set_error(ctx, RG_E_ARG, "new_tensor_ext: buffer has %zu bytes, tensor needs %zu", nbytes, size);
        return NULL;
    }
    rg_tensor *t = new_tensor_struct(ctx, type, n_dims, ne);
    if (t == NULL) return NULL;
    t->data = data;
    t->external = true;
    return t;
}

rg_tensor *rg_new_tensor_ext_readonly(rg_ctx *ctx, int type, int n_dims, const int64_t *ne, const void *data,
                                      size_t nbytes) {
    rg_tensor *t = rg_new_tensor_ext(ctx, type, n_dims, ne, (void *)data, nbytes);
    if (t != NULL) t->readonly = true;
    return t;
}

static rg_status set_data(rg_ctx *ctx, rg_tensor *t, void *data, size_t nbytes, bool readonly) {
    if (t == NULL || data == NULL) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_data: NULL tensor or data");
        return RG_E_ARG;
    }
    if (!t->external) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_data: '%s' was not made by new_tensor_ext", t->name);
        return RG_E_ARG;
    }
    if (nbytes < rg_tensor_nbytes(t)) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_data: buffer has %zu bytes, tensor '%s' needs %zu", nbytes, t->name,
                     rg_tensor_nbytes(t));
        return RG_E_ARG;
    }
    if (readonly && t->written) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_data: a graph writes tensor '%s' (it is a cpy destination), so its "
                     "memory must be writable; this buffer is read-only", t->name);
        return RG_E_ARG;
    }
    t->data = data;
    t->readonly = readonly;
    return RG_OK;
}

rg_status rg_tensor_set_data(rg_ctx *ctx, rg_tensor *t, void *data, size_t nbytes) {
    return set_data(ctx, t, data, nbytes, false);
}

rg_status rg_tensor_set_data_readonly(rg_ctx *ctx, rg_tensor *t, const void *data, size_t nbytes) {
    return set_data(ctx, t, (void *)data, nbytes, true);
}

rg_status rg_tensor_set_constant(rg_ctx *ctx, rg_tensor *t) {
    if (t == NULL || !t->external) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_constant: '%s' was not made by new_tensor_ext", t ? t->name : "NULL");
        return RG_E_ARG;
    }
    if (t->written) {
        rg_set_error(ctx, RG_E_ARG, "tensor_set_constant: a graph writes '%s' (it is a cpy destination)", t->name);
        return RG_E_ARG;
    }
    t->constant = true;
    return RG_OK;
}

int rg_tensor_type(const rg_tensor *t) { return t ? t->type : -1; }
int rg_tensor_n_dims(const rg_tensor *t) { return t ? t->n_dims : 0; }
int64_t rg_tensor_ne(const rg_tensor *t, int dim) { return t && dim >= 0 && dim < RG_MAX_DIMS ? t->ne[dim] : 0; }
size_t rg_tensor_nb(const rg_tensor *t, int dim) { return t && dim >= 0 && dim < RG_MAX_DIMS ? t->nb[dim] : 0; }
int64_t rg_tensor_n_elements(const rg_tensor *t) { return t ? t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] : 0; }
void *rg_tensor_data(const rg_tensor *t) { return t ? t->data : NULL; }
const char *rg_tensor_op_name(const rg_tensor *t) { return t ? rg_op_table[t->op].name : ""; }
const char *rg_tensor_name(const rg_tensor *t) { return t ? t->name : ""; }
void rg_tensor_set_name(rg_tensor *t, const char *name) {
    if (t == NULL || name == NULL) return;
    snprintf(t->name, sizeof t->name, "%s", name);
}

size_t rg_tensor_nbytes(const rg_tensor *t) {
    if (t == NULL) return 0;
    /* Offset of the last element's block plus one block: the span the tensor can touch. */
    const rg_type_traits *tr = rg_traits(t->type);
    size_t last = (size_t)(t->ne[0] / tr->block_size - 1) * t->nb[0];
    for (int i = 1; i < RG_MAX_DIMS; i++) last += (size_t)(t->ne[i] - 1) * t->nb[i];
    return last + tr->block_bytes;
}

int rg_tensor_is_contiguous(const rg_tensor *t) {
    if (t == NULL) return 0;
    const rg_type_traits *tr = rg_traits(t->type);
    if (t->nb[0] != tr->block_bytes) return 0;
    size_t expect = t->nb[0] * (size_t)(t->ne[0] / tr->block_size);
    for (int i = 1; i < RG_MAX_DIMS; i++) {
        if (t->ne[i] != 1 && t->nb[i] != expect) return 0;
        expect *= (size_t)t->ne[i];
    }
    return 1;
}

/* The memory a view may reach: the root tensor's span, measured from its data pointer. The offsets
 * come from callers, so their sum saturates at SIZE_MAX instead of wrapping past the bounds check. */
static rg_tensor *view_root(rg_tensor *t, size_t *offs) {
    *offs = 0;
    while (t->view_src != NULL) {
        *offs = *offs > SIZE_MAX - t->view_offs ? SIZE_MAX : *offs + t->view_offs;
        t = t->view_src;
    }
    return t;
}

int rg_tensor_is_readonly(const rg_tensor *t) {
    while (t != NULL && t->view_src != NULL) t = t->view_src;
    return t != NULL && t->readonly;
}

bool rg_tensor_claim_write(rg_ctx *ctx, rg_tensor *dst, const char *op) {
    size_t offs;
    rg_tensor *root = view_root(dst, &offs);
    if (root->readonly || root->constant) {
        rg_set_error(ctx, RG_E_ARG, "%s: cannot write into '%s': its memory is %s", op, root->name,
                     root->readonly ? "read-only" : "declared constant (no compute may write it)");
        return false;
    }
    root->written = true;
    return true;
}

/* rg_tensor_nbytes for caller-supplied sizes and strides: SIZE_MAX when a size times a stride (or the
 * sum) does not fit, so that a huge stride cannot wrap around to a small, "in bounds" span. */
static size_t checked_span(const rg_tensor *t) {
    const rg_type_traits *tr = rg_traits(t->type);
    size_t last = 0;
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        const size_t n = (size_t)((i == 0 ? t->ne[0] / tr->block_size : t->ne[i]) - 1);
        if (n != 0 && t->nb[i] > (SIZE_MAX - last) / n) return SIZE_MAX;
        last += n * t->nb[i];
    }
    return last > SIZE_MAX - tr->block_bytes ? SIZE_MAX : last + tr->block_bytes;
}

static rg_tensor *make_view(rg_ctx *ctx, rg_tensor *src, int n_dims, const int64_t *ne, const size_t *nb,
                            size_t offset, const char *what) {
    rg_tensor *t = rg_tensor_alloc_struct(ctx);
    if (t == NULL) return NULL;
    t->type = src->type;
    t->n_dims = n_dims;
    t->op = RG_OP_VIEW;
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        t->ne[i] = i < n_dims ? ne[i] : 1;
        t->nb[i] = nb[i];
    }
    t->src[0] = src;
    t->view_src = src;
    t->view_offs = offset;
    size_t root_offs;
    rg_tensor *root = view_root(t, &root_offs);
    const size_t span = checked_span(t), avail = rg_tensor_nbytes(root);
    if (span > SIZE_MAX - root_offs) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: view of '%s': its offset, sizes and strides overflow the address space",
                     what, src->name);
        return NULL;
    }
    if (root_offs + span > avail) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: view of '%s' reaches byte %zu, past its %zu bytes", what, src->name,
                     root_offs + span, avail);
        return NULL;
    }
    t->data = src->data ? (uint8_t *)src->data + offset : NULL; /* only once the offset is known in bounds */
    rg_tensor_set_name(t, src->name);
    return t;
}

rg_tensor *rg_view(rg_ctx *ctx, rg_tensor *src, int n_dims, const int64_t *ne, const size_t *nb, size_t offset) {
    if (ctx == NULL || ctx->status != RG_OK || src == NULL) return NULL;
    if (n_dims < 1 || n_dims > RG_MAX_DIMS || ne == NULL || (n_dims > 1 && nb == NULL)) {
        rg_set_error(ctx, RG_E_ARG, "view: n_dims must be 1..4 with ne (and nb for n_dims > 1)");
        return NULL;
    }
    const rg_type_traits *tr = rg_traits(src->type);
    int64_t full_ne[RG_MAX_DIMS] = {1, 1, 1, 1};
    size_t full_nb[RG_MAX_DIMS];
    /* the same limits as for new tensors, so element counts of views cannot overflow either */
    const int64_t limit = (int64_t)1 << 40;
    int64_t total = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1 || ne[i] > limit) {
            rg_set_error(ctx, RG_E_SHAPE, "view: dimension %d has size %" PRId64 " (must be 1..2^40)", i, ne[i]);
            return NULL;
        }
        if (total > limit / ne[i]) {
            rg_set_error(ctx, RG_E_SHAPE, "view: more than 2^40 elements");
            return NULL;
        }
        total *= ne[i];
        full_ne[i] = ne[i];
    }
    if (full_ne[0] % tr->block_size != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "view: row length %" PRId64 " not a multiple of the block length", full_ne[0]);
        return NULL;
    }
    full_nb[0] = tr->block_bytes;
    for (int i = 1; i < RG_MAX_DIMS; i++) {
        full_nb[i] = i < n_dims ? nb[i] : full_nb[i - 1] * (size_t)full_ne[i - 1];
    }
    return make_view(ctx, src, n_dims, full_ne, full_nb, offset, "view");
}

rg_tensor *rg_reshape(rg_ctx *ctx, rg_tensor *src, int n_dims, const int64_t *ne) {
    if (ctx == NULL || ctx->status != RG_OK || src == NULL) return NULL;
    if (!rg_tensor_is_contiguous(src)) {
        rg_set_error(ctx, RG_E_ARG, "reshape: '%s' is not contiguous (use cont first)", src->name);
        return NULL;
    }
    if (n_dims < 1 || n_dims > RG_MAX_DIMS || ne == NULL) {
        rg_set_error(ctx, RG_E_ARG, "reshape: n_dims must be 1..4");
        return NULL;
    }
    int64_t total = 1;
    const int64_t n_src = rg_tensor_n_elements(src);
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1) {
            rg_set_error(ctx, RG_E_SHAPE, "reshape: dimension %d has size %" PRId64, i, ne[i]);
            return NULL;
        }
        if (total > INT64_MAX / ne[i]) { /* tested before multiplying: the product itself could overflow */
            rg_set_error(ctx, RG_E_SHAPE, "reshape: %" PRId64 " elements cannot become more than 2^63", n_src);
            return NULL;
        }
        total *= ne[i];
    }
    if (total != n_src) {
        rg_set_error(ctx, RG_E_SHAPE, "reshape: %" PRId64 " elements cannot become %" PRId64, n_src, total);
        return NULL;
    }
    rg_tensor tmp = {0};
    tmp.type = src->type;
    for (int i = 0; i < RG_MAX_DIMS; i++) tmp.ne[i] = i < n_dims ? ne[i] : 1;
    if (tmp.ne[0] % rg_traits(src->type)->block_size != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "reshape: row length %" PRId64 " not a multiple of the block length", tmp.ne[0]);
        return NULL;
    }
    rg_tensor_set_contiguous_strides(&tmp);
    return make_view(ctx, src, n_dims, tmp.ne, tmp.nb, 0, "reshape");
}

rg_tensor *rg_permute(rg_ctx *ctx, rg_tensor *src, int p0, int p1, int p2, int p3) {
    if (ctx == NULL || ctx->status != RG_OK || src == NULL) return NULL;
    const int perm[RG_MAX_DIMS] = {p0, p1, p2, p3};
    int seen = 0;
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        if (perm[i] < 0 || perm[i] >= RG_MAX_DIMS || (seen & (1 << perm[i]))) {
            rg_set_error(ctx, RG_E_ARG, "permute: (%d, %d, %d, %d) is not a permutation of 0..3", p0, p1, p2, p3);
            return NULL;
        }
        seen |= 1 << perm[i];
    }
    if (rg_traits(src->type)->block_size != 1 && perm[0] != 0) {
        rg_set_error(ctx, RG_E_TYPE, "permute: cannot move the row axis of a block-quantized tensor");
        return NULL;
    }
    int64_t ne[RG_MAX_DIMS];
    size_t nb[RG_MAX_DIMS];
    for (int i = 0; i < RG_MAX_DIMS; i++) {
        ne[perm[i]] = src->ne[i];
        nb[perm[i]] = src->nb[i];
    }
    int n_dims = src->n_dims;
    for (int i = 0; i < RG_MAX_DIMS; i++)
        if (ne[i] != 1 && i + 1 > n_dims) n_dims = i + 1;
    return make_view(ctx, src, n_dims, ne, nb, 0, "permute");
}

rg_tensor *rg_transpose(rg_ctx *ctx, rg_tensor *src) {
    rg_tensor *t = rg_permute(ctx, src, 1, 0, 2, 3);
    if (t != NULL && t->n_dims < 2) t->n_dims = 2;
    return t;
}
