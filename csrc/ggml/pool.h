/* The persistent thread pool (internal interface; rg_pool_new/free are public). */
#ifndef RG_POOL_H
#define RG_POOL_H

#include "internal.h"

typedef void (*rg_pool_job)(void *arg, int ith, int nth);

/* Runs job(arg, ith, nth) on threads 0..nth-1 (the caller is thread 0) and returns when all finished. */
RG_INTERNAL_API void rg_pool_run(rg_pool *pool, rg_pool_job job, void *arg, int nth);
/* All nth threads of the running job wait here until every one of them arrived. */
RG_INTERNAL_API void rg_pool_barrier(rg_pool *pool, int nth);

#endif
