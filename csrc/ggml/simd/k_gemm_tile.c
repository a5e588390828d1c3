/* Mat-mat micro-kernels for F32 and F16 weights with f32 accumulation (batched decode, and prompts where
 * the column panels of k_gemm_panel.c do not run), and the opt-in bf16 tile. At the AVX2 and AVX-512
 * levels F32/F16 products take the mat-vec's row streams instead (dot_*_rows4_cols, ops_matmul.c: faster
 * on Zen 4 at every column count); the tiles serve the scalar level and weights of other types.
 *
 * c[t * ldc + m] = sum_k a[m * lda + k] * b[t * ldb + k] for mr weight rows and nr activation rows. Both
 * operands are contiguous along k (weights as stored, activations as rows), so each (m, t) pair keeps
 * vectors of partial sums over k lanes, reduced once at the end in the mat-vec's order: an element's
 * value does not depend on the tile shape, the column count or the thread count. */
#include "kernels.h"

static void gemm_tile_scalar(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr, int64_t k,
                             float *c, int64_t ldc) { /* rg_dot_f32_ref: the scalar mat-vec's order */
    for (int t = 0; t < nr; t++)
        for (int m = 0; m < mr; m++) c[t * ldc + m] = rg_dot_f32_ref(a + m * lda, b + t * ldb, k);
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* ---- f32 accumulation in the mat-vec's order (AVX-512 and AVX2) ----
 * A column of a mat-mat must equal the mat-vec of that column bit for bit (a batch of B sequences equals
 * B single evals). The AVX-512 mat-vec (dot_*_rows4 in k_vec_avx512.c) gives each row two accumulators,
 * s0 taking the 16-lane chunks at 0, 32, 64, ... and s1 those at 16, 48, ...; a last 16-element chunk goes
 * into s0, a masked tail into s1, and the result is reduce_add(s0 + s1). The AVX2 one is the same with 8
 * lanes, a last 8-element chunk into s0 and a scalar tail added after the horizontal sum.
 *
 * s0 and s1 never meet until the end, so the tile runs them as two passes ("even" and "odd" chunks),
 * which halves the live accumulators: 4 rows x up to 6 columns in 24 zmm registers, 4 + 6 loads per 24
 * FMAs (the old one-pass tile held 4 x 3 x 2, 8 + 6 loads per 24 FMAs, and cut 8 columns as 3 + 3 + 2).
 * k is walked in blocks: the rows are taken in sweeps of several 4-row tiles whose accumulators wait in
 * memory between blocks, and every tile of a sweep runs a block against the same columns, which stay in
 * L1 for all of them; with one tile per sweep (many columns) the blocks are as long as possible, so the
 * accumulators are stored and reloaded seldom. F16 rows are made f32 a block at a time (exact), and the
 * next block of weights is prefetched while this one is computed, so the weight stream and the arithmetic
 * overlap instead of alternating. */
#define TILE_MAX_COLS 32    /* columns of one sweep over k */
#define TILE_X_FLOATS 4096  /* a block of the columns: 16 KB of L1 */
#define TILE_MAX_BLOCK 1024 /* elements of a block (the f32 copy of 4 F16 rows is 4 x this) */
#define TILE_ACC_PAIRS 128  /* (row, column) accumulator pairs kept between blocks: 16 KB */
/* Floats between the rows of the f32 copy of F16 rows (rows 4 KB apart share their L1 sets) */
#define TILE_PAD 16

/* Block length: a multiple of 32 (so each block starts on an s0 chunk at both levels) whose nc columns
 * fit TILE_X_FLOATS. */
static int64_t tile_block(int nc) {
    const int64_t kb = TILE_X_FLOATS / nc / 32 * 32;
    return kb < 64 ? 64 : kb > TILE_MAX_BLOCK ? TILE_MAX_BLOCK : kb;
}

/* Columns [c0, c0 + n) of group g when nc columns are cut into ng groups as even as possible. */
static void tile_group(int nc, int ng, int g, int *c0, int *n) {
    const int base = nc / ng, extra = nc % ng;
    *c0 = g * base + (g < extra ? g : extra);
    *n = base + (g < extra);
}

/* Weight rows: the weights' own rows (f32) or F16 rows, made f32 a block at a time. */
typedef struct {
    const float *a32;
    const uint16_t *a16;
    int64_t lda;
    int mr;
} tile_rows;

/* The 4-row tile of r starting at row r0 (fewer rows at the end). */
static tile_rows tile_at(const tile_rows *r, int r0) {
    const tile_rows t = {r->a32 ? r->a32 + r0 * r->lda : NULL, r->a16 ? r->a16 + r0 * r->lda : NULL, r->lda,
                         r->mr - r0 < 4 ? r->mr - r0 : 4};
    return t;
}

/* Where row m of a tile is stored, from element k0 on (for prefetching). */
static const char *tile_row_addr(const tile_rows *t, int m, int64_t k0) {
    const int row = m < t->mr ? m : t->mr - 1;
    return t->a16 ? (const char *)(t->a16 + row * t->lda + k0) : (const char *)(t->a32 + row * t->lda + k0);
}

#define TILE_NT 6 /* AVX-512 columns per group */

/* acc[t * 4 + m] += a_m[i:i+16] * x_t[i:i+16] for i = i0, i0 + 32, ... < i1; the first pass of a block
 * also prefetches the next block of weight rows (pf_lines cache lines per row per step). */
RG_AVX512_INLINE void tile_pass_avx512(const float *const ar[4], const float *const *xr, int nt, int64_t i0, int64_t i1,
                                       __m512 *acc, const char *const *pf, int pf_lines) {
    __m512 s[4][TILE_NT];
    for (int t = 0; t < nt; t++)
        for (int m = 0; m < 4; m++) s[m][t] = acc[t * 4 + m];
    for (int64_t i = i0; i < i1; i += 32) {
        if (pf)
            for (int m = 0; m < 4; m++)
                for (int l = 0; l < pf_lines; l++) _mm_prefetch(pf[m] + ((i - i0) / 32 * pf_lines + l) * 64, _MM_HINT_T0);
        const __m512 a0 = _mm512_loadu_ps(ar[0] + i), a1 = _mm512_loadu_ps(ar[1] + i);
        const __m512 a2 = _mm512_loadu_ps(ar[2] + i), a3 = _mm512_loadu_ps(ar[3] + i);
        for (int t = 0; t < nt; t++) {
            __m512 x = _mm512_loadu_ps(xr[t] + i);
            __asm__("" : "+v"(x)); /* one load per column, not one per FMA (as in narrow_pass) */
            s[0][t] = _mm512_fmadd_ps(a0, x, s[0][t]);
            s[1][t] = _mm512_fmadd_ps(a1, x, s[1][t]);
            s[2][t] = _mm512_fmadd_ps(a2, x, s[2][t]);
            s[3][t] = _mm512_fmadd_ps(a3, x, s[3][t]);
        }
    }
    for (int t = 0; t < nt; t++)
        for (int m = 0; m < 4; m++) acc[t * 4 + m] = s[m][t];
}

/* One pass with the column count a constant (each case its own register allocation). */
RG_AVX512 static void tile_pass_n_avx512(const float *const ar[4], const float *const *xr, int nt, int64_t i0,
                                         int64_t i1, __m512 *acc, const char *const *pf, int pf_lines) {
    switch (nt) {
    case 1: tile_pass_avx512(ar, xr, 1, i0, i1, acc, pf, pf_lines); break;
    case 2: tile_pass_avx512(ar, xr, 2, i0, i1, acc, pf, pf_lines); break;
    case 3: tile_pass_avx512(ar, xr, 3, i0, i1, acc, pf, pf_lines); break;
    case 4: tile_pass_avx512(ar, xr, 4, i0, i1, acc, pf, pf_lines); break;
    case 5: tile_pass_avx512(ar, xr, 5, i0, i1, acc, pf, pf_lines); break;
    default: tile_pass_avx512(ar, xr, TILE_NT, i0, i1, acc, pf, pf_lines); break;
    }
}

/* Rows [k0, k0 + len) of the tile as f32: pointers into the weights, or the F16 rows made f32 in buf
 * (len/16 whole chunks, then a zero-filled partial one: the mat-vec's masked load). */
RG_AVX512 static void tile_block_rows_avx512(const tile_rows *r, int64_t k0, int64_t len, float *buf, int64_t ldbuf,
                                             const float *ar[4]) {
    for (int m = 0; m < 4; m++) {
        const int row = m < r->mr ? m : r->mr - 1;
        if (m >= r->mr) {
            ar[m] = ar[r->mr - 1];
        } else if (r->a16 == NULL) {
            ar[m] = r->a32 + row * r->lda + k0;
        } else {
            const uint16_t *src = r->a16 + row * r->lda + k0;
            float *dst = buf + m * ldbuf;
            for (int64_t i = 0; i < len; i += 16) {
                const __mmask16 msk = len - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - i)) - 1u);
                _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(msk, src + i)));
            }
            ar[m] = dst;
        }
    }
}

