/* RWKV v5/v6 and v7 recurrences as fused engine ops: the multi-head WKV with a matrix-valued state
 * (architecture.md V5.4-V5.5, V6.7) and v7's generalised delta rule (V7.10-V7.11).
 *
 * Both ops scan T tokens inside one node (architecture.md §8 step 3), so a prompt costs one barrier
 * per layer for its recurrence, and per-token mode (T = 1) is the same code with T = 1.
 *
 * Result layout of both ops (as rwkv.cpp's): ne {C, T + N}, i.e. the T*C outputs (column t = token t,
 * element h*N + j of a column = head h, channel j) followed by the H*N*N floats of the new state,
 * S[h][i][j] at T*C + h*N*N + i*N + j — the same layout as the state slice of architecture.md §7,
 * so the tail can be copied into the flat state as is.
 *
 * Threads split independent state lanes (v5: value columns j of each head; v7: value rows i), and each
 * lane is scanned over all T tokens by one thread with a fixed order of operations, so results are
 * bit-identical for any thread count and between one T-token call and T one-token calls. */
#include "ggml/ops_kernels.h"
#include "rwkv_wkv_rows.h"

#include <inttypes.h>

static bool f32_contiguous(const rg_tensor *t) { return t->type == RG_TYPE_F32 && rg_tensor_is_contiguous(t); }

static bool check_operands(rg_ctx *ctx, const char *op, rg_tensor *const *ops, const char *const *names, int n) {
    if (ctx == NULL || ctx->status != RG_OK) return false;
    for (int i = 0; i < n; i++) {
        if (ops[i] == NULL) {
            rg_set_error(ctx, RG_E_ARG, "%s: NULL operand '%s'", op, names[i]);
            return false;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!f32_contiguous(ops[i])) {
            rg_set_error(ctx, RG_E_TYPE, "%s: operand '%s' ('%s') must be contiguous F32, got %s%s", op, names[i],
                         ops[i]->name, rg_type_name(ops[i]->type),
                         rg_tensor_is_contiguous(ops[i]) ? "" : " (not contiguous)");
            return false;
        }
    }
    return true;
}

/* The head size N from a state of H*N*N = C*N floats; 0 (with an error set) if it does not fit. */
static int64_t head_size_of_state(rg_ctx *ctx, const char *op, const rg_tensor *state, int64_t C) {
    const int64_t n = rg_tensor_n_elements(state);
    if (C < 1 || n % C != 0 || n / C < 1 || C % (n / C) != 0) {
        rg_set_error(ctx, RG_E_SHAPE,
                     "%s: state has %" PRId64 " floats; it must hold H*N*N = C*N floats with N dividing C = %" PRId64,
                     op, n, C);
        return 0;
    }
    return n / C;
}

static bool is_ct(const rg_tensor *t, int64_t C, int64_t T) {
    return t->ne[0] == C && t->ne[1] == T && t->ne[2] == 1 && t->ne[3] == 1;
}

/* ---- v5 / v6 ---- */

enum { PER_HEAD = 0, PER_CHANNEL = 1, PER_TOKEN = 2 };

