/* RWKV-specific fused kernels, exposed as engine ops. They exist where a chain of generic ops would
 * cost a barrier and a pass over memory per step for what is one short loop per channel. */
#include "ggml/ops_kernels.h"
#include "ggml/simd/kernels.h"

#include <math.h>

static bool is_f32_contiguous(const rg_tensor *t) { return t->type == RG_TYPE_F32 && rg_tensor_is_contiguous(t); }

bool rg_check_state_out(rg_ctx *ctx, const char *op, rg_tensor *state, rg_tensor *state_out) {
    if (state_out == NULL) return true;
    if (!is_f32_contiguous(state_out) || rg_tensor_n_elements(state_out) != rg_tensor_n_elements(state)) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: state_out ('%s') must be contiguous F32 with the state's %lld elements", op,
                     state_out->name, (long long)rg_tensor_n_elements(state));
        return false;
    }
    const rg_tensor *a = state, *b = state_out;
    size_t a_offs = 0, b_offs = 0;
    for (; a->view_src != NULL; a = a->view_src) a_offs += a->view_offs;
    for (; b->view_src != NULL; b = b->view_src) b_offs += b->view_offs;
    const size_t bytes = rg_tensor_nbytes(state);
    if (a == b && a_offs != b_offs && a_offs < b_offs + bytes && b_offs < a_offs + bytes) {
        rg_set_error(ctx, RG_E_ARG, "%s: state_out ('%s') partly overlaps the state ('%s'): it must be the state itself or apart from it",
                     op, state_out->name, state->name);
        return false;
    }
    return rg_tensor_claim_write(ctx, state_out, op);
}

float *rg_state_out_ptr(const rg_compute_params *p, const rg_tensor *state_out, const float *s_in, int64_t n,
                        float *fallback) {
    if (state_out == NULL) return fallback;
    float *s_out = state_out->data;
    if (s_out != s_in && s_out < s_in + n && s_in < s_out + n) {
        rg_report_compute_error(p, "WKV state_out ('%s') partly overlaps the incoming state: it must be the same buffer or apart from it",
                                state_out->name);
        return NULL;
    }
    return s_out;
}

rg_tensor *rg_rwkv_wkv4(rg_ctx *ctx, rg_tensor *k, rg_tensor *v, rg_tensor *time_first, rg_tensor *time_decay,
                        rg_tensor *state, rg_tensor *state_out) {
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
    if (!rg_check_state_out(ctx, "rwkv_wkv4", state, state_out)) return NULL;
    const int64_t ne[2] = {C, state_out != NULL ? T : T + 3};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV4, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    t->src[0] = k;
    t->src[1] = v;
    t->src[2] = time_first;
    t->src[3] = time_decay;
    t->src[4] = state;
    t->src[5] = state_out;
    return t;
}

/* Channels are independent, so threads split channels and scan all T tokens for their share, a block
 * of RG_WKV4_BLOCK channels at a time: each token's k and v of the block are contiguous, and the four
 * exponentials of each step go through the SIMD exp (rg_kernels.vec_exp) together. */
#define RG_WKV4_BLOCK 64

/* One token's step of (V4.4)-(V4.5) for n <= RG_WKV4_BLOCK channels: o = wkv, and aa, bb, pp updated in
 * place. u, w, kt, vt point at the block's first channel. Both the sequence op and the batched op run it,
 * so their results are bit-identical. */
