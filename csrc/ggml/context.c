/* The arena context: one block allocated up front, bump-allocated, freed as a whole. */
#include "internal.h"
#include "simd/kernels.h"

#include <stdlib.h>

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

void rg_err_set(rg_err *err, rg_status st, const char *fmt, ...) {
    if (err == NULL) return;
    err->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

void rg_set_error(rg_ctx *ctx, rg_status st, const char *fmt, ...) {
    if (ctx == NULL || ctx->status != RG_OK) return; /* keep the first error: it is the cause */
    ctx->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
}

rg_ctx *rg_ctx_new(size_t mem_size, int no_alloc, rg_err *err) {
    rg_kernels_init();
    if (err) {
        err->status = RG_OK;
        err->msg[0] = '\0';
    }
    if (mem_size < 1024) mem_size = 1024;
    if (mem_size > ((size_t)1 << 46)) {
        rg_err_set(err, RG_E_ARG, "context size %zu bytes is not plausible", mem_size);
        return NULL;
    }
    rg_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        rg_err_set(err, RG_E_NOMEM, "out of memory allocating a context");
        return NULL;
    }
    mem_size = align_up(mem_size, RG_ALIGN);
    ctx->mem = aligned_alloc(RG_ALIGN, mem_size);
    if (ctx->mem == NULL) {
        free(ctx);
        rg_err_set(err, RG_E_NOMEM, "out of memory allocating a %zu-byte context", mem_size);
        return NULL;
    }
    ctx->mem_size = mem_size;
    ctx->no_alloc = no_alloc != 0;
    return ctx;
}

void rg_ctx_free(rg_ctx *ctx) {
    if (ctx == NULL) return;
    for (int i = 0; i < ctx->n_heap; i++) free(ctx->heap[i]);
    free(ctx->heap);
    free(ctx->mem);
    free(ctx);
}

rg_status rg_ctx_status(const rg_ctx *ctx) { return ctx ? ctx->status : RG_E_ARG; }
const char *rg_ctx_error(const rg_ctx *ctx) { return ctx ? ctx->err : "NULL context"; }
void rg_ctx_clear_error(rg_ctx *ctx) {
    if (ctx == NULL) return;
    ctx->status = RG_OK;
    ctx->err[0] = '\0';
}
size_t rg_ctx_size(const rg_ctx *ctx) { return ctx ? ctx->mem_size : 0; }
size_t rg_ctx_used(const rg_ctx *ctx) { return ctx ? ctx->used : 0; }
size_t rg_ctx_required(const rg_ctx *ctx) { return ctx ? ctx->used + ctx->data_required : 0; }
size_t rg_ctx_n_tensors(const rg_ctx *ctx) { return ctx ? ctx->n_tensors : 0; }

void *rg_ctx_alloc(rg_ctx *ctx, size_t size) {
    const size_t need = align_up(size ? size : 1, RG_ALIGN);
    if (need > ctx->mem_size - ctx->used) {
        rg_set_error(ctx, RG_E_NOMEM, "context arena exhausted: %zu bytes requested, %zu of %zu bytes free", size,
                     ctx->mem_size - ctx->used, ctx->mem_size);
        return NULL;
    }
    void *p = ctx->mem + ctx->used;
    ctx->used += need;
    return p;
}

void *rg_ctx_alloc_heap(rg_ctx *ctx, size_t size) {
    if (ctx->n_heap == ctx->cap_heap) {
        const int cap = ctx->cap_heap ? 2 * ctx->cap_heap : 4;
        void **heap = realloc(ctx->heap, (size_t)cap * sizeof(void *));
        if (heap == NULL) {
            rg_set_error(ctx, RG_E_NOMEM, "out of memory");
            return NULL;
        }
        ctx->heap = heap;
        ctx->cap_heap = cap;
    }
    const size_t need = align_up(size ? size : 1, RG_ALIGN);
    void *p = aligned_alloc(RG_ALIGN, need);
    if (p == NULL) {
        rg_set_error(ctx, RG_E_NOMEM, "out of memory allocating a %zu-byte graph buffer", need);
        return NULL;
    }
    memset(p, 0, need);
    ctx->heap[ctx->n_heap++] = p;
    return p;
}
