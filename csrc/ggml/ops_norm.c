/* Normalisations and row reductions. Statistics accumulate in double: rows are short (C <= 8192)
 * and this keeps layer norm exact to f32 rounding whatever the row's offset. */
#include "ops_kernels.h"
#include "simd/kernels.h"

#include <math.h>

/* x[0..n) normalised with its own mean and biased variance, written to y. */
static void normalize(int64_t n, float *restrict y, const float *restrict x, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    const double mean = sum / (double)n;
    double var = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = x[i] - mean;
        var += d * d;
    }
    var /= (double)n;
    /* The subtraction stays in double too: a mean rounded to f32 would shift every output of a row with
     * a large offset by up to ulp(mean)/2 / std. */
    const double inv = 1.0 / sqrt(var + (double)eps);
    for (int64_t i = 0; i < n; i++) y[i] = (float)((x[i] - mean) * inv);
}

void rg_fwd_norm(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    const float *w = dst->src[1] ? dst->src[1]->data : NULL;
    const float *b = dst->src[2] ? dst->src[2]->data : NULL;
    const int64_t n = dst->ne[0], groups = dst->iparams[0], gs = n / groups;
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        const float *x = rg_load_row_f32(src, i1, i2, i3, buf);
        float *y = rg_row_ptr(dst, i1, i2, i3);
        for (int64_t g = 0; g < groups; g++) normalize(gs, y + g * gs, x + g * gs, dst->fparams[0]);
        /* w and b may be external vectors at any byte offset: read them alignment-safe */
        if (w && b) {
            for (int64_t i = 0; i < n; i++) y[i] = y[i] * rg_load_f32(w + i) + rg_load_f32(b + i);
        } else if (w) {
            for (int64_t i = 0; i < n; i++) y[i] *= rg_load_f32(w + i);
        } else if (b) {
            for (int64_t i = 0; i < n; i++) y[i] += rg_load_f32(b + i);
        }
    }
}

void rg_fwd_sum_rows(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        const float *x = rg_load_row_f32(src, i1, i2, i3, buf);
        double s = 0.0;
        for (int64_t i = 0; i < src->ne[0]; i++) s += x[i];
        *(float *)rg_row_ptr(dst, i1, i2, i3) = (float)s;
    }
}

/* l2_norm: each group of a row divided by max(its Euclidean length, eps); the sum of squares
 * accumulates in double (groups are short). */
void rg_fwd_l2_norm(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    const int64_t n = dst->ne[0], gs = n / dst->iparams[0];
    const double eps = dst->fparams[0];
    float *buf = rg_thread_scratch(p);
    rg_rows rows = rg_thread_rows(p, dst);
    int64_t i1, i2, i3;
    while (rg_next_row(&rows, dst, &i1, &i2, &i3)) {
        const float *x = rg_load_row_f32(src, i1, i2, i3, buf);
        float *y = rg_row_ptr(dst, i1, i2, i3);
        for (int64_t g0 = 0; g0 < n; g0 += gs) {
            double ss = 0.0;
            for (int64_t i = g0; i < g0 + gs; i++) ss += (double)x[i] * x[i];
            double len = sqrt(ss);
            if (len < eps) len = eps;
            /* A zero group with eps = 0 stays 0/0 = NaN, as in PyTorch. */
            const double inv = 1.0 / len;
            for (int64_t i = g0; i < g0 + gs; i++) y[i] = (float)(x[i] * inv);
        }
    }
}
