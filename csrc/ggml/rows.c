/* Row access shared by the kernels: any F32/F16 layout (strided views included) or a block-quantized
 * row, presented to a kernel as a contiguous float row. */
#include "ops_kernels.h"
#include "simd/kernels.h"

float rg_get_f32_1d(const rg_tensor *t, const void *row, int64_t i0) {
    const uint8_t *p = (const uint8_t *)row + i0 * t->nb[0];
    if (t->type == RG_TYPE_F32) return rg_load_f32(p);
    return rg_f16_to_f32_scalar(rg_load_u16(p));
}

const float *rg_load_row_f32(const rg_tensor *t, int64_t i1, int64_t i2, int64_t i3, float *buf) {
    const void *row = rg_row_ptr(t, i1, i2, i3);
    const rg_type_traits *tr = rg_traits(t->type);
    if (t->nb[0] == tr->block_bytes) {
        /* F32 rows are used in place unless they sit at an unaligned address (external data); the copy
         * (to_f32 is a memcpy for F32) keeps the kernels' float loads aligned. */
        if (t->type == RG_TYPE_F32 && (uintptr_t)row % sizeof(float) == 0) return row;
        tr->to_f32(row, buf, t->ne[0]);
        return buf;
    }
    for (int64_t i = 0; i < t->ne[0]; i++) buf[i] = rg_get_f32_1d(t, row, i);
    return buf;
}

rg_work rg_work_rows2(const rg_tensor *dst, int nth) {
    (void)nth;
    int64_t n = dst->ne[0];
    for (int i = 0; i < RG_MAX_SRC; i++)
        if (dst->src[i] != NULL && dst->src[i]->ne[0] > n) n = dst->src[i]->ne[0];
    return (rg_work){0, 2 * (size_t)n * sizeof(float)};
}
