/*
 * test_llama_routing.c — routing of a pretrained model (surgery) on the tiny
 * random LLaMA of tests/fixtures/gen_llama_fixtures.py (2 blocks, d 64, 4
 * query heads on 2 K/V heads of 16, vocabulary 100, context 128):
 *
 *  - every token to full gives the original model's logits bit for bit,
 *    prefill and decode, with fresh (untrained) routing and fixed shares;
 *  - a mix of all three experts — fixed shares in block 0, a perturbed
 *    controller in block 1, feature maps away from the identity, a window
 *    of 8 with 2 sinks — against an independent float64 forward written
 *    here from the formulas (the experts, RoPE, RMSNorm, SwiGLU, the
 *    controller's MLP), prefill in chunks and token-by-token decode;
 *  - local with a window past the context equals full; the token-
 *    independent shares are hit as drawn;
 *  - the routing file: round trip to the same bits, and every kind of bad
 *    file refused by name with the model's routing left as it was;
 *  - misuse: stale caches, a failed call poisoning the linear state, bad
 *    arguments; every allocation failing.
 */
#include "test_util.h"

#include <limits.h>

#include "llama/llama.h"

#define FIX "tests/fixtures/"
#define NTOK 80
#define V 100
#define CTX 128

static mattn_llama *open_tiny(const char *type) {
    char path[256];
    snprintf(path, sizeof path, FIX "llama_tiny_%s.gguf", type);
    mattn_llama *m = NULL;
    if (mattn_llama_open(path, &m) != MATTN_OK) fail_msg("%s: %s", path, mattn_last_error());
    return m;
}

static void tokens(int32_t *tok, int n, uint64_t seed) {
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(mattn_rng_next(&r) % V);
}

static double rel_err(const float *a, const double *b, size_t n) {
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return e / s;
}

/* logits (n, V) of a fresh cache of kv type, prefill in one call or decode. */
static void run(mattn_llama *m, mattn_llama_kv kv, const int32_t *tok, int n, int decode, float *logits) {
    mattn_llama_cache *c = NULL;
    assert_int_equal(mattn_llama_cache_init_kv(m, CTX, kv, &c), MATTN_OK);
    if (decode)
        for (int i = 0; i < n; i++) assert_int_equal(mattn_llama_decode(m, c, tok[i], logits + (size_t)i * V), MATTN_OK);
    else
        assert_int_equal(mattn_llama_forward(m, c, tok, n, logits), MATTN_OK);
    mattn_llama_cache_free(c);
}

// ---------------------------------------------------------------- every token to full

static void test_all_full_exact(void **st) {
    (void)st;
    int32_t tok[NTOK];
    tokens(tok, NTOK, 1);
    const char *types[] = {"f32", "q8_0"};
    float *orig = falloc((size_t)NTOK * V), *got = falloc((size_t)NTOK * V);
    for (int ti = 0; ti < 2; ti++)
        for (int decode = 0; decode <= 1; decode++) {
            mattn_llama *m = open_tiny(types[ti]);
            run(m, MATTN_LLAMA_KV_F16, tok, NTOK, decode, orig);
            mattn_llama_routing_config cfg = mattn_llama_routing_default();
            cfg.window = 8;
            assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
            mattn_llama_cache *c = NULL;
            assert_int_equal(mattn_llama_cache_init(m, CTX, &c), MATTN_OK);
            if (decode)
                for (int i = 0; i < NTOK; i++) assert_int_equal(mattn_llama_decode(m, c, tok[i], got + i * V), MATTN_OK);
            else
                assert_int_equal(mattn_llama_forward(m, c, tok, NTOK, got), MATTN_OK);
            assert_memory_equal(orig, got, sizeof(float) * NTOK * V); /* untrained: the controllers pick full */
            int64_t counts[2 * MATTN_ROUTE_EXPERTS];
            const uint8_t *routes = NULL;
            double fl = 0.0;
            assert_int_equal(mattn_llama_cache_routing(c, counts, &fl, NULL, &routes), MATTN_OK);
            assert_int_equal(counts[0], NTOK);
            assert_int_equal(counts[MATTN_ROUTE_EXPERTS], NTOK);
            assert_true(routes != NULL && fl > 0.0);
            mattn_llama_cache_free(c);
            const double full[3] = {1, 0, 0};
            assert_int_equal(mattn_llama_routing_fix(m, -1, full), MATTN_OK);
            run(m, MATTN_LLAMA_KV_F16, tok, NTOK, decode, got);
            assert_memory_equal(orig, got, sizeof(float) * NTOK * V);
            mattn_llama_free(m);
        }
    free(orig);
    free(got);
}