/* Rows are taken in sweeps of as many 4-row tiles as TILE_ACC_PAIRS allows, and k in blocks: every tile
 * of a sweep runs a block against the same columns, which stay in L1 for all of them. */
RG_AVX512 static void tile_avx512(const tile_rows *r, const float *b, int64_t ldb, int nr, int64_t k, float *c,
                                  int64_t ldc) {
    _Alignas(64) float buf[4 * (TILE_MAX_BLOCK + TILE_PAD)];
    __m512 acc[2][TILE_ACC_PAIRS]; /* [pass][(q * nc + t) * 4 + m]: tile q, column t, row m */
    const int64_t k32 = k / 32 * 32;
    for (int c0 = 0; c0 < nr; c0 += TILE_MAX_COLS) {
        const int nc = nr - c0 < TILE_MAX_COLS ? nr - c0 : TILE_MAX_COLS, ng = (nc + TILE_NT - 1) / TILE_NT;
        const int sweep = TILE_ACC_PAIRS / nc / 4 * 4;
        /* one tile per sweep: nothing reuses the columns, so the longest block (fewest passes) is best */
        const int64_t kb = sweep == 4 ? TILE_MAX_BLOCK : tile_block(nc);
        const float *xr[TILE_MAX_COLS];
        for (int t = 0; t < nc; t++) xr[t] = b + (c0 + t) * ldb;
        for (int r0 = 0; r0 < r->mr; r0 += sweep) {
            const int nq = ((r->mr - r0 < sweep ? r->mr - r0 : sweep) + 3) / 4;
            for (int j = 0; j < nq * nc * 4; j++) acc[0][j] = acc[1][j] = _mm512_setzero_ps();
            for (int64_t k0 = 0; k0 < k32; k0 += kb) {
                const int64_t len = k32 - k0 < kb ? k32 - k0 : kb;
                const float *xb[TILE_MAX_COLS];
                for (int t = 0; t < nc; t++) xb[t] = xr[t] + k0;
                for (int q = 0; q < nq; q++) {
                    const tile_rows tile = tile_at(r, r0 + 4 * q);
                    const float *ar[4];
                    tile_block_rows_avx512(&tile, k0, len, buf, TILE_MAX_BLOCK + TILE_PAD, ar);
                    /* prefetch what comes next: the next tile's block, or the first tile's next block */
                    const int last = q + 1 == nq, more = !last || k0 + len < k32;
                    const tile_rows next = tile_at(r, r0 + (last ? 0 : 4 * (q + 1)));
                    const char *pf[4];
                    for (int m = 0; m < 4; m++) pf[m] = tile_row_addr(&next, m, last ? k0 + len : k0);
                    __m512 *a0 = acc[0] + q * nc * 4, *a1 = acc[1] + q * nc * 4;
                    for (int g = 0; g < ng; g++) {
                        int g0, n;
                        tile_group(nc, ng, g, &g0, &n);
                        tile_pass_n_avx512(ar, xb + g0, n, 0, len, a0 + g0 * 4, g == 0 && more ? pf : NULL,
                                           r->a16 ? 1 : 2);
                        tile_pass_n_avx512(ar, xb + g0, n, 16, len, a1 + g0 * 4, NULL, 0);
                    }
                }
            }
            for (int q = 0; q < nq; q++) {
                const tile_rows tile = tile_at(r, r0 + 4 * q);
                __m512 *a0 = acc[0] + q * nc * 4, *a1 = acc[1] + q * nc * 4;
                if (k32 < k) { /* the mat-vec's last 16-element chunk (into s0) and masked tail (into s1) */
                    const int64_t rem = k - k32;
                    const float *ar[4];
                    tile_block_rows_avx512(&tile, k32, rem, buf, TILE_MAX_BLOCK + TILE_PAD, ar);
                    int64_t i = 0;
                    if (rem >= 16) {
                        for (int t = 0; t < nc; t++) {
                            const __m512 x = _mm512_loadu_ps(xr[t] + k32);
                            for (int m = 0; m < 4; m++)
                                a0[t * 4 + m] = _mm512_fmadd_ps(_mm512_loadu_ps(ar[m]), x, a0[t * 4 + m]);
                        }
                        i = 16;
                    }
                    if (i < rem) {
                        const __mmask16 msk = (__mmask16)((1u << (rem - i)) - 1u);
                        for (int t = 0; t < nc; t++) {
                            const __m512 x = _mm512_maskz_loadu_ps(msk, xr[t] + k32 + i);
                            for (int m = 0; m < 4; m++)
                                a1[t * 4 + m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(msk, ar[m] + i), x, a1[t * 4 + m]);
                        }
                    }
                }
                for (int t = 0; t < nc; t++)
                    for (int m = 0; m < tile.mr; m++)
                        c[(c0 + t) * ldc + r0 + 4 * q + m] = _mm512_reduce_add_ps(_mm512_add_ps(a0[t * 4 + m], a1[t * 4 + m]));
            }
        }
    }
}

