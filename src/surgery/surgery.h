/*
 * surgery.h — the surgery floor, internal: distilling a routed pretrained
 * model's new weights (controllers, feature maps) from the original model
 * with the base frozen (docs/design.md §5.3).
 *
 * Training runs its own forward and backward over one sequence of T tokens
 * on fp32 copies of the model's matrices (dequantised once, exactly:
 * BLAS GEMMs both ways), keeping every block's activations for the
 * backward: activation gradients only, the base's weights get none.  The
 * teacher is the same forward with every token on full, which is the
 * original model (bit for bit at the fp32 path), so at the start the KL is
 * zero.  Each block of the student runs all three experts on every token
 * (the straight-through gradient of a route needs every expert's output)
 * and merges them by the hard route (or softly, for the gradient checks).
 *
 * Floor: includes llama/ (the model, the routing, its feature map) and
 * train/ (AdamW's arithmetic) and below.
 */
#ifndef MATTN_SURGERY_H
#define MATTN_SURGERY_H

#include "llama/llama.h"
#include "train/train.h"

/* One block's matrices in fp32, rows of `in` floats (out x in): y = x W^T. */
typedef struct sg_weights {
    float *wq, *wk, *wv, *wo, *wg, *wu, *wd;
} sg_weights;

/* One block's activations of a sequence (T rows each). */
typedef struct sg_acts {
    float *x;            /* (T, D) the block's input */
    float *h;            /* (T, D) RMSNorm(x) * attn_norm: the projections' and the controller's input */
    float *q, *k, *v;    /* (T, Dq), (T, Dkv) x2: RoPE'd queries and keys, values */
    float *a[MATTN_ROUTE_EXPERTS]; /* (T, Dq) each expert's output (full, linear, local) */
    float *lse[MATTN_ROUTE_EXPERTS]; /* (H, T) full's and local's log-sum-exp ([1] unused) */
    float *den;          /* (T, H) linear's denominators */
    float *w;            /* (T, 3) the merge weights used (one-hot or soft) */
    mattn_ctrl_act act;  /* the controller's activations */
    float *xm;           /* (T, D) after the attention's residual */
    float *gate, *up;    /* (T, F) SwiGLU's inputs */
} sg_acts;

/* Linear attention over one sequence through Hedgehog feature maps
 * (llama_routed.c's expert, in its quadratic-free causal form):
 * out_t = phi(q_t)^T S_t / phi(q_t)^T z_t over every key s <= t. */
typedef struct sg_lin {
    int T, H, Hkv, dh, fd;
    const float *q, *k, *v;     /* (T, H*dh), (T, Hkv*dh) x2 */
    const float *fq, *fk;       /* (H, dh, fd), (Hkv, dh, fd) */
    float *out, *den;           /* (T, H*dh), (T, H) */
    float *ws;                  /* sg_linear_ws_floats() floats of scratch */
} sg_lin;
/* The feature width training takes: 2 * feature_dim <= SG_MAX_F. */
#define SG_MAX_F 512
size_t sg_linear_ws_floats(int Hkv, int dh, int fd);
void sg_linear_forward(const sg_lin *a);
/* Gradients of the last forward (a->out, a->den as it left them): gq, gk,
 * gv (+=, or NULL: not wanted) and gfq, gfk (+=). */
void sg_linear_backward(const sg_lin *a, const float *gout, float *gq, float *gk, float *gv, float *gfq, float *gfk);