// ---------------------------------------------------------------- the float64 reference

typedef struct ref_model {
    int L, D, H, Hkv, dh, F;
    double eps, base;
    double *emb, *out, *onorm;           /* (V, D), (V, D), (D) */
    double *wq[2], *wk[2], *wv[2], *wo[2], *wg[2], *wu[2], *wd[2], *an[2], *fn[2];
} ref_model;

static double *dq(const mattn_gguf_tensor *W, int rows, int cols) {
    double *d = malloc(sizeof(double) * (size_t)rows * cols);
    float *row = falloc((size_t)cols);
    for (int r = 0; r < rows; r++) {
        mattn_llama_row(W, r, row);
        for (int i = 0; i < cols; i++) d[(size_t)r * cols + i] = row[i];
    }
    free(row);
    return d;
}

static double *dvec(const float *w, int n) {
    double *d = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) d[i] = w[i];
    return d;
}

static ref_model ref_open(const mattn_llama *m) {
    const mattn_llama_info *hp = &m->hp;
    ref_model r = {hp->n_layers, hp->d_model, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->ffn_dim, hp->rms_eps,
                   hp->rope_base, NULL, NULL, NULL, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}};
    assert_int_equal(r.L, 2);
    r.emb = dq(m->tok_embd, V, r.D);
    r.out = dq(m->output, V, r.D);
    r.onorm = dvec(m->out_norm, r.D);
    for (int l = 0; l < r.L; l++) {
        const mattn_llama_layer *y = &m->layers[l];
        r.wq[l] = dq(y->wq, r.H * r.dh, r.D);
        r.wk[l] = dq(y->wk, r.Hkv * r.dh, r.D);
        r.wv[l] = dq(y->wv, r.Hkv * r.dh, r.D);
        r.wo[l] = dq(y->wo, r.D, r.H * r.dh);
        r.wg[l] = dq(y->w_gate, r.F, r.D);
        r.wu[l] = dq(y->w_up, r.F, r.D);
        r.wd[l] = dq(y->w_down, r.D, r.F);
        r.an[l] = dvec(y->attn_norm, r.D);
        r.fn[l] = dvec(y->ffn_norm, r.D);
    }
    return r;
}

static void ref_close(ref_model *r) {
    free(r->emb), free(r->out), free(r->onorm);
    for (int l = 0; l < r->L; l++) {
        free(r->wq[l]), free(r->wk[l]), free(r->wv[l]), free(r->wo[l]);
        free(r->wg[l]), free(r->wu[l]), free(r->wd[l]), free(r->an[l]), free(r->fn[l]);
    }
}

static void mv(const double *W, const double *x, int out, int in, double *y) {
    for (int o = 0; o < out; o++) {
        double s = 0.0;
        for (int i = 0; i < in; i++) s += W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static void rmsnorm(const double *x, const double *w, int D, double eps, double *y) {
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss += x[i] * x[i];
    const double s = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++) y[i] = x[i] * s * w[i];
}

static void rope(double *x, int heads, int dh, int pos, double base) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < dh / 2; i++) {
            const double th = pos * pow(base, -2.0 * i / dh), c = cos(th), s = sin(th);
            double *p = x + h * dh + 2 * i, a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
}

/* Hedgehog's phi of one head in double: [softmax(x W), softmax(-x W)]. */
static void phi(const double *x, const float *W, int dh, int fd, double *out) {
    double u[64], zp = 0.0, zn = 0.0;
    for (int j = 0; j < fd; j++) {
        u[j] = 0.0;
        for (int i = 0; i < dh; i++) u[j] += x[i] * W[(size_t)i * fd + j];
    }
    for (int j = 0; j < fd; j++) zp += exp(u[j]), zn += exp(-u[j]);
    for (int j = 0; j < fd; j++) out[j] = exp(u[j]) / zp, out[fd + j] = exp(-u[j]) / zn;
}

/* The controller's route of normalised input h at position pos, in double;
 * *margin = the best logit minus the second. */