/* ---- few columns (up to NARROW_COLS): 3 rows x 8 columns in 24 accumulators ----
 * With 8 columns or fewer the 4 x 6 tiles split the columns into two groups that each reload the rows,
 * and F16 rows went through an f32 copy in memory. Here the 24 accumulators of 3 rows x up to 8 columns
 * stay in registers for a whole block of NARROW_BLOCK elements, F16 rows are converted as they are loaded
 * (each chunk once: the even chunks in the first pass, the odd ones in the second), the block of the
 * columns stays in L1 for the NARROW_GROUPS row groups of a sweep, and each pass asks for the lines of
 * the group that comes after it. The sums are the same chunks in the same order as tile_avx512's.
 * Measured on a 2-core Sapphire Rapids guest, A/B in one process: an RWKV-7 1.5B F16 step of 8 sequences
 * 182 -> 157 ms (the weights alone take ~98 ms to stream); without the prefetches 170 ms; half the
 * block or twice the groups the same. */
#define NARROW_COLS 8
#define NARROW_ROWS 3
#define NARROW_GROUPS 8
#define NARROW_BLOCK 1024 /* 8 columns of it: 32 KB of L1 */

RG_AVX512_INLINE __m512 narrow_load(const tile_rows *r, int m, int64_t i) {
    if (r->a16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r->a16 + m * r->lda + i)));
    return _mm512_loadu_ps(r->a32 + m * r->lda + i);
}