static inline void wkv4_block_step(int n, const float *u, const float *w, const float *kt, const float *vt,
                                   float *aa, float *bb, float *pp, float *o) {
    float q2[RG_WKV4_BLOCK];
    float e[4 * RG_WKV4_BLOCK]; /* the exponents, then their exponentials: e1, e2 of (V4.4), of (V4.5) */
    for (int j = 0; j < n; j++) {
        /* (V4.4) output with the bonus u for the current token */
        const float ww = u[j] + kt[j], q = pp[j] > ww ? pp[j] : ww;
        e[j] = pp[j] - q;
        e[RG_WKV4_BLOCK + j] = ww - q;
        /* (V4.5) decay the history by w and add this token */
        const float wd = pp[j] + w[j];
        q2[j] = wd > kt[j] ? wd : kt[j];
        e[2 * RG_WKV4_BLOCK + j] = wd - q2[j];
        e[3 * RG_WKV4_BLOCK + j] = kt[j] - q2[j];
    }
    for (int part = 0; part < 4; part++) rg_kernels.vec_exp(e + part * RG_WKV4_BLOCK, e + part * RG_WKV4_BLOCK, n);
    for (int j = 0; j < n; j++) {
        const float e1 = e[j], e2 = e[RG_WKV4_BLOCK + j], e3 = e[2 * RG_WKV4_BLOCK + j], e4 = e[3 * RG_WKV4_BLOCK + j];
        o[j] = (e1 * aa[j] + e2 * vt[j]) / (e1 * bb[j] + e2);
        aa[j] = e3 * aa[j] + e4 * vt[j];
        bb[j] = e3 * bb[j] + e4;
        pp[j] = q2[j];
    }
}

void rg_fwd_rwkv_wkv4(const rg_compute_params *p, rg_tensor *dst) {
    const float *k = dst->src[0]->data, *v = dst->src[1]->data;
    const float *u = dst->src[2]->data, *w = dst->src[3]->data;
    const float *st = dst->src[4]->data;
    float *out = dst->data;
    const int64_t C = dst->ne[0], T = dst->src[5] != NULL ? dst->ne[1] : dst->ne[1] - 3;
    /* each thread reads its channels' aa, bb, pp before it writes them: state_out may be the state */
    float *aa_out = rg_state_out_ptr(p, dst->src[5], st, 3 * C, out + T * C);
    if (aa_out == NULL) return;
    float *bb_out = aa_out + C, *pp_out = bb_out + C;
    int64_t c0, c1;
    rg_split(C, p->ith, p->nth, &c0, &c1);
    for (int64_t b0 = c0; b0 < c1; b0 += RG_WKV4_BLOCK) {
        const int n = c1 - b0 < RG_WKV4_BLOCK ? (int)(c1 - b0) : RG_WKV4_BLOCK;
        float aa[RG_WKV4_BLOCK], bb[RG_WKV4_BLOCK], pp[RG_WKV4_BLOCK];
        for (int j = 0; j < n; j++) {
            aa[j] = st[b0 + j];
            bb[j] = st[C + b0 + j];
            pp[j] = st[2 * C + b0 + j];
        }
        for (int64_t t = 0; t < T; t++)
            wkv4_block_step(n, u + b0, w + b0, k + t * C + b0, v + t * C + b0, aa, bb, pp, out + t * C + b0);
        for (int j = 0; j < n; j++) {
            aa_out[b0 + j] = aa[j];
            bb_out[b0 + j] = bb[j];
            pp_out[b0 + j] = pp[j];
        }
    }
}

/* ---- B sequences of one token each, states in the rows of a bank ---- */

/* The checks the batched ops share (declared in ops_kernels.h): states is an F32 table {S, capacity}
 * whose rows may be strided (a view into a bank of whole model states), slots an I32 vector of B row
 * indices. Claims the bank for writing. */
bool rg_check_state_rows(rg_ctx *ctx, const char *op, rg_tensor *states, rg_tensor *slots, int64_t S, int64_t B) {
    if (states->type != RG_TYPE_F32 || states->nb[0] != sizeof(float) || states->ne[2] * states->ne[3] != 1 ||
        states->ne[0] != S) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: states must be an F32 table {%lld, capacity} with contiguous rows", op,
                     (long long)S);
        return false;
    }
    if (slots->type != RG_TYPE_I32 || !rg_tensor_is_contiguous(slots) || rg_tensor_n_elements(slots) != B) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: slots must be a contiguous I32 vector of B = %lld row indices", op,
                     (long long)B);
        return false;
    }
    return rg_tensor_claim_write(ctx, states, op);
}