static int ref_route(const mattn_controller *c, const double *h, int D, int pos, int ctx, int mask, double *margin) {
    double f[128], z2[3];
    for (int i = 0; i < D; i++) f[i] = h[i];
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss += h[i] * h[i];
    f[D] = sqrt(ss) / sqrt((double)D);
    f[D + 1] = c->pos_len > 0 ? (double)pos / (ctx - 1) : 0.0;
    for (int k = 0; k < 3; k++) z2[k] = c->b2[k];
    for (int j = 0; j < c->Hc; j++) {
        double z = c->b1[j];
        for (int i = 0; i < D + 2; i++) z += c->w1[(size_t)j * (D + 2) + i] * f[i];
        const double g = 0.5 * z * (1.0 + erf(z / sqrt(2.0)));
        for (int k = 0; k < 3; k++) z2[k] += c->w2[k * c->Hc + j] * g;
    }
    int e = -1;
    for (int k = 0; k < 3; k++) e = (!mask || (mask >> k & 1)) && (e < 0 || z2[k] > z2[e]) ? k : e;
    double second = -INFINITY;
    for (int k = 0; k < 3; k++) second = k != e && (!mask || (mask >> k & 1)) && z2[k] > second ? z2[k] : second;
    *margin = z2[e] - second;
    return e;
}

/* Logits (n, V) with the experts of routes (pos * L + l); learned blocks'
 * routes are checked against ref_route (ties within 1e-6 excepted). */
static void ref_forward(const ref_model *r, const mattn_llama_routing *rt, const int32_t *tok, int n,
                        const uint8_t *routes, double *logits) {
    const int D = r->D, Dq = r->H * r->dh, Dkv = r->Hkv * r->dh, g = r->H / r->Hkv, dh = r->dh;
    const int fd = rt->cfg.feature_dim, W = rt->cfg.window, S = rt->cfg.sinks;
    double *x = calloc((size_t)n * D, sizeof *x), *h = calloc((size_t)D, sizeof *h);
    double *q = calloc((size_t)n * Dq, sizeof *q), *k = calloc((size_t)n * Dkv, sizeof *k);
    double *v = calloc((size_t)n * Dkv, sizeof *v), *a = calloc((size_t)Dq, sizeof *a), *y = calloc((size_t)D, 8);
    double *gt = calloc((size_t)r->F, 8), *up = calloc((size_t)r->F, 8), *pq = calloc(128, 8), *pk = calloc(128, 8);
    for (int t = 0; t < n; t++) memcpy(x + (size_t)t * D, r->emb + (size_t)tok[t] * D, sizeof(double) * D);
    for (int l = 0; l < r->L; l++) {
        for (int t = 0; t < n; t++) {
            rmsnorm(x + (size_t)t * D, r->an[l], D, r->eps, h);
            if (!rt->layers[l].fixed) {
                double margin;
                const int e = ref_route(&rt->layers[l].ctrl, h, D, t, CTX, rt->cfg.experts, &margin);
                if (e != routes[t * r->L + l] && margin > 1e-6)
                    fail_msg("block %d position %d: routed to %d, the controller says %d (margin %.3g)", l, t,
                             routes[t * r->L + l], e, margin);
            }
            mv(r->wq[l], h, Dq, D, q + (size_t)t * Dq);
            mv(r->wk[l], h, Dkv, D, k + (size_t)t * Dkv);
            mv(r->wv[l], h, Dkv, D, v + (size_t)t * Dkv);
            rope(q + (size_t)t * Dq, r->H, dh, t, r->base);
            rope(k + (size_t)t * Dkv, r->Hkv, dh, t, r->base);
        }
        for (int t = 0; t < n; t++) {
            const int e = routes[t * r->L + l];
            for (int hh = 0; hh < r->H; hh++) {
                const double *qh = q + (size_t)t * Dq + hh * dh;
                double *o = a + hh * dh, den = 0.0, mx = -INFINITY;
                const int j = hh / g;
                for (int d = 0; d < dh; d++) o[d] = 0.0;
                if (e == MATTN_ROUTE_LINEAR) phi(qh, rt->layers[l].fq + (size_t)hh * dh * fd, dh, fd, pq);
                for (int pass = 0; pass < 2; pass++)
                    for (int s = 0; s <= t; s++) {
                        const int vis = e != MATTN_ROUTE_LOCAL || s >= t - W || s < S;
                        if (!vis) continue;
                        const double *ks = k + (size_t)s * Dkv + j * dh, *vs = v + (size_t)s * Dkv + j * dh;
                        double w;
                        if (e == MATTN_ROUTE_LINEAR) {
                            if (pass == 0) continue;
                            phi(ks, rt->layers[l].fk + (size_t)j * dh * fd, dh, fd, pk);
                            w = 0.0;
                            for (int f = 0; f < 2 * fd; f++) w += pq[f] * pk[f];
                        } else {
                            double sc = 0.0;
                            for (int d = 0; d < dh; d++) sc += qh[d] * ks[d];
                            sc /= sqrt((double)dh);
                            if (pass == 0) { mx = fmax(mx, sc); continue; }
                            w = exp(sc - mx);
                        }
                        den += w;
                        for (int d = 0; d < dh; d++) o[d] += w * vs[d];
                    }
                for (int d = 0; d < dh; d++) o[d] /= den;
            }
            mv(r->wo[l], a, D, Dq, y);
            for (int i = 0; i < D; i++) x[(size_t)t * D + i] += y[i];
        }
        for (int t = 0; t < n; t++) {
            double *xt = x + (size_t)t * D;
            rmsnorm(xt, r->fn[l], D, r->eps, h);
            mv(r->wg[l], h, r->F, D, gt);
            mv(r->wu[l], h, r->F, D, up);
            for (int i = 0; i < r->F; i++) gt[i] = gt[i] / (1.0 + exp(-gt[i])) * up[i];
            mv(r->wd[l], gt, D, r->F, y);
            for (int i = 0; i < D; i++) xt[i] += y[i];
        }
    }
    for (int t = 0; t < n; t++) {
        rmsnorm(x + (size_t)t * D, r->onorm, D, r->eps, h);
        mv(r->out, h, V, D, logits + (size_t)t * V);
    }
    free(x), free(h), free(q), free(k), free(v), free(a), free(y), free(gt), free(up), free(pq), free(pk);
}