/* acc[t * 3 + m] += rows m < 3 (rows past r->mr repeat the last one) against nt columns over the chunks
 * i0, i0 + 32, ... < i1; pf: where the lines that come next start (rows row_bytes apart), read from at the
 * same offsets as the weights here. */
RG_AVX512_INLINE void narrow_pass(const tile_rows *r, const float *const *xr, int nt, int64_t i0, int64_t i1,
                                  __m512 *acc, const char *pf, size_t row_bytes) {
    __m512 s[NARROW_ROWS][NARROW_COLS];
    for (int m = 0; m < NARROW_ROWS; m++)
        for (int t = 0; t < nt; t++) s[m][t] = acc[t * NARROW_ROWS + m];
    const int m1 = r->mr > 1 ? 1 : 0, m2 = r->mr > 2 ? 2 : r->mr - 1;
    const int lines = r->a16 ? 1 : 2; /* per row per 32 elements */
    for (int64_t i = i0; i < i1; i += 32) {
        if (pf)
            for (int m = 0; m < NARROW_ROWS; m++)
                for (int l = 0; l < lines; l++)
                    _mm_prefetch(pf + (size_t)m * row_bytes + (size_t)((i - i0) / 32 * lines + l) * 64, _MM_HINT_T0);
        const __m512 a0 = narrow_load(r, 0, i), a1 = narrow_load(r, m1, i), a2 = narrow_load(r, m2, i);
        for (int t = 0; t < nt; t++) {
            __m512 x = _mm512_loadu_ps(xr[t] + i);
            /* one load per column: GCC would otherwise fold it into each of the three FMAs, and three loads
             * per FMA triple left the load ports, not the FMA units, the limit */
            __asm__("" : "+v"(x));
            s[0][t] = _mm512_fmadd_ps(a0, x, s[0][t]);
            s[1][t] = _mm512_fmadd_ps(a1, x, s[1][t]);
            s[2][t] = _mm512_fmadd_ps(a2, x, s[2][t]);
        }
    }
    for (int t = 0; t < nt; t++)
        for (int m = 0; m < NARROW_ROWS; m++) acc[t * NARROW_ROWS + m] = s[m][t];
}

