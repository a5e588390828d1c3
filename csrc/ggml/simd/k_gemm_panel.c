/* Column-panel mat-mat kernels for float weights (AVX-512; the opt-in bf16 one needs AVX512_BF16).
 *
 * The activation columns sit in the vector lanes, 16 per panel, stored k-major (f32: panel[k * 16 + c];
 * bf16: pairs, panel[(k / 2) * 32 + 2 c + k % 2]); a weight element (or bf16 pair) is broadcast from
 * memory into the multiply. A 6-row x 64-column tile keeps 24 accumulators in registers, with no
 * horizontal sums at all (the k-lane kernels of k_gemm_tile.c reduce every output at the end).
 *
 * Each output lane is one chain of multiply-adds over k in order, the same whatever the tile, the panel
 * pair or the thread, so results do not depend on the thread count. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define ROWS RG_PANEL_ROWS
#define LANES RG_PANEL_LANES

/* The RG_PANEL_ROWS (6) weight rows are reached from two base pointers three rows apart plus 0, 1 or 2
 * strides, which keeps the loop within the general registers. */
#define ROW_ADDR(bases, r, ld) ((bases)[(r) / 3] + ((r) % 3) * (ld))

/* One step: NP panel vectors loaded, each row's element (or bf16 pair) broadcast once and multiplied
 * into NP accumulators. A broadcast costs a vector-pipe slot on Zen 4 like an FMA does (folding it into
 * the FMA's memory operand measured slower), so each one feeds as many columns as registers allow:
 * 6 rows x 4 panels = 24 accumulators, 6 broadcasts and 4 loads per 24 FMAs. */
RG_AVX512_INLINE void f32_body(const float *w, int64_t ldw, const float *x, size_t xstride, const int np, int64_t k,
                               int accumulate, float *out) {
    __m512 acc[ROWS][4];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < 4; j++)
            acc[r][j] = accumulate && j < np ? _mm512_loadu_ps(out + (r * 4 + j) * LANES) : _mm512_setzero_ps();
    const float *base[2] = {w, w + 3 * ldw};
    for (int64_t i = 0; i < k; i++) {
        __m512 xv[4];
        for (int j = 0; j < np; j++) xv[j] = _mm512_loadu_ps(x + j * xstride + i * LANES);
        for (int r = 0; r < ROWS; r++) {
            const __m512 wv = _mm512_set1_ps(rg_load_f32(ROW_ADDR(base, r, ldw) + i));
            for (int j = 0; j < np; j++) acc[r][j] = _mm512_fmadd_ps(xv[j], wv, acc[r][j]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < np; j++) _mm512_storeu_ps(out + (r * 4 + j) * LANES, acc[r][j]);
}

RG_AVX512 static void gemm_f32_panel_avx512(const float *w, int64_t ldw, const float *x, size_t xstride, int np,
                                            int64_t k, int accumulate, float *out) {
    switch (np) {
    case 4: f32_body(w, ldw, x, xstride, 4, k, accumulate, out); break;
    case 3: f32_body(w, ldw, x, xstride, 3, k, accumulate, out); break;
    case 2: f32_body(w, ldw, x, xstride, 2, k, accumulate, out); break;
    default: f32_body(w, ldw, x, xstride, 1, k, accumulate, out); break;
    }
}

RG_BF16_INLINE void bf16_body(const uint16_t *w, int64_t ldw, const uint16_t *x, size_t xstride, const int np,
                              int64_t kpairs, int accumulate, float *out) {
    __m512 acc[ROWS][4];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < 4; j++)
            acc[r][j] = accumulate && j < np ? _mm512_loadu_ps(out + (r * 4 + j) * LANES) : _mm512_setzero_ps();
    const uint16_t *base[2] = {w, w + 3 * ldw};
    for (int64_t i = 0; i < kpairs; i++) {
        __m512bh xv[4];
        for (int j = 0; j < np; j++) xv[j] = (__m512bh)_mm512_loadu_si512(x + j * xstride + i * 2 * LANES);
        for (int r = 0; r < ROWS; r++) {
            const __m512bh wv = (__m512bh)_mm512_set1_epi32((int)rg_load_u32(ROW_ADDR(base, r, ldw) + 2 * i));
            for (int j = 0; j < np; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xv[j], wv);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < np; j++) _mm512_storeu_ps(out + (r * 4 + j) * LANES, acc[r][j]);
}

RG_BF16 static void gemm_bf16_panel_avx512(const uint16_t *w, int64_t ldw, const uint16_t *x, size_t xstride, int np,
                                           int64_t kpairs, int accumulate, float *out) {
    switch (np) {
    case 4: bf16_body(w, ldw, x, xstride, 4, kpairs, accumulate, out); break;
    case 3: bf16_body(w, ldw, x, xstride, 3, kpairs, accumulate, out); break;
    case 2: bf16_body(w, ldw, x, xstride, 2, kpairs, accumulate, out); break;
    default: bf16_body(w, ldw, x, xstride, 1, kpairs, accumulate, out); break;
    }
}

void rg_kernels_fill_gemm_panel(rg_kernel_table *k, int level, unsigned features) {
    k->gemm_f32_panel = level >= 2 ? gemm_f32_panel_avx512 : NULL;
    k->gemm_bf16_panel = level >= 2 && (features & RG_CPU_AVX512_BF16) ? gemm_bf16_panel_avx512 : NULL;
}
#else
void rg_kernels_fill_gemm_panel(rg_kernel_table *k, int level, unsigned features) {
    (void)level;
    (void)features;
    k->gemm_f32_panel = NULL;
    k->gemm_bf16_panel = NULL;
}
#endif