rg_tensor *rg_rwkv_wkv5(rg_ctx *ctx, rg_tensor *r, rg_tensor *k, rg_tensor *v, rg_tensor *w, rg_tensor *u,
                        rg_tensor *state, rg_tensor *state_out) {
    static const char *const names[6] = {"r", "k", "v", "w", "u", "state"};
    rg_tensor *const all[6] = {r, k, v, w, u, state};
    if (!check_operands(ctx, "rwkv_wkv5", all, names, 6)) return NULL;
    const int64_t C = r->ne[0], T = r->ne[1];
    if (!is_ct(r, C, T) || !is_ct(k, C, T) || !is_ct(v, C, T)) {
        rg_set_error(ctx, RG_E_SHAPE, "rwkv_wkv5: r, k, v must all be {C, T} (r is {%" PRId64 ", %" PRId64 "})", C, T);
        return NULL;
    }
    const int64_t N = head_size_of_state(ctx, "rwkv_wkv5", state, C);
    if (N == 0) return NULL;
    const int64_t H = C / N, nw = rg_tensor_n_elements(w), nu = rg_tensor_n_elements(u);
    int w_mode, u_mode;
    if (nw == C * T && T > 1) {
        w_mode = PER_TOKEN;
    } else if (nw == C) {
        w_mode = PER_CHANNEL;
    } else if (nw == H) {
        w_mode = PER_HEAD;
    } else {
        rg_set_error(ctx, RG_E_SHAPE,
                     "rwkv_wkv5: decay w has %" PRId64 " elements; need H = %" PRId64 ", C = %" PRId64
                     " or C*T = %" PRId64,
                     nw, H, C, C * T);
        return NULL;
    }
    if (nu == C) {
        u_mode = PER_CHANNEL;
    } else if (nu == H) {
        u_mode = PER_HEAD;
    } else {
        rg_set_error(ctx, RG_E_SHAPE, "rwkv_wkv5: bonus u has %" PRId64 " elements; need H = %" PRId64 " or C = %" PRId64,
                     nu, H, C);
        return NULL;
    }
    if (!rg_check_state_out(ctx, "rwkv_wkv5", state, state_out)) return NULL;
    const int64_t ne[2] = {C, state_out != NULL ? T : T + N};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV5, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    for (int i = 0; i < 6; i++) t->src[i] = all[i];
    t->src[6] = state_out;
    t->iparams[0] = N;
    t->iparams[1] = w_mode;
    t->iparams[2] = u_mode;
    return t;
}

/* Threads own contiguous ranges of the H*N value columns (h, j); column j of head h depends only on
 * itself over time: y[h,j] = sum_i r[h,i] (u[h,i] k[h,i] v[h,j] + S[h,i,j]) with the OLD state, then
 * S[h,i,j] <- w[h,i] S[h,i,j] + k[h,i] v[h,j]. The sum over i runs in ascending order for every j. */
void rg_fwd_rwkv_wkv5(const rg_compute_params *p, rg_tensor *dst) {
    const float *r = dst->src[0]->data, *k = dst->src[1]->data, *v = dst->src[2]->data;
    const float *w = dst->src[3]->data, *u = dst->src[4]->data, *s_in = dst->src[5]->data;
    const int64_t N = dst->iparams[0], C = dst->ne[0], T = dst->src[6] != NULL ? dst->ne[1] : dst->ne[1] - N;
    const int w_mode = (int)dst->iparams[1], u_mode = (int)dst->iparams[2];
    float *y = dst->data, *s_out = rg_state_out_ptr(p, dst->src[6], s_in, C * N, y + T * C);
    if (s_out == NULL) return;
    int64_t c0, c1;
    rg_split(C, p->ith, p->nth, &c0, &c1);
    const rwkv_wkv5_token_fn token = rwkv_wkv5_token_for();
    /* Head by head, so one head's N*N state stays in L1 while its T tokens are scanned. */
    for (int64_t h = c0 / N; h * N < c1; h++) {
        const int64_t j0 = (c0 > h * N ? c0 : h * N) - h * N;
        const int64_t j1 = (c1 < (h + 1) * N ? c1 : (h + 1) * N) - h * N;
        const int64_t hs = h * N * N, hc = h * N;
        const float *uh = u_mode == PER_HEAD ? u + h : u + hc;
        const int64_t u_step = u_mode == PER_HEAD ? 0 : 1, w_step = w_mode == PER_HEAD ? 0 : 1;
        for (int64_t t = 0; t < T; t++) {
            /* the first token reads the incoming state, the others the columns this thread just wrote */
            const float *src = t == 0 ? s_in : s_out;
            const float *wh = w_mode == PER_HEAD ? w + h : w_mode == PER_CHANNEL ? w + hc : w + t * C + hc;
            const int64_t o = t * C + hc;
            token(N, j0, j1, src + hs, s_out + hs, r + o, k + o, v + o, uh, u_step, wh, w_step, y + o);
        }
    }
}

