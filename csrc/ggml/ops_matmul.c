/* mul_mat: out[t][m] = sum_k a[m][k] * b[t][k] for weights a of any type and F32 activations b.
 *
 * Threads split the weight rows m, so every output element is one dot product computed by one thread
 * in a fixed order: the result does not depend on the thread count. With T = 1 (per-token mode) the
 * kernel streams each weight row once against the activation vector, which is memory-bound. With
 * T >= 8 columns of one plane and an AVX-512 CPU the column-panel kernels run (activations transposed
 * so that 16 columns fill a vector: see the two panel sections at the end); otherwise a weight row is
 * made f32 once and reused against four activation rows at a time. */
#include "ops_kernels.h"
#include "quant/quant.h"
#include "simd/kernels.h"

/* Weights with an integer dot product (the block-quantized types): see the section at the end. */
static bool quantized_weights(const rg_tensor *a) { return rg_traits(a->type)->vec_dot != NULL; }
static size_t quant_b_bytes(const rg_tensor *dst);
static void quantize_b(const rg_compute_params *p, const rg_tensor *dst);
static void mul_mat_quant(const rg_compute_params *p, rg_tensor *dst);
static bool fpanel_shape(const rg_tensor *dst);
static rg_work fpanel_work(const rg_tensor *dst);
static void fpanel_b(const rg_compute_params *p, const rg_tensor *dst, bool bf16);
static void mul_mat_fpanel(const rg_compute_params *p, rg_tensor *dst, bool bf16);
static bool qpanel_shape(const rg_tensor *dst);
static size_t qpanel_b_bytes(const rg_tensor *dst);
static size_t qpanel_thread_bytes(const rg_tensor *dst);
static void qpanel_b(const rg_compute_params *p, const rg_tensor *dst);
static void mul_mat_qpanel(const rg_compute_params *p, rg_tensor *dst);

static void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* The panel routes keep the outputs of a block of tiles while the k-blocks of the panels pass, so each
 * k-block of the panels is read once per block of tiles, from L2, rather than once per tile from L3
 * (the panels of a 256-token chunk take 0.6-2.6 MB): at most this many tiles, whose outputs take at
 * most this many bytes (L2-sized with a k-block of the panels beside them). 7-9% faster prompts on
 * 1.5B F16 (exact and bf16), 4.5% on 169M, against one tile at a time (A/B in one process). */
#define RG_PANEL_BLOCK_TILES 32
#define RG_PANEL_BLOCK_OUT_BYTES (256 << 10)

/* Asks for bytes [off, off + len) of rows [m, m + n) of a (clamped to the matrix) in the L2 cache. The
 * panel routes compute on a tile of weight rows for far longer than reading it takes; asking for the
 * next tile's k-block while computing on this one's keeps the kernels from waiting on memory. (Asking
 * for a whole tile at once measured no better than not asking: the requests queue up and stall.) */
static void prefetch_rows(const rg_tensor *a, int64_t m, int64_t n, size_t off, size_t len) {
    if (m >= a->ne[1]) return;
    if (m + n > a->ne[1]) n = a->ne[1] - m;
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *row = (const uint8_t *)a->data + (m + r) * a->nb[1];
        for (size_t o = off; o < off + len; o += 64) __builtin_prefetch(row + o, 0, 2);
    }
}

/* The panel routes' next step within a block of tiles [ib, ie) of tile_rows rows, while tile i computes
 * on bytes [off, off + len) of its rows: the next tile's same bytes, or after the block's last tile the
 * first tile's next k-block [next_off, next_off + next_len) (none when next_len is 0). */
static void prefetch_next_step(const rg_tensor *a, int64_t tile_rows, int64_t ib, int64_t i, int64_t ie, size_t off,
                               size_t len, size_t next_off, size_t next_len) {
    if (i + 1 < ie)
        prefetch_rows(a, (i + 1) * tile_rows, tile_rows, off, len);
    else if (next_len > 0)
        prefetch_rows(a, ib * tile_rows, tile_rows, next_off, next_len);
}

/* The bf16 route (rg_mul_mat_bf16) is decided per node when it is built: F32/F16 weights, 2-D, T > 1.
 * Whether the CPU can take it is decided at each compute (the kernel level may change at run time),
 * so the node always reserves room for both routes. */
