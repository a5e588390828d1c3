/* The inner loop of the RWKV-7 state update (architecture.md V7.10-V7.11) per instruction-set level,
 * shared by the sequence op and the batched op so both do the same arithmetic (rwkv_wkv7_rows.c). */
#ifndef RWKV_WKV7_ROWS_H
#define RWKV_WKV7_ROWS_H

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

#endif
