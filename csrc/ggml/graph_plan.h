/* Memory planning of graphs in no_alloc contexts (graph_plan.c). */
#ifndef RG_GRAPH_PLAN_H
#define RG_GRAPH_PLAN_H

#include "internal.h"

/* Places every tensor of the graph that has no memory (and is neither a view nor external) in one heap
 * buffer owned by ctx, reusing a region after its last reader; the work buffer follows it (*work).
 * order: all n tensors of the graph in dependency order, nodes: the computed ones. */
RG_INTERNAL_API rg_status rg_graph_plan_memory(rg_ctx *ctx, rg_tensor **order, int n, rg_tensor **nodes,
                                               int n_nodes, rg_tensor *const *outputs, int n_outputs,
                                               size_t work_size, void **work);

#endif
