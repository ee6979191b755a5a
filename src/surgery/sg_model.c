/*
 * sg_model.c — the training forward and backward of a routed pretrained
 * model over one sequence (surgery.h): per block
 *
 *   h = RMSNorm(x) w1;  q, k, v = h Wq^T, h Wk^T, h Wv^T;  RoPE on q, k
 *   a_e = expert e's attention (full, linear, local) for every token
 *   att = sum_e w_e a_e  (w: the hard route's one-hot, or the controller's softmax)
 *   xm = x + att Wo^T;  h2 = RMSNorm(xm) w2;  out = xm + (silu(h2 Wg^T) * h2 Wu^T) Wd^T
 *
 * and its backward for dL/dx only (the base is frozen), with the gradients
 * of the routing's parameters on the way: the straight-through route
 * (dL/dw_e = <dL/datt, a_e> into the controller's softmax; dL/da_e = w_e
 * dL/datt, so a hard route trains its own expert), the feature maps
 * through the linear expert.  The softmax experts run the multi-head
 * kernels on K/V expanded to the query heads (their backward is
 * multi-head), summed back over each group.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "surgery/surgery.h"

static void gemm_nt(int M, int N, int K, const float *x, const float *W, float *y, float beta) {
    mattn_gemm(0, 1, M, N, K, 1.0f, x, K, W, K, beta, y, N); /* y (M, N) = x (M, K) W^T */
}
static void gemm_nn(int M, int N, int K, const float *g, const float *W, float *y, float beta) {
    mattn_gemm(0, 0, M, N, K, 1.0f, g, K, W, N, beta, y, N); /* y (M, N) = g (M, K) W (K, N) */
}

/* RMSNorm's backward for rows of D: gx (+=) from gy, x, the weight w. */
static void rmsnorm_backward(float *gx, const float *gy, const float *x, const float *w, int T, int D, float eps) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D, *g = gy + (size_t)t * D;
        double ss = 0.0, dot = 0.0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i], dot += (double)g[i] * w[i] * xr[i];
        const double r = 1.0 / sqrt(ss / D + eps), c = dot * r * r * r / D;
        for (int i = 0; i < D; i++) gx[(size_t)t * D + i] += (float)(r * g[i] * w[i] - c * xr[i]);
    }
}

/* K/V rows (T, Hkv*dh) to the query heads (T, H*dh), or the reverse sum. */
static void expand(const float *kv, float *e, int T, int H, int Hkv, int dh) {
    const int g = H / Hkv;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            memcpy(e + ((size_t)t * H + h) * dh, kv + ((size_t)t * Hkv + h / g) * dh, sizeof(float) * dh);
}
static void reduce(const float *e, float *kv, int T, int H, int Hkv, int dh) {
    const int g = H / Hkv;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            mattn_axpy(kv + ((size_t)t * Hkv + h / g) * dh, 1.0f, e + ((size_t)t * H + h) * dh, dh);
}

static mattn_attn_args softmax_args(mattn_distill *d, const sg_acts *A, int T, int e) {
    const mattn_llama_routing *r = d->m->routing;
    const int local = e == MATTN_ROUTE_LOCAL;
    return (mattn_attn_args){.B = 1, .T = T, .H = d->H, .dh = d->dh, .q = A->q, .k = d->ke, .v = d->ve, .ld = d->Dq,
                             .out = A->a[e], .ldo = d->Dq, .causal = 1, .window = local ? r->cfg.window : -1,
                             .sinks = local ? r->cfg.sinks : 0, .lse = A->lse[e], .scratch = d->sm_ws,
                             .scratch_bytes = d->sm_ws_bytes};
}

static sg_lin linear_args(mattn_distill *d, sg_acts *A, int l, int T) {
    const mattn_llama_route_layer *ly = &d->m->routing->layers[l];
    return (sg_lin){.T = T, .H = d->H, .Hkv = d->Hkv, .dh = d->dh, .fd = d->m->routing->cfg.feature_dim, .q = A->q,
                    .k = A->k, .v = A->v, .fq = ly->fq, .fk = ly->fk, .out = A->a[MATTN_ROUTE_LINEAR], .den = A->den,
                    .ws = d->lin_ws};
}

