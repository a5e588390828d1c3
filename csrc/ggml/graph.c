/* Graphs: collect the nodes an output depends on (topological order, each once), reserve the work
 * buffer, order the nodes so that independent ones run together, and compute node by node on the thread
 * pool; threads meet in a barrier only before a node that depends on memory another thread may still be
 * using (graph_sync.c). */
#include "internal.h"
#include "graph_plan.h"
#include "graph_sync.h"
#include "pool.h"

#include <stdatomic.h>

struct rg_graph {
    rg_ctx *ctx;
    int n_nodes; /* tensors with a forward function, in dependency order */
    rg_tensor **nodes;
    bool *solo; /* nodes computed by thread 0 alone (see RG_SOLO_MAX_ELEMENTS) */
    bool *barrier_before; /* threads meet before this node (graph_sync.c) */
    int n_barriers;
    /* Work buffer layout: each node's shared region at its own offset (or all at 0 when that would
     * take too much memory), then one private slice per thread, the same for every node, so nodes
     * without a barrier between them never share scratch. */
    size_t *work_offs;
    size_t thread_offs, thread_stride;
    _Atomic int64_t *counters; /* one work counter per node (rg_claim), a cache line apart */
    int n_views; /* views, in dependency order: their data pointer is refreshed before each compute */
    rg_tensor **views;
    int max_threads;
    void *wdata;
    size_t wsize;
    atomic_flag busy;
    _Atomic int error_flag;
    char error_msg[256];
};

typedef struct {
    rg_graph *g;
    rg_pool *pool;
    int n_nodes; /* compute nodes 0..n_nodes-1 */
} compute_job;

/* Depth-first post-order walk setting visit = mark; a tensor already carrying the mark is skipped.
 * mark 0 is the clearing walk used when a build fails between the two passes. */
static void visit(rg_tensor *t, uint32_t mark, rg_tensor **order, int *n) {
    if (t == NULL || t->visit == mark) return;
    t->visit = mark;
    for (int i = 0; i < RG_MAX_SRC; i++) visit(t->src[i], mark, order, n);
    if (t->view_src != NULL && t->view_src != t->src[0]) visit(t->view_src, mark, order, n);
    if (order != NULL) order[*n] = t;
    (*n)++;
}



/* Nodes this small are computed by thread 0 alone. Splitting a C-long vector op across threads saves
 * less than the barrier it needs; a run of such nodes (layer norms, token-shift mixes, the WKV step of
 * per-token graphs) then costs one barrier instead of one per node. Matrix products are never solo. */
#define RG_SOLO_MAX_ELEMENTS 32768

static bool is_solo(const rg_tensor *t) {
    int64_t n = rg_tensor_n_elements(t);
    /* an in-place updater also touches one row of that source per result column (a batched WKV op), or
     * all of it (the state_out of a single-sequence WKV op, a flat vector) */
    const int in_place = rg_op_table[t->op].writes_src;
    const rg_tensor *w = in_place > 0 ? t->src[in_place - 1] : NULL;
    if (w != NULL) {
        const int64_t rows = w->ne[0] * t->ne[1], all = rg_tensor_n_elements(w);
        n += rows < all ? rows : all;
    }
    return t->op != RG_OP_MUL_MAT && rg_op_table[t->op].n_phases == 1 && n <= RG_SOLO_MAX_ELEMENTS;
}

/* Total of the nodes' shared work regions up to which each node gets its own. */
#define RG_PRIVATE_WORK_MAX ((size_t)16 << 20)

#define RG_COUNTER_STRIDE 8 /* int64 per node: one cache line each, so nodes' counters don't false-share */
_Static_assert(RG_NODE_COUNTERS <= RG_COUNTER_STRIDE, "a node's counters fit its stride");

static size_t align_cl(size_t n) { return (n + RG_CACHE_LINE - 1) / RG_CACHE_LINE * RG_CACHE_LINE; }

/* The arguments of rg_graph_build; false (with the context's error set) if they are unusable. */
static bool build_args_ok(rg_ctx *ctx, rg_tensor *const *outputs, int n_outputs, int max_threads) {
    if (outputs == NULL || n_outputs < 1) {
        rg_set_error(ctx, RG_E_ARG, "graph_build: no outputs");
        return false;
    }
    if (max_threads < 1 || max_threads > 512) {
        rg_set_error(ctx, RG_E_ARG, "graph_build: max_threads must be 1..512, got %d", max_threads);
        return false;
    }
    for (int i = 0; i < n_outputs; i++) {
        if (outputs[i] == NULL) {
            rg_set_error(ctx, RG_E_ARG, "graph_build: output %d is NULL", i);
            return false;
        }
    }
    return true;
}

