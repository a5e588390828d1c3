/* The type table: one row per storage type. Ops never switch on a type; they ask the table how to
 * turn a row into floats (to_f32), back (from_f32) and how big blocks are, so a new block type is a
 * new row here plus its codec, without touching the ops. */
#include "internal.h"
#include "quant/quant.h"
#include "simd/kernels.h"

static void f32_to_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }
static void f32_from_f32(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }
static void f16_to_f32(const void *src, float *dst, int64_t n) { rg_kernels.f16_to_f32(src, dst, n); }
static void f16_from_f32(const float *src, void *dst, int64_t n) { rg_kernels.f32_to_f16(src, dst, n); }
static void i32_to_f32(const void *src, float *dst, int64_t n) {
    const int32_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}

/* The quantized types' dot products and the activation quantizer go through the kernel table, so they
 * follow the SIMD level selected at run time. */
static void act_from_f32(const float *src, void *dst, int64_t n) { rg_kernels.quantize_act(src, dst, n); }
#define RG_VEC_DOT_WRAPPERS(t)                                                                                    \
    static float vd_##t(int64_t n, const void *w, const void *x) { return rg_kernels.vec_dot_##t(n, w, x); }      \
    static void vd4_##t(int64_t n, const void *w, const void *x, size_t ldx, int nx, float *out) {              \
        rg_kernels.vec_dot_##t##_xn(n, w, x, ldx, nx, out);                                                      \
    }
RG_VEC_DOT_WRAPPERS(q4_0)
RG_VEC_DOT_WRAPPERS(q4_1)
RG_VEC_DOT_WRAPPERS(q5_0)
RG_VEC_DOT_WRAPPERS(q5_1)
RG_VEC_DOT_WRAPPERS(q8_0)
RG_VEC_DOT_WRAPPERS(q4_k)
RG_VEC_DOT_WRAPPERS(q5_k)
RG_VEC_DOT_WRAPPERS(q6_k)
#undef RG_VEC_DOT_WRAPPERS

#define Q8A RG_TYPE_Q8_ACT
/* name, block_size, block_bytes, quantized, to_f32, from_f32, vec_dot_type, vec_dot, vec_dot_xn */
static const rg_type_traits g_traits[RG_MAX_TYPE] = {
    [RG_TYPE_F32] = {"F32", 1, 4, false, f32_to_f32, f32_from_f32, RG_TYPE_F32, NULL, NULL},
    [RG_TYPE_F16] = {"F16", 1, 2, false, f16_to_f32, f16_from_f32, RG_TYPE_F16, NULL, NULL},
    [RG_TYPE_Q4_0] = {"Q4_0", 32, 18, true, rg_dequantize_q4_0, rg_quantize_q4_0_ref, Q8A, vd_q4_0, vd4_q4_0},
    [RG_TYPE_Q4_1] = {"Q4_1", 32, 20, true, rg_dequantize_q4_1, rg_quantize_q4_1_ref, Q8A, vd_q4_1, vd4_q4_1},
    [RG_TYPE_Q5_0] = {"Q5_0", 32, 22, true, rg_dequantize_q5_0, rg_quantize_q5_0_ref, Q8A, vd_q5_0, vd4_q5_0},
    [RG_TYPE_Q5_1] = {"Q5_1", 32, 24, true, rg_dequantize_q5_1, rg_quantize_q5_1_ref, Q8A, vd_q5_1, vd4_q5_1},
    [RG_TYPE_Q8_0] = {"Q8_0", 32, 34, true, rg_dequantize_q8_0, rg_quantize_q8_0_ref, Q8A, vd_q8_0, vd4_q8_0},
    /* K-quants (formats.md §7.4): read from GGUF files, never written (no quantizer) */
    [RG_TYPE_Q4_K] = {"Q4_K", 256, 144, true, rg_dequantize_q4_k, NULL, Q8A, vd_q4_k, vd4_q4_k},
    [RG_TYPE_Q5_K] = {"Q5_K", 256, 176, true, rg_dequantize_q5_k, NULL, Q8A, vd_q5_k, vd4_q5_k},
    [RG_TYPE_Q6_K] = {"Q6_K", 256, 210, true, rg_dequantize_q6_k, NULL, Q8A, vd_q6_k, vd4_q6_k},
    [RG_TYPE_I32] = {"I32", 1, 4, false, i32_to_f32, NULL, RG_TYPE_I32, NULL, NULL},
    /* activation rows (quant/quant.h): a row-level layout, so only whole rows convert */
    [RG_TYPE_Q8_ACT] = {"Q8_ACT", 32, RG_Q8_ACT_BYTES, true, rg_dequantize_act, act_from_f32, Q8A, NULL, NULL},
};
#undef Q8A

int rg_type_is_valid(int type) { return type >= 0 && type < RG_MAX_TYPE && g_traits[type].name != NULL; }

const rg_type_traits *rg_traits(int type) { return &g_traits[type]; }

const char *rg_type_name(int type) { return rg_type_is_valid(type) ? g_traits[type].name : "invalid"; }
int64_t rg_type_block_size(int type) { return rg_type_is_valid(type) ? g_traits[type].block_size : 0; }
size_t rg_type_block_bytes(int type) { return rg_type_is_valid(type) ? g_traits[type].block_bytes : 0; }
int rg_type_is_quantized(int type) { return rg_type_is_valid(type) && g_traits[type].quantized; }

size_t rg_type_row_bytes(int type, int64_t n) {
    if (!rg_type_is_valid(type) || n < 0 || n % g_traits[type].block_size != 0) return 0;
    return (size_t)(n / g_traits[type].block_size) * g_traits[type].block_bytes;
}

static rg_status check_conversion(int type, int64_t n, bool to_f32) {
    rg_kernels_init();
    if (!rg_type_is_valid(type)) return RG_E_TYPE;
    if (n < 0 || n % g_traits[type].block_size != 0) return RG_E_SHAPE;
    if ((to_f32 ? (void *)g_traits[type].to_f32 : (void *)g_traits[type].from_f32) == NULL) return RG_E_UNSUPPORTED;
    return RG_OK;
}

rg_status rg_type_from_f32(int type, const float *src, void *dst, int64_t n) {
    const rg_status st = check_conversion(type, n, false);
    if (st != RG_OK) return st;
    if (n > 0 && (src == NULL || dst == NULL)) return RG_E_ARG;
    g_traits[type].from_f32(src, dst, n);
    return RG_OK;
}

rg_status rg_type_to_f32(int type, const void *src, float *dst, int64_t n) {
    const rg_status st = check_conversion(type, n, true);
    if (st != RG_OK) return st;
    if (n > 0 && (src == NULL || dst == NULL)) return RG_E_ARG;
    g_traits[type].to_f32(src, dst, n);
    return RG_OK;
}