/* The merge weights of block l's tokens: the teacher's all-full, a fixed
 * block's drawn routes, or the controller's (hard: its argmax). */
static mattn_status route(mattn_distill *d, int l, sg_acts *A, int T, int teacher) {
    const mattn_llama_routing *r = d->m->routing;
    mattn_llama_route_layer *ly = &r->layers[l];
    memset(A->w, 0, sizeof(float) * (size_t)T * MATTN_ROUTE_EXPERTS);
    if (teacher) {
        for (int t = 0; t < T; t++) A->w[t * MATTN_ROUTE_EXPERTS + MATTN_ROUTE_FULL] = 1.0f;
        return MATTN_OK;
    }
    if (ly->fixed) {
        uint8_t *rt = (uint8_t *)d->ga; /* scratch: the drawn routes */
        for (int t0 = 0; t0 < T; t0 += 64) {
            mattn_llama_route(r, l, NULL, T - t0 < 64 ? T - t0 : 64, t0, 0, NULL, rt + t0);
        }
        for (int t = 0; t < T; t++) A->w[t * MATTN_ROUTE_EXPERTS + rt[t]] = 1.0f;
        return MATTN_OK;
    }
    double aux;
    mattn_status st = mattn_controller_forward(&ly->ctrl, &r->ccfg, &A->act, A->h, 1, T, 1, (uint64_t)d->step, &aux);
    if (st != MATTN_OK) return st;
    for (int t = 0; t < T; t++) {
        const float *z = A->act.logits + (size_t)t * MATTN_ROUTE_EXPERTS, *p = A->act.alpha + (size_t)t * 3;
        if (d->cfg.soft) {
            memcpy(A->w + (size_t)t * MATTN_ROUTE_EXPERTS, p, sizeof(float) * MATTN_ROUTE_EXPERTS);
            continue;
        }
        A->w[t * MATTN_ROUTE_EXPERTS + mattn_llama_route_argmax(z, r->cfg.experts)] = 1.0f;
    }
    return MATTN_OK;
}

mattn_status sg_block_forward(mattn_distill *d, int l, sg_acts *A, int T, int teacher, float *out) {
    const mattn_llama_layer *ly = &d->m->layers[l];
    const sg_weights *w = &d->w[l];
    const int D = d->D, Dq = d->Dq, Dkv = d->Dkv, F = d->F;
    const float eps = d->m->hp.rms_eps;
    mattn_llama_rmsnorm(A->h, A->x, ly->attn_norm, T, D, eps);
    gemm_nt(T, Dq, D, A->h, w->wq, A->q, 0.0f);
    gemm_nt(T, Dkv, D, A->h, w->wk, A->k, 0.0f);
    gemm_nt(T, Dkv, D, A->h, w->wv, A->v, 0.0f);
    mattn_llama_rope(A->q, T, Dq, d->H, d->dh, d->rope);
    mattn_llama_rope(A->k, T, Dkv, d->Hkv, d->dh, d->rope);
    mattn_status st = route(d, l, A, T, teacher != 0);
    if (st != MATTN_OK) return st;
    expand(A->k, d->ke, T, d->H, d->Hkv, d->dh);
    expand(A->v, d->ve, T, d->H, d->Hkv, d->dh);
    mattn_attn_args a = softmax_args(d, A, T, MATTN_ROUTE_FULL);
    MATTN_ASSERT(mattn_attn_softmax_forward(&a) >= 0.0);
    if (teacher != 1) {
        a = softmax_args(d, A, T, MATTN_ROUTE_LOCAL);
        MATTN_ASSERT(mattn_attn_softmax_forward(&a) >= 0.0);
        const sg_lin la = linear_args(d, A, l, T);
        if (sg_uses_linear(d, l)) sg_linear_forward(&la);
        else memset(A->a[MATTN_ROUTE_LINEAR], 0, sizeof(float) * (size_t)T * Dq); /* never routed to: not run */
    }
    float *att = d->gq; /* scratch: the merged output */
    for (int t = 0; t < T; t++) {
        float *o = att + (size_t)t * Dq;
        memset(o, 0, sizeof(float) * Dq);
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) {
            const float we = A->w[t * MATTN_ROUTE_EXPERTS + e];
            if (we != 0.0f) mattn_axpy(o, we, A->a[e] + (size_t)t * Dq, Dq);
        }
    }
    memcpy(A->xm, A->x, sizeof(float) * (size_t)T * D);
    gemm_nt(T, D, Dq, att, w->wo, A->xm, 1.0f);
    float *h2 = d->gh, *act = d->gf;
    mattn_llama_rmsnorm(h2, A->xm, ly->ffn_norm, T, D, eps);
    gemm_nt(T, F, D, h2, w->wg, A->gate, 0.0f);
    gemm_nt(T, F, D, h2, w->wu, A->up, 0.0f);
    memcpy(act, A->gate, sizeof(float) * (size_t)T * F);
    mattn_llama_swiglu(act, A->up, (int64_t)T * F);
    if (out != A->xm) memcpy(out, A->xm, sizeof(float) * (size_t)T * D);
    gemm_nt(T, D, F, act, w->wd, out, 1.0f);
    return MATTN_OK;
}

