/* The example callbacks declared in rwkv_ggml_testing.h. */
#include "../include/rwkv_ggml_testing.h"

#include <math.h>

void rg_test_map_affine(int64_t n, float *dst, const float *src, void *userdata) {
    const float *ab = userdata;
    for (int64_t i = 0; i < n; i++) dst[i] = ab[0] * src[i] + ab[1];
}

void rg_test_map_hypot(int64_t n, float *dst, const float *a, const float *b, void *userdata) {
    (void)userdata;
    for (int64_t i = 0; i < n; i++) dst[i] = sqrtf(a[i] * a[i] + b[i] * b[i]);
}