static bool bf16_node(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return dst->iparams[0] == RG_MUL_MAT_BF16 && (a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16) && b->ne[1] > 1 &&
           a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

static int64_t bf16_padded(int64_t k) { return (k + 31) / 32 * 32; }

bool rg_mul_mat_needs_prepare(const rg_tensor *dst) {
    /* Float panel route: the activations are transposed into panels first. */
    if (fpanel_shape(dst)) return true;
    /* Quantized weights: the activations are quantized to the weights' vec_dot type first. */
    if (quantized_weights(dst->src[0])) return true;
    /* bf16 route: the activations are converted to bf16 rows first. */
    if (bf16_node(dst)) return true;
    /* Activations whose elements are strided are packed into contiguous rows first. */
    return dst->src[1]->nb[0] != sizeof(float) || dst->src[1]->nb[1] % sizeof(float) != 0;
}

static size_t packed_b_bytes(const rg_tensor *b) {
    return (size_t)(b->ne[0] * b->ne[1] * b->ne[2] * b->ne[3]) * sizeof(float);
}

rg_work rg_work_mul_mat(const rg_tensor *dst, int nth) {
    (void)nth;
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    size_t shared = !dst->prepare ? 0 : quantized_weights(a) ? quant_b_bytes(dst) : packed_b_bytes(b);
    /* per thread: a tile of weight rows made f32 (mat-mat), and for the bf16 route the same tile in bf16 */
    size_t per_thread = RG_GEMM_MR * (size_t)a->ne[0] * sizeof(float) + 64;
    if (fpanel_shape(dst)) { /* the panel routes may be taken at compute time: room for every route */
        const rg_work f = fpanel_work(dst);
        if (f.shared > shared) shared = f.shared;
        if (f.per_thread > per_thread) per_thread = f.per_thread;
    }
    if (qpanel_shape(dst)) {
        if (qpanel_b_bytes(dst) > shared) shared = qpanel_b_bytes(dst);
        if (qpanel_thread_bytes(dst) > per_thread) per_thread = qpanel_thread_bytes(dst);
    }
    if (bf16_node(dst)) {
        const size_t kp = (size_t)bf16_padded(a->ne[0]);
        const size_t b16 = (size_t)b->ne[1] * kp * sizeof(uint16_t);
        if (b16 > shared) shared = b16;
        per_thread += RG_GEMM_MR * kp * sizeof(uint16_t) + 64;
    }
    return (rg_work){shared, per_thread};
}

static void pack_b(const rg_compute_params *p, const rg_tensor *b) {
    float *out = p->wdata;
    const int64_t rows = rg_nrows(b), k = b->ne[0];
    int64_t r0, r1;
    rg_split(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i1 = r % b->ne[1], i2 = (r / b->ne[1]) % b->ne[2], i3 = r / (b->ne[1] * b->ne[2]);
        const float *row = rg_load_row_f32(b, i1, i2, i3, out + r * k);
        if (row != out + r * k) memcpy(out + r * k, row, (size_t)k * sizeof(float));
    }
}

/* Mat-vec: weight rows in aligned groups of four against the one activation column. Groups are
 * split between threads whole, and a row's result does not depend on its group (kernels.h), so the
 * output is identical for any thread count.
 *
 * Short rows stream best one after another (one long sequential read the hardware prefetcher follows);
 * once a row is as long as the L1 cache can hold beside the activations, the activation vector no
 * longer stays in L1 and loading it once for four rows wins (measured: 2048x8192 F16 went from 40% to
 * ~95% of the read bandwidth). The choice depends on the shape only, never on the thread count. */
#define RG_ROWS4_MIN_ROW_BYTES (16 << 10)
/* Groups of 4 rows claimed at a time (dynamic split): at most this many, and few enough that each
 * thread claims about 8 times, so a small product (a LoRA's 64-row half) still ends evenly. */
#define RG_MATVEC_CHUNK_GROUPS 16
#define RG_MATVEC_CLAIMS_PER_THREAD 8

/* The range of row groups this thread computes next: claimed dynamically when the node has one plane
 * (the usual case: memory-bound threads finish unevenly), else this thread's fixed share once. The
 * dynamic claims walk each thread's own contiguous part first (rg_claim_parts): one unbroken stream per
 * thread measured 7-8% faster per token than chunks dealt out alternately (RWKV-7 0.1B F16, 1.5B F16
 * and Q4_0, A/B in one process on the same pages). */
static bool next_groups(const rg_compute_params *p, const rg_tensor *dst, int64_t n, int *cursor, int64_t *g0,
                        int64_t *g1) {
    if (dst->ne[2] * dst->ne[3] == 1) {
        int64_t chunk = n / ((int64_t)p->nth * RG_MATVEC_CLAIMS_PER_THREAD);
        chunk = chunk < 1 ? 1 : chunk > RG_MATVEC_CHUNK_GROUPS ? RG_MATVEC_CHUNK_GROUPS : chunk;
        return rg_claim_parts(p, n, chunk, cursor, g0, g1);
    }
    if (*cursor != 0) return false;
    *cursor = 1;
    rg_split(n, p->ith, p->nth, g0, g1);
    return *g0 < *g1;
}

static void mat_vec_float(const rg_compute_params *p, const rg_tensor *dst, const uint8_t *a_plane,
                          const float *x, float *out) {
    const rg_tensor *a = dst->src[0];
    const int64_t K = a->ne[0], M = a->ne[1];
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + 3) / 4, &cursor, &g0, &g1))
    for (int64_t m = g0 * 4; m < M && m < g1 * 4; m += 4) {
        const int nr = M - m < 4 ? (int)(M - m) : 4;
        const void *rows = a_plane + m * a->nb[1];
        if (a->nb[1] < RG_ROWS4_MIN_ROW_BYTES) {
            for (int j = 0; j < nr; j++) {
                const void *row = (const uint8_t *)rows + j * a->nb[1];
                out[m + j] = a->type == RG_TYPE_F32 ? rg_kernels.dot_f32(row, x, K) : rg_kernels.dot_f16_f32(row, x, K);
            }
        } else if (a->type == RG_TYPE_F32) {
            rg_kernels.dot_f32_rows4(rows, (int64_t)(a->nb[1] / sizeof(float)), x, K, nr, out + m);
        } else {
            rg_kernels.dot_f16_rows4(rows, (int64_t)(a->nb[1] / sizeof(uint16_t)), x, K, nr, out + m);
        }
    }
}

