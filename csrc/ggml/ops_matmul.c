/* mul_mat: out[t][m] = sum_k a[m][k] * b[t][k] for weights a of any type and F32 activations b.
 *
 * Threads split the weight rows m, so every output element is one dot product computed by one thread
 * in a fixed order: the result does not depend on the thread count. With T = 1 (per-token mode) the
 * kernel streams each weight row once against the activation vector, which is memory-bound. With
 * many columns of one plane (33 float, 10 quantized) the column-panel kernels run (float: AVX2 or AVX-512)
 * (activations transposed so that 16 columns fill a vector: ops_matmul_panel.c); otherwise a weight row
 * is made f32 once and reused against the activation rows a few at a time, in the mat-vec's summation
 * order on AVX-512 (and always for the quantized types), so that a batched decode step equals one eval
 * per sequence bit for bit.
 *
 * Which of these routes a node takes is decided in one place, route_now() at the end of this file,
 * whose comment lists the routes; ROUTES beside it holds each route's shape test, work size, phase 0
 * (prepare) and phase 1 (compute). This file holds the mat-vec and small-tile routes, f32, bf16 and
 * block-quantized. */
#include "ops_matmul.h"

/* The bf16 routes (rg_mul_mat_bf16) are asked for per node when it is built: F32/F16 weights, 2-D, T > 1.
 * Whether the CPU can take them is decided at each compute (the kernel level may change at run time),
 * so the node reserves room for every route it may take (route_possible). */
static bool bf16_node(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return dst->iparams[0] == RG_MUL_MAT_BF16 && (a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16) && b->ne[1] > 1 &&
           a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

/* Activations whose elements are strided are packed into contiguous rows first (float route). */
static bool b_strided(const rg_tensor *b) { return b->nb[0] != sizeof(float) || b->nb[1] % sizeof(float) != 0; }

static size_t packed_b_bytes(const rg_tensor *b) {
    return (size_t)(b->ne[0] * b->ne[1] * b->ne[2] * b->ne[3]) * sizeof(float);
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
 * A claimed run of rows is read as four streams at once, each a contiguous quarter of the run: the
 * rows4 kernel takes rows i, i+q, i+2q, i+3q. One stream (rows one after another) leaves the hardware
 * prefetcher a single sequence that restarts at every 4 KiB page, and four adjacent rows (the kernel's
 * plain use) make four short streams when rows are short; four long streams keep more reads in flight.
 * Measured per token on a 2-core Xeon (AVX-512), A/B in one process: RWKV-7 1.5B F16 0.85x the time
 * of one row after another (and 0.96x of four adjacent rows), 0.1B F16 0.85x. On Zen 4, four adjacent
 * rows had beaten one stream only once a row outgrew L1 beside the activations (2048x8192 F16: 40% ->
 * ~95% of the read bandwidth); the quarter streams load the activations once per four rows too. */
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
    const int64_t elem = a->type == RG_TYPE_F32 ? (int64_t)sizeof(float) : (int64_t)sizeof(uint16_t);
    const int64_t lda = (int64_t)a->nb[1] / elem;
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + 3) / 4, &cursor, &g0, &g1)) {
        const int64_t m0 = g0 * 4, m1 = g1 * 4 < M ? g1 * 4 : M;
        const int64_t q = (m1 - m0) / 4; /* rows per stream; the last few rows of M (m1 - m0 - 4q) after */
        for (int64_t i = 0; i < q; i++) {
            const void *row = a_plane + (m0 + i) * a->nb[1];
            float o[4];
            if (a->type == RG_TYPE_F32) rg_kernels.dot_f32_rows4(row, q * lda, x, K, 4, o);
            else rg_kernels.dot_f16_rows4(row, q * lda, x, K, 4, o);
            for (int j = 0; j < 4; j++) out[m0 + i + j * q] = o[j];
        }
        const int64_t m = m0 + 4 * q;
        if (m < m1) {
            const void *rows = a_plane + m * a->nb[1];
            if (a->type == RG_TYPE_F32) rg_kernels.dot_f32_rows4(rows, lda, x, K, (int)(m1 - m), out + m);
            else rg_kernels.dot_f16_rows4(rows, lda, x, K, (int)(m1 - m), out + m);
        }
    }
}

