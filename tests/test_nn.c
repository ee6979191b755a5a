/*
 * test_nn.c — the language model's building blocks (nn.c): each backward
 * against central finite differences of its forward (L = sum R .* out, in
 * double), on odd sizes; LayerNorm and cross-entropy also against closed
 * forms; backward accumulates.
 */
#include "test_util.h"

enum { N = 7, C = 13, O = 5, V = 11 };

typedef struct {
    int which;
    float x[N * C], w[C * O > C ? C * O : C], b[O > C ? O : C], out[N * (O > C ? O : C)];
    float R[N * (O > C ? O : C)], mean[N], rstd[N], probs[N * V];
    int32_t idx[N], tgt[N];
} ctx_t;

static int out_size(int which) { return which == 2 ? N * O : which == 4 ? 1 : N * C; }

static void forward(ctx_t *c) {
    switch (c->which) {
    case 0: mattn_layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, N, C); break;
    case 1: mattn_gelu_forward(c->out, c->x, N * C); break;
    case 2: mattn_linear_forward(c->out, c->x, c->w, c->b, N, C, O); break;
    case 3: mattn_dropout_forward(c->out, c->x, N * C, 0.3f, 99); break;
    case 4: {
        /* x holds N x V logits here (V < C) */
        float logits[N * V];
        for (int n = 0; n < N; n++) memcpy(logits + n * V, c->x + n * C, V * sizeof(float));
        c->out[0] = (float)mattn_crossentropy_forward(c->probs, logits, c->tgt, N, V, NULL);
        break;
    }
    }
}

static double loss(void *p) {
    ctx_t *c = p;
    if (c->which == 4) {
        float logits[N * V];
        for (int n = 0; n < N; n++) memcpy(logits + n * V, c->x + n * C, V * sizeof(float));
        return mattn_crossentropy_forward(c->probs, logits, c->tgt, N, V, NULL);
    }
    forward(c);
    double L = 0.0;
    for (int i = 0; i < out_size(c->which); i++) L += (double)c->R[i] * c->out[i];
    return L;
}

static void test_blocks_fd(void **st) {
    (void)st;
    static const char *names[] = {"layernorm", "gelu", "linear", "dropout", "crossentropy"};
    for (int which = 0; which < 5; which++) {
        ctx_t c;
        memset(&c, 0, sizeof c);
        c.which = which;
        fill_normal(c.x, N * C, 1 + which, 1.5);
        fill_normal(c.w, sizeof c.w / sizeof(float), 2, 0.7);
        fill_normal(c.b, sizeof c.b / sizeof(float), 3, 0.5);
        fill_normal(c.R, sizeof c.R / sizeof(float), 4, 1.0);
        for (int n = 0; n < N; n++) c.tgt[n] = n == 3 ? -1 : (n * 5) % V; /* one ignored row */
        forward(&c);
        float dx[N * C] = {0}, dw[C * O] = {0}, db[C] = {0};
        switch (which) {
        case 0: mattn_layernorm_backward(dx, dw, db, c.R, c.x, c.mean, c.rstd, c.w, N, C); break;
        case 1: mattn_gelu_backward(dx, c.x, c.R, N * C); break;
        case 2: mattn_linear_backward(dx, dw, db, c.R, c.x, c.w, N, C, O); break;
        case 3: mattn_dropout_backward(dx, c.R, N * C, 0.3f, 99); break;
        case 4: {
            float dl[N * V] = {0};
            mattn_crossentropy_backward(dl, c.probs, c.tgt, N, V, N - 1, 1.0f);
            for (int n = 0; n < N; n++) memcpy(dx + n * C, dl + n * V, V * sizeof(float));
            break;
        }
        }
        /* x */
        size_t nx = which == 4 ? (size_t)N * C : (size_t)N * C; /* CE: columns >= V have zero gradient */
        assert_true(fd_check(loss, &c, c.x, nx, dx, 12, 2, 1e-2, 1e-2, 5e-4, 10 + which, names[which]) <= 1.0);
        if (which == 0) {
            assert_true(fd_check(loss, &c, c.w, C, dw, 5, 1, 1e-2, 1e-2, 5e-4, 30, "layernorm w") <= 1.0);
            assert_true(fd_check(loss, &c, c.b, C, db, 5, 1, 1e-2, 1e-2, 5e-4, 31, "layernorm b") <= 1.0);
        }
        if (which == 2) {
            assert_true(fd_check(loss, &c, c.w, C * O, dw, 8, 1, 1e-2, 1e-2, 5e-4, 32, "linear W") <= 1.0);
            assert_true(fd_check(loss, &c, c.b, O, db, 5, 1, 1e-2, 1e-2, 5e-4, 33, "linear b") <= 1.0);
        }
    }
}


