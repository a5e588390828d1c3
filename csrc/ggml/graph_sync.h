/* Where the threads computing a graph must meet (graph_sync.c). */
#ifndef RG_GRAPH_SYNC_H
#define RG_GRAPH_SYNC_H

#include "internal.h"

/* Fills barrier_before[i] for the n nodes in compute order: true when node i touches memory that a
 * node since the previous barrier touched in a way that needs ordering across threads (one of them
 * writes it, and they are not both solo nodes, which thread 0 runs in order). common_work[i]: node i
 * uses the work buffer's shared region and that region is the same for every node. Call it once the
 * memory of every internal tensor is placed. Returns the number of barriers. */
RG_INTERNAL_API int rg_graph_plan_sync(rg_tensor *const *nodes, const bool *solo, const bool *common_work, int n,
                                       bool *barrier_before);

/* Reorders the n compute nodes (and their solo flags and work sizes, index for index) so that nodes that
 * can run together come together and fewer barriers are needed; all: the n_all tensors of the graph (any
 * order), whose visit fields must be 0 and are left 0. The result is still a dependency order, and every
 * pair of nodes touching the same tensor, one of them writing it, keeps its order. Call it before the
 * memory is planned. Leaves the order as it was if out of memory. */
RG_INTERNAL_API void rg_graph_schedule(rg_tensor **all, int n_all, rg_tensor **nodes, bool *solo, size_t *work, int n);

#endif