/* Mat-mat: tiles of RG_GEMM_MR weight rows (made f32 once per tile when stored otherwise) against all T
 * activation rows in steps of RG_GEMM_NR. Tiles are aligned groups of rows split between threads whole,
 * so the output does not depend on the thread count. */
static void mat_mat_float(const rg_compute_params *p, const rg_tensor *a, const uint8_t *a_plane,
                          const float *b, int64_t ldb, int64_t T, uint8_t *d_plane, size_t ldd) {
    const int64_t K = a->ne[0], M = a->ne[1];
    const rg_type_traits *ta = rg_traits(a->type);
    float *tile_buf = rg_thread_scratch(p);
    float out[RG_GEMM_MR * RG_GEMM_NR];
    int64_t g0, g1;
    rg_split((M + RG_GEMM_MR - 1) / RG_GEMM_MR, p->ith, p->nth, &g0, &g1);
    for (int64_t m = g0 * RG_GEMM_MR; m < M && m < g1 * RG_GEMM_MR; m += RG_GEMM_MR) {
        const int mr = M - m < RG_GEMM_MR ? (int)(M - m) : RG_GEMM_MR;
        const float *at;
        int64_t lda;
        if (a->type == RG_TYPE_F32) {
            at = (const float *)(a_plane + m * a->nb[1]);
            lda = (int64_t)(a->nb[1] / sizeof(float));
        } else {
            for (int j = 0; j < mr; j++) ta->to_f32(a_plane + (m + j) * a->nb[1], tile_buf + j * K, K);
            at = tile_buf;
            lda = K;
        }
        for (int64_t t = 0; t < T; t += RG_GEMM_NR) {
            const int nr = T - t < RG_GEMM_NR ? (int)(T - t) : RG_GEMM_NR;
            rg_kernels.gemm_f32_tile(at, lda, mr, b + t * ldb, ldb, nr, K, out, RG_GEMM_MR);
            for (int j = 0; j < nr; j++)
                memcpy(d_plane + (size_t)(t + j) * ldd + (size_t)m * sizeof(float), out + j * RG_GEMM_MR,
                       (size_t)mr * sizeof(float));
        }
    }
}

/* F32 and F16 weights (and the f32 route for any other float-convertible type). */
static void mul_mat_float(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], T = b->ne[1];
    for (int64_t i3 = 0; i3 < dst->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < dst->ne[2]; i2++) {
            const uint8_t *a_plane = (const uint8_t *)a->data + (i2 % a->ne[2]) * a->nb[2] + (i3 % a->ne[3]) * a->nb[3];
            /* b rows of this plane: either the packed copy or b itself */
            const float *b_plane;
            int64_t ldb;
            if (b->nb[0] != sizeof(float) || b->nb[1] % sizeof(float) != 0) { /* packed in phase 0 */
                b_plane = (const float *)p->wdata + (i3 * b->ne[2] + i2) * b->ne[1] * K;
                ldb = K;
            } else {
                b_plane = (const float *)((const uint8_t *)b->data + i2 * b->nb[2] + i3 * b->nb[3]);
                ldb = (int64_t)(b->nb[1] / sizeof(float));
            }
            uint8_t *d_plane = (uint8_t *)dst->data + i2 * dst->nb[2] + i3 * dst->nb[3];
            if (T == 1 && (a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16)) {
                mat_vec_float(p, dst, a_plane, b_plane, (float *)d_plane);
            } else {
                mat_mat_float(p, a, a_plane, b_plane, ldb, T, d_plane, dst->nb[1]);
            }
        }
    }
}

/* bf16 route, phase 0: every activation row to a zero-padded bf16 row in the shared region. */
static void bf16_b(const rg_compute_params *p, const rg_tensor *b) {
    const int64_t K = b->ne[0], kp = bf16_padded(K);
    uint16_t *out = p->wdata;
    float *buf = rg_thread_scratch(p);
    int64_t r0, r1;
    rg_split(b->ne[1], p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) rg_kernels.f32_to_bf16_padded(rg_load_row_f32(b, r, 0, 0, buf), out + r * kp, K, kp);
}

