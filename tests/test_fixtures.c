/*
 * test_fixtures.c — PyTorch parity.  tests/fixtures/gen_layer_fixtures.py
 * (PyTorch, float64) writes one safetensors file per case: the config in
 * __metadata__, weights under the Python library's state_dict names, the
 * input x (and key_padding_mask), and the expected out, alpha, weights,
 * beta_hat, uncertainty and aux_loss of the layer in eval mode.  This test
 * runs our layer on the same weights and input and requires every output
 * within 1e-5 max-abs.  For the soft-routing cases it also runs the backward
 * of L = sum(grad_out * out) + aux_loss and requires every parameter
 * gradient and dL/dx within 2e-5 max-abs of PyTorch autograd.  No Python at
 * test time.
 */
#include "test_util.h"
#include "io/io.h"

#define TOL 1e-5
#define GTOL 2e-5 /* gradients (measured worst: 4.8e-6) */

static const char *cases[] = {
    "layer_bayes_bidir", "layer_bayes_causal", "layer_pf_bidir",    "layer_pf_causal",
    "layer_bayes_share", "layer_bayes_padding", "layer_bayes_hard", "layer_pf_hard_top2",
    "layer_bayes_elbo0", "layer_bayes_t1",
};

static float *tensor(const mattn_st_file *f, const char *name, int64_t want_numel) {
    const mattn_st_tensor *t = mattn_st_find(f, name);
    if (!t) fail_msg("fixture has no tensor '%s'", name);
    if (want_numel >= 0 && t->numel != want_numel)
        fail_msg("tensor '%s' has %lld values, expected %lld", name, (long long)t->numel, (long long)want_numel);
    float *p = falloc((size_t)t->numel);
    mattn_st_to_f32(t, p);
    return p;
}

static void run_case(const char *name) {
    char path[256], err[512];
    snprintf(path, sizeof path, "tests/fixtures/%s.safetensors", name);
    mattn_st_file *f;
    if (mattn_st_open(path, &f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    mattn_config cfg;
    const char *json = mattn_st_meta(f, "config");
    assert_non_null(json);
    if (mattn_config_from_json(json, &cfg) != MATTN_OK) fail_msg("%s: %s", path, mattn_last_error());
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&cfg, NULL, &l), MATTN_OK);
    for (int i = 0; i < mattn_layer_n_params(l); i++) {
        mattn_tensor t;
        mattn_layer_param(l, i, &t);
        int64_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= t.shape[d];
        float *w = tensor(f, t.name, n);
        memcpy(t.data, w, (size_t)n * sizeof(float));
        free(w);
    }
    const mattn_st_tensor *tx = mattn_st_find(f, "x");
    assert_non_null(tx);
    const int B = (int)tx->shape[0], T = (int)tx->shape[1], D = cfg.d_model, K = cfg.n_experts;
    const int64_t N = (int64_t)B * T;
    float *x = tensor(f, "x", N * D), *out = falloc((size_t)(N * D));
    uint8_t *kp = NULL;
    mattn_masks m = {0};
    if (mattn_st_find(f, "key_padding_mask")) {
        float *mf = tensor(f, "key_padding_mask", N);
        kp = malloc((size_t)N);
        for (int64_t i = 0; i < N; i++) kp[i] = mf[i] != 0.0f;
        m.key_padding = kp;
        free(mf);
    }
    mattn_layer_set_training(l, 0);
    float aux;
    mattn_stats s;
    if (mattn_layer_forward(l, x, B, T, kp ? &m : NULL, out, &aux, &s) != MATTN_OK)
        fail_msg("%s: %s", name, mattn_layer_errmsg(l));

    char what[192];
    float *want = tensor(f, "out", N * D);
    snprintf(what, sizeof what, "%s: out", name);
    double e_out = max_abs_diff(out, want, (size_t)(N * D), TOL, what);
    free(want);
    want = tensor(f, "alpha", N * K);
    snprintf(what, sizeof what, "%s: alpha", name);
    double e_alpha = max_abs_diff(mattn_layer_alpha(l), want, (size_t)(N * K), TOL, what);
    free(want);
    want = tensor(f, "weights", N * K);
    snprintf(what, sizeof what, "%s: weights", name);
    double e_w = max_abs_diff(mattn_layer_merge_weights(l), want, (size_t)(N * K), TOL, what);
    free(want);
    double e_bh = 0, e_u = 0;
    if (cfg.controller == MATTN_CONTROLLER_BAYESIAN) {
        want = tensor(f, "beta_hat", N * K);
        snprintf(what, sizeof what, "%s: beta_hat", name);
        e_bh = max_abs_diff(mattn_layer_beta_hat(l), want, (size_t)(N * K), TOL, what);
        free(want);
        want = tensor(f, "uncertainty", N);
        snprintf(what, sizeof what, "%s: uncertainty", name);
        e_u = max_abs_diff(mattn_layer_uncertainty(l), want, (size_t)N, TOL, what);
        free(want);
    }
    want = tensor(f, "aux_loss", 1);
    double e_aux = fabs((double)aux - want[0]);
    free(want);
    printf("  %-20s out %.2e  alpha %.2e  weights %.2e  beta_hat %.2e  uncertainty %.2e  aux %.2e\n", name,
           e_out, e_alpha, e_w, e_bh, e_u, e_aux);
    assert_true(e_out <= TOL && e_alpha <= TOL && e_w <= TOL && e_bh <= TOL && e_u <= TOL && e_aux <= TOL);

    /* gradients of L = sum(grad_out * out) + aux_loss (soft-routing cases) */
    if (mattn_st_find(f, "grad_out")) {
        float *R = tensor(f, "grad_out", N * D), *gx = falloc((size_t)(N * D));
        assert_int_equal(mattn_layer_zero_grad(l), MATTN_OK);
        if (mattn_layer_backward(l, x, kp ? &m : NULL, R, 1.0f, gx) != MATTN_OK)
            fail_msg("%s: %s", name, mattn_layer_errmsg(l));
        double e_g = 0.0;
        for (int i = 0; i < mattn_layer_n_params(l); i++) {
            mattn_tensor t;
            mattn_layer_param(l, i, &t);
            int64_t n = 1;
            for (int d = 0; d < t.ndim; d++) n *= t.shape[d];
            char gname[128];
            snprintf(gname, sizeof gname, "grad.%s", t.name);
            want = tensor(f, gname, n);
            snprintf(what, sizeof what, "%s: %s", name, gname);
            e_g = fmax(e_g, max_abs_diff(t.grad, want, (size_t)n, GTOL, what));
            free(want);
        }
        want = tensor(f, "grad.x", N * D);
        snprintf(what, sizeof what, "%s: grad.x", name);
        double e_gx = max_abs_diff(gx, want, (size_t)(N * D), GTOL, what);
        free(want);
        printf("  %-20s grad params %.2e  grad x %.2e\n", "", e_g, e_gx);
        assert_true(e_g <= GTOL && e_gx <= GTOL);
        free(R);
        free(gx);
    }
    free(x);
    free(out);
    free(kp);
    mattn_layer_free(l);
    mattn_st_close(f);
}

static void test_pytorch_parity(void **st) {
    (void)st;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(cases[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pytorch_parity)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
