/* The kernel table: hot inner loops with one implementation per instruction-set level.
 * cpu.c detects the CPU once and fills rg_kernels (the engine's one process-wide global);
 * the scalar variants are always built and are the reference the others are tested against. */
#ifndef RG_KERNELS_H
#define RG_KERNELS_H

#include <stdint.h>

#define RG_KERNELS_API __attribute__((visibility("hidden")))

typedef struct {
    /* sum_i a[i] * b[i] */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* sum_i f16(a[i]) * b[i]: F16 weights against F32 activations (activations stay F32) */
    float (*dot_f16_f32)(const uint16_t *a, const float *b, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
    /* out[j] = sum_i a[i] * b[j][i] for nb contiguous rows b[j] = b + j * ldb (1 <= nb <= 4):
     * one weight row against several activation rows, loading the weight row once. */
    void (*dot_f32_x4)(const float *a, const float *b, int64_t ldb, int nb, int64_t n, float *out);
} rg_kernel_table;

RG_KERNELS_API extern rg_kernel_table rg_kernels;

RG_KERNELS_API void rg_kernels_fill_scalar(rg_kernel_table *k);
RG_KERNELS_API void rg_kernels_fill_avx2(rg_kernel_table *k);
RG_KERNELS_API void rg_kernels_fill_avx512(rg_kernel_table *k);
RG_KERNELS_API void rg_kernels_init(void);

/* Scalar conversions, exact (round to nearest even, subnormals, overflow to inf). */
RG_KERNELS_API uint16_t rg_f32_to_f16_scalar(float f);
RG_KERNELS_API float rg_f16_to_f32_scalar(uint16_t h);

#endif
