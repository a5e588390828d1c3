/* Data movement: copies with type conversion, contiguous copies, concatenation, row gathers. */
#include "ops_kernels.h"

#include <inttypes.h>

/* Writes n floats into a row of dst (any float layout, or a contiguous quantized row). */
static void store_row(const rg_tensor *dst, void *row, const float *x, int64_t n) {
    const rg_type_traits *tr = rg_traits(dst->type);
    if (dst->nb[0] == tr->block_bytes) {
        tr->from_f32(x, row, n);
        return;
    }
    uint8_t *p = row;
    if (dst->type == RG_TYPE_F32) {
        for (int64_t i = 0; i < n; i++) *(float *)(p + i * dst->nb[0]) = x[i];
    } else {
        for (int64_t i = 0; i < n; i++) tr->from_f32(&x[i], p + i * dst->nb[0], 1);
    }
}

static void copy_rows(const rg_compute_params *p, const rg_tensor *src, const rg_tensor *dst) {
    float *buf = rg_thread_scratch(p);
    bool same_shape = true;
    for (int i = 0; i < RG_MAX_DIMS; i++) same_shape = same_shape && src->ne[i] == dst->ne[i];
    if (same_shape) {
        rg_rows rows = rg_thread_rows(p, dst);
        int64_t i1, i2, i3;
        while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
            store_row(dst, rg_row_ptr(dst, i1, i2, i3), rg_load_row_f32(src, i1, i2, i3, buf), dst->ne[0]);
        }
        return;
    }
    /* Different shapes, both contiguous (checked at build): copy the flat element sequence in chunks
     * of the destination's row length, which also keeps quantized blocks whole. */
    const int64_t n = rg_tensor_n_elements(dst), chunk = dst->ne[0];
    int64_t r0, r1;
    rg_split(n / chunk, p->ith, p->nth, &r0, &r1);
    const rg_type_traits *ts = rg_traits(src->type);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = (const uint8_t *)src->data + (size_t)(r * chunk) * ts->block_bytes;
        const float *x = (const float *)s;
        if (src->type != RG_TYPE_F32) {
            ts->to_f32(s, buf, chunk);
            x = buf;
        }
        store_row(dst, (uint8_t *)dst->data + rg_type_row_bytes(dst->type, chunk) * (size_t)r, x, chunk);
    }
}

void rg_fwd_cpy(const rg_compute_params *p, rg_tensor *dst) { copy_rows(p, dst->src[0], dst->src[1]); }
void rg_fwd_cont(const rg_compute_params *p, rg_tensor *dst) { copy_rows(p, dst->src[0], dst); }

void rg_fwd_concat(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const int dim = (int)dst->iparams[0];
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i[4] = {0};
    while (rg_next_row(&rows, dst, &i[1], &i[2], &i[3])) {
        float *y = rg_row_ptr(dst, i[1], i[2], i[3]);
        if (dim == 0) {
            memcpy(y, rg_load_row_f32(a, i[1], i[2], i[3], buf), (size_t)a->ne[0] * sizeof(float));
            memcpy(y + a->ne[0], rg_load_row_f32(b, i[1], i[2], i[3], buf), (size_t)b->ne[0] * sizeof(float));
        } else if (i[dim] < a->ne[dim]) {
            memcpy(y, rg_load_row_f32(a, i[1], i[2], i[3], buf), (size_t)a->ne[0] * sizeof(float));
        } else {
            i[dim] -= a->ne[dim];
            memcpy(y, rg_load_row_f32(b, i[1], i[2], i[3], buf), (size_t)b->ne[0] * sizeof(float));
        }
    }
}

void rg_fwd_get_rows(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *table = dst->src[0], *ids = dst->src[1];
    const rg_type_traits *tr = rg_traits(table->type);
    int64_t r0, r1;
    rg_split(dst->ne[1], p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int32_t id = *(const int32_t *)((const uint8_t *)ids->data + r * ids->nb[0]);
        float *y = rg_row_ptr(dst, r, 0, 0);
        if (id < 0 || id >= table->ne[1]) {
            rg_report_compute_error(p, "get_rows: id %" PRId32 " at position %" PRId64 " is outside 0..%" PRId64, id, r,
                                    table->ne[1] - 1);
            memset(y, 0, (size_t)dst->ne[0] * sizeof(float));
            continue;
        }
        const void *row = rg_row_ptr(table, id, 0, 0);
        if (table->nb[0] == tr->block_bytes) {
            tr->to_f32(row, y, table->ne[0]);
        } else {
            for (int64_t i = 0; i < table->ne[0]; i++) y[i] = rg_get_f32_1d(table, row, i);
        }
    }
}

/* Rows split across threads; an id outside dst is reported and its row skipped. */
void rg_fwd_set_rows(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0], *ids = dst->src[2];
    int64_t r0, r1;
    rg_split(src->ne[1], p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int32_t id = ((const int32_t *)ids->data)[r];
        if (id < 0 || id >= dst->ne[1]) {
            rg_report_compute_error(p, "set_rows: id %" PRId32 " at position %" PRId64 " is outside 0..%" PRId64, id, r,
                                    dst->ne[1] - 1);
            continue;
        }
        memcpy(rg_row_ptr(dst, id, 0, 0), rg_row_ptr(src, r, 0, 0), (size_t)src->ne[0] * sizeof(float));
    }
}
