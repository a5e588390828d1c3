/* RWKV-specific fused kernels, exposed as engine ops. They exist where a chain of generic ops would
 * cost a barrier and a pass over memory per step for what is one short loop per channel. */
#include "ggml/ops_kernels.h"

#include <math.h>

static bool is_f32_contiguous(const rg_tensor *t) { return t->type == RG_TYPE_F32 && rg_tensor_is_contiguous(t); }

rg_tensor *rg_rwkv_wkv4(rg_ctx *ctx, rg_tensor *k, rg_tensor *v, rg_tensor *time_first, rg_tensor *time_decay,
                        rg_tensor *state) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    if (!k || !v || !time_first || !time_decay || !state) {
        rg_set_error(ctx, RG_E_ARG, "rwkv_wkv4: NULL operand");
        return NULL;
    }
    const rg_tensor *all[5] = {k, v, time_first, time_decay, state};
    for (int i = 0; i < 5; i++) {
        if (!is_f32_contiguous(all[i])) {
            rg_set_error(ctx, RG_E_TYPE, "rwkv_wkv4: operand %d ('%s') must be contiguous F32", i, all[i]->name);
            return NULL;
        }
    }
    const int64_t C = k->ne[0], T = k->ne[1];
    if (v->ne[0] != C || v->ne[1] != T || k->ne[2] * k->ne[3] != 1 || v->ne[2] * v->ne[3] != 1 ||
        rg_tensor_n_elements(time_first) != C || rg_tensor_n_elements(time_decay) != C || state->ne[0] != C ||
        rg_tensor_n_elements(state) != 3 * C) {
        rg_set_error(ctx, RG_E_SHAPE, "rwkv_wkv4: need k, v {C, T}, time_first, time_decay {C}, state {C, 3} (C = %lld)",
                     (long long)C);
        return NULL;
    }
    const int64_t ne[2] = {C, T + 3};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV4, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    t->src[0] = k;
    t->src[1] = v;
    t->src[2] = time_first;
    t->src[3] = time_decay;
    t->src[4] = state;
    return t;
}

/* Channels are independent, so threads split channels and scan all T tokens for their share. */
void rg_fwd_rwkv_wkv4(const rg_compute_params *p, rg_tensor *dst) {
    const float *k = dst->src[0]->data, *v = dst->src[1]->data;
    const float *u = dst->src[2]->data, *w = dst->src[3]->data;
    const float *st = dst->src[4]->data;
    float *out = dst->data;
    const int64_t C = dst->ne[0], T = dst->ne[1] - 3;
    float *aa_out = out + T * C, *bb_out = aa_out + C, *pp_out = bb_out + C;
    int64_t c0, c1;
    rg_split(C, p->ith, p->nth, &c0, &c1);
    for (int64_t c = c0; c < c1; c++) {
        float aa = st[c], bb = st[C + c], pp = st[2 * C + c];
        for (int64_t t = 0; t < T; t++) {
            const float kt = k[t * C + c], vt = v[t * C + c];
            /* (V4.4) output with the bonus u for the current token */
            float ww = u[c] + kt;
            float q = pp > ww ? pp : ww;
            float e1 = expf(pp - q), e2 = expf(ww - q);
            out[t * C + c] = (e1 * aa + e2 * vt) / (e1 * bb + e2);
            /* (V4.5) decay the history by w and add this token */
            ww = pp + w[c];
            q = ww > kt ? ww : kt;
            e1 = expf(ww - q);
            e2 = expf(kt - q);
            aa = e1 * aa + e2 * vt;
            bb = e1 * bb + e2;
            pp = q;
        }
        aa_out[c] = aa;
        bb_out[c] = bb;
        pp_out[c] = pp;
    }
}