/* A few columns: the mat-vec's four row streams per claimed range, each row quad run against the columns
 * RG_ROWS4_MAX_COLS at a time (the quad's rows come from memory for the first group, from L1/L2 after),
 * each result the mat-vec's bit for bit. It takes every F32/F16 mat-mat below the panel routes where the
 * level has the kernel. The column tiles below walk rows in short blocks, which keeps the hardware
 * prefetchers from streaming: on a 2-core Zen 4 guest a 2-column F16 product ran at half the mat-vec's
 * bandwidth, and an RWKV-7 1.5B F16 step of B sequences, A/B in one process, took (tiles -> streams)
 * B = 2 117 -> 84 ms, 4 133 -> 111, 8 192 -> 173, 16 369 -> 303, 32 600 -> 571 (B = 1 69 ms); with the
 * AVX2 kernels B = 2 193 -> 104, 4 240 -> 136, 8 293 -> 216, 16 452 -> 382, 32 872 -> 723 (B = 1 85).
 * (Not yet measured on Sapphire Rapids, where the tiles had been tuned.)
 * Only the first call on a quad reads it from memory; the others reuse it from cache and miss nothing, so
 * the hardware prefetchers stop and the next quad's first call waits on memory again. So from 3 calls on
 * (T >= 5) and for rows of RG_STREAM_PREFETCH_MIN_LINES cache lines and more, each call also asks for its
 * share of the stream's next quad (kernels.h; the AVX-512 kernels). Zen 4, 2 threads, A/B in one session:
 * F16 65536x2048 at T = 6 12.4 -> 11.8 ms, T = 8 15.0 -> 13.6, T = 12 20.6 -> 19.2; F32 20.8 -> 17.9,
 * 23.0 -> 21.3, 31.6 -> 29.6; RWKV-7 1.5B F16 step of 8 sequences 184 -> 167 ms (Q8_0 file, F16 head:
 * 88 -> 86). At T = 3-4 (two calls) the prefetches measured no better; for short rows (a LoRA's K = 64)
 * the bookkeeping costs more than the lines save. */
#define RG_STREAM_PREFETCH_MIN_LINES 16

static void mat_mat_streams(const rg_compute_params *p, const rg_tensor *dst, const uint8_t *a_plane, const float *b,
                            int64_t ldb, int64_t T, float *c, int64_t ldc) {
    const rg_tensor *a = dst->src[0];
    const int64_t K = a->ne[0], M = a->ne[1];
    const bool f32 = a->type == RG_TYPE_F32;
    const int64_t lda = (int64_t)a->nb[1] / (f32 ? (int64_t)sizeof(float) : (int64_t)sizeof(uint16_t));
    /* The calls on a quad prefetch the stream's next quad, each call `per` lines of each row (the first
     * `rem` calls one more), where a row is long enough to be worth it and the quad is reused. */
    const int64_t calls = (T + RG_ROWS4_MAX_COLS - 1) / RG_ROWS4_MAX_COLS, row_lines = (K * (f32 ? 4 : 2) + 63) / 64;
    const bool prefetch = calls > 2 && row_lines >= RG_STREAM_PREFETCH_MIN_LINES;
    const int64_t per = row_lines / calls, rem = row_lines % calls;
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + 3) / 4, &cursor, &g0, &g1)) {
        const int64_t m0 = g0 * 4, m1 = g1 * 4 < M ? g1 * 4 : M;
        const int64_t q = (m1 - m0) / 4; /* rows per stream; the last few rows of the range after */
        for (int64_t i = 0; i <= q; i++) {
            const int64_t row = i < q ? m0 + i : m0 + 4 * q, stride = i < q ? q * lda : lda;
            const int nr = i < q ? 4 : (int)(m1 - m0 - 4 * q);
            if (nr == 0) break;
            const void *rows = a_plane + row * a->nb[1];
            const uint8_t *pf = prefetch && i + 1 < q ? a_plane + (row + 1) * a->nb[1] : NULL;
            for (int64_t t0 = 0, call = 0; t0 < T; t0 += RG_ROWS4_MAX_COLS, call++) {
                const int nt = T - t0 < RG_ROWS4_MAX_COLS ? (int)(T - t0) : RG_ROWS4_MAX_COLS;
                const int64_t lines = per + (call < rem);
                float o[4 * RG_ROWS4_MAX_COLS];
                if (f32) rg_kernels.dot_f32_rows4_cols(rows, stride, b + t0 * ldb, ldb, nt, K, nr, o, pf, lines);
                else rg_kernels.dot_f16_rows4_cols(rows, stride, b + t0 * ldb, ldb, nt, K, nr, o, pf, lines);
                if (pf) pf += 64 * lines;
                for (int t = 0; t < nt; t++)
                    for (int j = 0; j < nr; j++) c[(t0 + t) * ldc + row + j * (i < q ? q : 1)] = o[t * 4 + j];
            }
        }
    }
}

