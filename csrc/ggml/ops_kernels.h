/* Forward functions and work-size functions of the ops, registered in the op table (ops.c). */
#ifndef RG_OPS_KERNELS_H
#define RG_OPS_KERNELS_H

#include "internal.h"

RG_INTERNAL_API void rg_fwd_unary(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_binary(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_map_unary(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_map_binary(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_norm(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_l2_norm(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_sum_rows(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_cpy(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_cont(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_concat(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_get_rows(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_mul_mat(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv4(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv5(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv7(const rg_compute_params *p, rg_tensor *dst);

/* Scratch for loading two rows (of the longest row among dst and its sources) as floats. */
RG_INTERNAL_API rg_work rg_work_rows2(const rg_tensor *dst, int nth);
RG_INTERNAL_API rg_work rg_work_mul_mat(const rg_tensor *dst, int nth);
RG_INTERNAL_API bool rg_mul_mat_needs_prepare(const rg_tensor *dst);
/* mul_mat's iparams[0]: bf16 operands allowed for mat-mat (rg_mul_mat_bf16) */
#define RG_MUL_MAT_BF16 1

#endif
