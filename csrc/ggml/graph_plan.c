/* Memory planning for graphs built in no_alloc contexts: every tensor of the graph that has no memory
 * gets a place in one buffer, and a region is reused once the last node reading it has run. A
 * sequence-mode graph has hundreds of T x C activations of which only a few are alive at a time, so
 * this keeps its memory (and cache footprint) at a few activations instead of all of them. */
#include "graph_plan.h"

#include <stdlib.h>

typedef struct {
    size_t offs, size;
} block;

typedef struct {
    block *free; /* free blocks below `top`, sorted by offset, coalesced */
    int n_free, cap;
    size_t top; /* high-water mark */
} arena_plan;

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

static size_t plan_alloc(arena_plan *a, size_t size) {
    /* best fit among the free blocks; otherwise grow the top */
    int best = -1;
    for (int i = 0; i < a->n_free; i++)
        if (a->free[i].size >= size && (best < 0 || a->free[i].size < a->free[best].size)) best = i;
    if (best >= 0) {
        const size_t offs = a->free[best].offs;
        a->free[best].offs += size;
        a->free[best].size -= size;
        if (a->free[best].size == 0) {
            memmove(&a->free[best], &a->free[best + 1], (size_t)(a->n_free - best - 1) * sizeof(block));
            a->n_free--;
        }
        return offs;
    }
    /* a free block touching the top can be extended instead of leaving a hole */
    if (a->n_free > 0 && a->free[a->n_free - 1].offs + a->free[a->n_free - 1].size == a->top) {
        const size_t offs = a->free[a->n_free - 1].offs;
        a->top = offs + size;
        a->n_free--;
        return offs;
    }
    const size_t offs = a->top;
    a->top += size;
    return offs;
}

static void plan_free(arena_plan *a, size_t offs, size_t size) {
    int i = 0;
    while (i < a->n_free && a->free[i].offs < offs) i++;
    /* capacity: at most one block per planned tensor, reserved by the caller */
    memmove(&a->free[i + 1], &a->free[i], (size_t)(a->n_free - i) * sizeof(block));
    a->free[i] = (block){offs, size};
    a->n_free++;
    if (i + 1 < a->n_free && a->free[i].offs + a->free[i].size == a->free[i + 1].offs) {
        a->free[i].size += a->free[i + 1].size;
        memmove(&a->free[i + 1], &a->free[i + 2], (size_t)(a->n_free - i - 2) * sizeof(block));
        a->n_free--;
    }
    if (i > 0 && a->free[i - 1].offs + a->free[i - 1].size == a->free[i].offs) {
        a->free[i - 1].size += a->free[i].size;
        memmove(&a->free[i], &a->free[i + 1], (size_t)(a->n_free - i - 1) * sizeof(block));
        a->n_free--;
    }
}

static rg_tensor *root_of(rg_tensor *t) {
    while (t->view_src != NULL) t = t->view_src;
    return t;
}

static bool needs_memory(const rg_tensor *t) { return t->view_src == NULL && !t->external && t->data == NULL; }

/* order: all n tensors of the graph in dependency order; nodes: the computed ones, in order. */
rg_status rg_graph_plan_memory(rg_ctx *ctx, rg_tensor **order, int n, rg_tensor **nodes, int n_nodes,
                               rg_tensor *const *outputs, int n_outputs, size_t work_size, void **work) {
    /* last[i]: index of the last node reading order-tensor i (its root); n_nodes = alive to the end */
    int *last = malloc((size_t)(n ? n : 1) * sizeof(int));
    size_t *offs = malloc((size_t)(n ? n : 1) * sizeof(size_t));
    arena_plan a = {malloc((size_t)(n + 1) * sizeof(block)), 0, n + 1, 0};
    if (last == NULL || offs == NULL || a.free == NULL) {
        free(last);
        free(offs);
        free(a.free);
        rg_set_error(ctx, RG_E_NOMEM, "out of memory planning a graph");
        return RG_E_NOMEM;
    }
    /* A tensor placed by another graph's plan lives in memory that graph reuses: sharing it would let
     * the two graphs overwrite each other's values. */
    for (int i = 0; i < n; i++) {
        if (order[i]->planned) {
            free(last);
            free(offs);
            free(a.free);
            rg_set_error(ctx, RG_E_ARG,
                         "graph_build: '%s' already belongs to another planned graph of this no_alloc context "
                         "(build one graph and compute a prefix of it with rg_graph_compute_partial)",
                         order[i]->name);
            return RG_E_ARG;
        }
    }
    /* The tensors' visit field holds their index in `order` during planning. */
    for (int i = 0; i < n; i++) {
        order[i]->visit = (uint32_t)i;
        last[i] = -1;
    }
    for (int k = 0; k < n_nodes; k++) {
        for (int s = 0; s < RG_MAX_SRC; s++) {
            if (nodes[k]->src[s] == NULL) continue;
            const rg_tensor *r = root_of(nodes[k]->src[s]);
            last[r->visit] = k;
        }
    }
    for (int i = 0; i < n_outputs; i++) last[root_of(outputs[i])->visit] = n_nodes;
    /* Leaves without memory (inputs the caller fills) live for the whole graph. */
    for (int i = 0; i < n; i++) {
        if (needs_memory(order[i]) && rg_op_table[order[i]->op].forward == NULL) {
            offs[i] = plan_alloc(&a, align64(rg_tensor_nbytes(order[i])));
            last[i] = n_nodes;
        }
    }
    for (int k = 0; k < n_nodes; k++) {
        rg_tensor *t = nodes[k];
        if (needs_memory(t)) offs[t->visit] = plan_alloc(&a, align64(rg_tensor_nbytes(t)));
        /* free what this node was the last to read (each root once), then its own memory if unread */
        for (int s = 0; s < RG_MAX_SRC; s++) {
            if (t->src[s] == NULL) continue;
            rg_tensor *r = root_of(t->src[s]);
            bool seen = false;
            for (int q = 0; q < s; q++) seen = seen || (t->src[q] && root_of(t->src[q]) == r);
            if (!seen && last[r->visit] == k && needs_memory(r))
                plan_free(&a, offs[r->visit], align64(rg_tensor_nbytes(r)));
        }
        if (needs_memory(t) && last[t->visit] < 0) plan_free(&a, offs[t->visit], align64(rg_tensor_nbytes(t)));
    }
    const size_t act = a.top;
    uint8_t *buf = rg_ctx_alloc_heap(ctx, act + align64(work_size));
    rg_status st = RG_OK;
    if (buf == NULL) {
        st = RG_E_NOMEM;
    } else {
        for (int i = 0; i < n; i++) {
            if (needs_memory(order[i])) {
                order[i]->data = buf + offs[i];
                order[i]->planned = true;
            }
        }
        *work = work_size ? buf + act : NULL;
    }
    for (int i = 0; i < n; i++) order[i]->visit = 0;
    free(last);
    free(offs);
    free(a.free);
    return st;
}