/* Mat-mat (F32/F16 at the AVX2 and AVX-512 levels: mat_mat_streams): tiles of RG_GEMM_MR weight rows
 * (F16 rows as stored, other types made f32 once per tile)
 * against all T activation rows in one kernel call. Tiles are aligned groups of rows claimed by the threads whole
 * (next_groups, as the mat-vec: a thread held up by another process leaves its share to the others), so
 * the output does not depend on the thread count. */
static void mat_mat_float(const rg_compute_params *p, const rg_tensor *dst, const uint8_t *a_plane, const float *b,
                          int64_t ldb, int64_t T, uint8_t *d_plane, size_t ldd) {
    const rg_tensor *a = dst->src[0];
    const int64_t K = a->ne[0], M = a->ne[1];
    const rg_type_traits *ta = rg_traits(a->type);
    float *tile_buf = rg_thread_scratch(p);
    float *c = (float *)d_plane; /* the tile writes its columns into the output rows directly */
    const int64_t ldc = (int64_t)(ldd / sizeof(float));
    if ((a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16) && rg_kernels.dot_f16_rows4_cols) {
        mat_mat_streams(p, dst, a_plane, b, ldb, T, c, ldc);
        return;
    }
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + RG_GEMM_MR - 1) / RG_GEMM_MR, &cursor, &g0, &g1)) {
        /* F32 and F16 rows as stored: the kernel takes the whole claimed range (it reuses the columns
         * across its 4-row tiles) */
        const int64_t m0 = g0 * RG_GEMM_MR, m1 = g1 * RG_GEMM_MR < M ? g1 * RG_GEMM_MR : M;
        if (a->type == RG_TYPE_F32) {
            rg_kernels.gemm_f32_tile((const float *)(a_plane + m0 * a->nb[1]), (int64_t)(a->nb[1] / sizeof(float)),
                                     (int)(m1 - m0), b, ldb, (int)T, K, c + m0, ldc);
            continue;
        }
        if (a->type == RG_TYPE_F16 && rg_kernels.gemm_f16_tile) {
            rg_kernels.gemm_f16_tile((const uint16_t *)(a_plane + m0 * a->nb[1]), (int64_t)(a->nb[1] / sizeof(uint16_t)),
                                     (int)(m1 - m0), b, ldb, (int)T, K, c + m0, ldc);
            continue;
        }
        for (int64_t m = m0; m < m1; m += RG_GEMM_MR) { /* other types: made f32 a tile at a time */
            const int mr = m1 - m < RG_GEMM_MR ? (int)(m1 - m) : RG_GEMM_MR;
            for (int j = 0; j < mr; j++) ta->to_f32(a_plane + (m + j) * a->nb[1], tile_buf + j * K, K);
            rg_kernels.gemm_f32_tile(tile_buf, K, mr, b, ldb, (int)T, K, c + m, ldc);
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
            if (b_strided(b)) { /* packed in phase 0 */
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
                mat_mat_float(p, dst, a_plane, b_plane, ldb, T, d_plane, dst->nb[1]);
            }
        }
    }
}

/* bf16 route, phase 0: every activation row to a zero-padded bf16 row in the shared region. */
static void bf16_b(const rg_compute_params *p, const rg_tensor *b) {
    const int64_t K = b->ne[0], kp = rg_mm_bf16_padded(K);
    uint16_t *out = p->wdata;
    float *buf = rg_thread_scratch(p);
    int64_t r0, r1;
    rg_split(b->ne[1], p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) rg_kernels.f32_to_bf16_padded(rg_load_row_f32(b, r, 0, 0, buf), out + r * kp, K, kp);
}

/* bf16 route, phase 1: as mat_mat_float, with the weight tile converted to bf16 once per tile. */
static void mat_mat_bf16(const rg_compute_params *p, const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], kp = rg_mm_bf16_padded(K);
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

static size_t quant_b_bytes(const rg_tensor *dst) { return (size_t)rg_nrows(dst->src[1]) * rg_mm_quant_b_row_bytes(dst); }

static void quantize_b(const rg_compute_params *p, const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *tq = rg_traits(rg_traits(a->type)->vec_dot_type);
    const int64_t K = b->ne[0], rows = rg_nrows(b);
    const size_t rb = rg_mm_quant_b_row_bytes(dst);
    uint8_t *out = p->wdata;
    float *buf = rg_thread_scratch(p);
    int64_t r0, r1;
    rg_split(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i1 = r % b->ne[1], i2 = (r / b->ne[1]) % b->ne[2], i3 = r / (b->ne[1] * b->ne[2]);
        tq->from_f32(rg_load_row_f32(b, i1, i2, i3, buf), out + (size_t)r * rb, K);
    }
}