/* dL/dw (T, 3) of the merge: <datt_t, a_e(t)>. */
static void merge_grad(mattn_distill *d, const sg_acts *A, int T) {
    for (int t = 0; t < T; t++)
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++)
            d->galpha[t * MATTN_ROUTE_EXPERTS + e] =
                mattn_dot(d->gatt + (size_t)t * d->Dq, A->a[e] + (size_t)t * d->Dq, d->Dq);
}

/* The straight-through gradient of the logits at st_temperature s: that of
 * the controller's softmax at its temperature times s, dL/dz = p (g - <p,
 * g>) / tau, p = softmax(z / tau), tau = s * the controller's, g = dL/dw
 * (galpha); into galpha's second half (T, 3), the first zeroed (the
 * controller's own softmax then passes nothing). */
static float *tempered(mattn_distill *d, const sg_acts *A, int T) {
    const double tau = d->cfg.st_temperature * d->m->routing->ccfg.temperature;
    float *gz = d->galpha + (size_t)T * MATTN_ROUTE_EXPERTS;
    for (int t = 0; t < T; t++) {
        const float *z = A->act.logits + (size_t)t * MATTN_ROUTE_EXPERTS;
        float *g = d->galpha + (size_t)t * MATTN_ROUTE_EXPERTS;
        double p[MATTN_ROUTE_EXPERTS], mx = z[0], sum = 0.0, pg = 0.0;
        for (int e = 1; e < MATTN_ROUTE_EXPERTS; e++) mx = z[e] > mx ? z[e] : mx;
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) sum += p[e] = exp((z[e] - mx) / tau);
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) pg += (p[e] /= sum) * g[e];
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) {
            gz[(size_t)t * MATTN_ROUTE_EXPERTS + e] = (float)(p[e] * (g[e] - pg) / tau);
            g[e] = 0.0f;
        }
    }
    return gz;
}

static int n_controlled(const mattn_distill *d) {
    int n = 0;
    for (int l = 0; l < d->L; l++) n += !d->m->routing->layers[l].fixed;
    return n;
}