/* ---- v7 ---- */

rg_tensor *rg_rwkv_wkv7(rg_ctx *ctx, rg_tensor *r, rg_tensor *w, rg_tensor *k, rg_tensor *v, rg_tensor *a,
                        rg_tensor *b, rg_tensor *state, rg_tensor *state_out) {
    static const char *const names[7] = {"r", "w", "k", "v", "a", "b", "state"};
    rg_tensor *const all[7] = {r, w, k, v, a, b, state};
    if (!check_operands(ctx, "rwkv_wkv7", all, names, 7)) return NULL;
    const int64_t C = r->ne[0], T = r->ne[1];
    for (int i = 0; i < 6; i++) {
        if (!is_ct(all[i], C, T)) {
            rg_set_error(ctx, RG_E_SHAPE,
                         "rwkv_wkv7: r, w, k, v, a, b must all be {C, T} = {%" PRId64 ", %" PRId64
                         "}; '%s' is {%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "}",
                         C, T, names[i], all[i]->ne[0], all[i]->ne[1], all[i]->ne[2], all[i]->ne[3]);
            return NULL;
        }
    }
    const int64_t N = head_size_of_state(ctx, "rwkv_wkv7", state, C);
    if (N == 0) return NULL;
    if (!rg_check_state_out(ctx, "rwkv_wkv7", state, state_out)) return NULL;
    const int64_t ne[2] = {C, state_out != NULL ? T : T + N};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV7, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    for (int i = 0; i < 7; i++) t->src[i] = all[i];
    t->src[7] = state_out;
    t->iparams[0] = N;
    return t;
}

/* Threads own contiguous ranges of the H*N value rows (h, i); row i of head h evolves on its own:
 *   sa = sum_j S[i,j] a[j];  S[i,j] <- S[i,j] w[j] + sa b[j] + v[i] k[j];  y[i] = sum_j S[i,j] r[j]. */
void rg_fwd_rwkv_wkv7(const rg_compute_params *p, rg_tensor *dst) {
    const float *r = dst->src[0]->data, *w = dst->src[1]->data, *k = dst->src[2]->data;
    const float *v = dst->src[3]->data, *a = dst->src[4]->data, *b = dst->src[5]->data;
    const float *s_in = dst->src[6]->data;
    const int64_t N = dst->iparams[0], C = dst->ne[0], T = dst->src[7] != NULL ? dst->ne[1] : dst->ne[1] - N;
    float *y = dst->data, *s_out = rg_state_out_ptr(p, dst->src[7], s_in, C * N, y + T * C);
    if (s_out == NULL) return;
    int64_t c0, c1;
    rg_split(C, p->ith, p->nth, &c0, &c1);
    const rwkv_wkv7_rows_fn rows = rwkv_wkv7_rows_for(N);
    for (int64_t h = c0 / N; h * N < c1; h++) {
        const int64_t i0 = (c0 > h * N ? c0 : h * N) - h * N;
        const int64_t i1 = (c1 < (h + 1) * N ? c1 : (h + 1) * N) - h * N;
        const int64_t hs = h * N * N + i0 * N;
        for (int64_t t = 0; t < T; t++) {
            /* the first token reads the incoming state, the others the rows this thread just wrote */
            const float *src = t == 0 ? s_in : s_out;
            const int64_t o = t * C + h * N;
            rows(N, i1 - i0, src + hs, s_out + hs, r + o, w + o, k + o, a + o, b + o, v + o + i0, y + o + i0);
        }
    }
}