RG_AVX512 static void narrow_pass_n(const tile_rows *r, const float *const *xr, int nt, int64_t i0, int64_t i1,
                                    __m512 *acc, const char *pf, size_t row_bytes) {
    switch (nt) {
    case 1: narrow_pass(r, xr, 1, i0, i1, acc, pf, row_bytes); break;
    case 2: narrow_pass(r, xr, 2, i0, i1, acc, pf, row_bytes); break;
    case 3: narrow_pass(r, xr, 3, i0, i1, acc, pf, row_bytes); break;
    case 4: narrow_pass(r, xr, 4, i0, i1, acc, pf, row_bytes); break;
    case 5: narrow_pass(r, xr, 5, i0, i1, acc, pf, row_bytes); break;
    case 6: narrow_pass(r, xr, 6, i0, i1, acc, pf, row_bytes); break;
    case 7: narrow_pass(r, xr, 7, i0, i1, acc, pf, row_bytes); break;
    default: narrow_pass(r, xr, NARROW_COLS, i0, i1, acc, pf, row_bytes); break;
    }
}

/* The 3 rows of r from `row` (fewer at the end). */
static tile_rows narrow_group(const tile_rows *r, int row) {
    const tile_rows g = {r->a32 ? r->a32 + row * r->lda : NULL, r->a16 ? r->a16 + row * r->lda : NULL, r->lda,
                         r->mr - row < NARROW_ROWS ? r->mr - row : NARROW_ROWS};
    return g;
}

/* The mat-vec's last 16-element chunk (into s0) and masked tail (into s1) of row m of g, then the sums. */
RG_AVX512 static void narrow_finish(const tile_rows *g, const float *const *xr, int nr, int64_t k, __m512 *a0,
                                    __m512 *a1, float *c, int64_t ldc) {
    const int64_t k32 = k / 32 * 32, rem = k - k32;
    for (int m = 0; m < g->mr; m++) {
        if (rem >= 16) {
            const __m512 a = narrow_load(g, m, k32);
            for (int t = 0; t < nr; t++)
                a0[t * NARROW_ROWS + m] = _mm512_fmadd_ps(a, _mm512_loadu_ps(xr[t] + k32), a0[t * NARROW_ROWS + m]);
        }
        const int64_t i = rem >= 16 ? 16 : 0;
        if (i < rem) {
            const __mmask16 msk = (__mmask16)((1u << (rem - i)) - 1u);
            const __m512 a = g->a16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(msk, g->a16 + m * g->lda + k32 + i))
                                    : _mm512_maskz_loadu_ps(msk, g->a32 + m * g->lda + k32 + i);
            for (int t = 0; t < nr; t++)
                a1[t * NARROW_ROWS + m] =
                    _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(msk, xr[t] + k32 + i), a1[t * NARROW_ROWS + m]);
        }
        for (int t = 0; t < nr; t++)
            c[t * ldc + m] = _mm512_reduce_add_ps(_mm512_add_ps(a0[t * NARROW_ROWS + m], a1[t * NARROW_ROWS + m]));
    }
}