/* bf16 route, phase 1: as mat_mat_float, with the weight tile converted to bf16 once per tile. */
static void mat_mat_bf16(const rg_compute_params *p, const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], kp = bf16_padded(K);
    const rg_type_traits *ta = rg_traits(a->type);
    float *row_f32 = rg_thread_scratch(p);
    uint16_t *tile = (uint16_t *)((uint8_t *)row_f32 + (RG_GEMM_MR * (size_t)K * sizeof(float) + 63) / 64 * 64);
    const uint16_t *bb = p->wdata;
    float out[RG_GEMM_MR * RG_GEMM_NR];
    int64_t g0, g1;
    rg_split((M + RG_GEMM_MR - 1) / RG_GEMM_MR, p->ith, p->nth, &g0, &g1);
    for (int64_t m = g0 * RG_GEMM_MR; m < M && m < g1 * RG_GEMM_MR; m += RG_GEMM_MR) {
        const int mr = M - m < RG_GEMM_MR ? (int)(M - m) : RG_GEMM_MR;
        for (int j = 0; j < mr; j++) {
            const uint8_t *row = (const uint8_t *)a->data + (m + j) * a->nb[1];
            const float *f = (const float *)row;
            if (a->type != RG_TYPE_F32 || ((uintptr_t)row & 3u) != 0) {
                ta->to_f32(row, row_f32, K);
                f = row_f32;
            }
            rg_kernels.f32_to_bf16_padded(f, tile + j * kp, K, kp);
        }
        for (int64_t t = 0; t < T; t += RG_GEMM_NR) {
            const int nr = T - t < RG_GEMM_NR ? (int)(T - t) : RG_GEMM_NR;
            rg_kernels.gemm_bf16_tile(tile, kp, mr, bb + t * kp, kp, nr, kp, out, RG_GEMM_MR);
            for (int j = 0; j < nr; j++)
                memcpy((uint8_t *)dst->data + (size_t)(t + j) * dst->nb[1] + (size_t)m * sizeof(float),
                       out + j * RG_GEMM_MR, (size_t)mr * sizeof(float));
        }
    }
}

void rg_fwd_mul_mat(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    if (quantized_weights(a) && qpanel_shape(dst) && rg_kernels.qgemm_tile != NULL) {
        if (p->phase == 0) {
            qpanel_b(p, dst);
        } else {
            mul_mat_qpanel(p, dst);
        }
        return;
    }
    if (quantized_weights(a)) {
        if (p->phase == 0) {
            quantize_b(p, dst);
        } else {
            mul_mat_quant(p, dst);
        }
        return;
    }
    if (fpanel_shape(dst)) {
        const bool bf16 = bf16_node(dst);
        if (bf16 ? rg_kernels.gemm_bf16_panel != NULL : rg_kernels.gemm_f32_panel != NULL) {
            if (p->phase == 0) {
                fpanel_b(p, dst, bf16);
            } else {
                mul_mat_fpanel(p, dst, bf16);
            }
            return;
        }
    }
    if (bf16_node(dst) && rg_kernels.gemm_bf16_tile != NULL) {
        if (p->phase == 0) {
            bf16_b(p, b);
        } else {
            mat_mat_bf16(p, dst);
        }
        return;
    }
    if (p->phase == 0) {
        if (b->nb[0] != sizeof(float) || b->nb[1] % sizeof(float) != 0) pack_b(p, b);
        return;
    }
    mul_mat_float(p, dst);
}

/* ---- block-quantized weights (formats.md §5.4) ----
 * Phase 0 quantizes every activation row once to the weights' vec_dot type (RG_TYPE_Q8_ACT rows, the
 * numbers of ggml's Q8_0/Q8_1 blocks) in the shared work region, rows split over the threads. Phase 1
 * gives each thread a range of weight rows and runs the integer dot products against the quantized rows.
 * Every output element is one vec_dot call in a fixed block order: the result does not depend on the
 * thread count. */

/* Bytes of quantized activation rows a tile of the mat-mat loop keeps hot in L2 while a thread's weight
 * rows stream past them once (on Zen 4 at T = 64, K = 8192, 256 KB tiles, which re-stream the weights more
 * often, and no tiling, which spills the rows to L3, both measured slower). */
#define RG_QUANT_TILE_BYTES (512 * 1024)

static size_t quant_b_row_bytes(const rg_tensor *dst) {
    return rg_type_row_bytes(rg_traits(dst->src[0]->type)->vec_dot_type, dst->src[1]->ne[0]);
}

static size_t quant_b_bytes(const rg_tensor *dst) { return (size_t)rg_nrows(dst->src[1]) * quant_b_row_bytes(dst); }

static void quantize_b(const rg_compute_params *p, const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *tq = rg_traits(rg_traits(a->type)->vec_dot_type);
    const int64_t K = b->ne[0], rows = rg_nrows(b);
    const size_t rb = quant_b_row_bytes(dst);
    uint8_t *out = p->wdata;
    float *buf = rg_thread_scratch(p);
    int64_t r0, r1;
    rg_split(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i1 = r % b->ne[1], i2 = (r / b->ne[1]) % b->ne[2], i3 = r / (b->ne[1] * b->ne[2]);
        tq->from_f32(rg_load_row_f32(b, i1, i2, i3, buf), out + (size_t)r * rb, K);
    }
}