/* ---- B sequences of one token each, states in the rows of a bank ----
 *
 * Operands are {C, B} (column b = sequence b); sequence b's recurrent state is row slots[b] of the F32
 * table `states` ({C*N, capacity}, rows possibly strided: a view into a bank of whole model states),
 * read and written in place, so a step moves no state anywhere else. The result is y {C, B}. Threads
 * split the (sequence, head) pairs; each pair runs the single-sequence op's arithmetic in its order,
 * so every result is bit-identical to a one-token call of the single-sequence op. */

static bool check_batch_dense(rg_ctx *ctx, const char *op, rg_tensor *const *all, const char *const *names, int n,
                              int n_columns_checked, int64_t *C, int64_t *B) {
    if (!check_operands(ctx, op, all, names, n)) return false;
    *C = all[0]->ne[0];
    *B = all[0]->ne[1];
    for (int i = 0; i < n_columns_checked; i++) {
        if (!is_ct(all[i], *C, *B)) {
            rg_set_error(ctx, RG_E_SHAPE, "%s: '%s' must be {C, B} = {%" PRId64 ", %" PRId64 "}", op, names[i], *C, *B);
            return false;
        }
    }
    return true;
}

/* N from the states table's row length C*N. */
static int64_t head_size_of_rows(rg_ctx *ctx, const char *op, const rg_tensor *states, int64_t C) {
    const int64_t S = states->ne[0];
    if (C < 1 || S % C != 0 || S / C < 1 || C % (S / C) != 0) {
        rg_set_error(ctx, RG_E_SHAPE, "%s: a state row has %" PRId64 " floats; it must hold C*N with N dividing C = %" PRId64,
                     op, S, C);
        return 0;
    }
    return S / C;
}

rg_tensor *rg_rwkv_wkv5_batch(rg_ctx *ctx, rg_tensor *r, rg_tensor *k, rg_tensor *v, rg_tensor *w, rg_tensor *u,
                              rg_tensor *states, rg_tensor *slots) {
    static const char *const names[5] = {"r", "k", "v", "w", "u"};
    rg_tensor *const all[5] = {r, k, v, w, u};
    int64_t C, B;
    if (!check_batch_dense(ctx, "rwkv_wkv5_batch", all, names, 5, 3, &C, &B)) return NULL;
    if (states == NULL || slots == NULL) {
        rg_set_error(ctx, RG_E_ARG, "rwkv_wkv5_batch: NULL states or slots");
        return NULL;
    }
    const int64_t N = head_size_of_rows(ctx, "rwkv_wkv5_batch", states, C);
    if (N == 0 || !rg_check_state_rows(ctx, "rwkv_wkv5_batch", states, slots, C * N, B)) return NULL;
    const int64_t H = C / N, nw = rg_tensor_n_elements(w), nu = rg_tensor_n_elements(u);
    /* PER_TOKEN: one decay column per sequence (v6); C and H as in the single-sequence op */
    const int w_mode = nw == C * B && B > 1 ? PER_TOKEN : nw == C ? PER_CHANNEL : nw == H ? PER_HEAD : -1;
    const int u_mode = nu == C ? PER_CHANNEL : nu == H ? PER_HEAD : -1;
    if (w_mode < 0 || u_mode < 0) {
        rg_set_error(ctx, RG_E_SHAPE,
                     "rwkv_wkv5_batch: decay w has %" PRId64 " elements (need H, C or C*B), bonus u %" PRId64
                     " (need H or C); H = %" PRId64 ", C = %" PRId64 ", B = %" PRId64,
                     nw, nu, H, C, B);
        return NULL;
    }
    const int64_t ne[2] = {C, B};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV5_BATCH, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    for (int i = 0; i < 5; i++) t->src[i] = all[i];
    t->src[5] = states;
    t->src[6] = slots;
    t->iparams[0] = N;
    t->iparams[1] = w_mode;
    t->iparams[2] = u_mode;
    return t;
}

