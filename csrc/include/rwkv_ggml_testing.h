/* Compiled callbacks for the map ops, used by tests and examples (a C callback runs without the GIL,
 * unlike a Python one). */
#ifndef RWKV_GGML_TESTING_H
#define RWKV_GGML_TESTING_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst = userdata[0] * src + userdata[1], userdata pointing at two floats. */
void rg_test_map_affine(int64_t n, float *dst, const float *src, void *userdata);
/* dst = sqrt(a^2 + b^2); userdata unused. */
void rg_test_map_hypot(int64_t n, float *dst, const float *a, const float *b, void *userdata);

#ifdef __cplusplus
}
#endif

#endif
