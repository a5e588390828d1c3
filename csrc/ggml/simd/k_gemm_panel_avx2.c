/* The column-panel mat-mat of f32 weights at the AVX2 level (AVX2 + FMA), for the same panels, route and
 * output layout as the AVX-512 kernel of k_gemm_panel.c (kernels.h: gemm_f32_panel).
 *
 * A panel's 16 columns take two ymm vectors; a 6-row x 16-column block keeps 12 accumulators, which with
 * the two panel vectors and one broadcast weight fills the 16 ymm registers exactly. The panels of a
 * call are therefore done one after another, each over the whole k range: the tile's k-block of weights
 * (6 x 128 floats) stays in L1 between them. Per k step: 2 panel loads and 6 broadcasts (load-port
 * operations on Intel and Zen) feed 12 FMAs, so the two FMA pipes set the pace.
 *
 * Each output lane is one chain of fused multiply-adds over k in order, as in the AVX-512 kernel: the
 * two levels give the same bits, and the result does not depend on the tile, the panel or the thread. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define ROWS RG_PANEL_ROWS
#define LANES RG_PANEL_LANES

/* Rows 0-2 from one base pointer and 3-5 from another, plus 0, 1 or 2 strides: every broadcast is a
 * single addressing mode, so the loop needs no more general registers than x86-64 has. */
#define ROW_ADDR(bases, r, ld) ((bases)[(r) / 3] + ((r) % 3) * (ld))

/* out (rows ROWS, 16 lanes, at out + r * row_stride) += w rows . the panel x over k. */
RG_AVX2_INLINE void panel_6x16(const float *w, int64_t ldw, const float *x, int64_t k, int accumulate, float *out,
                               size_t row_stride) {
    __m256 acc[ROWS][2];
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = accumulate ? _mm256_loadu_ps(out + r * row_stride + 8 * h) : _mm256_setzero_ps();
    const float *base[2] = {w, w + 3 * ldw};
#pragma GCC unroll 4
    for (int64_t i = 0; i < k; i++) {
        const __m256 x0 = _mm256_loadu_ps(x + i * LANES), x1 = _mm256_loadu_ps(x + i * LANES + 8);
        for (int r = 0; r < ROWS; r++) {
            const __m256 wv = _mm256_set1_ps(rg_load_f32(ROW_ADDR(base, r, ldw) + i));
            acc[r][0] = _mm256_fmadd_ps(x0, wv, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x1, wv, acc[r][1]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(out + r * row_stride + 8 * h, acc[r][h]);
}

RG_AVX2 static void gemm_f32_panel_avx2(const float *w, int64_t ldw, const float *x, size_t xstride, int np, int64_t k,
                                        int accumulate, float *out) {
    for (int j = 0; j < np; j++)
        panel_6x16(w, ldw, x + (size_t)j * xstride, k, accumulate, out + j * LANES, RG_PANEL_MAX_NP * LANES);
}

void rg_kernels_fill_gemm_panel_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)features;
    if (level == 1) k->gemm_f32_panel = gemm_f32_panel_avx2;
}
#else
void rg_kernels_fill_gemm_panel_avx2(rg_kernel_table *k, int level, unsigned features) {
    (void)k;
    (void)level;
    (void)features;
}
#endif