static void mul_mat_quant(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *ta = rg_traits(a->type);
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1];
    const size_t rb = quant_b_row_bytes(dst);
    /* equal tiles of a multiple of 4 rows, as few as fit RG_QUANT_TILE_BYTES each */
    const int64_t n_tiles = ((int64_t)rb * T + RG_QUANT_TILE_BYTES - 1) / RG_QUANT_TILE_BYTES;
    const int64_t tile = ((T + n_tiles - 1) / n_tiles + 3) & ~(int64_t)3;
    int64_t m0, m1;
    rg_split(M, p->ith, p->nth, &m0, &m1);
    for (int64_t i3 = 0; i3 < dst->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < dst->ne[2]; i2++) {
            const uint8_t *a_plane = (const uint8_t *)a->data + (i2 % a->ne[2]) * a->nb[2] + (i3 % a->ne[3]) * a->nb[3];
            const uint8_t *x_plane = (const uint8_t *)p->wdata + (size_t)((i3 * b->ne[2] + i2) * T) * rb;
            uint8_t *d_plane = (uint8_t *)dst->data + i2 * dst->nb[2] + i3 * dst->nb[3];
            if (T == 1) {
                float *out = (float *)d_plane;
                int64_t g0, g1;
                int cursor = 0;
                while (next_groups(p, dst, (M + 3) / 4, &cursor, &g0, &g1))
                    for (int64_t m = g0 * 4; m < M && m < g1 * 4; m++) out[m] = ta->vec_dot(K, a_plane + m * a->nb[1], x_plane);
                continue;
            }
            for (int64_t t0 = 0; t0 < T; t0 += tile) {
                const int64_t t1 = T - t0 < tile ? T : t0 + tile;
                for (int64_t m = m0; m < m1; m++) {
                    const void *arow = a_plane + m * a->nb[1];
                    for (int64_t t = t0; t < t1; t += 4) {
                        const int nx = t1 - t < 4 ? (int)(t1 - t) : 4;
                        float out[4];
                        ta->vec_dot_x4(K, arow, x_plane + (size_t)t * rb, rb, nx, out);
                        for (int j = 0; j < nx; j++) *(float *)(d_plane + (t + j) * dst->nb[1] + m * sizeof(float)) = out[j];
                    }
                }
            }
        }
    }
}

/* ---- block-quantized weights against many columns: the panel route (layouts in quant/quant.h) ----
 * Phase 0 quantizes each activation row as above and scatters it into a lane of a column panel; phase 1
 * decodes RG_QT_ROWS weight rows at a time into a tile in the thread's scratch, a k-block at a time
 * (decoded once, then used against every panel) while prefetching the next tile's block. Each thread
 * takes a contiguous range of tiles; every output element is one chain over the blocks in order, so
 * the result does not depend on the thread count.
 * Below RG_QPANEL_MIN_T columns the 16-lane panels would be mostly padding and the one-row kernels win. */
#define RG_QPANEL_MIN_T 8
/* Blocks of k per step of a tile: a tile's rows are decoded and multiplied a k-block at a time (16 KB of
 * activation records per panel, the decoded block in L1) while the next tile's block is prefetched. */
#define RG_QPANEL_KB 16