static int cmp_desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Label 1 the token-blocks where local's output is furthest from full's
 * (|a_full - a_local|^2 over the block's mean |a_full|^2), as many as the
 * budget's share of the controlled blocks' tokens (a quarter without a
 * budget); the rest 0. */
void sg_route_labels(mattn_distill *d, int T) {
    const mattn_llama_routing *r = d->m->routing;
    const size_t Dq = (size_t)d->Dq;
    float *e = d->route_y, *sorted = d->lt; /* lt: L * T floats of scratch */
    int64_t n = 0;
    for (int l = 0; l < d->L; l++) {
        if (r->layers[l].fixed) continue;
        const float *af = d->acts[l].a[MATTN_ROUTE_FULL], *al = d->acts[l].a[MATTN_ROUTE_LOCAL];
        double norm = 0.0;
        for (size_t i = 0; i < (size_t)T * Dq; i++) norm += (double)af[i] * af[i];
        norm = norm > 0.0 ? norm / T : 1.0;
        for (int t = 0; t < T; t++) {
            double s = 0.0;
            for (size_t i = 0; i < Dq; i++) {
                const double x = (double)af[t * Dq + i] - al[t * Dq + i];
                s += x * x;
            }
            sorted[n++] = e[(size_t)l * T + t] = (float)(s / norm);
        }
    }
    if (n == 0) return;
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_desc);
    const double share = d->cfg.full_share >= 0.0 ? d->cfg.full_share : 0.25;
    const int64_t k = (int64_t)llround(share * (double)n);
    const float thr = k <= 0 ? INFINITY : sorted[(k < n ? k : n) - 1];
    for (int l = 0; l < d->L; l++)
        for (int t = 0; !r->layers[l].fixed && t < T; t++)
            e[(size_t)l * T + t] = e[(size_t)l * T + t] >= thr ? 1.0f : 0.0f;
}

double sg_route_target(const mattn_distill *d, int l, int T, float *gz) {
    const mattn_llama_routing *r = d->m->routing;
    const int mask = r->cfg.experts ? r->cfg.experts : 7, nc = n_controlled(d);
    const double scale = nc ? d->cfg.route_weight / ((double)nc * T) : 0.0;
    double sum = 0.0;
    for (int b = l < 0 ? 0 : l; b < (l < 0 ? d->L : l + 1); b++) {
        if (r->layers[b].fixed) continue;
        const sg_acts *A = &d->acts[b];
        for (int t = 0; t < T; t++) {
            const double y = d->route_y[(size_t)b * T + t];
            const float *z = A->act.logits + (size_t)t * MATTN_ROUTE_EXPERTS;
            double mo = -INFINITY, so = 0.0, po[MATTN_ROUTE_EXPERTS] = {0};
            for (int e = 1; e < MATTN_ROUTE_EXPERTS; e++)
                if (mask >> e & 1) mo = z[e] > mo ? z[e] : mo;
            for (int e = 1; e < MATTN_ROUTE_EXPERTS; e++) so += po[e] = mask >> e & 1 ? exp(z[e] - mo) : 0.0;
            if (so == 0.0) continue; /* full alone: nothing to choose */
            const double u = z[MATTN_ROUTE_FULL] - (mo + log(so)); /* full against the others */
            sum += (u > 0 ? log1p(exp(-u)) : log1p(exp(u)) - u) * y + (u > 0 ? log1p(exp(-u)) + u : log1p(exp(u))) *
                   (1.0 - y);
            if (!gz) continue;
            const double gu = scale * (1.0 / (1.0 + exp(-u)) - y);
            float *g = gz + (size_t)t * MATTN_ROUTE_EXPERTS;
            g[MATTN_ROUTE_FULL] += (float)gu;
            for (int e = 1; e < MATTN_ROUTE_EXPERTS; e++) g[e] -= (float)(gu * po[e] / so);
        }
    }
    return nc ? sum / ((double)(l < 0 ? nc : 1) * T) : 0.0;
}

/* ga (T, Dq) = w_e (per row) * datt. */
static int expert_gout(mattn_distill *d, const sg_acts *A, int T, int e) {
    int any = 0;
    for (int t = 0; t < T; t++) {
        const float we = A->w[t * MATTN_ROUTE_EXPERTS + e];
        float *g = d->ga + (size_t)t * d->Dq;
        any |= we != 0.0f;
        for (int i = 0; i < d->Dq; i++) g[i] = we * d->gatt[(size_t)t * d->Dq + i];
    }
    return any;
}

