/* rg_quantize_rows: whole-tensor conversion from f32 on the thread pool (model quantization, tools).
 *
 * Blocks are independent, so the work is split by blocks, not rows: a single long row is shared by
 * every thread and each thread gets an equal share whatever the shape. Each block is converted by the
 * same reference code whichever thread does it, so the bytes do not depend on the thread count. (The
 * engine-internal activation rows are one unit per row, so they are split by rows.) */
#include "../internal.h"
#include "../pool.h"
#include "../simd/kernels.h"

typedef struct {
    rg_from_f32_fn from_f32;
    const float *src;
    uint8_t *dst;
    int64_t n_units;    /* blocks (or activation rows) */
    int64_t unit_elems; /* floats per unit */
    size_t unit_bytes;  /* bytes per unit */
    int64_t per_call;   /* units per converter call */
} quantize_job;

/* Blocks per converter call: enough to amortise the call, few enough to stay in L1. */
#define RG_QUANTIZE_CHUNK 256
/* Fewer elements than this per thread would cost more in wake-ups than the thread saves. */
#define RG_QUANTIZE_MIN_PER_THREAD 8192

static void quantize_thread(void *arg, int ith, int nth) {
    const quantize_job *job = arg;
    int64_t u0, u1;
    rg_split(job->n_units, ith, nth, &u0, &u1);
    for (int64_t u = u0; u < u1; u += job->per_call) {
        const int64_t nu = u1 - u < job->per_call ? u1 - u : job->per_call;
        job->from_f32(job->src + u * job->unit_elems, job->dst + (size_t)u * job->unit_bytes, nu * job->unit_elems);
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
    quantize_job job = {tr->from_f32, src, dst, n / tr->block_size, tr->block_size, tr->block_bytes, RG_QUANTIZE_CHUNK};
    if (type == RG_TYPE_Q8_ACT) job = (quantize_job){tr->from_f32, src, dst, n_rows, row_len,
                                                      rg_type_row_bytes(type, row_len), 1};
    int64_t nth = (n + RG_QUANTIZE_MIN_PER_THREAD - 1) / RG_QUANTIZE_MIN_PER_THREAD;
    if (nth > n_threads) nth = n_threads;
    if (nth > job.n_units) nth = job.n_units;
    if (nth <= 1) {
        quantize_thread(&job, 0, 1);
    } else {
        rg_pool_run(pool, quantize_thread, &job, (int)nth);
    }
    return RG_OK;
}