/* One weight row against activation rows [t0, t1), RG_QDOT_MAX_NX at a time: the row is read and
 * unpacked once per group of columns, and each output equals the mat-vec's vec_dot bit for bit. */
static void quant_row_cols(const rg_type_traits *ta, const rg_tensor *dst, int64_t K, const void *arow,
                           const uint8_t *x_plane, size_t rb, int64_t t0, int64_t t1, uint8_t *d_plane, int64_t m) {
    for (int64_t t = t0; t < t1; t += RG_QDOT_MAX_NX) {
        const int nx = t1 - t < RG_QDOT_MAX_NX ? (int)(t1 - t) : RG_QDOT_MAX_NX;
        float out[RG_QDOT_MAX_NX];
        ta->vec_dot_xn(K, arow, x_plane + (size_t)t * rb, rb, nx, out);
        for (int j = 0; j < nx; j++) *(float *)(d_plane + (t + j) * dst->nb[1] + m * sizeof(float)) = out[j];
    }
}

static void mul_mat_quant(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *ta = rg_traits(a->type);
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1];
    const size_t rb = rg_mm_quant_b_row_bytes(dst);
    /* equal tiles of a multiple of RG_QDOT_MAX_NX rows, as few as fit RG_QUANT_TILE_BYTES each */
    const int64_t n_tiles = ((int64_t)rb * T + RG_QUANT_TILE_BYTES - 1) / RG_QUANT_TILE_BYTES;
    const int64_t tile = ((T + n_tiles - 1) / n_tiles + RG_QDOT_MAX_NX - 1) / RG_QDOT_MAX_NX * RG_QDOT_MAX_NX;
    int64_t m0, m1;
    rg_split(M, p->ith, p->nth, &m0, &m1);
    for (int64_t i3 = 0; i3 < dst->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < dst->ne[2]; i2++) {
            const uint8_t *a_plane = (const uint8_t *)a->data + (i2 % a->ne[2]) * a->nb[2] + (i3 % a->ne[3]) * a->nb[3];
            const uint8_t *x_plane = (const uint8_t *)p->wdata + (size_t)((i3 * b->ne[2] + i2) * T) * rb;
            uint8_t *d_plane = (uint8_t *)dst->data + i2 * dst->nb[2] + i3 * dst->nb[3];
            if (n_tiles == 1) { /* mat-vec and small batches: rows claimed in groups of 4, all columns each */
                int64_t g0, g1;
                int cursor = 0;
                while (next_groups(p, dst, (M + 3) / 4, &cursor, &g0, &g1))
                    for (int64_t m = g0 * 4; m < M && m < g1 * 4; m++) {
                        const void *arow = a_plane + m * a->nb[1];
                        if (T == 1) ((float *)d_plane)[m] = ta->vec_dot(K, arow, x_plane);
                        else quant_row_cols(ta, dst, K, arow, x_plane, rb, 0, T, d_plane, m);
                    }
                continue;
            }
            for (int64_t t0 = 0; t0 < T; t0 += tile) {
                const int64_t t1 = T - t0 < tile ? T : t0 + tile;
                for (int64_t m = m0; m < m1; m++)
                    quant_row_cols(ta, dst, K, a_plane + m * a->nb[1], x_plane, rb, t0, t1, d_plane, m);
            }
        }
    }
}

/* ---- Q8_0 on AMX (simd/k_quant_amx.c): RG_QAMX_MIN_T to RG_QAMX_MAX_T columns, each equal to the mat-vec's
 * bit for bit. A tdpbssd costs the same for 1 column as for 16, so below RG_QAMX_MIN_T the VNNI kernels
 * are as fast or faster (v7 1.5B Q8_0 steps on a 2-core Sapphire Rapids guest, A/B in one process, the
 * one-row VNNI kernels against AMX: B = 2 74 / 94 ms, B = 4 88 / 101, B = 6 107 / 107, B = 8 135 / 117,
 * B = 16 (panels) 307 / 196).
 * Phase 0 quantizes the activation rows as the quantized route does and packs them into column tiles of
 * nc columns (8 up to 8 columns, else 16) in the shared region; phase 1 claims groups of 16 weight rows. */

static bool qamx_shape(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return a->type == RG_TYPE_Q8_0 && a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1 &&
           b->ne[1] >= RG_QAMX_MIN_T && b->ne[1] <= RG_QAMX_MAX_T;
}

static int qamx_cols(int64_t T) { return T <= 8 ? 8 : 16; }