/* The state row of sequence b, or NULL (reported) when its slot is outside the table. */
float *rg_state_row(const rg_compute_params *p, const rg_tensor *states, const rg_tensor *slots, int64_t b) {
    const int32_t slot = ((const int32_t *)slots->data)[b];
    if (slot < 0 || slot >= states->ne[1]) {
        rg_report_compute_error(p, "state rows: slot %d of sequence %lld is outside 0..%lld", (int)slot,
                                (long long)b, (long long)(states->ne[1] - 1));
        return NULL;
    }
    return (float *)rg_row_ptr(states, slot, 0, 0);
}

rg_tensor *rg_rwkv_wkv4_batch(rg_ctx *ctx, rg_tensor *k, rg_tensor *v, rg_tensor *time_first, rg_tensor *time_decay,
                              rg_tensor *states, rg_tensor *slots) {
    if (ctx == NULL || ctx->status != RG_OK) return NULL;
    if (!k || !v || !time_first || !time_decay || !states || !slots) {
        rg_set_error(ctx, RG_E_ARG, "rwkv_wkv4_batch: NULL operand");
        return NULL;
    }
    const rg_tensor *dense[4] = {k, v, time_first, time_decay};
    for (int i = 0; i < 4; i++) {
        if (!is_f32_contiguous(dense[i])) {
            rg_set_error(ctx, RG_E_TYPE, "rwkv_wkv4_batch: operand %d ('%s') must be contiguous F32", i,
                         dense[i]->name);
            return NULL;
        }
    }
    const int64_t C = k->ne[0], B = k->ne[1];
    if (v->ne[0] != C || v->ne[1] != B || k->ne[2] * k->ne[3] != 1 || v->ne[2] * v->ne[3] != 1 ||
        rg_tensor_n_elements(time_first) != C || rg_tensor_n_elements(time_decay) != C) {
        rg_set_error(ctx, RG_E_SHAPE, "rwkv_wkv4_batch: need k, v {C, B}, time_first, time_decay {C} (C = %lld)",
                     (long long)C);
        return NULL;
    }
    if (!rg_check_state_rows(ctx, "rwkv_wkv4_batch", states, slots, 3 * C, B)) return NULL;
    const int64_t ne[2] = {C, B};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV4_BATCH, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    t->src[0] = k;
    t->src[1] = v;
    t->src[2] = time_first;
    t->src[3] = time_decay;
    t->src[4] = states;
    t->src[5] = slots;
    return t;
}

/* Threads split the (sequence, block of RG_WKV4_BLOCK channels) pairs; each block is the single-sequence
 * op's arithmetic for one token, reading and writing the sequence's own aa, bb, pp row in place. */
void rg_fwd_rwkv_wkv4_batch(const rg_compute_params *p, rg_tensor *dst) {
    const float *k = dst->src[0]->data, *v = dst->src[1]->data;
    const float *u = dst->src[2]->data, *w = dst->src[3]->data;
    const int64_t C = dst->ne[0], B = dst->ne[1], n_blocks = (C + RG_WKV4_BLOCK - 1) / RG_WKV4_BLOCK;
    int64_t i0, i1;
    rg_split(B * n_blocks, p->ith, p->nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        const int64_t b = item / n_blocks, b0 = item % n_blocks * RG_WKV4_BLOCK;
        const int n = C - b0 < RG_WKV4_BLOCK ? (int)(C - b0) : RG_WKV4_BLOCK;
        float *o = (float *)dst->data + b * C + b0;
        float *row = rg_state_row(p, dst->src[4], dst->src[5], b);
        if (row == NULL) {
            memset(o, 0, (size_t)n * sizeof(float));
            continue;
        }
        wkv4_block_step(n, u + b0, w + b0, k + b * C + b0, v + b * C + b0, row + b0, row + C + b0,
                        row + 2 * C + b0, o);
    }
}