struct mattn_distill {
    mattn_llama *m;
    uint64_t serial;            /* the routing it trains (m->routing->serial at new) */
    mattn_distill_config cfg;
    int L, D, H, Hkv, dh, F, V, Dq, Dkv, Tmax;
    float *emb;                 /* (V, D) the token embedding (the tied head: out == emb) */
    float *head;                /* (V, D) the output head */
    sg_weights *w;              /* (L) */
    float *rope, *rope_inv;     /* (Tmax, dh) cos, sin; cos, -sin (RoPE's transpose) */
    float *lin_ws;              /* sg_linear_ws_floats() */
    sg_acts *acts;              /* (L) */
    float *xf, *hf;             /* (Tmax, D) the last block's output, the final norm of it */
    float *teacher;             /* (Tmax, D) the teacher's final normalised hidden state */
    /* scratch */
    float *ke, *ve;             /* (Tmax, Dq) K/V expanded to the query heads (the MHA kernels) */
    float *gx, *gh, *gatt, *ga, *gq, *gke, *gve, *gk, *gv, *gf, *gg, *gu, *galpha, *gz2, *ghc, *lg, *lt;
    float *gfq;                 /* the feature maps' gradients: per block (H + Hkv) x dh x fd */
    float *route_y;             /* (L, Tmax) the routing target's labels of the last forward (sg_route_labels) */
    void *sm_ws; size_t sm_ws_bytes;
    /* the optimiser: Adam moments of every trained float, in param order */
    int64_t n_params;
    float *adam_m, *adam_v;
    int64_t step;
    double dual;                /* the budget's Lagrange multiplier (>= 0) */
    int route_grad_x;           /* 1 (default): the controllers' input gradient of the loss flows into the
                                 * stream, as the soft merge's derivative has it */
    int budget_grad_x;          /* 1: the budget's too (the gradient checks); 0 (training): the budget moves the
                                 * controllers only, not the blocks below through them */
    /* test hooks */
    float *x0_delta;            /* (Tmax, D) added to the embeddings of the student (zeros but in tests) */
    float *g_x0;                /* (Tmax, D) dL/d(the embeddings of the student) after a backward */
    char errmsg[MATTN_ERRMSG_LEN];
};

/* Block l's forward from A->x (T rows) into out (A->xm may be it): teacher
 * 1, every token on full (that expert only); 2, every token on full but
 * every expert computed (the layer-local stage); 0, routed; its backward: gx (T, D) dL/d(out) in,
 * dL/d(A->x) out; g_share: dL/d(each token's full weight) of the budget;
 * map_w: the attention transfer's weight; the feature maps' gradients into
 * gfq, gfk (+=), the controller's into its own. */
mattn_status sg_block_forward(mattn_distill *d, int l, sg_acts *A, int T, int teacher, float *out);
mattn_status sg_block_backward(mattn_distill *d, int l, int T, float *gx, double g_share, double map_w,
                               float *gfq, float *gfk);
/* The layer-local stage's backward of block l: the attention transfer into
 * the feature maps' gradients only. */
mattn_status sg_map_backward(mattn_distill *d, int l, int T, double map_w, float *gfq, float *gfk);
/* Does block l's student ever take the linear expert (soft merges: always)?
 * Else it is not run, nor its maps trained. */
int sg_uses_linear(const mattn_distill *d, int l);
/* The routing target (mattn_distill_config.route_weight): sg_route_labels
 * sets the labels of the last forward (route_y); sg_route_target is the
 * mean BCE over block l's tokens (-1: every controlled block's) and, with
 * gz, adds block l's dL/dz (T, 3) of route_weight times it into gz. */
void sg_route_labels(mattn_distill *d, int T);
double sg_route_target(const mattn_distill *d, int l, int T, float *gz);
/* |a_linear - a_full|^2 / |a_full|^2 of block l's last forward (0 when not run). */
double sg_map_mse(const mattn_distill *d, int l, int T);
void sg_rmsnorm_backward(float *gx, const float *gy, const float *x, const float *w, int T, int D, float eps);

/* Forward of the teacher (every token full, d->teacher) or the student
 * (activations kept, d->hf), and the loss; with backward != 0 the gradients
 * of the routing's parameters (the controllers' g_*, d->gfq, d->gfk) and
 * d->g_x0.  The parameters' gradients are zeroed first. */
mattn_status sg_run(mattn_distill *d, const int32_t *tok, const float *w, int T, int backward,
                    mattn_distill_stats *st);

#endif