/* Routing on m of window 8, 2 sinks, feature_dim fd: block 0 fixed at
 * shares (0.4, 0.3, 0.3), block 1 a perturbed controller; feature maps the
 * identity plus noise. */
static void mixed_routing(mattn_llama *m, int fd) {
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    cfg.window = 8, cfg.sinks = 2, cfg.controller_hidden = 8, cfg.feature_dim = fd, cfg.seed = 5, cfg.position = fd == 8;
    cfg.experts = fd == 8 ? 0 : 1 << MATTN_ROUTE_FULL | 1 << MATTN_ROUTE_LOCAL; /* fd 16: the controller chooses full or local */
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
    const double share[3] = {0.4, 0.3, 0.3};
    assert_int_equal(mattn_llama_routing_fix(m, 0, share), MATTN_OK);
    const mattn_llama_info *hp = &m->hp;
    for (int l = 0; l < 2; l++) {
        mattn_llama_route_layer *ly = &m->routing->layers[l];
        float *noise = falloc((size_t)hp->n_heads * hp->head_dim * fd);
        fill_normal(noise, (size_t)hp->n_heads * hp->head_dim * fd, 11 + l, 0.3);
        for (size_t i = 0; i < (size_t)hp->n_heads * hp->head_dim * fd; i++) ly->fq[i] += noise[i];
        for (size_t i = 0; i < (size_t)hp->n_kv_heads * hp->head_dim * fd; i++) ly->fk[i] -= noise[i];
        free(noise);
        fill_normal(ly->ctrl.w1, (size_t)ly->ctrl.Hc * (hp->d_model + 2), 21 + l, 0.5);
        fill_normal(ly->ctrl.w2, (size_t)3 * ly->ctrl.Hc, 31 + l, 1.0);
        ly->ctrl.b2[0] = 0.0f;
    }
}

