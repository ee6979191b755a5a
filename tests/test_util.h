/*
 * test_util.h — helpers shared by the cmocka tests: tensor comparison with a
 * report of the worst element, seeded random fill.  Included by exactly one
 * translation unit per test program, so static functions are fine here.
 */
#ifndef MATTN_TEST_UTIL_H
#define MATTN_TEST_UTIL_H

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "train/train.h"

/* The tests' small shapes, in one place.  A layer: D = d_model, H heads,
 * local window w, controller width hc, the rest the defaults.  A language
 * model: V tokens, 2 layers, T positions, FFN x2, D 8, 2 heads, window 2,
 * controller width 4; causal = position_norm "max_seq_len" (decoding). */
static __attribute__((unused)) mattn_config test_layer_config(int d_model, int n_heads, int window, int hc,
                                                                uint64_t seed) {
    mattn_config c = mattn_config_default();
    c.d_model = d_model;
    c.n_heads = n_heads;
    c.window_size = window;
    c.controller_hidden = hc;
    c.seed = seed;
    return c;
}

static __attribute__((unused)) mattn_lm_config test_lm_config(int vocab, int T, int causal, uint64_t seed) {
    mattn_lm_config c = mattn_lm_config_default();
    c.vocab_size = vocab;
    c.n_layers = 2;
    c.max_seq_len = T;
    c.ffn_multiplier = 2;
    c.position_norm = causal;
    c.attn = test_layer_config(8, 2, 2, 4, seed);
    return c;
}

/* max |a-b| over n values; prints the worst index when above tol. */
static __attribute__((unused)) double max_abs_diff(const float *a, const float *b, size_t n, double tol, const char *what) {
    double worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst)) { worst = d; wi = i; }
    }
    if (!(worst <= tol))
        print_error("%s: max|diff| = %.3g at %zu (%.8g vs %.8g), tol %.3g\n", what, worst, wi,
                    (double)a[wi], (double)b[wi], tol);
    return worst;
}

/* Scratch for calling the attention cores directly (kernels never
 * allocate): one buffer per test program, grown to the largest (T, dh) asked
 * for, with slots for 8 threads whatever the team size. */
static __attribute__((unused)) void set_attn_scratch(mattn_attn_args *a) {
    static void *buf;
    static size_t cap;
    size_t n = mattn_attn_softmax_scratch(a->Tk > a->T ? a->Tk : a->T, a->dh, 0, 8), m;
    if ((m = mattn_attn_softmax_scratch(a->T, a->dh, 1, 8)) > n) n = m;
    if ((m = mattn_attn_linear_scratch(0, 8)) > n) n = m;
    if ((m = mattn_attn_linear_scratch(1, 8)) > n) n = m;
    if (n > cap) {
        mattn_afree(buf);
        buf = mattn_amalloc(n);
        cap = buf ? n : 0;
    }
    a->scratch = buf;
    a->scratch_bytes = cap;
}

#define assert_close(a, b, n, tol, what) assert_true(max_abs_diff((a), (b), (n), (tol), (what)) <= (tol))

static __attribute__((unused)) void fill_normal(float *x, size_t n, uint64_t seed, double std) {
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * mattn_rng_normal(&r));
}

static __attribute__((unused)) float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

/* Scratch directory of a test program: g_tmpdir, made by tmpdir_setup and
 * removed with its contents by tmpdir_teardown (cmocka group fixtures). */
/* Tensor `name` of the safetensors file `path` as n floats (fails the test
 * when the file, the tensor or its size is not as expected). */
static __attribute__((unused)) float *read_ref_tensor(const char *path, const char *name, int64_t n) {
    mattn_tensors *f = NULL;
    if (mattn_tensors_open(path, &f) != MATTN_OK) fail_msg("%s", mattn_last_error());
    mattn_tensor_info info;
    if (mattn_tensors_find(f, name, &info) != MATTN_OK) fail_msg("%s: no tensor %s", path, name);
    assert_int_equal(info.numel, n);
    float *x = falloc((size_t)n);
    assert_int_equal(mattn_tensors_read_f32(f, name, x, n), MATTN_OK);
    mattn_tensors_free(f);
    return x;
}

static char g_tmpdir[64];

static __attribute__((unused)) int tmpdir_setup(void **state) {
    (void)state;
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/mattn-test-XXXXXX");
    return mkdtemp(g_tmpdir) ? 0 : -1;
}