rg_graph *rg_graph_build(rg_ctx *ctx, rg_tensor *const *outputs, int n_outputs, int max_threads) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    if (!build_args_ok(ctx, outputs, n_outputs, max_threads)) return NULL;
    rg_graph *g = rg_ctx_alloc(ctx, sizeof *g);
    if (g == NULL) return NULL;
    memset(g, 0, sizeof *g);
    g->ctx = ctx;
    g->max_threads = max_threads;
    /* Inputs may come from other contexts (weights usually live in their own), so the reachable
     * tensors are counted in a first walk (mark 1), collected in a second (mark 2), and the marks are
     * cleared at the end so no stale mark survives into the next build. Builds that share tensors
     * must therefore not run concurrently. */
    int n = 0;
    for (int i = 0; i < n_outputs; i++) visit(outputs[i], 1, NULL, &n);
    rg_tensor **order = rg_ctx_alloc(ctx, (size_t)n * sizeof(rg_tensor *));
    if (order == NULL) {
        n = 0;
        for (int i = 0; i < n_outputs; i++) visit(outputs[i], 0, NULL, &n);
        return NULL;
    }
    n = 0;
    for (int i = 0; i < n_outputs; i++) visit(outputs[i], 2, order, &n);
    for (int i = 0; i < n; i++) order[i]->visit = 0;

    int n_nodes = 0, n_views = 0;
    for (int i = 0; i < n; i++) {
        if (rg_op_table[order[i]->op].forward != NULL) n_nodes++;
        if (order[i]->view_src != NULL) n_views++;
    }
    const size_t nn = (size_t)(n_nodes ? n_nodes : 1);
    g->nodes = rg_ctx_alloc(ctx, nn * sizeof(rg_tensor *));
    g->solo = rg_ctx_alloc(ctx, nn * sizeof(bool));
    g->barrier_before = rg_ctx_alloc(ctx, nn * sizeof(bool));
    bool *common_work = rg_ctx_alloc(ctx, nn * sizeof(bool));
    g->work_offs = rg_ctx_alloc(ctx, nn * sizeof(size_t));
    g->counters = rg_ctx_alloc(ctx, nn * RG_COUNTER_STRIDE * sizeof(int64_t));
    g->views = rg_ctx_alloc(ctx, (size_t)(n_views ? n_views : 1) * sizeof(rg_tensor *));
    if (g->nodes == NULL || g->solo == NULL || g->barrier_before == NULL || common_work == NULL ||
        g->work_offs == NULL || g->counters == NULL || g->views == NULL)
        return NULL;
    size_t shared_sum = 0, shared_max = 0, per_thread = 0;
    for (int i = 0; i < n; i++) {
        rg_tensor *t = order[i];
        const rg_op_info *info = &rg_op_table[t->op];
        if (t->view_src != NULL) g->views[g->n_views++] = t; /* views and cpy nodes follow their target */
        if (info->forward != NULL) {
            const int k = g->n_nodes++;
            g->solo[k] = is_solo(t);
            g->nodes[k] = t;
            g->work_offs[k] = 0;
            if (info->work != NULL) {
                /* a solo node computes as one thread: its needs for one thread and for all count */
                const rg_work w1 = info->work(t, 1), wn = info->work(t, max_threads);
                const size_t shared = align_cl(w1.shared > wn.shared ? w1.shared : wn.shared);
                const size_t pt = align_cl(w1.per_thread > wn.per_thread ? w1.per_thread : wn.per_thread);
                g->work_offs[k] = shared; /* the size, for now */
                shared_sum += shared;
                if (shared > shared_max) shared_max = shared;
                if (pt > per_thread) per_thread = pt;
            }
        }
    }
    rg_graph_schedule(order, n, g->nodes, g->solo, g->work_offs, g->n_nodes);
    /* Private shared regions when they cost little (per-token graphs: a few KB per product); sequence
     * graphs' panels are megabytes each, so there they share one region and their users are ordered. */
    const bool private_shared = shared_sum <= RG_PRIVATE_WORK_MAX || shared_sum <= 2 * shared_max;
    size_t at = 0;
    for (int k = 0; k < g->n_nodes; k++) {
        const size_t size = g->work_offs[k];
        common_work[k] = size > 0 && !private_shared;
        g->work_offs[k] = private_shared ? at : 0;
        at += private_shared ? size : 0;
    }
    g->thread_offs = private_shared ? at : shared_max;
    g->thread_stride = per_thread;
    const size_t wsize = g->thread_offs + (size_t)max_threads * per_thread;
    g->wsize = wsize;
    if (ctx->no_alloc) {
        /* Tensors without memory get it from the graph's plan; the work buffer lives after them. */
        ctx->data_required += align_cl(wsize) + RG_ALIGN;
        if (rg_graph_plan_memory(ctx, order, n, g->nodes, g->n_nodes, outputs, n_outputs, wsize, &g->wdata) != RG_OK)
            return NULL;
    } else if (wsize > 0) {
        g->wdata = rg_ctx_alloc(ctx, wsize);
        if (g->wdata == NULL) return NULL;
    }
    g->n_barriers = rg_graph_plan_sync(g->nodes, g->solo, common_work, g->n_nodes, g->barrier_before);
    atomic_flag_clear(&g->busy);
    return g;
}

