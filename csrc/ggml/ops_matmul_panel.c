/* mul_mat's panel routes: many activation columns (T >= 10 quantized, 33 float, 8 bf16) against weights of one plane, with the AVX-512
 * column-panel kernels (simd/k_gemm_panel.c, simd/k_quant_panel.c; at the AVX2 level simd/k_gemm_panel_avx2.c and, with
 * AVX-VNNI, simd/k_quant_panel_avx2.c, without it for Q4_0/Q5_0). ops_matmul.c decides when they run. */
#include "ops_matmul.h"

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

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

/* ---- block-quantized weights against many columns: the panel route (layouts in quant/quant.h) ----
 * Phase 0 quantizes each activation row as ROUTE_QUANT does (ops_matmul.c) and scatters it into a lane
 * of a column panel; phase 1 decodes RG_QT_ROWS weight rows at a time into a tile in the thread's scratch,
 * a k-block at a time (decoded once, then used against every panel) while prefetching the next tile's block. Each thread
 * takes a contiguous range of tiles; every output element is one chain over the blocks in order, so
 * the result does not depend on the thread count.
 * Below RG_QPANEL_MIN_T columns the 16-lane panels would be mostly padding and the one-row kernels win
 * (vec_dot_*_xn, up to 8 columns per pass over a weight row; measured on Sapphire Rapids, 2 threads,
 * 1.5B shapes 8192x2048 and 2048x8192 Q8_0: at T = 8 the rows took 1.0-1.1 ms and the panels 1.3-1.7 ms,
 * at T = 10 both ~1.4 ms, at T = 12 and 16 the panels won). Below it a batched decode step is also
 * bit-identical to one mat-vec per column. (Q8_0 takes exact narrow panels or AMX tiles up to 32 columns
 * before this route: ops_matmul.c.) */
#define RG_QPANEL_MIN_T 10
/* Blocks of k per step of a tile: a tile's rows are decoded and multiplied a k-block at a time (16 KB of
 * activation records per panel, the decoded block in L1) while the next tile's block is prefetched. */
#define RG_QPANEL_KB 16

