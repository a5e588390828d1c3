/* AMX (AMX-TILE + AMX-INT8: Sapphire Rapids and later) for Q8_0 weights against a few activation columns
 * (batched decode): one tdpbssd per 32-element block multiplies 16 weight rows by up to 16 columns of
 * signed codes, exact in i32, where the VNNI kernel (k_quant_avx512.c) spends most of its work reducing
 * vpdpbusd's 4-element partial sums to one sum per block and column.
 *
 * The result must equal the mat-vec (vec_dot_q8_0) bit for bit, so a batch of B sequences equals B evals.
 * The mat-vec's numbers: per block the exact integer sum s (its sum (u - 128) x of unsigned codes is the
 * signed sum), then acc[b % 16] = fma(float(s), d_w * d_x, acc[b % 16]) over the blocks in order (blocks
 * past the last one of a partial group adding fma(0, 0, .)), then the 16 lanes summed by rg_qdot_reduce16
 * (k_quant_vnni.h, GCC's _mm512_reduce_add_ps tree). Here the same f32 steps run with the (row, column) pairs in the vector lanes and the
 * mat-vec's 16 lanes as 16 accumulators in memory, so every element takes the same operations in the same
 * order.
 *
 * Activations: the route packs the Q8_ACT rows (phase 0) into column tiles of nc = 8 or 16 columns, one
 * record per block: the codes as tdpbssd's B operand (8 rows of nc x 4 bytes: column c's codes 4k..4k+3
 * in row k), then 16 floats d_x (nc = 8: the 8 columns twice, to match the C rows' pairs; nc = 16: each
 * column), absent columns zero. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "../quant/quant.h"

#define RG_AMX __attribute__((target(RG_TARGET_AMX)))

/* ldtilecfg's 64-byte operand (palette 1). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* Tiles: 0, 3 and 6, 7 the i32 products of two blocks (mr rows x nc columns), 1, 4 their weight codes
 * (mr x 32 bytes), 2, 5 their activation codes (8 x 4 nc bytes). */
RG_AMX static void amx_configure(int mr, int nc) {
    _Alignas(64) amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 6; t += 3) {
        c.colsb[t] = (uint16_t)(4 * nc), c.rows[t] = (uint8_t)mr;
        c.colsb[t + 1] = 32, c.rows[t + 1] = (uint8_t)mr;
        c.colsb[t + 2] = (uint16_t)(4 * nc), c.rows[t + 2] = 8;
    }
    c.colsb[6] = c.colsb[7] = (uint16_t)(4 * nc), c.rows[6] = c.rows[7] = (uint8_t)mr;
    /* GCC 12 does not count ldtilecfg as reading the whole operand and dropped these stores once the
     * function was inlined (the tiles then ran unconfigured: SIGILL); the barrier keeps them */
    __asm__ volatile("" : : "m"(c) : "memory");
    _tile_loadconfig(&c);
}

/* Bytes of one packed block record for nc columns. */
static size_t amx_record_bytes(int nc) { return (size_t)(32 * nc) + 16 * sizeof(float); }

/* Lanes 0-7 row 2v, lanes 8-15 row 2v + 1: the rows of vector v of a block's products for nc = 8. */
static const int32_t RG_AMX_ROW_PAIRS[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},         {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},         {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},         {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13}, {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

/* acc[v] = fma(float(s[v]), dw[v] * dx, acc[v]) for the nv vectors of one block's products: vector v holds
 * rows 2v, 2v + 1 (nc = 8) or row v (nc = 16); without the block (past the last one) fma(0, 0, acc[v]), as
 * the mat-vec's masked lanes. */
RG_AMX static inline void amx_scale_block(int have, const int32_t *s, const float *dw, const float *dx_rec, int nc,
                                          int nv, __m512 *acc) {
    if (!have) {
        for (int v = 0; v < nv; v++) acc[v] = _mm512_fmadd_ps(_mm512_setzero_ps(), _mm512_setzero_ps(), acc[v]);
        return;
    }
    const __m512 dx = _mm512_loadu_ps(dx_rec);
    if (nc == 8) {
        const __m512 dwv = _mm512_load_ps(dw);
        for (int v = 0; v < nv; v++) {
            const __m512i pick = _mm512_loadu_si512(RG_AMX_ROW_PAIRS[v]);
            const __m512 scale = _mm512_mul_ps(_mm512_permutexvar_ps(pick, dwv), dx);
            acc[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(s + 16 * v)), scale, acc[v]);
        }
        return;
    }
    for (int v = 0; v < nv; v++) {
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(dw[v]), dx);
        acc[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(s + 16 * v)), scale, acc[v]);
    }
}

/* d_w of block b of rows 0..mr-1 (row stride ldw bytes) as floats; rows past mr 0. */
RG_AMX static inline void amx_row_scales(const uint8_t *w, size_t ldw, int mr, int64_t b, float *dw) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)ldw));
    const __mmask16 m = (__mmask16)((1u << mr) - 1u);
    const __m512i d = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, w + b * RG_Q8_0_BYTES, 1);
    _mm512_store_ps(dw, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)));
}

