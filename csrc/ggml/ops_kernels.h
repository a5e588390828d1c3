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
RG_INTERNAL_API void rg_fwd_set_rows(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv4_batch(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv5_batch(const rg_compute_params *p, rg_tensor *dst);
RG_INTERNAL_API void rg_fwd_rwkv_wkv7_batch(const rg_compute_params *p, rg_tensor *dst);

/* The batched WKV ops' state table: checks an F32 {S, capacity} table with contiguous (possibly strided)
 * rows and an I32 vector of B slots, and claims the table for writing (rwkv_wkv4.c). */
RG_INTERNAL_API bool rg_check_state_rows(rg_ctx *ctx, const char *op, rg_tensor *states, rg_tensor *slots, int64_t S,
                                         int64_t B);
/* Row slots[b] of the table, or NULL after reporting a compute error when the slot is out of range. */
RG_INTERNAL_API float *rg_state_row(const rg_compute_params *p, const rg_tensor *states, const rg_tensor *slots,
                                    int64_t b);

/* The single-sequence WKV ops' optional state_out: NULL, or an F32 contiguous tensor of as many elements
 * as state that is the state itself or does not overlap it; claimed for writing (rwkv_wkv4.c). */
RG_INTERNAL_API bool rg_check_state_out(rg_ctx *ctx, const char *op, rg_tensor *state, rg_tensor *state_out);
/* At compute time (caller buffers are repointed between computes): where the op's new state of n floats
 * goes. state_out's memory if the op has one, else fallback; NULL after reporting a compute error when
 * state_out partly overlaps the incoming state s_in, which the in-place scan cannot handle. */
RG_INTERNAL_API float *rg_state_out_ptr(const rg_compute_params *p, const rg_tensor *state_out, const float *s_in,
                                        int64_t n, float *fallback);

/* Scratch for loading two rows (of the longest row among dst and its sources) as floats. */
RG_INTERNAL_API rg_work rg_work_rows2(const rg_tensor *dst, int nth);
RG_INTERNAL_API rg_work rg_work_mul_mat(const rg_tensor *dst, int nth);
RG_INTERNAL_API bool rg_mul_mat_needs_prepare(const rg_tensor *dst);
/* mul_mat's iparams[0]: bf16 operands allowed for mat-mat (rg_mul_mat_bf16) */
#define RG_MUL_MAT_BF16 1

#endif