RG_AVX512 static void tile_narrow_avx512(const tile_rows *r, const float *b, int64_t ldb, int nr, int64_t k, float *c,
                                         int64_t ldc) {
    enum { N = NARROW_ROWS * NARROW_COLS };
    const int64_t k32 = k / 32 * 32;
    const size_t row_bytes = (size_t)r->lda * (r->a16 ? sizeof(uint16_t) : sizeof(float));
    const float *xr[NARROW_COLS];
    for (int t = 0; t < nr; t++) xr[t] = b + t * ldb;
    __m512 acc[2][NARROW_GROUPS][N];
    for (int r0 = 0; r0 < r->mr; r0 += NARROW_GROUPS * NARROW_ROWS) {
        const int rows = r->mr - r0 < NARROW_GROUPS * NARROW_ROWS ? r->mr - r0 : NARROW_GROUPS * NARROW_ROWS;
        const int nq = (rows + NARROW_ROWS - 1) / NARROW_ROWS;
        for (int q = 0; q < nq; q++)
            for (int j = 0; j < N; j++) acc[0][q][j] = acc[1][q][j] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < k32; k0 += NARROW_BLOCK) {
            const int64_t k1 = k32 - k0 < NARROW_BLOCK ? k32 : k0 + NARROW_BLOCK;
            for (int q = 0; q < nq; q++) {
                const tile_rows g = narrow_group(r, r0 + NARROW_ROWS * q);
                /* what comes next: the next group's block, or the first group's next block, or the next
                 * sweep's first block (rows past the end are never read: prefetches do not fault) */
                const int last = q + 1 == nq;
                const int next_row = !last ? r0 + NARROW_ROWS * (q + 1) : k1 < k32 ? r0 : r0 + rows;
                const int64_t next_k = !last ? k0 : k1 < k32 ? k1 : 0;
                const char *pf = (const char *)(r->a16 ? (const void *)(r->a16 + next_row * r->lda + next_k)
                                                       : (const void *)(r->a32 + next_row * r->lda + next_k));
                narrow_pass_n(&g, xr, nr, k0, k1, acc[0][q], pf, row_bytes);
                narrow_pass_n(&g, xr, nr, k0 + 16, k1, acc[1][q], NULL, row_bytes);
            }
        }
        for (int q = 0; q < nq; q++) {
            const tile_rows g = narrow_group(r, r0 + NARROW_ROWS * q);
            narrow_finish(&g, xr, nr, k, acc[0][q], acc[1][q], c + r0 + NARROW_ROWS * q, ldc);
        }
    }
}

RG_AVX512 static void gemm_tile_avx512(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                       int64_t k, float *c, int64_t ldc) {
    const tile_rows r = {a, NULL, lda, mr};
    if (nr <= NARROW_COLS) tile_narrow_avx512(&r, b, ldb, nr, k, c, ldc);
    else tile_avx512(&r, b, ldb, nr, k, c, ldc);
}

RG_AVX512 static void gemm_f16_tile_avx512(const uint16_t *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                           int64_t k, float *c, int64_t ldc) {
    const tile_rows r = {NULL, a, lda, mr};
    if (nr <= NARROW_COLS) tile_narrow_avx512(&r, b, ldb, nr, k, c, ldc);
    else tile_avx512(&r, b, ldb, nr, k, c, ldc);
}