static bool qpanel_shape(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return quantized_weights(a) && b->ne[1] >= RG_QPANEL_MIN_T && a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

static int64_t qpanel_count(const rg_tensor *dst) { return (dst->src[1]->ne[1] + RG_QP_LANES - 1) / RG_QP_LANES; }

static size_t qpanel_b_bytes(const rg_tensor *dst) {
    return (size_t)qpanel_count(dst) * (size_t)(dst->src[0]->ne[0] / RG_QK) * RG_QP_REC_BYTES;
}

/* phase 0: a row of floats and its activation row; phase 1: a k-block of a tile and every panel's outputs */
/* Tiles per block of the quantized panel route (RG_PANEL_BLOCK_TILES). */
static int64_t qpanel_block_tiles(const rg_tensor *dst) {
    const int64_t tile_bytes = qpanel_count(dst) * RG_QT_ROWS * RG_QP_LANES * (int64_t)sizeof(float);
    const int64_t mc = RG_PANEL_BLOCK_OUT_BYTES / tile_bytes;
    return mc < 1 ? 1 : mc > RG_PANEL_BLOCK_TILES ? RG_PANEL_BLOCK_TILES : mc;
}

static size_t qpanel_thread_bytes(const rg_tensor *dst) {
    const size_t k = (size_t)dst->src[0]->ne[0];
    const size_t rows = k * sizeof(float) + quant_b_row_bytes(dst) + 64;
    const size_t tile = RG_QPANEL_KB * RG_QT_REC_BYTES + 64 +
                        (size_t)qpanel_block_tiles(dst) * qpanel_count(dst) * RG_QT_ROWS * RG_QP_LANES * sizeof(float);
    return (rows > tile ? rows : tile) + 64;
}

static void qpanel_b(const rg_compute_params *p, const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *tq = rg_traits(rg_traits(a->type)->vec_dot_type);
    const int64_t K = b->ne[0], T = b->ne[1], nb = K / RG_QK;
    const size_t panel_bytes = (size_t)nb * RG_QP_REC_BYTES;
    float *buf = align64(rg_thread_scratch(p));
    uint8_t *act = align64(buf + K);
    uint8_t *panels = p->wdata;
    int64_t t0, t1;
    rg_split(qpanel_count(dst) * RG_QP_LANES, p->ith, p->nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *panel = panels + (size_t)(t / RG_QP_LANES) * panel_bytes;
        if (t < T) {
            tq->from_f32(rg_load_row_f32(b, t, 0, 0, buf), act, K);
            rg_qpanel_put(act, nb, panel, (int)(t % RG_QP_LANES));
        } else {
            rg_qpanel_put(NULL, nb, panel, (int)(t % RG_QP_LANES));
        }
    }
}

static void mul_mat_qpanel(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], nb = K / RG_QK, n_panels = qpanel_count(dst);
    const size_t panel_bytes = (size_t)nb * RG_QP_REC_BYTES, block_bytes = rg_type_row_bytes(a->type, RG_QK);
    const int has_min = a->type == RG_TYPE_Q4_1 || a->type == RG_TYPE_Q5_1;
    uint8_t *tile = align64(rg_thread_scratch(p));
    float *outs = align64(tile + RG_QPANEL_KB * RG_QT_REC_BYTES);
    const uint8_t *panels = p->wdata;
    const size_t tile_out = RG_QT_ROWS * RG_QP_LANES;
    const int64_t tile_outs = n_panels * (int64_t)tile_out, mc = qpanel_block_tiles(dst);
    int64_t i0, i1;
    rg_split((M + RG_QT_ROWS - 1) / RG_QT_ROWS, p->ith, p->nth, &i0, &i1);
    /* blocks of mc tiles, as in mul_mat_fpanel: each k-block of the panels is read once per block */
    for (int64_t ib = i0; ib < i1; ib += mc) {
        const int64_t ie = i1 - ib < mc ? i1 : ib + mc;
        for (int64_t b0 = 0; b0 < nb; b0 += RG_QPANEL_KB) {
            const int64_t nbc = nb - b0 < RG_QPANEL_KB ? nb - b0 : RG_QPANEL_KB;
            for (int64_t i = ib; i < ie; i++) {
                const int64_t m = i * RG_QT_ROWS;
                const int rows = M - m < RG_QT_ROWS ? (int)(M - m) : RG_QT_ROWS;
                const int64_t next = nb - b0 - nbc < RG_QPANEL_KB ? nb - b0 - nbc : RG_QPANEL_KB;
                prefetch_next_step(a, RG_QT_ROWS, ib, i, ie, (size_t)b0 * block_bytes, (size_t)nbc * block_bytes,
                                   (size_t)(b0 + nbc) * block_bytes, (size_t)next * block_bytes);
                rg_kernels.qgemm_decode(a->type, (const uint8_t *)a->data + m * a->nb[1] + (size_t)b0 * block_bytes,
                                        a->nb[1], rows, nbc, tile);
                for (int64_t q = 0; q < n_panels; q += 2) /* the kernel takes up to two panels */
                    rg_kernels.qgemm_tile(tile, panels + (size_t)q * panel_bytes + (size_t)b0 * RG_QP_REC_BYTES,
                                          panel_bytes, n_panels - q >= 2 ? 2 : 1, nbc, has_min, b0 > 0,
                                          outs + (i - ib) * tile_outs + q * tile_out);
            }
        }
        for (int64_t i = ib; i < ie; i++) {
            const int64_t m = i * RG_QT_ROWS;
            const int rows = M - m < RG_QT_ROWS ? (int)(M - m) : RG_QT_ROWS;
            for (int64_t t = 0; t < T; t++) {
                const float *o = outs + (i - ib) * tile_outs + (t / RG_QP_LANES) * tile_out + t % RG_QP_LANES;
                float *d = (float *)((uint8_t *)dst->data + (size_t)t * dst->nb[1]) + m;
                for (int r = 0; r < rows; r++) d[r] = o[r * RG_QP_LANES];
            }
        }
    }
}

/* ---- float weights against many columns: the panel routes (simd/k_gemm_panel.c) ----
 * Phase 0 transposes the activation rows into panels of RG_PANEL_LANES columns (f32, or bf16 pairs for
 * the bf16 route); phase 1 gives each thread a contiguous range of tiles of RG_PANEL_ROWS weight rows,
 * prefetches the next tile, and walks k in blocks: F32 rows are read in place, F16 rows made f32 (and
 * every row made bf16 on the bf16 route) a k-block at a time, and the kernel runs on up to
 * RG_PANEL_MAX_NP panels at once. Every output element is one chain over k in a fixed order: the result
 * does not depend on the thread count. */
#define RG_FPANEL_MIN_T 8
/* Elements of k per step of a tile (a multiple of 32): converting a tile's rows a k-block at a time lets
 * the hardware prefetcher stream them in while the kernel computes, instead of the kernel waiting for a
 * burst of whole rows. */
#define RG_FPANEL_KC 128