static void test_mixed_vs_ref(void **st) {
    (void)st;
    int32_t tok[NTOK];
    tokens(tok, NTOK, 2);
    mattn_llama *m = open_tiny("f32");
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    ref_model rm = ref_open(m);
    double *want = malloc(sizeof(double) * NTOK * V);
    float *got = falloc((size_t)NTOK * V), *dec = falloc((size_t)NTOK * V);
    const int fds[] = {8, 16};
    for (int fi = 0; fi < 2; fi++) {
        mixed_routing(m, fds[fi]);
        mattn_llama_cache *c = NULL, *d = NULL;
        assert_int_equal(mattn_llama_cache_init_kv(m, CTX, MATTN_LLAMA_KV_F32, &c), MATTN_OK);
        assert_int_equal(mattn_llama_cache_init_kv(m, CTX, MATTN_LLAMA_KV_F32, &d), MATTN_OK);
        assert_int_equal(mattn_llama_forward(m, c, tok, 13, got), MATTN_OK); /* chunks 13, 64, 3 */
        assert_int_equal(mattn_llama_forward(m, c, tok + 13, NTOK - 13, got + 13 * V), MATTN_OK);
        for (int i = 0; i < NTOK; i++) assert_int_equal(mattn_llama_decode(m, d, tok[i], dec + i * V), MATTN_OK);
        const uint8_t *routes, *droutes;
        int64_t counts[6];
        assert_int_equal(mattn_llama_cache_routing(c, counts, NULL, NULL, &routes), MATTN_OK);
        assert_int_equal(mattn_llama_cache_routing(d, NULL, NULL, NULL, &droutes), MATTN_OK);
        assert_memory_equal(routes, droutes, 2 * NTOK); /* block 1's input differs by rounding only */
        for (int l = 0; l < 2; l++)
            for (int e = 0; e < 3; e++) {
                const int off = fds[fi] == 16 && l == 1 && e == MATTN_ROUTE_LINEAR; /* not in the mask */
                if (off ? counts[l * 3 + e] != 0 : counts[l * 3 + e] < 8)
                    fail_msg("block %d: expert %d took %lld of %d tokens", l, e, (long long)counts[l * 3 + e], NTOK);
            }
        ref_forward(&rm, m->routing, tok, NTOK, routes, want);
        const double ep = rel_err(got, want, (size_t)NTOK * V), ed = rel_err(dec, want, (size_t)NTOK * V);
        print_message("  fd %d: routes (block 0) %lld/%lld/%lld, (block 1) %lld/%lld/%lld; prefill %.2g, decode %.2g "
                      "vs float64\n", fds[fi], (long long)counts[0], (long long)counts[1], (long long)counts[2],
                      (long long)counts[3], (long long)counts[4], (long long)counts[5], ep, ed);
        assert_true(ep <= 1e-5 && ed <= 1e-5);
        mattn_llama_cache_free(c);
        mattn_llama_cache_free(d);
    }
    ref_close(&rm);
    free(want), free(got), free(dec);
    mattn_llama_free(m);
}

// ---------------------------------------------------------------- properties

static void test_local_and_shares(void **st) {
    (void)st;
    int32_t tok[NTOK];
    tokens(tok, NTOK, 3);
    mattn_llama *m = open_tiny("f32");
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    float *full = falloc((size_t)NTOK * V), *got = falloc((size_t)NTOK * V);
    run(m, MATTN_LLAMA_KV_F32, tok, NTOK, 0, full);
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    cfg.window = CTX;
    cfg.sinks = 0;
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
    const double local[3] = {0, 0, 1};
    assert_int_equal(mattn_llama_routing_fix(m, -1, local), MATTN_OK);
    for (int decode = 0; decode <= 1; decode++) {
        run(m, MATTN_LLAMA_KV_F32, tok, NTOK, decode, got);
        double *fd = malloc(sizeof(double) * NTOK * V);
        for (int i = 0; i < NTOK * V; i++) fd[i] = full[i];
        const double e = rel_err(got, fd, (size_t)NTOK * V); /* the windowed tiles sum in another order */
        free(fd);
        if (!(e <= 1e-5)) fail_msg("%s: local with a window past the context vs full: %.3g", decode ? "decode" : "prefill", e);
    }
    /* shares: 10000 positions' draws of fixed (0.2, 0.5, 0.3) within 4 standard errors */
    const double share[3] = {0.2, 0.5, 0.3};
    assert_int_equal(mattn_llama_routing_fix(m, 1, share), MATTN_OK);
    uint8_t route[64];
    int hits[3] = {0};
    for (int p = 0; p < 10000; p += 64) {
        assert_int_equal(mattn_llama_route(m->routing, 1, NULL, 64, p, CTX, NULL, route), MATTN_OK);
        for (int t = 0; t < 64; t++) hits[route[t]]++;
    }
    for (int e = 0; e < 3; e++) {
        const double n = 10048, se = sqrt(share[e] * (1 - share[e]) / n);
        if (fabs(hits[e] / n - share[e]) > 4 * se) fail_msg("expert %d drawn %d of 10048, share %g", e, hits[e], share[e]);
    }
    free(full), free(got);
    mattn_llama_free(m);
}