/* Bytes of one packed column tile: nb records of 32 nc code bytes and 16 floats. */
static size_t qamx_tile_bytes(int64_t K, int nc) { return (size_t)(K / RG_QK) * ((size_t)(32 * nc) + 64); }

static rg_work qamx_work(const rg_tensor *dst) {
    const int64_t K = dst->src[0]->ne[0], T = dst->src[1]->ne[1];
    const int nc = qamx_cols(T);
    const size_t act = rg_mm_quant_b_row_bytes(dst);
    return (rg_work){(size_t)((T + nc - 1) / nc) * qamx_tile_bytes(K, nc), (size_t)K * sizeof(float) + act + 64};
}

/* Phase 0 of the integer routes that pack columns: columns [0, cols) split over the threads, each column
 * c < T quantized to the weights' vec_dot type and handed to put (the columns past T as NULL, zeros). */
typedef void (*column_put_fn)(const rg_tensor *dst, const uint8_t *act, int64_t c, void *wdata);

static void quantize_columns(const rg_compute_params *p, const rg_tensor *dst, int64_t cols, column_put_fn put) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *tq = rg_traits(rg_traits(a->type)->vec_dot_type);
    const int64_t K = b->ne[0], T = b->ne[1];
    float *buf = rg_thread_scratch(p);
    uint8_t *act = (uint8_t *)(buf + K);
    int64_t c0, c1;
    rg_split(cols, p->ith, p->nth, &c0, &c1);
    for (int64_t c = c0; c < c1; c++) {
        if (c < T) tq->from_f32(rg_load_row_f32(b, c, 0, 0, buf), act, K);
        put(dst, c < T ? act : NULL, c, p->wdata);
    }
}

static void qamx_put(const rg_tensor *dst, const uint8_t *act, int64_t c, void *wdata) {
    const int64_t K = dst->src[0]->ne[0];
    const int nc = qamx_cols(dst->src[1]->ne[1]);
    rg_kernels.q8_0_amx_pack(act, K / RG_QK, nc, wdata, qamx_tile_bytes(K, nc), (int)c);
}

static void qamx_prepare(const rg_compute_params *p, rg_tensor *dst) {
    const int64_t T = dst->src[1]->ne[1];
    const int nc = qamx_cols(T);
    quantize_columns(p, dst, (T + nc - 1) / nc * nc, qamx_put); /* the last tile's absent columns as zeros */
}

static void qamx_compute(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1];
    const int nc = qamx_cols(T);
    const size_t ldo = dst->nb[1] / sizeof(float);
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + 15) / 16, &cursor, &g0, &g1)) {
        const int64_t m0 = g0 * 16, m1 = g1 * 16 < M ? g1 * 16 : M;
        rg_kernels.q8_0_amx(K / RG_QK, (const uint8_t *)a->data + m0 * a->nb[1], a->nb[1], (int)(m1 - m0), p->wdata,
                            qamx_tile_bytes(K, nc), (int)((T + nc - 1) / nc), nc, (int)T, (float *)dst->data + m0, ldo);
    }
}

/* ---- the 32-element block types against a few columns on AVX512_VNNI (simd/k_quant_narrow.c): Q8_0
 * from RG_QNARROW_MIN_T to RG_QNARROW_MAX_T columns (the others below), each equal to the mat-vec's bit
 * for bit, in narrow panels of RG_QN_LANES columns (quant/quant.h). Phase 0 quantizes the activation
 * rows as the quantized route does and puts each into its panel lane; phase 1 claims groups of
 * RG_QN_ROWS weight rows and runs them against the panels. RWKV-7 1.5B Q8_0 steps on a 2-core Zen 4
 * guest, A/B in one session (one-row kernels up to 9 columns, column panels from 10 -> narrow panels):
 * B = 8 116-123 -> 88-99 ms, B = 12 188 -> 159, B = 16 205 -> 169, B = 24 275 -> 237, B = 32 312 -> 308.
 * Past 32 columns the column panels (16 lanes, each weight broadcast serving two panels) take prompts. A
 * panel costs the same for 1 column as for 8, so below RG_QNARROW_MIN_T the one-row kernels stay (Q8_0:
 * B = 2 55-60 ms there against 67-70; B = 3 even).
 * The 4- and 5-bit types spend more per block here (the codes unpacked, then broadcast by vpermd): on
 * RWKV-7 1.5B, their one-row kernels and column panels against narrow panels, Q4_0 B = 4 63 / 85 ms,
 * B = 8 108-124 / 98-112, B = 16 203-222 / 186-203, B = 32 308 / 360-385; Q5_1 B = 12 203-206 / 214-220,
 * B = 16 206-254 / 218-230, B = 24 272-274 / 315-331. So they take the narrow panels only from
 * RG_QNARROW_4BIT_MIN_T to RG_QNARROW_4BIT_MAX_T columns, where the speed is even and the panels keep
 * their batches exact (fewer columns take the one-row kernels, exact too). (Not measured on Intel, whose
 * 512-bit vpdpbusd runs at twice the 256-bit rate: the column panels may win there.) */