void rg_fwd_rwkv_wkv5_batch(const rg_compute_params *p, rg_tensor *dst) {
    const float *r = dst->src[0]->data, *k = dst->src[1]->data, *v = dst->src[2]->data;
    const float *w = dst->src[3]->data, *u = dst->src[4]->data;
    const int64_t N = dst->iparams[0], C = dst->ne[0], B = dst->ne[1], H = C / N;
    const int w_mode = (int)dst->iparams[1], u_mode = (int)dst->iparams[2];
    const rwkv_wkv5_token_fn token = rwkv_wkv5_token_for();
    int64_t i0, i1;
    rg_split(B * H, p->ith, p->nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        const int64_t b = item / H, h = item % H, hc = h * N, o = b * C + hc;
        float *yt = (float *)dst->data + o;
        float *row = rg_state_row(p, dst->src[5], dst->src[6], b);
        if (row == NULL) {
            memset(yt, 0, (size_t)N * sizeof(float));
            continue;
        }
        float *s = row + h * N * N;
        const float *uh = u_mode == PER_HEAD ? u + h : u + hc;
        const float *wh = w_mode == PER_HEAD ? w + h : w_mode == PER_CHANNEL ? w + hc : w + o;
        token(N, 0, N, s, s, r + o, k + o, v + o, uh, u_mode == PER_HEAD ? 0 : 1, wh, w_mode == PER_HEAD ? 0 : 1, yt);
    }
}

rg_tensor *rg_rwkv_wkv7_batch(rg_ctx *ctx, rg_tensor *r, rg_tensor *w, rg_tensor *k, rg_tensor *v, rg_tensor *a,
                              rg_tensor *b, rg_tensor *states, rg_tensor *slots) {
    static const char *const names[6] = {"r", "w", "k", "v", "a", "b"};
    rg_tensor *const all[6] = {r, w, k, v, a, b};
    int64_t C, B;
    if (!check_batch_dense(ctx, "rwkv_wkv7_batch", all, names, 6, 6, &C, &B)) return NULL;
    if (states == NULL || slots == NULL) {
        rg_set_error(ctx, RG_E_ARG, "rwkv_wkv7_batch: NULL states or slots");
        return NULL;
    }
    const int64_t N = head_size_of_rows(ctx, "rwkv_wkv7_batch", states, C);
    if (N == 0 || !rg_check_state_rows(ctx, "rwkv_wkv7_batch", states, slots, C * N, B)) return NULL;
    const int64_t ne[2] = {C, B};
    rg_tensor *t = rg_new_op_tensor(ctx, RG_OP_RWKV_WKV7_BATCH, RG_TYPE_F32, 2, ne);
    if (t == NULL) return NULL;
    for (int i = 0; i < 6; i++) t->src[i] = all[i];
    t->src[6] = states;
    t->src[7] = slots;
    t->iparams[0] = N;
    return t;
}

/* Each (sequence, head) runs the rows kernel of the single-sequence op over all N rows, in place. */
void rg_fwd_rwkv_wkv7_batch(const rg_compute_params *p, rg_tensor *dst) {
    const float *r = dst->src[0]->data, *w = dst->src[1]->data, *k = dst->src[2]->data;
    const float *v = dst->src[3]->data, *a = dst->src[4]->data, *b = dst->src[5]->data;
    const int64_t N = dst->iparams[0], C = dst->ne[0], B = dst->ne[1], H = C / N;
    const rwkv_wkv7_rows_fn rows = rwkv_wkv7_rows_for(N);
    int64_t i0, i1;
    rg_split(B * H, p->ith, p->nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        const int64_t seq = item / H, h = item % H, o = seq * C + h * N;
        float *y = (float *)dst->data + o;
        float *row = rg_state_row(p, dst->src[6], dst->src[7], seq);
        if (row == NULL) {
            memset(y, 0, (size_t)N * sizeof(float));
            continue;
        }
        float *s = row + h * N * N;
        rows(N, N, s, s, r + o, w + o, k + o, a + o, b + o, v + o, y);
    }
}