// ---------------------------------------------------------------- the file

typedef enum { EDIT_META, EDIT_DROP, EDIT_NAN, EDIT_SHAPE, EDIT_SHARE } edit_kind;

/* Copy routing file src to dst with one edit: metadata key := val, tensor
 * name dropped / NaN at 0 / a shape of one element fewer, or block 1's
 * shares := (0.5, 0.6, 0). */
static void copy_edit(const char *src, const char *dst, edit_kind kind, const char *name, const char *val) {
    mattn_st_file *f = NULL;
    assert_int_equal(mattn_st_open(src, &f, NULL, 0), MATTN_OK);
    const int n = mattn_st_count(f);
    mattn_st_entry *e = calloc((size_t)n, sizeof *e);
    void **bufs = calloc((size_t)n, sizeof *bufs);
    int64_t(*shapes)[8] = calloc((size_t)n, sizeof *shapes);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const mattn_st_tensor *t = mattn_st_get(f, i);
        const int hit = strcmp(t->name, name) == 0;
        if (hit && kind == EDIT_DROP) continue;
        bufs[k] = malloc(t->nbytes + 8);
        memcpy(bufs[k], t->data, t->nbytes);
        memcpy(shapes[k], t->shape, sizeof shapes[k]);
        if (hit && kind == EDIT_NAN) ((float *)bufs[k])[0] = NAN;
        if (hit && kind == EDIT_SHAPE) shapes[k][t->ndim - 1]--;
        if (hit && kind == EDIT_SHARE) ((double *)bufs[k])[3] = 0.5, ((double *)bufs[k])[4] = 0.6,
                                       ((double *)bufs[k])[5] = 0.0;
        e[k] = (mattn_st_entry){t->name, t->dtype, t->ndim, shapes[k], bufs[k]};
        k++;
    }
    static const char *const keys[] = {"format", "format_version", "window", "sinks", "controller_hidden",
                                       "feature_dim", "seed", "n_layers", "d_model", "n_heads", "n_kv_heads",
                                       "head_dim", "position", "experts"};
    const char *meta[28];
    int nm = 0;
    for (int i = 0; i < 14; i++) {
        const char *v = kind == EDIT_META && strcmp(keys[i], name) == 0 ? val : mattn_st_meta(f, keys[i]);
        if (!v) continue; /* val NULL: the key dropped */
        meta[2 * nm] = keys[i], meta[2 * nm + 1] = v, nm++;
    }
    assert_int_equal(mattn_st_write(dst, e, k, meta, nm, NULL, 0), MATTN_OK);
    for (int i = 0; i < k; i++) free(bufs[i]);
    free(e), free(bufs), free(shapes);
    mattn_st_close(f);
}