#define RG_QNARROW_MIN_T 4
#define RG_QNARROW_MAX_T 32
#define RG_QNARROW_4BIT_MIN_T 10
#define RG_QNARROW_4BIT_MAX_T 16

static bool qnarrow_shape(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t T = b->ne[1];
    const bool q8 = a->type == RG_TYPE_Q8_0;
    return (RG_QGEMM_BLOCK_TYPES & RG_QGEMM_TYPE(a->type)) && a->ne[2] * a->ne[3] == 1 &&
           b->ne[2] * b->ne[3] == 1 && T >= (q8 ? RG_QNARROW_MIN_T : RG_QNARROW_4BIT_MIN_T) &&
           T <= (q8 ? RG_QNARROW_MAX_T : RG_QNARROW_4BIT_MAX_T);
}

/* The offset of the weight type's unsigned codes (formats.md §5.4), which the panels' corr undoes. */
static int qnarrow_offset(int type) {
    return type == RG_TYPE_Q8_0 ? 128 : type == RG_TYPE_Q4_0 ? 8 : type == RG_TYPE_Q5_0 ? 16 : 0;
}

static size_t qnarrow_panel_bytes(int64_t K) { return (size_t)(K / RG_QK) * RG_QN_REC_BYTES; }
static int64_t qnarrow_panels(int64_t T) { return (T + RG_QN_LANES - 1) / RG_QN_LANES; }

static rg_work qnarrow_work(const rg_tensor *dst) {
    const int64_t K = dst->src[0]->ne[0];
    return (rg_work){(size_t)qnarrow_panels(dst->src[1]->ne[1]) * qnarrow_panel_bytes(K),
                     (size_t)K * sizeof(float) + rg_mm_quant_b_row_bytes(dst) + 64};
}

static void qnarrow_put(const rg_tensor *dst, const uint8_t *act, int64_t c, void *wdata) {
    const rg_tensor *a = dst->src[0];
    uint8_t *panel = (uint8_t *)wdata + (size_t)(c / RG_QN_LANES) * qnarrow_panel_bytes(a->ne[0]);
    rg_qnarrow_put(act, a->ne[0] / RG_QK, panel, (int)(c % RG_QN_LANES), qnarrow_offset(a->type));
}

static void qnarrow_prepare(const rg_compute_params *p, rg_tensor *dst) {
    quantize_columns(p, dst, qnarrow_panels(dst->src[1]->ne[1]) * RG_QN_LANES, qnarrow_put);
}

static void qnarrow_compute(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], n_panels = qnarrow_panels(T);
    const size_t ldo = dst->nb[1] / sizeof(float), ldw = a->nb[1];
    int64_t g0, g1;
    int cursor = 0;
    while (next_groups(p, dst, (M + RG_QN_ROWS - 1) / RG_QN_ROWS, &cursor, &g0, &g1)) {
        const int64_t m1 = g1 * RG_QN_ROWS < M ? g1 * RG_QN_ROWS : M;
        for (int64_t m = g0 * RG_QN_ROWS; m < m1; m += RG_QN_ROWS) {
            const int rows = m1 - m < RG_QN_ROWS ? (int)(m1 - m) : RG_QN_ROWS;
            const int64_t after = m1 - m - rows;
            const size_t next = (size_t)(after < RG_QN_ROWS ? after : RG_QN_ROWS) * ldw;
            rg_kernels.quant_narrow(a->type, K / RG_QK, (const uint8_t *)a->data + m * ldw, ldw, rows, p->wdata,
                                    qnarrow_panel_bytes(K), (int)n_panels, (int)T, (float *)dst->data + m, ldo, next);
        }
    }
}

/* ---- the routes: each one's shape test, kernels, work size, phase 0 and phase 1 ---- */

/* Per-thread scratch of the f32 routes: a tile of weight rows made f32 (mat-mat), which also holds the one
 * activation row that phase 0 loads as floats. */
static size_t f32_tile_bytes(const rg_tensor *dst) { return RG_GEMM_MR * (size_t)dst->src[0]->ne[0] * sizeof(float) + 64; }