static __attribute__((unused)) int tmpdir_teardown(void **state) {
    (void)state;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* g_tmpdir/name, in one of 16 rotating buffers (copy it to keep it longer). */
static __attribute__((unused)) const char *tmpdir_path(const char *name) {
    static char p[16][256];
    static int k;
    k = (k + 1) % 16;
    snprintf(p[k], sizeof p[k], "%s/%s", g_tmpdir, name);
    return p[k];
}

/* Number of entries in g_tmpdir (a failed save must leave no temporary). */
static __attribute__((unused)) int tmpdir_entries(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", g_tmpdir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

/* FNV-1a of a file's bytes (0 if it cannot be read): "unchanged" checks. */
static __attribute__((unused)) uint64_t file_hash(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint64_t h = 1469598103934665603ULL;
    int c;
    while ((c = fgetc(f)) != EOF) h = (h ^ (unsigned)c) * 1099511628211ULL;
    fclose(f);
    return h;
}


/* ---- finite differences ----------------------------------------------------
 * loss(ctx) evaluates a scalar (double) from the current contents of theta.
 * Central differences on n_coords random coordinates and n_dirs random
 * directions of theta (n floats) against the analytic gradient grad; the step
 * is h * max(1, |theta_i|) for coordinates and h for unit directions, the
 * actual step is re-measured after float rounding (docs/bayes-math.md §10.1).  Passes when
 * |fd - an| <= rtol |an| + atol everywhere; returns the worst err/tol. */
typedef double (*fd_loss_fn)(void *ctx);

static __attribute__((unused)) double fd_check(fd_loss_fn loss, void *ctx, float *theta, size_t n,
                                               const float *grad, int n_coords, int n_dirs, double h,
                                               double rtol, double atol, uint64_t seed, const char *what) {
#ifdef MATTN_F64
    /* The double build (float is #defined to double for the library and the
     * tests, see CMakeLists.txt): central differences are exact to ~1e-10,
     * so the check tightens to rtol 1e-6, atol 1e-8 whatever the caller
     * asked for in float. */
    h = 1e-5, rtol = 1e-6, atol = 1e-8;
#endif
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    double worst = 0.0, worst_rel = 0.0;
    float *save = falloc(n), *v = falloc(n);
    memcpy(save, theta, n * sizeof(float));
    for (int c = 0; c < n_coords + n_dirs; c++) {
        double an = 0.0, fd;
        if (c < n_coords) {
            size_t i = (size_t)(mattn_rng_u01(&r) * (double)n);
            if (i >= n) i = n - 1;
            float hp = (float)(theta[i] + h * fmax(1.0, fabs(theta[i])));
            float hm = (float)(theta[i] - h * fmax(1.0, fabs(theta[i])));
            theta[i] = hp;
            double lp = loss(ctx);
            theta[i] = hm;
            double lm = loss(ctx);
            theta[i] = save[i];
            fd = (lp - lm) / ((double)hp - (double)hm);
            an = grad[i];
        } else {
            double nrm = 0.0;
            for (size_t i = 0; i < n; i++) {
                v[i] = (float)mattn_rng_normal(&r);
                nrm += (double)v[i] * v[i];
            }
            nrm = sqrt(nrm);
            for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] / nrm);
            for (size_t i = 0; i < n; i++) theta[i] = (float)(save[i] + h * v[i]);
            double lp = loss(ctx);
            for (size_t i = 0; i < n; i++) theta[i] = (float)(save[i] - h * v[i]);
            double lm = loss(ctx);
            memcpy(theta, save, n * sizeof(float));
            fd = (lp - lm) / (2.0 * h);
            for (size_t i = 0; i < n; i++) an += (double)grad[i] * v[i];
        }
        double err = fabs(fd - an) / (rtol * fabs(an) + atol);
        if (err > 1.0)
            print_error("%s: %s %d: fd %.8g vs analytic %.8g (err/tol %.3g)\n", what,
                        c < n_coords ? "coordinate" : "direction", c, fd, an, err);
        if (err > worst) worst = err;
        double rel = fabs(fd - an) / fmax(fabs(an), 1e-3);
        if (rel > worst_rel) worst_rel = rel;
    }
    if (getenv("MATTN_FD_REPORT"))
        printf("fd %-48s worst |fd-an|/max(|an|,1e-3) = %.2e\n", what, worst_rel);
    free(save);
    free(v);
    return worst;
}

/* Every allocation of op failing in turn (persistent: and every one after
 * it too, with persistent_too): each must give MATTN_ERR_NOMEM and leak
 * nothing.  op must succeed without faults. */
static __attribute__((unused)) void fault_sweep(mattn_status (*op)(void), int persistent_too) {
    const long live0 = mattn_alloc_live();
    mattn_fault_alloc(LONG_MAX, 0); /* count only */
    assert_int_equal(op(), MATTN_OK);
    const long total = mattn_alloc_count();
    mattn_fault_alloc(0, 0);
    assert_int_equal(mattn_alloc_live(), live0);
    for (int persistent = 0; persistent <= persistent_too; persistent++)
        for (long n = 1; n <= total; n++) {
            mattn_fault_alloc(n, persistent);
            const mattn_status s = op();
            mattn_fault_alloc(0, 0);
            if (s != MATTN_ERR_NOMEM)
                fail_msg("allocation %ld of %ld failing: status %d (%s)", n, total, s, mattn_last_error());
            if (mattn_alloc_live() != live0) fail_msg("allocation %ld failing: %ld leaked", n, mattn_alloc_live() - live0);
        }
    print_message("  %ld allocations, each failing gives MATTN_ERR_NOMEM\n", total);
}

#endif
