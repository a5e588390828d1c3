/* rg_quantize_rows: whole-tensor conversion from f32 on the thread pool (model quantization, tools).
 *
 * Blocks are independent, so the work is split by blocks, not rows: a single long row is shared by
 * every thread and each thread gets an equal share whatever the shape. Each block is converted by the
 * same reference code whichever thread does it, so the bytes do not depend on the thread count. */
#include "../internal.h"
#include "../pool.h"
#include "../simd/kernels.h"

typedef struct {
    rg_from_f32_fn from_f32;
    const float *src;
    uint8_t *dst;
    int64_t n_blocks;
    int64_t block_size;
    size_t block_bytes;
} quantize_job;

/* Blocks per call of the converter: large enough to amortise the call, small enough to stay in L1. */
#define RG_QUANTIZE_CHUNK 256

static void quantize_thread(void *arg, int ith, int nth) {
    const quantize_job *job = arg;
    int64_t b0, b1;
    rg_split(job->n_blocks, ith, nth, &b0, &b1);
    for (int64_t b = b0; b < b1; b += RG_QUANTIZE_CHUNK) {
        const int64_t nb = b1 - b < RG_QUANTIZE_CHUNK ? b1 - b : RG_QUANTIZE_CHUNK;
        job->from_f32(job->src + b * job->block_size, job->dst + (size_t)b * job->block_bytes, nb * job->block_size);
    }
}

rg_status rg_quantize_rows(int type, const float *src, void *dst, int64_t n_rows, int64_t row_len, rg_pool *pool,
                           int n_threads) {
    rg_kernels_init();
    if (!rg_type_is_valid(type)) return RG_E_TYPE;
    const rg_type_traits *tr = rg_traits(type);
    if (tr->from_f32 == NULL) return RG_E_UNSUPPORTED;
    if (n_rows < 0 || row_len < 0 || row_len % tr->block_size != 0) return RG_E_SHAPE;
    if (row_len > 0 && n_rows > INT64_MAX / row_len) return RG_E_SHAPE;
    if (n_threads < 1 || (n_threads > 1 && (pool == NULL || n_threads > rg_pool_n_threads(pool)))) return RG_E_ARG;
    const int64_t n = n_rows * row_len;
    if (n == 0) return RG_OK;
    if (src == NULL || dst == NULL) return RG_E_ARG;
    quantize_job job = {tr->from_f32, src, dst, n / tr->block_size, tr->block_size, tr->block_bytes};
    /* fewer threads than blocks' worth of work would only pay for the wake-up */
    int nth = n_threads;
    if (job.n_blocks < (int64_t)nth * RG_QUANTIZE_CHUNK) nth = (int)((job.n_blocks + RG_QUANTIZE_CHUNK - 1) / RG_QUANTIZE_CHUNK);
    if (nth < 1) nth = 1;
    if (nth == 1) {
        quantize_thread(&job, 0, 1);
    } else {
        rg_pool_run(pool, quantize_thread, &job, nth);
    }
    return RG_OK;
}