static bool always(const rg_tensor *dst) {
    (void)dst;
    return true;
}
static bool is_quantized(const rg_tensor *dst) { return rg_mm_quantized(dst->src[0]); }
static bool is_float(const rg_tensor *dst) { return !rg_mm_quantized(dst->src[0]); }
static bool fpanel_f32_shape(const rg_tensor *dst) { return rg_mm_fpanel_shape(dst, false) && !bf16_node(dst); }
static bool fpanel_bf16_shape(const rg_tensor *dst) { return rg_mm_fpanel_shape(dst, true) && bf16_node(dst); }
static bool float_needs_prepare(const rg_tensor *dst) { return b_strided(dst->src[1]); }

/* Whether the level in effect has each route's kernels (the node matters only to the quantized panels,
 * whose kernels take some weight types and not others: rg_mm_qpanel_available). */
#define RG_HAVE_KERNEL(name, cond)                                                                                      \
    static bool name(const rg_tensor *dst) {                                                                           \
        (void)dst;                                                                                                     \
        return cond;                                                                                                   \
    }
RG_HAVE_KERNEL(have_qamx, rg_kernels.q8_0_amx != NULL)
RG_HAVE_KERNEL(have_qnarrow, rg_kernels.quant_narrow != NULL)
RG_HAVE_KERNEL(have_any, true)
RG_HAVE_KERNEL(have_f32_panel, rg_kernels.gemm_f32_panel != NULL)
RG_HAVE_KERNEL(have_bf16_panel, rg_kernels.gemm_bf16_panel != NULL)
RG_HAVE_KERNEL(have_bf16_tile, rg_kernels.gemm_bf16_tile != NULL)
#undef RG_HAVE_KERNEL

static rg_work quant_work(const rg_tensor *dst) { return (rg_work){quant_b_bytes(dst), f32_tile_bytes(dst)}; }
static rg_work bf16_work(const rg_tensor *dst) {
    const size_t kp = (size_t)rg_mm_bf16_padded(dst->src[0]->ne[0]);
    /* the bf16 tile comes after the f32 tile (mat_mat_bf16) */
    return (rg_work){(size_t)dst->src[1]->ne[1] * kp * sizeof(uint16_t),
                     f32_tile_bytes(dst) + RG_GEMM_MR * kp * sizeof(uint16_t) + 64};
}
static rg_work float_work(const rg_tensor *dst) {
    return (rg_work){b_strided(dst->src[1]) ? packed_b_bytes(dst->src[1]) : 0, f32_tile_bytes(dst)};
}

static void quant_prepare(const rg_compute_params *p, rg_tensor *dst) { quantize_b(p, dst); }
static void fpanel_f32_prepare(const rg_compute_params *p, rg_tensor *dst) { rg_mm_fpanel_prepare(p, dst, false); }
static void fpanel_f32_compute(const rg_compute_params *p, rg_tensor *dst) { rg_mm_fpanel_compute(p, dst, false); }
static void fpanel_bf16_prepare(const rg_compute_params *p, rg_tensor *dst) { rg_mm_fpanel_prepare(p, dst, true); }
static void fpanel_bf16_compute(const rg_compute_params *p, rg_tensor *dst) { rg_mm_fpanel_compute(p, dst, true); }
static void bf16_prepare(const rg_compute_params *p, rg_tensor *dst) { bf16_b(p, dst->src[1]); }
static void bf16_compute(const rg_compute_params *p, rg_tensor *dst) { mat_mat_bf16(p, dst); }
static void float_prepare(const rg_compute_params *p, rg_tensor *dst) {
    if (b_strided(dst->src[1])) pack_b(p, dst->src[1]);
}

typedef enum {
    ROUTE_QAMX,
    ROUTE_QNARROW,
    ROUTE_QPANEL,
    ROUTE_QUANT,
    ROUTE_FPANEL_F32,
    ROUTE_FPANEL_BF16,
    ROUTE_BF16,
    ROUTE_FLOAT,
    N_ROUTES
} route_id;

typedef struct {
    bool (*shape)(const rg_tensor *dst);     /* the node's types and shape allow the route (fixed when built,
                                                whatever the level) */
    bool (*available)(const rg_tensor *dst); /* the kernels of the level in effect provide it (at each compute) */
    bool (*needs_prepare)(const rg_tensor *dst); /* phase 0 does something */
    rg_work (*work)(const rg_tensor *dst);
    rg_forward_fn prepare; /* phase 0: the activations in the route's layout, in the shared work region */
    rg_forward_fn compute; /* phase 1: the product */
} route;