/* One unit of work: blocks b, b + 1 against column tile j. Two sets of tiles (C 0, 3 and C 6, 7; the A and B
 * tiles 1, 2, 4, 5 shared) let one unit's tdpbssd run while the previous unit's products are scaled. */
typedef struct {
    const uint8_t *w, *xpack;
    size_t ldw, tile_bytes, rec;
    int64_t nb;
    int mr, ntiles, nc, nv;
} amx_job;

typedef struct {
    _Alignas(64) int32_t s[2][16 * 16];
    _Alignas(64) float dw[2][16];
    int64_t b;
    int j;
} amx_unit;

#define RG_AMX_ISSUE(C0, C1)                                                                                     \
    do {                                                                                                       \
        const uint8_t *x0 = jb->xpack + (size_t)u->j * jb->tile_bytes + (size_t)u->b * jb->rec;               \
        if (u->b < jb->nb) {                                                                                   \
            _tile_loadd(1, jb->w + u->b * RG_Q8_0_BYTES + 2, (long)jb->ldw);                                   \
            _tile_loadd(2, x0, (long)(4 * jb->nc));                                                            \
            _tile_zero(C0);                                                                                    \
            _tile_dpbssd(C0, 1, 2);                                                                            \
            amx_row_scales(jb->w, jb->ldw, jb->mr, u->b, u->dw[0]);                                            \
        }                                                                                                      \
        if (u->b + 1 < jb->nb) {                                                                               \
            _tile_loadd(4, jb->w + (u->b + 1) * RG_Q8_0_BYTES + 2, (long)jb->ldw);                             \
            _tile_loadd(5, x0 + jb->rec, (long)(4 * jb->nc));                                                  \
            _tile_zero(C1);                                                                                    \
            _tile_dpbssd(C1, 4, 5);                                                                            \
            amx_row_scales(jb->w, jb->ldw, jb->mr, u->b + 1, u->dw[1]);                                        \
        }                                                                                                      \
    } while (0)

#define RG_AMX_STORE(C0, C1)                                                                                     \
    do {                                                                                                       \
        if (u->b < jb->nb) _tile_stored(C0, u->s[0], (long)(4 * jb->nc));                                      \
        if (u->b + 1 < jb->nb) _tile_stored(C1, u->s[1], (long)(4 * jb->nc));                                  \
    } while (0)

RG_AMX static inline void amx_unit_at(const amx_job *jb, int64_t n, amx_unit *u) {
    u->b = 2 * (n / jb->ntiles);
    u->j = (int)(n % jb->ntiles);
}

RG_AMX static inline void amx_issue0(const amx_job *jb, amx_unit *u) { RG_AMX_ISSUE(0, 3); }
RG_AMX static inline void amx_issue1(const amx_job *jb, amx_unit *u) { RG_AMX_ISSUE(6, 7); }
RG_AMX static inline void amx_store0(const amx_job *jb, amx_unit *u) { RG_AMX_STORE(0, 3); }
RG_AMX static inline void amx_store1(const amx_job *jb, amx_unit *u) { RG_AMX_STORE(6, 7); }

/* The unit's products scaled into the accumulators (acc[tile][lane][vector]). */
RG_AMX static inline void amx_finish(const amx_job *jb, const amx_unit *u, __m512 (*acc)[16][16]) {
    const uint8_t *x0 = jb->xpack + (size_t)u->j * jb->tile_bytes + (size_t)u->b * jb->rec;
    const int l = (int)(u->b % 16);
    for (int k = 0; k < 2; k++)
        amx_scale_block(u->b + k < jb->nb, u->s[k], u->dw[k], (const float *)(x0 + k * jb->rec + 32 * jb->nc), jb->nc,
                        jb->nv, acc[u->j][l + k]);
}

/* 16 rows or fewer (jb->mr, the tiles configured for them), out[(j * nc + c) * ldo + r]; the `next` bytes
 * after the rows (the next rows of the caller's range) are asked for as the units go, so they arrive in
 * the cache while these rows are computed: 16 rows far apart are 16 streams that the hardware prefetcher
 * alone does not keep ahead of the tile loads, while the next rows are one contiguous range. */