static void test_file(void **st) {
    (void)st;
    int32_t tok[NTOK];
    tokens(tok, NTOK, 4);
    mattn_llama *m = open_tiny("f32");
    mixed_routing(m, 8);
    float *a = falloc((size_t)NTOK * V), *b = falloc((size_t)NTOK * V);
    run(m, MATTN_LLAMA_KV_F16, tok, NTOK, 0, a);
    const char *path = tmpdir_path("routing.safetensors"), *bad = tmpdir_path("bad.safetensors");
    assert_int_equal(mattn_llama_routing_save(m, path), MATTN_OK);
    mattn_llama_routing_drop(m);
    assert_false(mattn_llama_routing_attached(m));
    assert_int_equal(mattn_llama_routing_load(m, path), MATTN_OK);
    mattn_llama_routing_config cfg;
    assert_int_equal(mattn_llama_routing_get_config(m, &cfg), MATTN_OK);
    assert_true(cfg.window == 8 && cfg.sinks == 2 && cfg.controller_hidden == 8 && cfg.feature_dim == 8 &&
                cfg.seed == 5 && cfg.position == 1 && cfg.experts == 0);
    run(m, MATTN_LLAMA_KV_F16, tok, NTOK, 0, b);
    assert_memory_equal(a, b, sizeof(float) * NTOK * V);
    /* bad files: refused by name, the routing attached left as it was */
    const struct { edit_kind kind; const char *name, *val, *says; mattn_status st; } cases[] = {
        {EDIT_META, "format", "metaattn-layer", "not a routing file", MATTN_ERR_FORMAT},
        {EDIT_META, "format_version", "2", "format_version '2'", MATTN_ERR_UNSUPPORTED},
        {EDIT_META, "n_layers", "3", "n_layers = 3, the model has 2", MATTN_ERR_INVALID_ARG},
        {EDIT_META, "head_dim", "8", "head_dim = 8, the model has 16", MATTN_ERR_INVALID_ARG},
        {EDIT_META, "window", "0", "window = '0' is not an integer in [1,", MATTN_ERR_FORMAT},
        {EDIT_META, "sinks", "2x", "sinks = '2x'", MATTN_ERR_FORMAT},
        {EDIT_META, "feature_dim", NULL, "'feature_dim' is missing", MATTN_ERR_FORMAT},
        {EDIT_META, "position", "2", "position = '2' is not an integer in [0, 1]", MATTN_ERR_FORMAT},
        {EDIT_META, "experts", "9", "experts = '9' is not an integer in [0, 7]", MATTN_ERR_FORMAT},
        {EDIT_DROP, "blk.1.fmap_k.weight", NULL, "'blk.1.fmap_k.weight' is missing", MATTN_ERR_FORMAT},
        {EDIT_NAN, "blk.0.controller.net.0.weight", NULL, "'blk.0.controller.net.0.weight' holds nan",
         MATTN_ERR_NUMERIC},
        {EDIT_SHAPE, "blk.1.fmap_q.weight", NULL, "shape [4, 16, 7], expected [4, 16, 8]", MATTN_ERR_FORMAT},
        {EDIT_SHARE, "route.share", NULL, "block 1: route.fixed", MATTN_ERR_FORMAT},
        {EDIT_DROP, "route.fixed", NULL, "'route.fixed' is missing", MATTN_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        copy_edit(path, bad, cases[i].kind, cases[i].name, cases[i].val);
        const mattn_status s = mattn_llama_routing_load(m, bad);
        if (s != cases[i].st || !strstr(mattn_llama_errmsg(m), cases[i].says))
            fail_msg("case %zu: status %d, '%s' (wanted %d, '%s')", i, s, mattn_llama_errmsg(m), cases[i].st,
                     cases[i].says);
        assert_true(strstr(mattn_llama_errmsg(m), bad) != NULL);
    }
    assert_int_equal(mattn_llama_routing_load(m, tmpdir_path("absent.safetensors")), MATTN_ERR_IO);
    run(m, MATTN_LLAMA_KV_F16, tok, NTOK, 0, b);
    assert_memory_equal(a, b, sizeof(float) * NTOK * V);
    /* a NaN weight is not saved */
    m->routing->layers[1].fk[3] = NAN;
    assert_int_equal(mattn_llama_routing_save(m, bad), MATTN_ERR_NUMERIC);
    assert_non_null(strstr(mattn_llama_errmsg(m), "blk.1.fmap_k.weight"));
    free(a), free(b);
    mattn_llama_free(m);
}

// ---------------------------------------------------------------- misuse

static void test_misuse(void **st) {
    (void)st;
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float logits[8 * V];
    mattn_llama *m = open_tiny("q8_0");
    mattn_llama_cache *c0 = NULL, *c1 = NULL;
    assert_int_equal(mattn_llama_cache_init(m, CTX, &c0), MATTN_OK);
    assert_int_equal(mattn_llama_routing_get_config(m, &(mattn_llama_routing_config){0}), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_routing_save(m, tmpdir_path("x.safetensors")), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_routing_fix(m, 0, (double[3]){1, 0, 0}), MATTN_ERR_INVALID_ARG);
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    cfg.window = 0;
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "window = 0"));
    cfg = mattn_llama_routing_default();
    cfg.sinks = -1;
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "sinks = -1"));
    assert_int_equal(mattn_llama_routing_new(m, NULL), MATTN_ERR_INVALID_ARG);
    assert_false(mattn_llama_routing_attached(m));
    cfg = mattn_llama_routing_default();
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
    /* a cache made before the routing is refused */
    assert_int_equal(mattn_llama_forward(m, c0, tok, 8, logits), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "without routing"));
    const struct { int layer; double s[3]; const char *says; } fixes[] = {
        {2, {1, 0, 0}, "layer = 2 is outside [-1, 2)"}, {-2, {1, 0, 0}, "layer = -2"},
        {0, {0.5, 0.6, -0.1}, "share[2] = -0.1"}, {0, {0.5, 0.6, 0}, "sum to 1.1"}, {0, {NAN, 1, 0}, "share[0] = nan"}};
    for (size_t i = 0; i < sizeof fixes / sizeof fixes[0]; i++) {
        assert_int_equal(mattn_llama_routing_fix(m, fixes[i].layer, fixes[i].s), MATTN_ERR_INVALID_ARG);
        if (!strstr(mattn_llama_errmsg(m), fixes[i].says)) fail_msg("'%s' lacks '%s'", mattn_llama_errmsg(m), fixes[i].says);
    }
    /* a non-finite controller: the call fails, the cache is poisoned until reset */
    assert_int_equal(mattn_llama_cache_init(m, CTX, &c1), MATTN_OK);
    assert_int_equal(mattn_llama_forward(m, c1, tok, 4, logits), MATTN_OK);
    const float keep = m->routing->layers[1].ctrl.b1[0];
    m->routing->layers[1].ctrl.b1[0] = INFINITY;
    assert_int_equal(mattn_llama_forward(m, c1, tok, 4, logits), MATTN_ERR_NUMERIC);
    assert_non_null(strstr(mattn_llama_errmsg(m), "block 1 at position 4"));
    m->routing->layers[1].ctrl.b1[0] = keep;
    assert_int_equal(mattn_llama_decode(m, c1, 3, logits), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "reset the cache"));
    mattn_llama_cache_reset(c1);
    assert_int_equal(mattn_llama_forward(m, c1, tok, 8, logits), MATTN_OK);
    /* fixed or dropped: caches made before are refused (a reset first is harmless), new ones work */
    assert_int_equal(mattn_llama_routing_fix(m, 1, (double[3]){0, 1, 0}), MATTN_OK);
    assert_int_equal(mattn_llama_decode(m, c1, 3, logits), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "for other routing"));
    mattn_llama_routing_drop(m);
    mattn_llama_cache_reset(c1);
    assert_int_equal(mattn_llama_decode(m, c1, 3, logits), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "for other routing"));
    mattn_llama_cache_free(c1);
    mattn_llama_cache_free(c0);
    assert_int_equal(mattn_llama_cache_routing(NULL, NULL, NULL, NULL, NULL), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_routing_new(NULL, &cfg), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_routing_load(NULL, "x"), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_routing_load(m, NULL), MATTN_ERR_INVALID_ARG);
    mattn_llama_free(m);
}

