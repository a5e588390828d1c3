/* The 32-element block types against a few activation columns (batched decode) on AVX512_VNNI, bit for
 * bit the mat-vec (vec_dot_*, k_quant_avx512.c).
 *
 * The one-row kernel puts a row's codes in the lanes, so every block and column ends in a horizontal sum
 * of vpdpbusd's partial sums: against 8 columns that reduction costs about three times the dot products
 * (an RWKV-7 1.5B Q8_0 step of 8 sequences ran its matrices at ~20% of the int8 peak on Zen 4). Here the
 * lanes hold up to 8 columns (a narrow panel, quant/quant.h): per block and row, eight 256-bit vpdpbusd
 * multiply the row's unsigned codes u (as the mat-vec's: Q8_0's q + 128, the 4- and 5-bit codes as
 * stored), four at a time broadcast to every lane, by the columns' signed codes, on top of the panel's
 * -off * sum q, so each lane ends with the mat-vec's exact integer for its column. 256-bit vectors: on
 * Zen 4 they run at the int8 rate of 512-bit ones, and 8 lanes fit the 8 sequences of a small batch.
 *
 * The mat-vec's numbers after the integers: acc[b % 16] = fma(float(s), d_w * d_x, acc[b % 16]) (then
 * acc[b % 16] = fma(m_w, s_x, acc[b % 16]) for the _1 types) over the blocks in order, then
 * rg_qdot_reduce16's tree over the 16 lanes (k_quant_vnni.h). Here each column's lane takes the same f32
 * operations in the same order, the mat-vec's 16 lanes being 16 accumulators, and the 16 are added in
 * that tree: every output equals the mat-vec's. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "k_quant_vnni.h"

/* A block's unsigned codes u (as the mat-vec's), four at a time broadcast to every lane. */
RG_VNNI_INLINE void broadcast_codes(const uint8_t *blk, const qtype t, __m256i u[8]) {
    if (t.kind == 2) {
        /* _mm256_xor_epi32 (not _si256): GCC then folds the broadcast into the xor's memory operand
         * ({1to8}), one instruction per four codes instead of two (17% faster on Zen 4) */
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        for (int k = 0; k < 8; k++)
            u[k] = _mm256_xor_epi32(flip, _mm256_set1_epi32((int32_t)rg_load_u32(blk + t.qs + 4 * k)));
        return;
    }
    const __m256i all = single_codes(blk, t);
    for (int k = 0; k < 8; k++) u[k] = _mm256_permutexvar_epi32(_mm256_set1_epi32(k), all);
}

/* RG_QN_ROWS rows (fewer: the missing ones repeat row 0 and are not stored) against one panel of nb
 * records: out[c * ldo + r] for the nx (<= RG_QN_LANES) columns. Per block and row, the codes broadcast
 * once go into vpdpbusd against the panel's 8 vectors of columns, in two chains of four (one chain of
 * eight waits on vpdpbusd's latency; two measured ~20% faster in a loop of this shape). The blocks go in
 * order, each row's f32 sums in the accumulator of the block's lane class (b % 16, in L1), so the rows are
 * read as RG_QN_ROWS sequential streams, which the hardware prefetchers follow (walking each class's
 * blocks in turn, 16 blocks apart, left the step waiting on memory); the `next` bytes after the rows
 * (the caller's next rows) are asked for into L2 as the blocks go. */