RG_AMX static void amx_rows(const amx_job *jb, int nx, float *out, size_t ldo, size_t next) {
    enum { MAX_TILES = (RG_QAMX_MAX_T + 15) / 16 }; /* nc = 8 only for nx <= 8 */
    /* acc[tile][lane][vector]: the mat-vec's 16 lanes of every (row, column) pair */
    __m512 acc[MAX_TILES][16][16];
    amx_unit units[2];
    memset(units, 0, sizeof units);
    for (int j = 0; j < jb->ntiles; j++)
        for (int l = 0; l < 16; l++)
            for (int v = 0; v < jb->nv; v++) acc[j][l][v] = _mm512_setzero_ps();
    /* units: block pairs (the mat-vec's last group runs whole, zeros past nb) times column tiles; an even
     * count, since groups have 8 pairs */
    const int64_t n_units = (jb->nb + 15) / 16 * 8 * jb->ntiles;
    const char *pf = (const char *)jb->w + (size_t)jb->mr * jb->ldw;
    const int64_t lines = (int64_t)(next + 63) / 64, per_unit = (lines + n_units - 1) / n_units;
    amx_unit_at(jb, 0, &units[0]);
    amx_issue0(jb, &units[0]);
    for (int64_t n = 0; n < n_units; n += 2) {
        for (int64_t i = n * per_unit; i < (n + 2) * per_unit && i < lines; i++) _mm_prefetch(pf + 64 * i, _MM_HINT_T2);
        amx_unit_at(jb, n + 1, &units[1]);
        amx_issue1(jb, &units[1]);
        amx_store0(jb, &units[0]);
        amx_finish(jb, &units[0], acc);
        if (n + 2 < n_units) {
            amx_unit_at(jb, n + 2, &units[0]);
            amx_issue0(jb, &units[0]);
        }
        amx_store1(jb, &units[1]);
        amx_finish(jb, &units[1], acc);
    }
    const int nc = jb->nc;
    for (int j = 0; j < jb->ntiles; j++)
        for (int v = 0; v < jb->nv; v++) {
            const __m512 *a = &acc[j][0][v];
            /* rg_qdot_reduce16's tree with the 16 lanes as 16 vectors (a[l * 16] is lane l) */
            __m512 t[8];
            for (int i = 0; i < 8; i++) t[i] = _mm512_add_ps(a[16 * (i + 8)], a[16 * i]);
            for (int i = 0; i < 4; i++) t[i] = _mm512_add_ps(t[i + 4], t[i]);
            const __m512 sum = _mm512_add_ps(_mm512_add_ps(t[0], t[2]), _mm512_add_ps(t[1], t[3]));
            _Alignas(64) float o[16];
            _mm512_store_ps(o, sum);
            for (int i = 0; i < 16; i++) {
                const int r = nc == 8 ? 2 * v + i / 8 : v, c = nc == 8 ? i % 8 : i, col = j * nc + c;
                if (r < jb->mr && col < nx) out[(size_t)col * ldo + r] = o[i];
            }
        }
}

/* rows Q8_0 rows w + r * ldw of nb blocks against ntiles packed column tiles of nc columns (tile_bytes
 * apart): out[(j * nc + c) * ldo + r] for column c of tile j, nx columns in all; 16 rows at a time. */
RG_AMX static void q8_0_amx(int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *xpack,
                            size_t tile_bytes, int ntiles, int nc, int nx, float *out, size_t ldo) {
    int configured = 0;
    for (int r0 = 0; r0 < rows; r0 += 16) {
        const int mr = rows - r0 < 16 ? rows - r0 : 16, next = rows - r0 - mr < 16 ? rows - r0 - mr : 16;
        if (mr != configured) amx_configure(mr, nc);
        configured = mr;
        const amx_job jb = {w + (size_t)r0 * ldw, xpack, ldw, tile_bytes, (size_t)(32 * nc) + 16 * sizeof(float), nb,
                            mr, ntiles, nc, nc == 8 ? (mr + 1) / 2 : mr};
        amx_rows(&jb, nx, out + r0, ldo, (size_t)next * ldw);
    }
    _tile_release();
}

/* Column `col` of the packed tiles from one Q8_ACT row of nb blocks (act NULL: zeros). */
static void q8_0_amx_pack(const uint8_t *act, int64_t nb, int nc, uint8_t *xpack, size_t tile_bytes, int col) {
    const size_t rec = amx_record_bytes(nc);
    uint8_t *tile = xpack + (size_t)(col / nc) * tile_bytes;
    const int c = col % nc;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *r = tile + (size_t)b * rec;
        float dx = 0.0f;
        for (int k = 0; k < 8; k++) {
            if (act) memcpy(r + (size_t)(k * 4 * nc + 4 * c), act + rg_act_pos(b, 4 * k, nb), 4);
            else memset(r + (size_t)(k * 4 * nc + 4 * c), 0, 4);
        }
        if (act) memcpy(&dx, act + rg_act_d_off(nb) + 4 * b, sizeof dx);
        float *d = (float *)(r + 32 * nc);
        d[c] = dx;
        if (nc == 8) d[c + 8] = dx;
    }
}

void rg_kernels_fill_quant_amx(rg_kernel_table *k, int level, unsigned features) {
    const int on = level >= 2 && (features & RG_CPU_AMX_INT8);
    k->q8_0_amx = on ? q8_0_amx : NULL;
    k->q8_0_amx_pack = on ? q8_0_amx_pack : NULL;
}

#else
void rg_kernels_fill_quant_amx(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->q8_0_amx = NULL;
    k->q8_0_amx_pack = NULL;
}
#endif
