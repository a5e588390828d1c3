/* mul_mat: out[t][m] = sum_k a[m][k] * b[t][k] for weights a of any type and F32 activations b.
 *
 * Threads split the weight rows m, so every output element is one dot product computed by one thread
 * in a fixed order: the result does not depend on the thread count. With T = 1 (per-token mode) the
 * kernel streams each weight row once against the activation vector, which is memory-bound; with
 * T > 1 a weight row is made f32 once and reused against four activation rows at a time. */
#include "ops_kernels.h"
#include "simd/kernels.h"

bool rg_mul_mat_needs_prepare(const rg_tensor *dst) {
    /* Activations whose elements are strided are packed into contiguous rows first. */
    return dst->src[1]->nb[0] != sizeof(float) || dst->src[1]->nb[1] % sizeof(float) != 0;
}

static size_t packed_b_bytes(const rg_tensor *b) {
    return (size_t)(b->ne[0] * b->ne[1] * b->ne[2] * b->ne[3]) * sizeof(float);
}

rg_work rg_work_mul_mat(const rg_tensor *dst, int nth) {
    (void)nth;
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    const size_t shared = dst->prepare ? packed_b_bytes(b) : 0;
    return (rg_work){shared, (size_t)a->ne[0] * sizeof(float) + 64};
}

static void pack_b(const rg_compute_params *p, const rg_tensor *b) {
    float *out = p->wdata;
    const int64_t rows = rg_nrows(b), k = b->ne[0];
    int64_t r0, r1;
    rg_split(rows, p->ith, p->nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i1 = r % b->ne[1], i2 = (r / b->ne[1]) % b->ne[2], i3 = r / (b->ne[1] * b->ne[2]);
        const float *row = rg_load_row_f32(b, i1, i2, i3, out + r * k);
        if (row != out + r * k) memcpy(out + r * k, row, (size_t)k * sizeof(float));
    }
}

void rg_fwd_mul_mat(const rg_compute_params *p, rg_tensor *dst) {
    const rg_tensor *a = dst->src[0], *b = dst->src[1];
    if (p->phase == 0) {
        pack_b(p, b);
        return;
    }
    const int64_t K = a->ne[0], M = a->ne[1], T = b->ne[1];
    const rg_type_traits *ta = rg_traits(a->type);
    float *arow_buf = rg_thread_scratch(p);
    int64_t m0, m1;
    rg_split(M, p->ith, p->nth, &m0, &m1);
    for (int64_t i3 = 0; i3 < dst->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < dst->ne[2]; i2++) {
            const uint8_t *a_plane = (const uint8_t *)a->data + (i2 % a->ne[2]) * a->nb[2] + (i3 % a->ne[3]) * a->nb[3];
            /* b rows of this plane: either the packed copy or b itself */
            const float *b_plane;
            int64_t ldb;
            if (dst->prepare) {
                b_plane = (const float *)p->wdata + (i3 * b->ne[2] + i2) * b->ne[1] * K;
                ldb = K;
            } else {
                b_plane = (const float *)((const uint8_t *)b->data + i2 * b->nb[2] + i3 * b->nb[3]);
                ldb = (int64_t)(b->nb[1] / sizeof(float));
            }
            uint8_t *d_plane = (uint8_t *)dst->data + i2 * dst->nb[2] + i3 * dst->nb[3];
            for (int64_t m = m0; m < m1; m++) {
                const void *arow = a_plane + m * a->nb[1];
                if (T == 1) {
                    float v;
                    if (a->type == RG_TYPE_F32) {
                        v = rg_kernels.dot_f32(arow, b_plane, K);
                    } else if (a->type == RG_TYPE_F16) {
                        v = rg_kernels.dot_f16_f32(arow, b_plane, K);
                    } else {
                        ta->to_f32(arow, arow_buf, K);
                        v = rg_kernels.dot_f32(arow_buf, b_plane, K);
                    }
                    ((float *)d_plane)[m] = v;
                    continue;
                }
                const float *af = arow;
                if (a->type != RG_TYPE_F32) {
                    ta->to_f32(arow, arow_buf, K);
                    af = arow_buf;
                }
                for (int64_t t = 0; t < T; t += 4) {
                    const int nb = T - t < 4 ? (int)(T - t) : 4;
                    float out[4];
                    rg_kernels.dot_f32_x4(af, b_plane + t * ldb, ldb, nb, K, out);
                    for (int j = 0; j < nb; j++) *(float *)(d_plane + (t + j) * dst->nb[1] + m * sizeof(float)) = out[j];
                }
            }
        }
    }
}
