/* mul_mat's routes (ops_matmul.c chooses one; the panel routes live in ops_matmul_panel.c). */
#ifndef RG_OPS_MATMUL_H
#define RG_OPS_MATMUL_H

#include "ops_kernels.h"
#include "quant/quant.h"
#include "simd/kernels.h"

/* Weights with an integer dot product (the block-quantized types). */
static inline bool rg_mm_quantized(const rg_tensor *a) { return rg_traits(a->type)->vec_dot != NULL; }

/* bf16 rows are zero-padded to a multiple of 32 elements. */
static inline int64_t rg_mm_bf16_padded(int64_t k) { return (k + 31) / 32 * 32; }

/* Bytes of one activation row quantized to the weights' vec_dot type. */
static inline size_t rg_mm_quant_b_row_bytes(const rg_tensor *dst) {
    return rg_type_row_bytes(rg_traits(dst->src[0]->type)->vec_dot_type, dst->src[1]->ne[0]);
}

static inline void *rg_mm_align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* ---- the panel routes (ops_matmul_panel.c): shape test, work size, phase 0, phase 1 ---- */
RG_INTERNAL_API bool rg_mm_qpanel_shape(const rg_tensor *dst);
RG_INTERNAL_API bool rg_mm_qpanel_available(const rg_tensor *dst);
RG_INTERNAL_API rg_work rg_mm_qpanel_work(const rg_tensor *dst);
RG_INTERNAL_API void rg_mm_qpanel_prepare(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_mm_qpanel_compute(const rg_compute_params *p, rg_tensor *dst);
/* The float panel routes: f32 panels, or bf16 pairs when bf16 (both share one work size). */
RG_INTERNAL_API bool rg_mm_fpanel_shape(const rg_tensor *dst, bool bf16);
RG_INTERNAL_API rg_work rg_mm_fpanel_work(const rg_tensor *dst);
RG_INTERNAL_API void rg_mm_fpanel_prepare(const rg_compute_params *p, const rg_tensor *dst, bool bf16);
RG_INTERNAL_API void rg_mm_fpanel_compute(const rg_compute_params *p, rg_tensor *dst, bool bf16);

#endif