RG_VNNI_INLINE void narrow_rows(int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *panel, int nx,
                                float *out, size_t ldo, size_t next, const qtype t) {
    const uint8_t *row[RG_QN_ROWS];
    for (int r = 0; r < RG_QN_ROWS; r++) row[r] = w + (r < rows ? (size_t)r * ldw : 0);
    const char *pf = (const char *)w + (size_t)rows * ldw;
    const int64_t lines = (int64_t)(next + 63) / 64, per_block = nb > 0 ? (lines + nb - 1) / nb : 0;
    int64_t line = 0;
    __m256 cls[16][RG_QN_ROWS];
    for (int j = 0; j < 16; j++)
        for (int r = 0; r < RG_QN_ROWS; r++) cls[j][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t e = line + per_block; line < e && line < lines; line++) _mm_prefetch(pf + 64 * line, _MM_HINT_T2);
        const uint8_t *rec = panel + (size_t)b * RG_QN_REC_BYTES;
        __m256i x[8];
        for (int k = 0; k < 8; k++) x[k] = _mm256_loadu_si256((const __m256i *)(rec + 32 * k));
        const __m256i corr = _mm256_loadu_si256((const __m256i *)(rec + RG_QN_CORR));
        const __m256 dx = _mm256_loadu_ps((const float *)(rec + RG_QN_DX));
        __m256 *acc = cls[b & 15];
        for (int r = 0; r < RG_QN_ROWS; r++) {
            const uint8_t *blk = row[r] + (size_t)b * (size_t)t.wbytes;
            __m256i u[8];
            broadcast_codes(blk, t, u);
            __m256i s0 = corr, s1 = _mm256_setzero_si256();
            for (int k = 0; k < 8; k += 2) {
                s0 = _mm256_dpbusd_epi32(s0, u[k], x[k]);
                s1 = _mm256_dpbusd_epi32(s1, u[k + 1], x[k + 1]);
            }
            const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(rg_load_u16(blk))), dx);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), scale, acc[r]);
            if (t.has_min) { /* the _1 types' m_w s_x, after, as in the mat-vec */
                const __m256 sx = _mm256_loadu_ps((const float *)(rec + RG_QN_SX));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(rg_load_u16(blk + 2))), sx, acc[r]);
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        /* rg_qdot_reduce16's tree with the mat-vec's 16 lanes as the 16 classes */
        __m256 v[8];
        for (int i = 0; i < 8; i++) v[i] = _mm256_add_ps(cls[i + 8][r], cls[i][r]);
        for (int i = 0; i < 4; i++) v[i] = _mm256_add_ps(v[i + 4], v[i]);
        _Alignas(32) float o[RG_QN_LANES];
        _mm256_store_ps(o, _mm256_add_ps(_mm256_add_ps(v[0], v[2]), _mm256_add_ps(v[1], v[3])));
        for (int c = 0; c < nx; c++) out[(size_t)c * ldo + r] = o[c];
    }
}

/* The panels one at a time: the rows stay in L1 from the first panel to the last. (Two rows against all
 * the panels at once, each broadcast serving every panel, ran a one-core loop over an RWKV-7 1.5B-sized
 * Q8_0 product 20% faster, but whole batched steps 5-8% slower: B = 16 161 -> 175 ms, B = 32 289 -> 308,
 * 2-core Zen 4 guest, A/B in one session.) */
RG_VNNI_INLINE void narrow_panels(int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *panels,
                                  size_t panel_bytes, int np, int nx, float *out, size_t ldo, size_t next,
                                  const qtype t) {
    for (int p = 0; p < np; p++) {
        const int n = nx - p * RG_QN_LANES < RG_QN_LANES ? nx - p * RG_QN_LANES : RG_QN_LANES;
        narrow_rows(nb, w, ldw, rows, panels + (size_t)p * panel_bytes, n, out + (size_t)(p * RG_QN_LANES) * ldo,
                    ldo, p == 0 ? next : 0, t);
    }
}

RG_VNNI static void quant_narrow(int type, int64_t nb, const uint8_t *w, size_t ldw, int rows, const uint8_t *panels,
                                 size_t panel_bytes, int np, int nx, float *out, size_t ldo, size_t next) {
#define RG_NARROW(...)                                                                                           \
    narrow_panels(nb, w, ldw, rows, panels, panel_bytes, np, nx, out, ldo, next, (qtype){__VA_ARGS__})
    switch (type) { /*               wbytes          qs          qh       kind off has_min */
    case RG_TYPE_Q4_0: RG_NARROW(RG_Q4_0_BYTES, RG_Q4_0_QS, 0, 0, 8, 0); break;
    case RG_TYPE_Q4_1: RG_NARROW(RG_Q4_1_BYTES, RG_Q4_1_QS, 0, 0, 0, 1); break;
    case RG_TYPE_Q5_0: RG_NARROW(RG_Q5_0_BYTES, RG_Q5_0_QS, RG_Q5_0_QH, 1, 16, 0); break;
    case RG_TYPE_Q5_1: RG_NARROW(RG_Q5_1_BYTES, RG_Q5_1_QS, RG_Q5_1_QH, 1, 0, 1); break;
    default: RG_NARROW(RG_Q8_0_BYTES, RG_Q8_0_QS, 0, 2, 128, 0); break;
    }
#undef RG_NARROW
}

void rg_kernels_fill_quant_narrow(rg_kernel_table *k, int level, unsigned features) {
    k->quant_narrow = level >= 2 && (features & RG_CPU_AVX512_VNNI) ? quant_narrow : NULL;
}

#else
void rg_kernels_fill_quant_narrow(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->quant_narrow = NULL;
}
#endif