/* The attention transfer's gradient, the feature maps only:
 * d/da_lin of map_w |a_lin - a_full|^2 / |a_full|^2 (a_full held fixed). */
static void map_grad(mattn_distill *d, const sg_acts *A, const sg_lin *la, int T, double map_w, float *gfq,
                     float *gfk) {
    const float *al = A->a[MATTN_ROUTE_LINEAR], *af = A->a[MATTN_ROUTE_FULL];
    double ss = 0.0;
    for (size_t i = 0; i < (size_t)T * d->Dq; i++) ss += (double)af[i] * af[i];
    const float c = (float)(2.0 * map_w / (ss > 0.0 ? ss : 1.0));
    for (size_t i = 0; i < (size_t)T * d->Dq; i++) d->ga[i] = c * (al[i] - af[i]);
    sg_linear_backward(la, d->ga, NULL, NULL, NULL, gfq, gfk);
}

int sg_uses_linear(const mattn_distill *d, int l) {
    return d->cfg.soft || mattn_llama_routing_uses(d->m->routing, l, MATTN_ROUTE_LINEAR);
}

mattn_status sg_map_backward(mattn_distill *d, int l, int T, double map_w, float *gfq, float *gfk) {
    if (!sg_uses_linear(d, l)) return MATTN_OK;
    const sg_lin la = linear_args(d, &d->acts[l], l, T);
    map_grad(d, &d->acts[l], &la, T, map_w, gfq, gfk);
    return MATTN_OK;
}