/* Open, route (all three experts), save, load, run: any failure's status. */
static mattn_status op_all(void) {
    mattn_llama *m = NULL;
    mattn_status st = mattn_llama_open(FIX "llama_tiny_q8_0.gguf", &m);
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    cfg.window = 4;
    if (st == MATTN_OK) st = mattn_llama_routing_new(m, &cfg);
    if (st == MATTN_OK) st = mattn_llama_routing_fix(m, -1, (double[3]){0.3, 0.3, 0.4});
    if (st == MATTN_OK) st = mattn_llama_routing_save(m, tmpdir_path("faults.safetensors"));
    if (st == MATTN_OK) st = mattn_llama_routing_load(m, tmpdir_path("faults.safetensors"));
    mattn_llama_cache *c = NULL;
    if (st == MATTN_OK) st = mattn_llama_cache_init(m, 32, &c);
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float logits[8 * V];
    if (st == MATTN_OK) st = mattn_llama_forward(m, c, tok, 7, logits);
    if (st == MATTN_OK) st = mattn_llama_decode(m, c, tok[7], logits);
    mattn_llama_cache_free(c);
    mattn_llama_free(m);
    return st;
}

static void test_faults(void **st) {
    (void)st;
    fault_sweep(op_all, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_full_exact),
        cmocka_unit_test(test_mixed_vs_ref),
        cmocka_unit_test(test_local_and_shares),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
