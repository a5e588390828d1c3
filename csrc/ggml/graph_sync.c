/* Barrier elision. Threads meet between two nodes only where the second depends on the first: a node
 * that reads another's output, overwrites what another reads, or writes where another writes. Other
 * neighbours run back to back, so a thread that finished its share of one matrix product takes rows
 * of the next while the other thread is still busy, and a run of small solo nodes on thread 0 overlaps
 * the other threads' next product. A per-token RWKV graph has a dozen independent products and twice
 * as many solo nodes per layer; most of its barriers go.
 *
 * Memory is compared by address: internal tensors have fixed places once the graph's memory is
 * planned. External tensors other than constants (state and output buffers) can be repointed between
 * computes, and an eval may pass the same buffer as input and output, so any two accesses to them of
 * which one writes are ordered. Constants (weights) are never written. */
#include "graph_sync.h"

/* Nodes since the last barrier that are checked against the next one: a cap keeps the build linear. */
#define RG_SYNC_WINDOW 64

typedef enum { MEM_CONST, MEM_IO, MEM_PLACED, MEM_UNKNOWN } mem_kind;

typedef struct {
    mem_kind kind;
    const uint8_t *lo, *hi; /* MEM_PLACED: the bytes the tensor can touch */
} mem_span;

typedef struct {
    mem_span write;
    mem_span write2; /* a source the op updates in place (rg_op_info.writes_src), if has_write2 */
    bool has_write2;
    mem_span reads[RG_MAX_SRC];
    int n_reads;
    bool solo, common_work;
} access;

static mem_span span_of(const rg_tensor *t) {
    size_t offs = 0;
    const rg_tensor *root = t;
    while (root->view_src != NULL) {
        offs += root->view_offs;
        root = root->view_src;
    }
    if (root->external) return (mem_span){root->constant ? MEM_CONST : MEM_IO, NULL, NULL};
    if (root->data == NULL) return (mem_span){MEM_UNKNOWN, NULL, NULL};
    const uint8_t *lo = (const uint8_t *)root->data + offs;
    return (mem_span){MEM_PLACED, lo, lo + rg_tensor_nbytes(t)};
}

/* Whether a write to w and an access to x (read or write) may touch the same bytes. */
static bool may_overlap(mem_span w, mem_span x) {
    if (x.kind == MEM_CONST) return false; /* nothing writes a constant; a write to one is treated as IO */
    if (w.kind == MEM_UNKNOWN || x.kind == MEM_UNKNOWN) return true;
    if (w.kind == MEM_CONST) w.kind = MEM_IO;
    if (w.kind != x.kind) return false; /* caller buffers and planned memory are separate allocations */
    if (w.kind == MEM_IO) return true;
    return w.lo < x.hi && x.lo < w.hi;
}

/* Whether a write w may touch what b reads or writes. */
static bool writes_conflict(mem_span w, const access *b) {
    if (may_overlap(w, b->write)) return true;
    for (int s = 0; s < b->n_reads; s++)
        if (may_overlap(w, b->reads[s])) return true;
    return false;
}

static bool conflict(const access *a, const access *b) {
    if (a->solo && b->solo) return false; /* both on thread 0, in order */
    if (a->common_work && b->common_work) return true;
    if (writes_conflict(a->write, b)) return true;
    if (a->has_write2 && writes_conflict(a->write2, b)) return true;
    if (b->has_write2 && writes_conflict(b->write2, a)) return true;
    for (int s = 0; s < a->n_reads; s++)
        if (may_overlap(b->write, a->reads[s])) return true;
    return false;
}

int rg_graph_plan_sync(rg_tensor *const *nodes, const bool *solo, const bool *common_work, int n,
                       bool *barrier_before) {
    access window[RG_SYNC_WINDOW];
    int n_window = 0, n_barriers = 0;
    for (int i = 0; i < n; i++) {
        access a = {.write = span_of(nodes[i]), .solo = solo[i], .common_work = common_work[i]};
        for (int s = 0; s < RG_MAX_SRC; s++)
            if (nodes[i]->src[s] != NULL) a.reads[a.n_reads++] = span_of(nodes[i]->src[s]);
        const int in_place = rg_op_table[nodes[i]->op].writes_src;
        if (in_place > 0) {
            a.write2 = span_of(nodes[i]->src[in_place - 1]);
            a.has_write2 = true;
        }
        bool need = n_window == RG_SYNC_WINDOW;
        for (int k = 0; k < n_window && !need; k++) need = conflict(&a, &window[k]);
        barrier_before[i] = need && i > 0;
        if (need) {
            n_barriers++;
            n_window = 0;
        }
        window[n_window++] = a;
    }
    return n_barriers;
}