mattn_status sg_block_backward(mattn_distill *d, int l, int T, float *gx, double g_share, double map_w,
                               float *gfq, float *gfk) {
    sg_acts *A = &d->acts[l];
    const mattn_llama_layer *ly = &d->m->layers[l];
    const sg_weights *w = &d->w[l];
    const int D = d->D, Dq = d->Dq, Dkv = d->Dkv, F = d->F;
    const float eps = d->m->hp.rms_eps;
    /* the SwiGLU: act = silu(gate) * up */
    gemm_nn(T, F, D, gx, w->wd, d->gf, 0.0f);
    for (size_t i = 0; i < (size_t)T * F; i++) {
        const float a = A->gate[i], s = 1.0f / (1.0f + expf(-a)), ga = d->gf[i];
        d->gu[i] = ga * a * s;                                  /* dL/dup */
        d->gg[i] = ga * A->up[i] * s * (1.0f + a * (1.0f - s)); /* dL/dgate */
    }
    gemm_nn(T, D, F, d->gg, w->wg, d->gh, 0.0f);
    gemm_nn(T, D, F, d->gu, w->wu, d->gh, 1.0f);
    rmsnorm_backward(gx, d->gh, A->xm, ly->ffn_norm, T, D, eps); /* gx: now dL/dxm */
    /* the attention's output and the merge */
    gemm_nn(T, Dq, D, gx, w->wo, d->gatt, 0.0f);
    memset(d->gh, 0, sizeof(float) * (size_t)T * D);
    mattn_llama_route_layer *rl = &d->m->routing->layers[l];
    if (!rl->fixed) { /* the loss's part, into the stream too; then the budget's, into the controller only */
        const mattn_config *cc = &d->m->routing->ccfg;
        merge_grad(d, A, T);
        float *glog = d->cfg.soft || d->cfg.st_temperature == 1.0 ? NULL : tempered(d, A, T);
        if (d->cfg.route_weight > 0.0) {
            if (!glog) memset(glog = d->galpha + (size_t)T * MATTN_ROUTE_EXPERTS, 0, sizeof(float) * T * 3);
            sg_route_target(d, l, T, glog);
        }
        mattn_status st = mattn_controller_backward(&rl->ctrl, cc, &A->act, 1, T, 1, (uint64_t)d->step, d->galpha,
                                                    glog, 0.0, d->route_grad_x ? d->gh : NULL, d->gz2, d->ghc);
        if (st == MATTN_OK && g_share != 0.0) {
            memset(d->galpha, 0, sizeof(float) * (size_t)T * MATTN_ROUTE_EXPERTS);
            for (int t = 0; t < T; t++) d->galpha[t * MATTN_ROUTE_EXPERTS + MATTN_ROUTE_FULL] = (float)g_share;
            st = mattn_controller_backward(&rl->ctrl, cc, &A->act, 1, T, 1, (uint64_t)d->step, d->galpha, NULL, 0.0,
                                           d->budget_grad_x ? d->gh : NULL, d->gz2, d->ghc);
        }
        if (st != MATTN_OK) return st;
    }
    /* the experts */
    memset(d->gq, 0, sizeof(float) * (size_t)T * Dq);
    memset(d->gke, 0, sizeof(float) * (size_t)T * Dq);
    memset(d->gve, 0, sizeof(float) * (size_t)T * Dq);
    memset(d->gk, 0, sizeof(float) * (size_t)T * Dkv);
    memset(d->gv, 0, sizeof(float) * (size_t)T * Dkv);
    expand(A->k, d->ke, T, d->H, d->Hkv, d->dh);
    expand(A->v, d->ve, T, d->H, d->Hkv, d->dh);
    const int sm[2] = {MATTN_ROUTE_FULL, MATTN_ROUTE_LOCAL};
    for (int i = 0; i < 2; i++) {
        if (!expert_gout(d, A, T, sm[i])) continue;
        const mattn_attn_args a = softmax_args(d, A, T, sm[i]);
        const mattn_attn_grad g = {.gout = d->ga, .ldgo = Dq, .gq = d->gq, .gk = d->gke, .gv = d->gve, .ldg = Dq};
        MATTN_ASSERT(mattn_attn_softmax_backward(&a, &g) == 0);
    }
    reduce(d->gke, d->gk, T, d->H, d->Hkv, d->dh);
    reduce(d->gve, d->gv, T, d->H, d->Hkv, d->dh);
    const sg_lin la = linear_args(d, A, l, T);
    if (expert_gout(d, A, T, MATTN_ROUTE_LINEAR)) sg_linear_backward(&la, d->ga, d->gq, d->gk, d->gv, gfq, gfk);
    if (map_w > 0.0 && sg_uses_linear(d, l)) map_grad(d, A, &la, T, map_w, gfq, gfk);
    /* RoPE's transpose (rotation by -theta), the projections, the norm */
    mattn_llama_rope(d->gq, T, Dq, d->H, d->dh, d->rope_inv);
    mattn_llama_rope(d->gk, T, Dkv, d->Hkv, d->dh, d->rope_inv);
    gemm_nn(T, D, Dq, d->gq, w->wq, d->gh, 1.0f);
    gemm_nn(T, D, Dkv, d->gk, w->wk, d->gh, 1.0f);
    gemm_nn(T, D, Dkv, d->gv, w->wv, d->gh, 1.0f);
    rmsnorm_backward(gx, d->gh, A->x, ly->attn_norm, T, D, eps); /* gx: now dL/dx */
    return MATTN_OK;
}

double sg_map_mse(const mattn_distill *d, int l, int T) {
    if (!sg_uses_linear(d, l)) return 0.0;
    const sg_acts *A = &d->acts[l];
    const float *al = A->a[MATTN_ROUTE_LINEAR], *af = A->a[MATTN_ROUTE_FULL];
    double se = 0.0, ss = 0.0;
    for (size_t i = 0; i < (size_t)T * d->Dq; i++) {
        const double e = (double)al[i] - af[i];
        se += e * e;
        ss += (double)af[i] * af[i];
    }
    return ss > 0.0 ? se / ss : 0.0;
}

void sg_rmsnorm_backward(float *gx, const float *gy, const float *x, const float *w, int T, int D, float eps) {
    rmsnorm_backward(gx, gy, x, w, T, D, eps);
}
