/* The inner loops of the WKV state updates per instruction-set level, shared by the sequence ops and the
 * batched ops so both do the same arithmetic (rwkv_wkv_rows.c): RWKV-5/6 (architecture.md V5.4-V5.5,
 * V6.7) and RWKV-7 (V7.10-V7.11). */
#ifndef RWKV_WKV_ROWS_H
#define RWKV_WKV_ROWS_H

#include <stdint.h>

/* For the n_rows value rows of one head and one token, row i at s_in + i*N and s_out + i*N (the same
 * memory, or apart): sa = sum_j s_in[i][j] a[j]; s_out[i][j] = s_in[i][j] w[j] + sa b[j] + v[i] k[j];
 * y[i] = sum_j s_out[i][j] r[j]. r, w, k, a, b are the head's N values of the token; v and y start at
 * the first row's. Each row's result depends only on its own inputs (not on n_rows or the rows around
 * it), so any split of the rows between threads or calls gives the same bits. */
typedef void (*rwkv_wkv7_rows_fn)(int64_t N, int64_t n_rows, const float *s_in, float *s_out, const float *r,
                                  const float *w, const float *k, const float *a, const float *b, const float *v,
                                  float *y);

/* The rows kernel of the engine's current kernel level (rg_simd_level) for head size N. */
rwkv_wkv7_rows_fn rwkv_wkv7_rows_for(int64_t N);

/* RWKV-5/6, one head and one token, value columns j0 <= j < j1 of the head's N x N state (row i = key
 * channel i at s_in + i*N, s_out + i*N: the same memory, or apart). u[i * u_step] and w[i * w_step] are
 * key channel i's bonus and decay (step 0: one value for the head). Writes y[j] = sum_i r[i] (u_i k[i]
 * v[j] + S[i][j]) with the old state, then S[i][j] <- w_i S[i][j] + k[i] v[j]. r, k, v, y point at
 * the head's first channel. Every level does the same operations in the same order (plain multiplies
 * and adds, no fused multiply-add), so the levels agree bit for bit. */
typedef void (*rwkv_wkv5_token_fn)(int64_t N, int64_t j0, int64_t j1, const float *s_in, float *s_out,
                                   const float *r, const float *k, const float *v, const float *u, int64_t u_step,
                                   const float *w, int64_t w_step, float *y);
rwkv_wkv5_token_fn rwkv_wkv5_token_for(void);

#endif