static const route ROUTES[N_ROUTES] = {
    [ROUTE_QAMX] = {qamx_shape, have_qamx, always, qamx_work, qamx_prepare, qamx_compute},
    [ROUTE_QNARROW] = {qnarrow_shape, have_qnarrow, always, qnarrow_work, qnarrow_prepare, qnarrow_compute},
    [ROUTE_QPANEL] = {rg_mm_qpanel_shape, rg_mm_qpanel_available, always, rg_mm_qpanel_work, rg_mm_qpanel_prepare,
                      rg_mm_qpanel_compute},
    [ROUTE_QUANT] = {is_quantized, have_any, always, quant_work, quant_prepare, mul_mat_quant},
    [ROUTE_FPANEL_F32] = {fpanel_f32_shape, have_f32_panel, always, rg_mm_fpanel_work, fpanel_f32_prepare,
                          fpanel_f32_compute},
    [ROUTE_FPANEL_BF16] = {fpanel_bf16_shape, have_bf16_panel, always, rg_mm_fpanel_work, fpanel_bf16_prepare,
                           fpanel_bf16_compute},
    [ROUTE_BF16] = {bf16_node, have_bf16_tile, always, bf16_work, bf16_prepare, bf16_compute},
    [ROUTE_FLOAT] = {is_float, have_any, float_needs_prepare, float_work, float_prepare, mul_mat_float},
};

/* ---- THE route decision: the first route in this order whose shape test passes and whose kernels the
 * level in effect has (T = activation rows of one plane):
 *   ROUTE_QAMX         Q8_0 weights, 2-D, RG_QAMX_MIN_T <= T <= RG_QAMX_MAX_T, AMX-INT8: integer tiles, exact as the mat-vec
 *   ROUTE_QNARROW      32-element block types, 2-D, AVX512_VNNI, Q8_0 RG_QNARROW_MIN_T <= T <=
 *                      RG_QNARROW_MAX_T, the others RG_QNARROW_4BIT_MIN_T <= T <= RG_QNARROW_4BIT_MAX_T:
 *                      narrow integer panels, exact as the mat-vec
 *   ROUTE_QPANEL       quantized weights, 2-D, T >= 10, AVX512_VNNI (AVX-VNNI at the AVX2 level): integer column
 *                      panels (ops_matmul_panel.c)
 *   ROUTE_QUANT        quantized weights otherwise: activations quantized to Q8 rows, vec_dot mat-vec (T = 1)
 *                      or vec_dot_xn, one weight row against up to RG_QDOT_MAX_NX activation rows
 *   ROUTE_FPANEL_F32   F32/F16 weights, 2-D, T >= 33, AVX2 or AVX-512, no bf16 asked for: f32 column panels
 *   ROUTE_FPANEL_BF16  the same with bf16 asked for (rg_mul_mat_bf16) and AVX512_BF16: bf16 column panels
 *   ROUTE_BF16         bf16 asked for, 2-D, T > 1, AVX512_BF16 (T < 8): bf16 tiles
 *   ROUTE_FLOAT        everything else: f32 mat-vec (T = 1), else the mat-vec's row streams (F32/F16, AVX2 and
 *                      AVX-512) or f32 tiles, strided activations packed first
 * (A node that asked for bf16 on a CPU without AVX512_BF16 takes ROUTE_FLOAT, not the f32 panels.)
 * The shape tests are fixed when the node is built and the kernels may change between computes, so the
 * node's prepare flag and work size cover every route whose shape test passes (route_possible). */
static route_id route_now(const rg_tensor *dst) {
    for (int r = 0; r < N_ROUTES - 1; r++)
        if (ROUTES[r].shape(dst) && ROUTES[r].available(dst)) return (route_id)r;
    return ROUTE_FLOAT;
}

static bool route_possible(const rg_tensor *dst, int r) { return ROUTES[r].shape(dst); }

bool rg_mul_mat_needs_prepare(const rg_tensor *dst) {
    for (int r = 0; r < N_ROUTES; r++)
        if (route_possible(dst, r) && ROUTES[r].needs_prepare(dst)) return true;
    return false;
}

rg_work rg_work_mul_mat(const rg_tensor *dst, int nth) {
    (void)nth;
    rg_work w = {0, 0};
    for (int r = 0; r < N_ROUTES; r++) {
        if (!route_possible(dst, r)) continue;
        const rg_work rw = ROUTES[r].work(dst);
        if (rw.shared > w.shared) w.shared = rw.shared;
        if (rw.per_thread > w.per_thread) w.per_thread = rw.per_thread;
    }
    return w;
}

void rg_fwd_mul_mat(const rg_compute_params *p, rg_tensor *dst) {
    const route *r = &ROUTES[route_now(dst)];
    (p->phase == 0 ? r->prepare : r->compute)(p, dst);
}