static bool fpanel_shape(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return (a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16) && b->ne[1] >= RG_FPANEL_MIN_T &&
           a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

static int64_t fpanel_count(const rg_tensor *dst) {
    return (dst->src[1]->ne[1] + RG_PANEL_LANES - 1) / RG_PANEL_LANES;
}

/* elements (f32 route) or halves (bf16 route) of one panel */
static size_t fpanel_elems(const rg_tensor *dst, bool bf16) {
    const int64_t k = dst->src[0]->ne[0];
    return (size_t)RG_PANEL_LANES * (size_t)(bf16 ? bf16_padded(k) : k);
}

/* Tiles per block of the float panel route (RG_PANEL_BLOCK_TILES). */
static int64_t fpanel_block_tiles(const rg_tensor *dst) {
    const int64_t groups = (fpanel_count(dst) + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const int64_t tile_bytes = groups * RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES * (int64_t)sizeof(float);
    const int64_t mc = RG_PANEL_BLOCK_OUT_BYTES / tile_bytes;
    return mc < 1 ? 1 : mc > RG_PANEL_BLOCK_TILES ? RG_PANEL_BLOCK_TILES : mc;
}

static rg_work fpanel_work(const rg_tensor *dst) {
    const size_t k = (size_t)dst->src[0]->ne[0], kp = (size_t)bf16_padded((int64_t)k);
    const size_t n = (size_t)fpanel_count(dst);
    const size_t f32_shared = n * fpanel_elems(dst, false) * sizeof(float);
    const size_t b16_shared = n * fpanel_elems(dst, true) * sizeof(uint16_t);
    /* phase 0: a panel's rows (f32 or bf16 pairs) and a row buffer; phase 1: a k-block of the tile in f32
     * and bf16, and the outputs of every group of panels */
    const size_t groups = (n + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const size_t units = k > kp / 2 ? k : kp / 2; /* 32-bit units of a row: floats or bf16 pairs */
    const size_t rows = (RG_PANEL_LANES * units + k) * sizeof(float) + 128;
    const size_t tile = RG_PANEL_ROWS * RG_FPANEL_KC * (sizeof(float) + sizeof(uint16_t)) +
                        (size_t)fpanel_block_tiles(dst) * groups * RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES *
                            sizeof(float);
    const size_t per_thread = (rows > tile ? rows : tile) + 256;
    return (rg_work){f32_shared > b16_shared ? f32_shared : b16_shared, per_thread};
}

/* Phase 0: each thread builds whole panels. The 16 rows of a panel are loaded (as f32, or converted to
 * bf16 pairs) into the thread's scratch, then transposed in k-blocks small enough that the block of the
 * panel being written stays in L1. Lanes past T are zeros. */
#define RG_FPANEL_TRANSPOSE_K 64

static void fpanel_b(const rg_compute_params *p, const rg_tensor *dst, bool bf16) {
    const rg_tensor *b = dst->src[1];
    const int64_t K = b->ne[0], T = b->ne[1], kp = bf16_padded(K);
    const int64_t n = bf16 ? kp / 2 : K; /* 32-bit units per row: floats or bf16 pairs */
    const size_t pe = fpanel_elems(dst, bf16);
    uint32_t *units = align64(rg_thread_scratch(p)); /* 16 rows of n units */
    float *buf = align64(units + RG_PANEL_LANES * n);
    const uint32_t *rows[RG_PANEL_LANES];
    int64_t q0, q1;
    rg_split(fpanel_count(dst), p->ith, p->nth, &q0, &q1);
    for (int64_t q = q0; q < q1; q++) {
        for (int c = 0; c < RG_PANEL_LANES; c++) {
            const int64_t t = q * RG_PANEL_LANES + c;
            uint32_t *u = units + c * n;
            if (t >= T) {
                memset(u, 0, (size_t)n * sizeof(uint32_t));
                rows[c] = u;
                continue;
            }
            const float *row = rg_load_row_f32(b, t, 0, 0, buf);
            if (bf16) {
                rg_kernels.f32_to_bf16_padded(row, (uint16_t *)u, K, kp);
                rows[c] = u;
            } else {
                rows[c] = (const uint32_t *)row;
                if (row == buf) {
                    memcpy(u, row, (size_t)K * sizeof(float));
                    rows[c] = u;
                }
            }
        }
        uint32_t *panel = (uint32_t *)p->wdata + (size_t)q * pe / (bf16 ? 2 : 1);
        for (int64_t i0 = 0; i0 < n; i0 += RG_FPANEL_TRANSPOSE_K) {
            const int64_t i1 = n - i0 < RG_FPANEL_TRANSPOSE_K ? n : i0 + RG_FPANEL_TRANSPOSE_K;
            for (int c = 0; c < RG_PANEL_LANES; c++)
                for (int64_t i = i0; i < i1; i++) panel[i * RG_PANEL_LANES + c] = rows[c][i];
        }
    }
}

static void mul_mat_fpanel(const rg_compute_params *p, rg_tensor *dst, bool bf16) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], kp = bf16_padded(K), n_panels = fpanel_count(dst);
    const int64_t n_groups = (n_panels + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const int64_t k_end = bf16 ? kp : K; /* bf16 rows run to the zero padding */
    const rg_type_traits *ta = rg_traits(a->type);
    const size_t pe = fpanel_elems(dst, bf16), group_out = RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES;
    const int64_t tile_out = n_groups * (int64_t)group_out, mc = fpanel_block_tiles(dst);
    float *tile = align64(rg_thread_scratch(p));
    uint16_t *tile16 = align64(tile + RG_PANEL_ROWS * RG_FPANEL_KC);
    float *outs = align64(tile16 + RG_PANEL_ROWS * RG_FPANEL_KC);
    const bool in_place = a->type == RG_TYPE_F32 && a->nb[1] % sizeof(float) == 0;
    const size_t esize = a->type == RG_TYPE_F32 ? sizeof(float) : sizeof(uint16_t); /* F32 or F16 */
    int64_t i0, i1;
    rg_split((M + RG_PANEL_ROWS - 1) / RG_PANEL_ROWS, p->ith, p->nth, &i0, &i1);
    /* Blocks of mc tiles: each k-block of every panel is read once per block of tiles (from L2) rather
     * than once per tile (from L3, the panels of a 256-token chunk being ~1 MB) */
    for (int64_t ib = i0; ib < i1; ib += mc) {
        const int64_t ie = i1 - ib < mc ? i1 : ib + mc;
        for (int64_t k0 = 0; k0 < k_end; k0 += RG_FPANEL_KC) {
            const int64_t kc = k_end - k0 < RG_FPANEL_KC ? k_end - k0 : RG_FPANEL_KC;
            const int64_t valid = K - k0 < kc ? K - k0 : kc; /* < kc only in a bf16 row's padding */
            for (int64_t i = ib; i < ie; i++) {
                const int64_t m = i * RG_PANEL_ROWS;
                const int rows = M - m < RG_PANEL_ROWS ? (int)(M - m) : RG_PANEL_ROWS;
                const int64_t next = K - k0 - kc <= 0 ? 0 : K - k0 - kc < kc ? K - k0 - kc : kc;
                prefetch_next_step(a, RG_PANEL_ROWS, ib, i, ie, (size_t)k0 * esize, (size_t)valid * esize,
                                   (size_t)(k0 + kc) * esize, (size_t)next * esize);
                /* this k-block of the tile's rows: F32 rows read in place (a partial tile is copied,
                 * zero-padded), F16 rows made f32; on the bf16 route then made bf16 */
                const float *w = tile;
                int64_t ldw = RG_FPANEL_KC;
                if (bf16 && a->type == RG_TYPE_F16) { /* F16 straight to bf16 */
                    for (int r = 0; r < RG_PANEL_ROWS; r++) {
                        uint16_t *d16 = tile16 + r * RG_FPANEL_KC;
                        if (r < rows) {
                            const uint8_t *row = (const uint8_t *)a->data + (m + r) * a->nb[1];
                            rg_kernels.f16_to_bf16_padded((const uint16_t *)(row + (size_t)k0 * esize), d16,
                                                          valid, kc);
                        } else {
                            memset(d16, 0, (size_t)kc * sizeof(uint16_t));
                        }
                    }
                } else if (in_place && rows == RG_PANEL_ROWS) {
                    w = (const float *)((const uint8_t *)a->data + m * a->nb[1]) + k0;
                    ldw = (int64_t)(a->nb[1] / sizeof(float));
                } else {
                    for (int r = 0; r < RG_PANEL_ROWS; r++) {
                        if (r < rows) {
                            const uint8_t *row = (const uint8_t *)a->data + (m + r) * a->nb[1];
                            ta->to_f32(row + (size_t)k0 * esize, tile + r * RG_FPANEL_KC, valid);
                        } else {
                            memset(tile + r * RG_FPANEL_KC, 0, (size_t)valid * sizeof(float));
                        }
                    }
                }
                if (bf16 && a->type != RG_TYPE_F16)
                    for (int r = 0; r < RG_PANEL_ROWS; r++)
                        rg_kernels.f32_to_bf16_padded(w + r * ldw, tile16 + r * RG_FPANEL_KC, valid, kc);
                for (int64_t g = 0; g < n_groups; g++) {
                    const int64_t q = g * RG_PANEL_MAX_NP;
                    const int np = n_panels - q >= RG_PANEL_MAX_NP ? RG_PANEL_MAX_NP : (int)(n_panels - q);
                    float *out = outs + (i - ib) * tile_out + g * group_out;
                    /* a panel's k-block starts 16 k0 elements (f32) or halves (bf16 pairs) in */
                    if (bf16) {
                        rg_kernels.gemm_bf16_panel(tile16, RG_FPANEL_KC, (const uint16_t *)p->wdata + q * pe + k0 * 16,
                                                   pe, np, kc / 2, k0 > 0, out);
                    } else {
                        rg_kernels.gemm_f32_panel(w, ldw, (const float *)p->wdata + q * pe + k0 * 16, pe, np, kc,
                                                  k0 > 0, out);
                    }
                }
            }
        }
        for (int64_t i = ib; i < ie; i++) {
            const int64_t m = i * RG_PANEL_ROWS;
            const int rows = M - m < RG_PANEL_ROWS ? (int)(M - m) : RG_PANEL_ROWS;
            const float *tile_outs = outs + (i - ib) * tile_out;
            for (int64_t t = 0; t < T; t++) {
                const int64_t g = t / (RG_PANEL_MAX_NP * RG_PANEL_LANES), j = t / RG_PANEL_LANES % RG_PANEL_MAX_NP;
                const float *o = tile_outs + g * group_out + j * RG_PANEL_LANES + t % RG_PANEL_LANES;
                float *d = (float *)((uint8_t *)dst->data + (size_t)t * dst->nb[1]) + m;
                for (int r = 0; r < rows; r++) d[r] = o[r * RG_PANEL_MAX_NP * RG_PANEL_LANES];
            }
        }
    }
}