RG_AVX2 static inline float hsum8(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* AVX2 (16 registers): groups of up to 2 columns, 4 x 2 accumulators per pass; 8-lane chunks, s0 at 0, 16,
 * 32, ..., s1 at 8, 24, .... */
#define TILE_NT2 2

RG_AVX2_INLINE void tile_pass_avx2(const float *const ar[4], const float *const *xr, int nt, int64_t i0, int64_t i1,
                                   __m256 *acc) {
    __m256 s[4][TILE_NT2];
    for (int t = 0; t < nt; t++)
        for (int m = 0; m < 4; m++) s[m][t] = acc[t * 4 + m];
    for (int64_t i = i0; i < i1; i += 16)
        for (int t = 0; t < nt; t++) {
            const __m256 x = _mm256_loadu_ps(xr[t] + i);
            for (int m = 0; m < 4; m++) s[m][t] = _mm256_fmadd_ps(_mm256_loadu_ps(ar[m] + i), x, s[m][t]);
        }
    for (int t = 0; t < nt; t++)
        for (int m = 0; m < 4; m++) acc[t * 4 + m] = s[m][t];
}

RG_AVX2 static void tile_block_rows_avx2(const tile_rows *r, int64_t k0, int64_t len, float *buf, int64_t ldbuf,
                                         const float *ar[4]) {
    for (int m = 0; m < 4; m++) {
        if (m >= r->mr) {
            ar[m] = ar[r->mr - 1];
        } else if (r->a16 == NULL) {
            ar[m] = r->a32 + m * r->lda + k0;
        } else {
            const uint16_t *src = r->a16 + m * r->lda + k0;
            float *dst = buf + m * ldbuf;
            int64_t i = 0;
            for (; i + 8 <= len; i += 8)
                _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
            for (; i < len; i++) dst[i] = rg_f16_to_f32_scalar(rg_load_u16(src + i));
            ar[m] = dst;
        }
    }
}

RG_AVX2 static void tile_avx2(const tile_rows *r, const float *b, int64_t ldb, int nr, int64_t k, float *c,
                              int64_t ldc) {
    _Alignas(64) float buf[4 * TILE_MAX_BLOCK];
    __m256 acc[2][TILE_MAX_COLS * 4];
    const int64_t k16 = k / 16 * 16;
    for (int c0 = 0; c0 < nr; c0 += TILE_MAX_COLS) {
        const int nc = nr - c0 < TILE_MAX_COLS ? nr - c0 : TILE_MAX_COLS, ng = (nc + TILE_NT2 - 1) / TILE_NT2;
        const int64_t kb = tile_block(nc);
        const float *xr[TILE_MAX_COLS];
        for (int t = 0; t < nc; t++) xr[t] = b + (c0 + t) * ldb;
        for (int j = 0; j < nc * 4; j++) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
        for (int64_t k0 = 0; k0 < k16; k0 += kb) {
            const int64_t len = k16 - k0 < kb ? k16 - k0 : kb;
            const float *ar[4];
            tile_block_rows_avx2(r, k0, len, buf, TILE_MAX_BLOCK, ar);
            const float *xb[TILE_MAX_COLS];
            for (int t = 0; t < nc; t++) xb[t] = xr[t] + k0;
            for (int g = 0; g < ng; g++) {
                int g0, n;
                tile_group(nc, ng, g, &g0, &n);
                for (int pass = 0; pass < 2; pass++) {
                    if (n == 1) tile_pass_avx2(ar, xb + g0, 1, 8 * pass, len, acc[pass] + g0 * 4);
                    else tile_pass_avx2(ar, xb + g0, TILE_NT2, 8 * pass, len, acc[pass] + g0 * 4);
                }
            }
        }
        const int64_t rem = k - k16; /* < 16: an 8-element chunk into s0, then scalar terms */
        const float *ar[4];
        tile_block_rows_avx2(r, k16, rem, buf, TILE_MAX_BLOCK, ar);
        if (rem >= 8)
            for (int t = 0; t < nc; t++) {
                const __m256 x = _mm256_loadu_ps(xr[t] + k16);
                for (int m = 0; m < 4; m++)
                    acc[0][t * 4 + m] = _mm256_fmadd_ps(_mm256_loadu_ps(ar[m]), x, acc[0][t * 4 + m]);
            }
        for (int t = 0; t < nc; t++)
            for (int m = 0; m < r->mr; m++) {
                float s = hsum8(_mm256_add_ps(acc[0][t * 4 + m], acc[1][t * 4 + m]));
                for (int64_t j = rem >= 8 ? 8 : 0; j < rem; j++) s += rg_load_f32(ar[m] + j) * xr[t][k16 + j];
                c[(c0 + t) * ldc + m] = s;
            }
    }
}

RG_AVX2 static void tiles_avx2(const tile_rows *r, const float *b, int64_t ldb, int nr, int64_t k, float *c,
                               int64_t ldc) {
    for (int r0 = 0; r0 < r->mr; r0 += 4) {
        const tile_rows tile = tile_at(r, r0);
        tile_avx2(&tile, b, ldb, nr, k, c + r0, ldc);
    }
}

RG_AVX2 static void gemm_tile_avx2(const float *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                   int64_t k, float *c, int64_t ldc) {
    const tile_rows r = {a, NULL, lda, mr};
    tiles_avx2(&r, b, ldb, nr, k, c, ldc);
}

RG_AVX2 static void gemm_f16_tile_avx2(const uint16_t *a, int64_t lda, int mr, const float *b, int64_t ldb, int nr,
                                       int64_t k, float *c, int64_t ldc) {
    const tile_rows r = {NULL, a, lda, mr};
    tiles_avx2(&r, b, ldb, nr, k, c, ldc);
}

/* ---- bf16 operands (opt-in, AVX512_BF16): vdpbf16ps multiplies pairs of bf16 along k and adds both
 * products into an f32 lane, twice the arithmetic of an f32 FMA per instruction. Operand rows are
 * bf16, zero-padded to a multiple of 32 elements (kp), so the kernel has no tail. ---- */

RG_BF16 static void gemm_bf16_tile_avx512(const uint16_t *a, int64_t lda, int mr, const uint16_t *b, int64_t ldb,
                                          int nr, int64_t kp, float *c, int64_t ldc) {
    __m512 acc[4][6];
    for (int m = 0; m < 4; m++)
        for (int t = 0; t < 6; t++) acc[m][t] = _mm512_setzero_ps();
    if (mr == 4 && nr == 6) {
        for (int64_t i = 0; i < kp; i += 32) {
            const __m512bh a0 = (__m512bh)_mm512_loadu_si512(a + i), a1 = (__m512bh)_mm512_loadu_si512(a + lda + i);
            const __m512bh a2 = (__m512bh)_mm512_loadu_si512(a + 2 * lda + i);
            const __m512bh a3 = (__m512bh)_mm512_loadu_si512(a + 3 * lda + i);
            for (int t = 0; t < 6; t++) {
                const __m512bh bt = (__m512bh)_mm512_loadu_si512(b + t * ldb + i);
                acc[0][t] = _mm512_dpbf16_ps(acc[0][t], a0, bt);
                acc[1][t] = _mm512_dpbf16_ps(acc[1][t], a1, bt);
                acc[2][t] = _mm512_dpbf16_ps(acc[2][t], a2, bt);
                acc[3][t] = _mm512_dpbf16_ps(acc[3][t], a3, bt);
            }
        }
    } else {
        for (int64_t i = 0; i < kp; i += 32) {
            for (int t = 0; t < nr; t++) {
                const __m512bh bt = (__m512bh)_mm512_loadu_si512(b + t * ldb + i);
                for (int m = 0; m < mr; m++)
                    acc[m][t] = _mm512_dpbf16_ps(acc[m][t], (__m512bh)_mm512_loadu_si512(a + m * lda + i), bt);
            }
        }
    }
    for (int t = 0; t < nr; t++)
        for (int m = 0; m < mr; m++) c[t * ldc + m] = _mm512_reduce_add_ps(acc[m][t]);
}

/* n floats to bf16 (round to nearest even), then zeros up to kp. */
RG_BF16 static void f32_to_bf16_padded_avx512(const float *src, uint16_t *dst, int64_t n, int64_t kp) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v);
    }
    for (; i < kp; i += 32) {
        const int64_t left = n - i;
        const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
        const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16), _mm512_maskz_loadu_ps(lo, src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v);
    }
}