/* The vectorised GELU and its derivative against the erf formula in double
 * over [-10, 10], including the negative tail where 1 + erf cancels. */
static void test_gelu_accuracy(void **st) {
    (void)st;
    enum { n = 20001 };
    float *x = falloc(n), *y = falloc(n), *g = falloc(n), *one = falloc(n);
    for (int i = 0; i < n; i++) x[i] = -10.0f + 20.0f * (float)i / (n - 1), one[i] = 1.0f;
    mattn_gelu_forward(y, x, n);
    mattn_gelu_backward(g, x, one, n);
    double wf = 0.0, wg = 0.0;
    for (int i = 0; i < n; i++) {
        const double z = x[i], c = 0.5 * (1.0 + erf(z / sqrt(2.0)));
        const double e = z * exp(-0.5 * z * z) / sqrt(2.0 * M_PI), f = z * c, d = c + e;
        /* relative to |f| (floor 1e-6); the derivative relative to the size
         * of its two terms (it crosses zero near x = -0.75) */
        wf = fmax(wf, fabs(y[i] - f) / fmax(fabs(f), 1e-6));
        wg = fmax(wg, fabs(g[i] - d) / fmax(fabs(c) + fabs(e), 1e-6));
    }
    if (!(wf < 5e-6 && wg < 5e-6)) print_error("gelu rel err %.3g, gelu' rel err %.3g\n", wf, wg);
    assert_true(wf < 5e-6 && wg < 5e-6);
    free(x); free(y); free(g); free(one);
}

static void test_layernorm_closed_form(void **st) {
    (void)st;
    float x[C], w[C], b[C], out[C], mean, rstd;
    for (int i = 0; i < C; i++) x[i] = (float)i, w[i] = 1.0f, b[i] = 0.0f;
    mattn_layernorm_forward(out, &mean, &rstd, x, w, b, 1, C);
    double m = 0, v = 0;
    for (int i = 0; i < C; i++) m += out[i];
    for (int i = 0; i < C; i++) v += (double)out[i] * out[i];
    assert_true(fabs(m / C) < 1e-6 && fabs(v / C - 1.0) < 1e-4);
    assert_true(fabsf(mean - 6.0f) < 1e-6f);
}

static void test_embedding_and_ce(void **st) {
    (void)st;
    enum { B = 2, T = 3, D = 4, VV = 5 };
    float tok[VV * D], pos[T * D], out[B * T * D], dout[B * T * D], dtok[VV * D] = {0}, dpos[T * D] = {0};
    int32_t idx[B * T] = {1, 4, 1, 0, 1, 2};
    fill_normal(tok, VV * D, 1, 1.0);
    fill_normal(pos, T * D, 2, 1.0);
    fill_normal(dout, B * T * D, 3, 1.0);
    mattn_embed_forward(out, idx, tok, pos, B, T, D);
    assert_true(out[5 * D + 2] == tok[2 * D + 2] + pos[2 * D + 2]);
    mattn_embed_backward(dtok, dpos, dout, idx, B, T, D);
    /* token 1 appears at (0,0), (0,2), (1,1) */
    for (int i = 0; i < D; i++) {
        assert_true(fabsf(dtok[1 * D + i] - (dout[0 * D + i] + dout[2 * D + i] + dout[4 * D + i])) < 1e-6f);
        assert_true(fabsf(dpos[1 * D + i] - (dout[1 * D + i] + dout[4 * D + i])) < 1e-6f);
        assert_true(dtok[3 * D + i] == 0.0f);
    }
    /* uniform logits: loss = ln V */
    float logits[2 * VV] = {0}, probs[2 * VV];
    int32_t tg[2] = {0, 3};
    assert_true(fabs(mattn_crossentropy_forward(probs, logits, tg, 2, VV, NULL) - log(VV)) < 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_fd),
        cmocka_unit_test(test_layernorm_closed_form),
        cmocka_unit_test(test_gelu_accuracy),
        cmocka_unit_test(test_embedding_and_ce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