int rg_graph_n_nodes(const rg_graph *g) { return g ? g->n_nodes : 0; }
rg_tensor *rg_graph_node(const rg_graph *g, int i) { return g && i >= 0 && i < g->n_nodes ? g->nodes[i] : NULL; }
size_t rg_graph_work_size(const rg_graph *g) { return g ? g->wsize : 0; }
int rg_graph_n_barriers(const rg_graph *g) { return g ? g->n_barriers : 0; }
const char *rg_graph_error(const rg_graph *g) { return g ? g->error_msg : "NULL graph"; }

void rg_report_compute_error(const rg_compute_params *p, const char *fmt, ...) {
    /* First reporter wins; later ones (other threads, other rows) are dropped. */
    int unset = 0;
    if (atomic_compare_exchange_strong(p->error_flag, &unset, 1)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->error_msg, 256, fmt, ap);
        va_end(ap);
    }
}

/* Worker shares of the work buffer per node: the shared region first, then one slice per thread. */
static void compute_thread(void *arg, int ith, int nth) {
    compute_job *job = arg;
    rg_graph *g = job->g;
    uint8_t *const wdata = g->wdata;
    for (int i = 0; i < job->n_nodes; i++) {
        if (g->barrier_before[i]) rg_pool_barrier(job->pool, nth);
        rg_tensor *node = g->nodes[i];
        const rg_op_info *info = &rg_op_table[node->op];
        const bool solo = g->solo[i];
        /* A solo node runs on thread 0 as if it were alone; the others go on to the next node. */
        if (solo && ith != 0) continue;
        rg_compute_params p = {
            .ith = solo ? 0 : ith, .nth = solo ? 1 : nth, .phase = 1, .wdata = wdata + g->work_offs[i],
            .wshared = g->thread_offs - g->work_offs[i], .wthread = g->thread_stride,
            .error_flag = &g->error_flag, .error_msg = g->error_msg,
            .counter = &g->counters[(size_t)i * RG_COUNTER_STRIDE],
        };
        if (info->n_phases == 2 && node->prepare) {
            p.phase = 0;
            info->forward(&p, node);
            rg_pool_barrier(job->pool, nth);
            p.phase = 1;
        }
        info->forward(&p, node);
    }
}

rg_status rg_graph_compute_partial(rg_graph *g, rg_pool *pool, int n_threads, int n_nodes) {
    if (g == NULL) return RG_E_ARG;
    if (atomic_flag_test_and_set(&g->busy)) {
        /* Do not touch error_msg: the thread computing owns it. */
        return RG_E_BUSY;
    }
    rg_status st = RG_OK;
    g->error_flag = 0;
    g->error_msg[0] = '\0';
    if (n_threads < 1 || n_threads > g->max_threads || (pool == NULL && n_threads > 1) ||
               (pool != NULL && n_threads > rg_pool_n_threads(pool))) {
        snprintf(g->error_msg, sizeof g->error_msg,
                 "cannot compute with %d threads (graph built for up to %d, pool has %d)", n_threads, g->max_threads,
                 rg_pool_n_threads(pool));
        st = RG_E_ARG;
    } else if (n_nodes < 0 || n_nodes > g->n_nodes) {
        snprintf(g->error_msg, sizeof g->error_msg, "cannot compute %d nodes of a %d-node graph", n_nodes, g->n_nodes);
        st = RG_E_ARG;
    } else {
        for (int i = 0; i < g->n_views; i++) {
            rg_tensor *v = g->views[i];
            v->data = v->view_src->data ? (uint8_t *)v->view_src->data + v->view_offs : NULL;
        }
        for (int i = 0; i < g->n_nodes && st == RG_OK; i++) {
            for (int s = 0; s < RG_MAX_SRC; s++) {
                const rg_tensor *src = g->nodes[i]->src[s];
                if (src != NULL && src->data == NULL) {
                    snprintf(g->error_msg, sizeof g->error_msg, "node %d (%s) reads '%s', which has no data", i,
                             rg_op_table[g->nodes[i]->op].name, src->name);
                    st = RG_E_ARG;
                    break;
                }
            }
        }
        if (st == RG_OK) {
            for (int i = 0; i < n_nodes; i++)
                for (int c = 0; c < RG_NODE_COUNTERS; c++)
                    atomic_store_explicit(&g->counters[(size_t)i * RG_COUNTER_STRIDE + c], 0, memory_order_relaxed);
            compute_job job = {g, pool, n_nodes};
            rg_pool_run(pool, compute_thread, &job, n_threads);
            if (g->error_flag) st = RG_E_ARG;
        }
    }
    atomic_flag_clear(&g->busy);
    return st;
}

rg_status rg_graph_compute(rg_graph *g, rg_pool *pool, int n_threads) {
    return rg_graph_compute_partial(g, pool, n_threads, g ? g->n_nodes : 0);
}
