/* l2_norm: each row split into n_groups equal groups, each group divided by its Euclidean length
 * (at least eps): y = x / max(||x_group||_2, eps). PyTorch's F.normalize(x, p=2, eps) per group; RWKV-7
 * uses it per head for its in-context learning key (architecture.md V7.7, eps = 1e-12).
 * The sum of squares accumulates in double (groups are short), rows are split over the threads. */
#include "internal.h"
#include "ops_kernels.h"

#include <inttypes.h>
#include <math.h>

rg_tensor *rg_l2_norm(rg_ctx *ctx, rg_tensor *x, int64_t n_groups, float eps) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    if (x == NULL) {
        rg_set_error(ctx, RG_E_ARG, "l2_norm: NULL operand");
        return NULL;
    }
    if (!rg_is_float_type(x->type)) {
        rg_set_error(ctx, RG_E_TYPE, "l2_norm: input '%s' is %s; it must be F32 or F16", x->name, rg_type_name(x->type));
        return NULL;
    }
    if (n_groups < 1 || x->ne[0] % n_groups != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "l2_norm: row length %" PRId64 " cannot be split into %" PRId64 " groups",
                     x->ne[0], n_groups);
        return NULL;
    }
    if (!(eps >= 0.0f) || isinf(eps)) {
        rg_set_error(ctx, RG_E_ARG, "l2_norm: eps must be finite and >= 0");
        return NULL;
    }
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_L2_NORM, RG_TYPE_F32, x->n_dims, x->ne);
    if (t == NULL) return NULL;
    t->src[0] = x;
    t->fparams[0] = eps;
    t->iparams[0] = n_groups;
    return t;
}

void rg_fwd_l2_norm(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *src = dst->src[0];
    const int64_t n = dst->ne[0], gs = n / dst->iparams[0];
    const double eps = dst->fparams[0];
    float *buf = rg_thread_scratch(p);
    int64_t r0, r1;
    rg_split(rg_nrows(dst), p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1, i2, i3;
        rg_row_coords(dst, r, &i1, &i2, &i3);
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