bool rg_mm_qpanel_shape(const rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    /* the 32-element block types and the K-quants Q4_K, Q5_K, Q6_K (quant/quant.h's tiles): the types some
     * level's panel kernels take. Which ones the level in effect takes is asked at each compute
     * (rg_mm_qpanel_available): a shape test must not depend on the level, or a graph built at one level
     * would reserve too little work for the route it takes at another. */
    return rg_mm_quantized(a) && ((RG_QGEMM_BLOCK_TYPES | RG_QGEMM_KQUANT_TYPES) & RG_QGEMM_TYPE(a->type)) &&
           b->ne[1] >= RG_QPANEL_MIN_T && a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

bool rg_mm_qpanel_available(const rg_tensor *dst) {
    /* the others take the one-row kernels at this level (qgemm_types) */
    return rg_kernels.qgemm_tile != NULL && (rg_kernels.qgemm_types & RG_QGEMM_TYPE(dst->src[0]->type));
}

/* Q4_K / Q5_K subtract d_min m_s times the exact code sum: their panels' sx is fp32(d_x * sum q_x) rather
 * than Q8_1's f16-rounded s, which would cost the min term 11 bits (quant/quant.h). */
static void qpanel_exact_sums(const uint8_t *act, int64_t nb, uint8_t *panel, int lane) {
    for (int64_t b = 0; b < nb; b++) {
        const float s = rg_load_f32(act + rg_act_d_off(nb) + 4 * b) * (float)(int32_t)rg_load_u32(act + rg_act_sum_off(nb) + 4 * b);
        memcpy(panel + b * RG_QP_REC_BYTES + RG_QP_SX + 4 * lane, &s, sizeof s);
    }
}

static int64_t qpanel_count(const rg_tensor *dst) { return (dst->src[1]->ne[1] + RG_QP_LANES - 1) / RG_QP_LANES; }

static size_t qpanel_b_bytes(const rg_tensor *dst) {
    return (size_t)qpanel_count(dst) * (size_t)(dst->src[0]->ne[0] / RG_QK) * RG_QP_REC_BYTES;
}

/* Tiles per block of the quantized panel route (RG_PANEL_BLOCK_TILES). */
static int64_t qpanel_block_tiles(const rg_tensor *dst) {
    const int64_t tile_bytes = qpanel_count(dst) * RG_QT_ROWS * RG_QP_LANES * (int64_t)sizeof(float);
    const int64_t mc = RG_PANEL_BLOCK_OUT_BYTES / tile_bytes;
    return mc < 1 ? 1 : mc > RG_PANEL_BLOCK_TILES ? RG_PANEL_BLOCK_TILES : mc;
}

/* phase 0: a row of floats and its activation row; phase 1: a k-block of a tile and every panel's outputs */
static size_t qpanel_thread_bytes(const rg_tensor *dst) {
    const size_t k = (size_t)dst->src[0]->ne[0];
    const size_t rows = k * sizeof(float) + rg_mm_quant_b_row_bytes(dst) + 64;
    const size_t tile = RG_QPANEL_KB * RG_QT_MAX_REC_BYTES + 64 +
                        (size_t)qpanel_block_tiles(dst) * qpanel_count(dst) * RG_QT_ROWS * RG_QP_LANES * sizeof(float);
    return (rows > tile ? rows : tile) + 64;
}

rg_work rg_mm_qpanel_work(const rg_tensor *dst) { return (rg_work){qpanel_b_bytes(dst), qpanel_thread_bytes(dst)}; }

void rg_mm_qpanel_prepare(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const rg_type_traits *tq = rg_traits(rg_traits(a->type)->vec_dot_type);
    const int64_t K = b->ne[0], T = b->ne[1], nb = K / RG_QK;
    const size_t panel_bytes = (size_t)nb * RG_QP_REC_BYTES;
    float *buf = rg_mm_align64(rg_thread_scratch(p));
    uint8_t *act = rg_mm_align64(buf + K);
    uint8_t *panels = p->wdata;
    int64_t t0, t1;
    rg_split(qpanel_count(dst) * RG_QP_LANES, p->ith, p->nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *panel = panels + (size_t)(t / RG_QP_LANES) * panel_bytes;
        if (t < T) {
            tq->from_f32(rg_load_row_f32(b, t, 0, 0, buf), act, K);
            rg_qpanel_put(act, nb, panel, (int)(t % RG_QP_LANES));
            if (a->type == RG_TYPE_Q4_K || a->type == RG_TYPE_Q5_K) qpanel_exact_sums(act, nb, panel, (int)(t % RG_QP_LANES));
        } else {
            rg_qpanel_put(NULL, nb, panel, (int)(t % RG_QP_LANES));
        }
    }
}

void rg_mm_qpanel_compute(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1], nb = K / RG_QK, n_panels = qpanel_count(dst);
    const size_t panel_bytes = (size_t)nb * RG_QP_REC_BYTES;
    const int has_min = a->type == RG_TYPE_Q4_1 || a->type == RG_TYPE_Q5_1 || a->type == RG_TYPE_Q4_K || a->type == RG_TYPE_Q5_K;
    const bool halves = a->type == RG_TYPE_Q6_K;
    uint8_t *tile = rg_mm_align64(rg_thread_scratch(p));
    float *outs = rg_mm_align64(tile + RG_QPANEL_KB * RG_QT_MAX_REC_BYTES);
    const uint8_t *panels = p->wdata;
    const size_t tile_out = RG_QT_ROWS * RG_QP_LANES;
    const int64_t tile_outs = n_panels * (int64_t)tile_out, mc = qpanel_block_tiles(dst);
    int64_t i0, i1;
    rg_split((M + RG_QT_ROWS - 1) / RG_QT_ROWS, p->ith, p->nth, &i0, &i1);
    /* blocks of mc tiles, as in rg_mm_fpanel_compute: each k-block of the panels is read once per block */
    for (int64_t ib = i0; ib < i1; ib += mc) {
        const int64_t ie = i1 - ib < mc ? i1 : ib + mc;
        for (int64_t b0 = 0; b0 < nb; b0 += RG_QPANEL_KB) {
            const int64_t nbc = nb - b0 < RG_QPANEL_KB ? nb - b0 : RG_QPANEL_KB;
            for (int64_t i = ib; i < ie; i++) {
                const int64_t m = i * RG_QT_ROWS;
                const int rows = M - m < RG_QT_ROWS ? (int)(M - m) : RG_QT_ROWS;
                const int64_t next = nb - b0 - nbc < RG_QPANEL_KB ? nb - b0 - nbc : RG_QPANEL_KB;
                /* bytes of n blocks of a row (for the K-quants, n is a multiple of a super-block's 8) */
#define BLOCKS_BYTES(n) rg_type_row_bytes(a->type, (int64_t)(n) * RG_QK)
                prefetch_next_step(a, RG_QT_ROWS, ib, i, ie, BLOCKS_BYTES(b0), BLOCKS_BYTES(nbc), BLOCKS_BYTES(b0 + nbc),
                                   BLOCKS_BYTES(next));
                rg_kernels.qgemm_decode(a->type, (const uint8_t *)a->data + m * a->nb[1] + BLOCKS_BYTES(b0), a->nb[1], rows,
                                        nbc, tile);
#undef BLOCKS_BYTES
                for (int64_t q = 0; q < n_panels; q += 2) { /* the kernels take up to two panels */
                    const uint8_t *panel = panels + (size_t)q * panel_bytes + (size_t)b0 * RG_QP_REC_BYTES;
                    const int np = n_panels - q >= 2 ? 2 : 1;
                    float *out = outs + (i - ib) * tile_outs + q * tile_out;
                    if (halves) rg_kernels.qgemm_tile_halves(tile, panel, panel_bytes, np, nbc, b0 > 0, out);
                    else rg_kernels.qgemm_tile(tile, panel, panel_bytes, np, nbc, has_min, b0 > 0, out);
                }
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
 * the bf16 route); phase 1 gives each thread a contiguous range of tiles of RG_PANEL_ROWS weight rows
 * and walks k in blocks: the rows of a block of tiles are made f32 (F32 copied, F16 widened; on the bf16
 * route every row made bf16, a tile at a time) a k-block at a time, and the kernel runs on up to
 * RG_PANEL_MAX_NP panels at once. Every output element is one chain over k in a fixed order: the result
 * does not depend on the thread count.
 *
 * Up to 32 columns (a batched decode step) the row tiles of ops_matmul.c run instead: they add in the
 * mat-vec's order, so each of B sequences equals its own eval bit for bit, and measured no slower there
 * (Sapphire Rapids, 2 threads, F16 8192x2048 and 2048x8192: T = 8 tiles 7.4 ms / panels 12.0 ms, T = 16
 * 10.5 / 13.1, T = 32 16.9 / 15.0). Longer prompt chunks keep the panels. */
#define RG_FPANEL_MIN_T 33
/* The bf16 route is opt-in and inexact anyway: its panels start at 8 columns as before. */
#define RG_FPANEL_BF16_MIN_T 8
/* Elements of k per step of a tile (a multiple of 32). On the f32 route a group of RG_PANEL_MAX_NP
 * panels' k-block then takes 32 KB, which stays in L1 while the block's tiles pass. */
#define RG_FPANEL_KC 128

bool rg_mm_fpanel_shape(const rg_tensor *dst, bool bf16) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    return (a->type == RG_TYPE_F32 || a->type == RG_TYPE_F16) && b->ne[1] >= (bf16 ? RG_FPANEL_BF16_MIN_T : RG_FPANEL_MIN_T) &&
           a->ne[2] * a->ne[3] == 1 && b->ne[2] * b->ne[3] == 1;
}

static int64_t fpanel_count(const rg_tensor *dst) {
    return (dst->src[1]->ne[1] + RG_PANEL_LANES - 1) / RG_PANEL_LANES;
}

/* elements (f32 route) or halves (bf16 route) of one panel */
static size_t fpanel_elems(const rg_tensor *dst, bool bf16) {
    const int64_t k = dst->src[0]->ne[0];
    return (size_t)RG_PANEL_LANES * (size_t)(bf16 ? rg_mm_bf16_padded(k) : k);
}

/* Tiles per block of the float panel route (RG_PANEL_BLOCK_TILES). */
static int64_t fpanel_block_tiles(const rg_tensor *dst) {
    const int64_t groups = (fpanel_count(dst) + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const int64_t tile_bytes = groups * RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES * (int64_t)sizeof(float);
    const int64_t mc = RG_PANEL_BLOCK_OUT_BYTES / tile_bytes;
    return mc < 1 ? 1 : mc > RG_PANEL_BLOCK_TILES ? RG_PANEL_BLOCK_TILES : mc;
}

rg_work rg_mm_fpanel_work(const rg_tensor *dst) {
    const size_t k = (size_t)dst->src[0]->ne[0], kp = (size_t)rg_mm_bf16_padded((int64_t)k);
    const size_t n = (size_t)fpanel_count(dst), mc = (size_t)fpanel_block_tiles(dst);
    const size_t f32_shared = n * fpanel_elems(dst, false) * sizeof(float);
    const size_t b16_shared = n * fpanel_elems(dst, true) * sizeof(uint16_t);
    /* phase 0: a panel's rows (f32 or bf16 pairs) and a row buffer; phase 1: a k-block of the block's
     * tiles in f32 (the bf16 route: of one tile in f32 and bf16), and the outputs of every group of panels */
    const size_t groups = (n + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const size_t units = k > kp / 2 ? k : kp / 2; /* 32-bit units of a row: floats or bf16 pairs */
    const size_t rows = (RG_PANEL_LANES * units + k) * sizeof(float) + 128;
    const size_t tile = mc * RG_PANEL_ROWS * RG_FPANEL_KC * sizeof(float) + RG_PANEL_ROWS * RG_FPANEL_KC * sizeof(uint16_t) +
                        128 + mc * groups * RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES * sizeof(float);
    const size_t per_thread = (rows > tile ? rows : tile) + 256;
    return (rg_work){f32_shared > b16_shared ? f32_shared : b16_shared, per_thread};
}

#if defined(__SSE2__)
/* 4 x 4 blocks of 32-bit units: src rows s[0..3] (4 units each) -> dst rows d[0..3]; bits unchanged */
static inline void transpose4(const uint32_t *s0, const uint32_t *s1, const uint32_t *s2, const uint32_t *s3,
                              uint32_t *d0, uint32_t *d1, uint32_t *d2, uint32_t *d3) {
    __m128 r0 = _mm_loadu_ps((const float *)s0), r1 = _mm_loadu_ps((const float *)s1);
    __m128 r2 = _mm_loadu_ps((const float *)s2), r3 = _mm_loadu_ps((const float *)s3);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps((float *)d0, r0);
    _mm_storeu_ps((float *)d1, r1);
    _mm_storeu_ps((float *)d2, r2);
    _mm_storeu_ps((float *)d3, r3);
}
#define RG_HAVE_TRANSPOSE4 1
#else
#define RG_HAVE_TRANSPOSE4 0
#endif

/* Phase 0: each thread builds whole panels. The 16 rows of a panel are loaded (as f32, or converted to
 * bf16 pairs) into the thread's scratch, then transposed in k-blocks small enough that the block of the
 * panel being written stays in L1, 4 x 4 units at a time where SSE2 is there (a unit at a time took
 * 2.5-4% of a 1.5B F16 prompt). Lanes past T are zeros. */
#define RG_FPANEL_TRANSPOSE_K 64

void rg_mm_fpanel_prepare(const rg_compute_params *p, const rg_tensor *dst, bool bf16) {
    const rg_tensor *b = dst->src[1];
    const int64_t K = b->ne[0], T = b->ne[1], kp = rg_mm_bf16_padded(K);
    const int64_t n = bf16 ? kp / 2 : K; /* 32-bit units per row: floats or bf16 pairs */
    const size_t pe = fpanel_elems(dst, bf16);
    uint32_t *units = rg_mm_align64(rg_thread_scratch(p)); /* 16 rows of n units */
    float *buf = rg_mm_align64(units + RG_PANEL_LANES * n);
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
            int64_t i4 = i0;
#if RG_HAVE_TRANSPOSE4
            for (; i4 + 4 <= i1; i4 += 4)
                for (int c = 0; c < RG_PANEL_LANES; c += 4) {
                    uint32_t *d = panel + i4 * RG_PANEL_LANES + c;
                    transpose4(rows[c] + i4, rows[c + 1] + i4, rows[c + 2] + i4, rows[c + 3] + i4, d, d + RG_PANEL_LANES,
                               d + 2 * RG_PANEL_LANES, d + 3 * RG_PANEL_LANES);
                }
#endif
            for (int c = 0; c < RG_PANEL_LANES; c++)
                for (int64_t i = i4; i < i1; i++) panel[i * RG_PANEL_LANES + c] = rows[c][i];
        }
    }
}

/* The block's outputs go out one destination row at a time: each row t takes the block's mc * 6
 * contiguous outputs at once, so every destination cache line is written in one visit (a tile at a time
 * wrote 6 floats into each of T rows whose stride, a power of two, maps them to the same cache sets, and
 * came back for the rest of each line after it was evicted). Four rows t go together where SSE2 is
 * there: 4 x 4 outputs in a transpose (one at a time took ~4% of a 1.5B F16 prompt). */
static void fpanel_store_block(rg_tensor *dst, const float *outs, int64_t tile_out, int64_t ib, int64_t ie) {
    const int64_t M = dst->src[0]->ne[1], T = dst->src[1]->ne[1];
    const int64_t group_out = RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES, row_out = RG_PANEL_MAX_NP * RG_PANEL_LANES;
    const int64_t m0 = ib * RG_PANEL_ROWS, m1 = ie * RG_PANEL_ROWS < M ? ie * RG_PANEL_ROWS : M;
    /* outs offset of output row m (of the block) */
#define OUT_AT(m) (((m) - m0) / RG_PANEL_ROWS * tile_out + ((m) - m0) % RG_PANEL_ROWS * row_out)
    int64_t t = 0;
#if RG_HAVE_TRANSPOSE4
    /* 4 rows t are lanes c..c+3 of one panel (RG_PANEL_LANES is a multiple of 4) */
    for (; t + 4 <= T; t += 4) {
        const float *o = outs + t / row_out * group_out + t % row_out;
        uint32_t *d[4];
        for (int x = 0; x < 4; x++) d[x] = (uint32_t *)((uint8_t *)dst->data + (size_t)(t + x) * dst->nb[1]);
        int64_t m = m0;
        for (; m + 4 <= m1; m += 4)
            transpose4((const uint32_t *)(o + OUT_AT(m)), (const uint32_t *)(o + OUT_AT(m + 1)),
                       (const uint32_t *)(o + OUT_AT(m + 2)), (const uint32_t *)(o + OUT_AT(m + 3)), d[0] + m, d[1] + m,
                       d[2] + m, d[3] + m);
        for (; m < m1; m++)
            for (int x = 0; x < 4; x++) memcpy(d[x] + m, o + OUT_AT(m) + x, sizeof(float));
    }
#endif
    for (; t < T; t++) {
        const float *o = outs + t / row_out * group_out + t % row_out;
        float *d = (float *)((uint8_t *)dst->data + (size_t)t * dst->nb[1]);
        for (int64_t m = m0; m < m1; m++) d[m] = o[OUT_AT(m)];
    }
#undef OUT_AT
}

/* Rows [m, m + RG_PANEL_ROWS) of a (rows past M zeros), k-block [k0, k0 + kc) of each, as f32 into w
 * (rows RG_FPANEL_KC floats apart). */
static void fpanel_load_tile(const rg_tensor *a, int64_t m, int64_t k0, int64_t kc, float *w) {
    const rg_type_traits *ta = rg_traits(a->type);
    const size_t esize = a->type == RG_TYPE_F32 ? sizeof(float) : sizeof(uint16_t); /* F32 or F16 */
    for (int r = 0; r < RG_PANEL_ROWS; r++) {
        if (m + r < a->ne[1]) ta->to_f32((const uint8_t *)a->data + (m + r) * a->nb[1] + (size_t)k0 * esize, w + r * RG_FPANEL_KC, kc);
        else memset(w + r * RG_FPANEL_KC, 0, (size_t)kc * sizeof(float));
    }
}

/* Phase 1 of the f32 route, a block of mc tiles at a time: the k-block of all the block's tiles is made
 * f32 at once into the thread's scratch (L2), then each group of panels runs against every tile of the
 * block, so the group's k-block stays in L1 while the tiles pass (rather than every group's coming from
 * L2 for every tile); the next k-block of every tile is prefetched, spread over the groups. Against a
 * tile at a time through all groups (Sapphire Rapids, 2 threads, with the SSE2 transposes): 1.5B F16
 * prompt 118 -> 127 tokens/s, 0.1B F16 1127 -> 1289, 0.1B F32 1190 -> 1280; the products alone 2-4%.
 * The outputs of a block stay in scratch until its last k-block (each k-block of the panels is read
 * once per block of tiles, from L2, rather than once per tile from L3). */
static void fpanel_f32_compute(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0];
    const int64_t K = a->ne[0], M = a->ne[1], n_panels = fpanel_count(dst);
    const int64_t n_groups = (n_panels + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const size_t pe = fpanel_elems(dst, false), group_out = RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES;
    const int64_t tile_out = n_groups * (int64_t)group_out, mc = fpanel_block_tiles(dst);
    const size_t esize = a->type == RG_TYPE_F32 ? sizeof(float) : sizeof(uint16_t); /* F32 or F16 */
    const int64_t tile_w = RG_PANEL_ROWS * RG_FPANEL_KC;
    float *w = rg_mm_align64(rg_thread_scratch(p));
    float *outs = rg_mm_align64(w + mc * tile_w);
    int64_t i0, i1;
    rg_split((M + RG_PANEL_ROWS - 1) / RG_PANEL_ROWS, p->ith, p->nth, &i0, &i1);
    for (int64_t ib = i0; ib < i1; ib += mc) {
        const int64_t ie = i1 - ib < mc ? i1 : ib + mc;
        for (int64_t k0 = 0; k0 < K; k0 += RG_FPANEL_KC) {
            const int64_t kc = K - k0 < RG_FPANEL_KC ? K - k0 : RG_FPANEL_KC;
            /* the k-block prefetched during this one: the next of these tiles, or the next block's first */
            const bool last = k0 + kc >= K;
            const int64_t nk0 = last ? 0 : k0 + kc, nkc = K - nk0 < RG_FPANEL_KC ? K - nk0 : RG_FPANEL_KC;
            const int64_t nib = last ? ie : ib;
            for (int64_t i = ib; i < ie; i++) {
                if (k0 == 0 && ib == i0) /* the thread's first k-block: nothing was prefetched for it */
                    prefetch_rows(a, (i + 2) * RG_PANEL_ROWS, RG_PANEL_ROWS, 0, (size_t)kc * esize);
                fpanel_load_tile(a, i * RG_PANEL_ROWS, k0, kc, w + (i - ib) * tile_w);
            }
            for (int64_t g = 0; g < n_groups; g++) {
                const int64_t q = g * RG_PANEL_MAX_NP;
                const int np = n_panels - q >= RG_PANEL_MAX_NP ? RG_PANEL_MAX_NP : (int)(n_panels - q);
                /* a panel's k-block starts 16 k0 elements in */
                const float *panels = (const float *)p->wdata + (size_t)q * pe + (size_t)k0 * RG_PANEL_LANES;
                /* this group's share of the rows: a burst of all of a tile's rows stalls on the fill buffers */
                const int64_t r0 = RG_PANEL_ROWS * g / n_groups, r1 = RG_PANEL_ROWS * (g + 1) / n_groups;
                for (int64_t i = ib; i < ie; i++) {
                    if (r1 > r0 && nib + (i - ib) < i1)
                        prefetch_rows(a, (nib + i - ib) * RG_PANEL_ROWS + r0, r1 - r0, (size_t)nk0 * esize, (size_t)nkc * esize);
                    rg_kernels.gemm_f32_panel(w + (i - ib) * tile_w, RG_FPANEL_KC, panels, pe, np, kc, k0 > 0,
                                              outs + (i - ib) * tile_out + g * group_out);
                }
            }
        }
        fpanel_store_block(dst, outs, tile_out, ib, ie);
    }
}

/* Phase 1 of the bf16 route: a tile at a time, its k-block made bf16 (F16 rows directly, F32 ones read in
 * place), then run against every group of panels while the next tile's k-block is prefetched. */
static void fpanel_bf16_compute(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0];
    const int64_t K = a->ne[0], M = a->ne[1], kp = rg_mm_bf16_padded(K), n_panels = fpanel_count(dst);
    const int64_t n_groups = (n_panels + RG_PANEL_MAX_NP - 1) / RG_PANEL_MAX_NP;
    const rg_type_traits *ta = rg_traits(a->type);
    const size_t pe = fpanel_elems(dst, true), group_out = RG_PANEL_ROWS * RG_PANEL_MAX_NP * RG_PANEL_LANES;
    const int64_t tile_out = n_groups * (int64_t)group_out, mc = fpanel_block_tiles(dst);
    float *tile = rg_mm_align64(rg_thread_scratch(p));
    uint16_t *tile16 = rg_mm_align64(tile + RG_PANEL_ROWS * RG_FPANEL_KC);
    float *outs = rg_mm_align64(tile16 + RG_PANEL_ROWS * RG_FPANEL_KC);
    const bool in_place = a->type == RG_TYPE_F32 && a->nb[1] % sizeof(float) == 0;
    const size_t esize = a->type == RG_TYPE_F32 ? sizeof(float) : sizeof(uint16_t); /* F32 or F16 */
    int64_t i0, i1;
    rg_split((M + RG_PANEL_ROWS - 1) / RG_PANEL_ROWS, p->ith, p->nth, &i0, &i1);
    for (int64_t ib = i0; ib < i1; ib += mc) {
        const int64_t ie = i1 - ib < mc ? i1 : ib + mc;
        for (int64_t k0 = 0; k0 < kp; k0 += RG_FPANEL_KC) { /* bf16 rows run to the zero padding */
            const int64_t kc = kp - k0 < RG_FPANEL_KC ? kp - k0 : RG_FPANEL_KC;
            const int64_t valid = K - k0 < kc ? K - k0 : kc; /* < kc only in a row's padding */
            for (int64_t i = ib; i < ie; i++) {
                const int64_t m = i * RG_PANEL_ROWS;
                const int rows = M - m < RG_PANEL_ROWS ? (int)(M - m) : RG_PANEL_ROWS;
                const int64_t next = K - k0 - kc <= 0 ? 0 : K - k0 - kc < kc ? K - k0 - kc : kc;
                prefetch_next_step(a, RG_PANEL_ROWS, ib, i, ie, (size_t)k0 * esize, (size_t)valid * esize,
                                   (size_t)(k0 + kc) * esize, (size_t)next * esize);
                if (a->type == RG_TYPE_F16) { /* F16 straight to bf16 */
                    for (int r = 0; r < RG_PANEL_ROWS; r++) {
                        uint16_t *d16 = tile16 + r * RG_FPANEL_KC;
                        if (r < rows) {
                            const uint8_t *row = (const uint8_t *)a->data + (m + r) * a->nb[1];
                            rg_kernels.f16_to_bf16_padded((const uint16_t *)(row + (size_t)k0 * esize), d16, valid, kc);
                        } else {
                            memset(d16, 0, (size_t)kc * sizeof(uint16_t));
                        }
                    }
                } else { /* F32 rows read in place (a partial tile is copied, zero-padded), then made bf16 */
                    const float *w = tile;
                    int64_t ldw = RG_FPANEL_KC;
                    if (in_place && rows == RG_PANEL_ROWS) {
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
                    for (int r = 0; r < RG_PANEL_ROWS; r++)
                        rg_kernels.f32_to_bf16_padded(w + r * ldw, tile16 + r * RG_FPANEL_KC, valid, kc);
                }
                for (int64_t g = 0; g < n_groups; g++) {
                    const int64_t q = g * RG_PANEL_MAX_NP;
                    const int np = n_panels - q >= RG_PANEL_MAX_NP ? RG_PANEL_MAX_NP : (int)(n_panels - q);
                    float *out = outs + (i - ib) * tile_out + g * group_out;
                    /* a panel's k-block starts 16 k0 halves (bf16 pairs) in */
                    rg_kernels.gemm_bf16_panel(tile16, RG_FPANEL_KC, (const uint16_t *)p->wdata + q * pe + k0 * 16, pe,
                                               np, kc / 2, k0 > 0, out);
                }
            }
        }
        fpanel_store_block(dst, outs, tile_out, ib, ie);
    }
}

void rg_mm_fpanel_compute(const rg_compute_params *p, rg_tensor *dst, bool bf16) {
    if (bf16) fpanel_bf16_compute(p, dst);
    else fpanel_f32_compute(p, dst);
}
