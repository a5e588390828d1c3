/* Measurement helpers for the benchmarks: the machine's memory read bandwidth and FMA peak, measured
 * with the same thread pool the engine uses, so benchmark ratios compare like with like. */
#ifndef RWKV_GGML_BENCH_H
#define RWKV_GGML_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "rwkv_ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads nbytes of buf (split over n_threads threads of the pool) with the widest loads the CPU has
 * and returns a checksum (so the reads cannot be optimised away). Time it from the caller. */
double rg_bench_read(const void *buf, size_t nbytes, rg_pool *pool, int n_threads);
/* Runs iters iterations of independent multiply-add chains of a kind (RG_PEAK_*: f32 FMA, bf16 pairs
 * (vdpbf16ps) or int8 quads (vpdpbusd)) on each of n_threads threads, in registers; returns the number of
 * operations done, 2 per multiply-add; 0 where the CPU (or the selected level) lacks the instruction. */
enum { RG_PEAK_F32 = 0, RG_PEAK_BF16 = 1, RG_PEAK_INT8 = 2 };
double rg_bench_peak(int kind, int64_t iters, rg_pool *pool, int n_threads);

#ifdef __cplusplus
}
#endif

#endif