/* n halves to bf16 (each half is exact in f32, then rounded to nearest even), then zeros up to kp: one
 * pass instead of f16 -> f32 -> bf16 through memory. */
RG_BF16 static void f16_to_bf16_padded_avx512(const uint16_t *src, uint16_t *dst, int64_t n, int64_t kp) {
    for (int64_t i = 0; i < kp; i += 32) {
        const int64_t left = n - i;
        const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
        const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
        const __m512 f_lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lo, src + i));
        const __m512 f_hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(hi, src + i + 16));
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(f_hi, f_lo));
    }
}

void rg_kernels_fill_gemm_tile(rg_kernel_table *k, int level, unsigned features) {
    k->gemm_f32_tile = level >= 2 ? gemm_tile_avx512 : level == 1 ? gemm_tile_avx2 : gemm_tile_scalar;
    k->gemm_f16_tile = level >= 2 ? gemm_f16_tile_avx512 : level == 1 ? gemm_f16_tile_avx2 : NULL;
    const int bf16 = level >= 2 && (features & RG_CPU_AVX512_BF16);
    k->gemm_bf16_tile = bf16 ? gemm_bf16_tile_avx512 : NULL;
    k->f32_to_bf16_padded = bf16 ? f32_to_bf16_padded_avx512 : NULL;
    k->f16_to_bf16_padded = bf16 ? f16_to_bf16_padded_avx512 : NULL;
}
#else
void rg_kernels_fill_gemm_tile(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->gemm_f32_tile = gemm_tile_scalar;
    k->gemm_f16_tile = NULL;
    k->gemm_bf16_tile = NULL;
    k->f32_to_bf16_padded = NULL;
    k->f16_to_bf16_padded = NULL;
}
#endif
