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

#include <stdlib.h>
#include <string.h>

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
        if (in_place > 0 && nodes[i]->src[in_place - 1] != NULL) {
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

/* ---- scheduling: fewer meeting points by running independent nodes together ----
 * The dependency order of a graph is a depth-first walk, so an RWKV layer's independent products (r, k,
 * v, the LoRA halves) alternate with the small solo nodes between them, and nearly every product gets
 * a barrier of its own. Instead, each node is given the earliest step it can run at: a node comes after
 * every earlier node it conflicts with (shares a tensor with, one of them writing it), one step later
 * unless both are solo (thread 0 runs those in order within a step). Nodes are then ordered by step,
 * keeping the dependency order within a step, so each step needs at most one barrier.
 *
 * Memory is compared by root tensor, as the memory plan does not exist yet: internal tensors are
 * separate until then, caller buffers other than constants are treated as one (they may alias) and
 * constants as none (nothing writes them). */

typedef struct {
    int w_solo, w_split, r_solo, r_split; /* latest step + 1 of a solo/split writer/reader; 0: none */
} root_steps;

static int root_index(const rg_tensor *t, int io_root) {
    while (t->view_src != NULL) t = t->view_src;
    if (t->external) return t->constant ? -1 : io_root;
    return (int)t->visit;
}

static int after(int step_plus_1, bool both_solo) { return step_plus_1 == 0 ? 0 : step_plus_1 - (both_solo ? 1 : 0); }

static int max_i(int a, int b) { return a > b ? a : b; }

void rg_graph_schedule(rg_tensor **all, int n_all, rg_tensor **nodes, bool *solo, size_t *work, int n) {
    int *step = malloc((size_t)(n ? n : 1) * sizeof(int));
    root_steps *roots = calloc((size_t)n_all + 1, sizeof(root_steps));
    rg_tensor **tmp_nodes = malloc((size_t)(n ? n : 1) * sizeof(rg_tensor *));
    bool *tmp_solo = malloc((size_t)(n ? n : 1) * sizeof(bool));
    size_t *tmp_work = malloc((size_t)(n ? n : 1) * sizeof(size_t));
    const bool ok = step && roots && tmp_nodes && tmp_solo && tmp_work;
    if (ok) {
        for (int i = 0; i < n_all; i++) all[i]->visit = (uint32_t)i;
        int n_steps = 0;
        for (int j = 0; j < n; j++) {
            const rg_tensor *t = nodes[j];
            int reads[RG_MAX_SRC], writes[2], n_reads = 0, n_writes = 0;
            for (int s = 0; s < RG_MAX_SRC; s++)
                if (t->src[s] != NULL) reads[n_reads++] = root_index(t->src[s], n_all);
            writes[n_writes++] = root_index(t, n_all);
            const int in_place = rg_op_table[t->op].writes_src;
            if (in_place > 0 && t->src[in_place - 1] != NULL) writes[n_writes++] = root_index(t->src[in_place - 1], n_all);
            int at = 0;
            for (int k = 0; k < n_reads + n_writes; k++) {
                const int r = k < n_reads ? reads[k] : writes[k - n_reads];
                if (r < 0) continue;
                at = max_i(at, max_i(after(roots[r].w_solo, solo[j]), roots[r].w_split));
                if (k >= n_reads) at = max_i(at, max_i(after(roots[r].r_solo, solo[j]), roots[r].r_split));
            }
            step[j] = at;
            n_steps = max_i(n_steps, at + 1);
            for (int k = 0; k < n_reads + n_writes; k++) {
                const int r = k < n_reads ? reads[k] : writes[k - n_reads];
                if (r < 0) continue;
                int *slot = k < n_reads ? (solo[j] ? &roots[r].r_solo : &roots[r].r_split)
                                        : (solo[j] ? &roots[r].w_solo : &roots[r].w_split);
                *slot = max_i(*slot, at + 1);
            }
        }
        /* stable counting sort by step */
        int *first = calloc((size_t)n_steps + 1, sizeof(int));
        if (first != NULL) {
            for (int j = 0; j < n; j++) first[step[j] + 1]++;
            for (int s = 0; s < n_steps; s++) first[s + 1] += first[s];
            for (int j = 0; j < n; j++) {
                const int to = first[step[j]]++;
                tmp_nodes[to] = nodes[j];
                tmp_solo[to] = solo[j];
                tmp_work[to] = work[j];
            }
            memcpy(nodes, tmp_nodes, (size_t)n * sizeof(rg_tensor *));
            memcpy(solo, tmp_solo, (size_t)n * sizeof(bool));
            memcpy(work, tmp_work, (size_t)n * sizeof(size_t));
            free(first);
        }
        for (int i = 0; i < n_all; i++) all[i]->visit = 0;
    }
    free(step);
    free(roots);
    free(tmp_nodes);
    free(tmp_solo);
    free(tmp_work);
}
