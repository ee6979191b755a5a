/*
 * test_dirichlet.c — special functions, Dirichlet entropy/KL and gradients,
 * the PRNG and the Gamma/Dirichlet samplers against docs/bayes-math.md §9,
 * finite differences (§10.2) and Monte Carlo moments.
 */
#include "test_util.h"

static void close_rel(double got, double want, double rtol, double atol) {
    if (!(fabs(got - want) <= rtol * fabs(want) + atol)) {
        print_error("got %.17g want %.17g\n", got, want);
        fail();
    }
}

// ---------------------------------------------------------------- §9.1
static void test_special_functions(void **st) {
    (void)st;
    static const double v[][4] = { /* x, lnGamma, psi, psi1 (exact) */
        {0.01, 4.5994798780420217, -100.56088545786867, 10001.621213528313},
        {0.1, 2.2527126517342059, -10.423754940411076, 101.43329915079275},
        {0.5, 0.57236494292470009, -1.9635100260214235, 4.9348022005446793},
        {1, 0, -0.57721566490153286, 1.6449340668482264},
        {1.4616321449683622, -0.12148629053584961, -9.2412655217294275e-17, 0.96767224544762125},
        {2.5, 0.28468287047291916, 0.70315664064524319, 0.49035775610023486},
        {6, 4.787491742782046, 1.7061176684318005, 0.18132295573711533},
        {10, 12.80182748008147, 2.2517525890667211, 0.10516633568168575},
        {30.5, 72.953471184169408, 3.4012436689616611, 0.033330248112801609},
        {100, 359.1342053695754, 4.6001618527380874, 0.010050166663333571},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        close_rel(mattn_lgamma(v[i][0]), v[i][1], 0, 2e-15 * fmax(1, fabs(v[i][1])));
        close_rel(mattn_digamma(v[i][0]), v[i][2], 0, 2e-15 * fmax(1, fabs(v[i][2])));
        close_rel(mattn_trigamma(v[i][0]), v[i][3], 2e-15, 0);
    }
}

// ---------------------------------------------------------------- §9.2
static void test_entropy_kl_vectors(void **st) {
    (void)st;
    const double bdef[3] = {0.01, 0.86, 0.71}, b1[3] = {1, 1, 1};
    struct { double a[3]; const double *b; double H, dH[3], KL, dKL[3]; } c[] = {
        {{0.51, 1.06, 2.01}, bdef, -1.4527255558, {2.52463106407, 0.096021519879, -0.460612616817},
         3.07163864714, {1.7417881131, -0.341533116479, 0.189351216101}},
        {{0.02, 5.0, 0.9}, bdef, -48.2010105052, {2452.10339067, -0.348056977832, 0.729488841064},
         0.813032580473, {24.2174882957, 0.117784150518, -0.433210293933}},
        {{2, 3, 4}, b1, -1.31255339581, {0.060138021316, -0.0847960455323, -0.146396779047},
         0.619406215254, {-0.060138021316, 0.0847960455323, 0.146396779047}},
        {{0.01, 0.86, 0.71}, bdef, -95.1108183438, {9900.3657263, -0.951032683008, -0.435693943677},
         0, {0, 0, 0}},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        double g[3], gk[3];
        close_rel(mattn_dir_entropy(c[i].a, 3, g), c[i].H, 1e-10, 1e-12);
        close_rel(mattn_dir_kl(c[i].a, c[i].b, 3, gk), c[i].KL, 1e-10, 1e-12);
        for (int k = 0; k < 3; k++) {
            close_rel(g[k], c[i].dH[k], 1e-9, 1e-12);
            close_rel(gk[k], c[i].dKL[k], 1e-9, 1e-12);
        }
    }
}

/* §10.2: dH/da and dKL/da against central differences, h = 1e-5 a_i. */
static void test_entropy_kl_fd(void **st) {
    (void)st;
    const double b[3] = {0.01, 0.86, 0.71};
    const double pts[][3] = {{0.51, 1.06, 2.01}, {0.02, 5.0, 0.9}, {1e-3, 50, 1e4}, {0.3, 0.3, 0.3}};
    for (size_t p = 0; p < sizeof pts / sizeof pts[0]; p++) {
        double g[3], gk[3];
        mattn_dir_entropy(pts[p], 3, g);
        mattn_dir_kl(pts[p], b, 3, gk);
        for (int i = 0; i < 3; i++) {
            double ap[3], am[3];
            memcpy(ap, pts[p], sizeof ap);
            memcpy(am, pts[p], sizeof am);
            double h = 1e-5 * pts[p][i];
            ap[i] += h;
            am[i] -= h;
            double fdH = (mattn_dir_entropy(ap, 3, NULL) - mattn_dir_entropy(am, 3, NULL)) / (ap[i] - am[i]);
            double fdK = (mattn_dir_kl(ap, b, 3, NULL) - mattn_dir_kl(am, b, 3, NULL)) / (ap[i] - am[i]);
            close_rel(fdH, g[i], 1e-6, 1e-6);
            close_rel(fdK, gk[i], 1e-6, 1e-6);
        }
    }
}

// ---------------------------------------------------------------- §9.7
static void test_prng_known_answers(void **st) {
    (void)st;
    uint64_t s = 0;
    assert_true(mattn_splitmix64_next(&s) == 0xe220a8397b1dcdafULL);
    assert_true(mattn_splitmix64_next(&s) == 0x6e789e6aa1b965f4ULL);
    assert_true(mattn_splitmix64_next(&s) == 0x06c45d188009454fULL);
    uint64_t seed = mattn_stream_seed(12345, 0, 0, 1);
    assert_true(seed == 0x1b42f025e7770d28ULL);
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    assert_true(r.s[0] == 0x3ac05774931810f6ULL && r.s[1] == 0x161c401cb7d54a44ULL &&
                r.s[2] == 0x1b1f785c33b9c50dULL && r.s[3] == 0xa356558d8dea122fULL);
    assert_true(mattn_rng_next(&r) == 0x7ba286283f06fbefULL);
    assert_true(mattn_rng_next(&r) == 0xad46140fc00a49e3ULL);
    assert_true(mattn_rng_next(&r) == 0xeb1bd7abb94014c0ULL);
    mattn_rng_seed(&r, seed);
    close_rel(mattn_rng_u01(&r), 0.48294867022107363, 1e-12, 0);
    close_rel(mattn_rng_u01(&r), 0.67685056099438978, 1e-12, 0);
    close_rel(mattn_rng_u01(&r), 0.91839359228583839, 1e-12, 0);
    mattn_rng_seed(&r, seed);
    close_rel(mattn_rng_normal(&r), -0.53521206981028357, 1e-12, 0);
    close_rel(mattn_rng_normal(&r), 0.41079064162699364, 1e-12, 0);
    close_rel(mattn_rng_normal(&r), -0.54747685301895432, 1e-12, 0);
}

static void test_gamma_known_answers(void **st) {
    (void)st;
    const double a[5] = {0.01, 0.5, 1, 2.5, 10};
    const double g[5] = {3.751915890222165e-32, 0.11453564644822412, 0.032739328347634093,
                         2.7157271124169342, 11.452259287479672};
    const double lg[5] = {-72.360456362234942, -2.1668691817467827, -3.4191782219828069,
                          0.99905973057529818, 2.4381870282194891};
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed(12345, 0, 0, 1));
    for (int i = 0; i < 5; i++) {
        double l;
        close_rel(mattn_rng_gamma(&r, a[i], &l), g[i], 1e-12, 0);
        close_rel(l, lg[i], 1e-12, 0);
    }
    /* Dirichlet(a=[0.51,1.06,2.01]) in log space, streams (12345, 0, n, 1) */
    const double da[3] = {0.51, 1.06, 2.01};
    const double want[2][3] = {{0.13170660329033274, 0.087007024340854791, 0.78128637236881249},
                               {0.50006002445498376, 0.45672525139281656, 0.043214724152199721}};
    for (int n = 0; n < 2; n++) {
        mattn_rng_seed(&r, mattn_stream_seed(12345, 0, (uint64_t)n, 1));
        double l[3], m = -INFINITY, Z = 0;
        for (int i = 0; i < 3; i++) { mattn_rng_gamma(&r, da[i], &l[i]); m = fmax(m, l[i]); }
        for (int i = 0; i < 3; i++) Z += exp(l[i] - m);
        for (int i = 0; i < 3; i++) close_rel(exp(l[i] - m) / Z, want[n][i], 1e-12, 0);
    }
}

/* dg/da against PyTorch's _standard_gamma_grad (docs/bayes-math.md §9.3), every branch;
 * the log form; the Dirichlet T-form backward vector; E[dg/da] = 1. */
static void test_gamma_grad(void **st) {
    (void)st;
    static const double v[][3] = {
        {0.01, 1e-30, 6.851666733e-27}, {0.01, 0.5, 46.67955895}, {0.5, 0.1, 0.5097655671},
        {2, 0.5, 0.4980241080},         {20, 0.7, 0.1223033232}, {0.01, 1.2, 64.05446052},
        {0.5, 1.0, 1.878241384},        {1, 2.0, 1.631722596},   {3, 0.9, 0.5434140534},
        {5, 12.0, 1.551047112},         {8, 8.0, 1.020984026},   {10, 10.5, 1.041775791},
        {50, 47.0, 0.9726330653},       {10, 5.0, 0.7046443774}, {10, 16.0, 1.274440537},
        {100, 80.0, 0.8940585554},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        double got = mattn_gamma_grad(v[i][0], v[i][1]);
        if (!(fabs(got - v[i][2]) <= 1e-9 * fabs(v[i][2])))
            fail_msg("gamma_grad(%g, %g) = %.12g, torch %.10g", v[i][0], v[i][1], got, v[i][2]);
        double r = mattn_dlng_da(v[i][0], log(v[i][1]));
        assert_true(fabs(r - got / v[i][1]) <= 1e-12 * fabs(r));
    }
    assert_true(mattn_gamma_grad(0.3, 0.0) == 0.0);
    /* log form where g underflows: finite */
    assert_true(isfinite(mattn_dlng_da(0.01, -800.0)));

    const double a[3] = {0.51, 1.06, 2.01}, g[3] = {0.0123, 0.87, 2.9}, ga_want[3] = {0.0263171550395,
        -0.161133907063, 0.0583371257253}, galpha[3] = {1, -0.5, 0.25};
    double S = g[0] + g[1] + g[2], al[3], dot = 0.0;
    for (int i = 0; i < 3; i++) dot += (al[i] = g[i] / S) * galpha[i];
    for (int i = 0; i < 3; i++) {
        double t_form = (galpha[i] - dot) / S * mattn_gamma_grad(a[i], g[i]);
        double r_form = (galpha[i] - dot) * al[i] * mattn_dlng_da(a[i], log(g[i]));
        assert_true(fabs(t_form - ga_want[i]) <= 1e-10);
        assert_true(fabs(r_form - ga_want[i]) <= 1e-10);
    }

    /* Monte Carlo (docs/bayes-math.md §10.4): the SAMPLE-mode gradient (R form) averages to
     * the MEAN-mode one, 2e5 draws */
    {
        const double mean_ga[3] = {0.241682531756, -0.177311881652, 0.0321853250523};
        mattn_rng r;
        mattn_rng_seed(&r, 99);
        const int n = 200000;
        double m[3] = {0}, m2[3] = {0};
        for (int it = 0; it < n; it++) {
            double lg[3], mx = -INFINITY, Z = 0.0, al[3], d = 0.0;
            for (int i = 0; i < 3; i++) {
                mattn_rng_gamma(&r, a[i], &lg[i]);
                mx = fmax(mx, lg[i]);
            }
            for (int i = 0; i < 3; i++) Z += (al[i] = exp(lg[i] - mx));
            for (int i = 0; i < 3; i++) d += (al[i] /= Z) * galpha[i];
            for (int i = 0; i < 3; i++) {
                double gi = (galpha[i] - d) * al[i] * mattn_dlng_da(a[i], lg[i]);
                m[i] += gi;
                m2[i] += gi * gi;
            }
        }
        for (int i = 0; i < 3; i++) {
            double mu = m[i] / n, se = sqrt((m2[i] / n - mu * mu) / n);
            if (!(fabs(mu - mean_ga[i]) <= 5 * se + 2e-3 * fabs(mean_ga[i])))
                fail_msg("E[ga_%d] = %.6f +- %.2g, MEAN mode %.6f", i, mu, se, mean_ga[i]);
        }
    }

    /* Monte Carlo: E[dg/da] = 1 (docs/bayes-math.md §10.4), 2e5 draws, 5 se + 2e-3 bias */
    const double shapes[] = {0.3, 1.0, 4.0, 20.0};
    for (int k = 0; k < 4; k++) {
        mattn_rng r;
        mattn_rng_seed(&r, 77 + k);
        const int n = 200000;
        double m = 0.0, m2 = 0.0;
        for (int i = 0; i < n; i++) {
            double lg, x = mattn_rng_gamma(&r, shapes[k], &lg), d = mattn_dlng_da(shapes[k], lg) * x;
            m += d;
            m2 += d * d;
        }
        m /= n;
        double se = sqrt((m2 / n - m * m) / n);
        if (!(fabs(m - 1.0) <= 5 * se + 2e-3)) fail_msg("a=%g: mean dg/da %.5f, se %.2g", shapes[k], m, se);
    }
}

/* Dirichlet moments: E[alpha_i] = a_i/a0, Var = a_i(a0-a_i)/(a0^2(a0+1)), 1e5 draws. */
static void test_dirichlet_moments(void **st) {
    (void)st;
    const double a[3] = {0.3, 1.86, 4.71};
    const int n = 100000;
    double a0 = a[0] + a[1] + a[2], m[3] = {0}, v[3] = {0};
    for (int t = 0; t < n; t++) {
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(7, 0, (uint64_t)t, MATTN_PURPOSE_DIRICHLET));
        double l[3], mx = -INFINITY, Z = 0;
        for (int i = 0; i < 3; i++) { mattn_rng_gamma(&r, a[i], &l[i]); mx = fmax(mx, l[i]); }
        for (int i = 0; i < 3; i++) Z += exp(l[i] - mx);
        for (int i = 0; i < 3; i++) {
            double al = exp(l[i] - mx) / Z;
            m[i] += al;
            v[i] += al * al;
        }
    }
    for (int i = 0; i < 3; i++) {
        double mean = m[i] / n, var = v[i] / n - mean * mean;
        double em = a[i] / a0, ev = a[i] * (a0 - a[i]) / (a0 * a0 * (a0 + 1));
        double se = sqrt(ev / n);
        if (!(fabs(mean - em) <= 5 * se) || !(fabs(var - ev) <= 0.03 * ev)) {
            print_error("alpha_%d: mean %.6f (want %.6f, se %.2g) var %.6g (want %.6g)\n", i, mean, em, se, var, ev);
            fail();
        }
    }
}

/* The epistemic uncertainty: closed form at a = (1,1,1) (ln 3 - 1/2 - 1/3),
 * 0 <= MI <= ln K, shrinking as the evidence grows, and against Monte
 * Carlo: H(mean) - mean over Dir(a) samples of H(alpha), 1e5 draws. */
static void test_dirichlet_mutual_info(void **st) {
    (void)st;
    const double one[3] = {1, 1, 1};
    assert_true(fabs(mattn_dir_mutual_info(one, 3) - (log(3.0) - 0.5 - 1.0 / 3.0)) < 1e-12);
    const double a[3] = {0.3, 1.86, 4.71}, big[3] = {30, 186, 471}, tiny[3] = {0.01, 0.01, 0.01};
    assert_true(mattn_dir_mutual_info(big, 3) < mattn_dir_mutual_info(a, 3));
    assert_true(mattn_dir_mutual_info(tiny, 3) <= log(3.0) && mattn_dir_mutual_info(tiny, 3) > 1.0);
    const int n = 100000;
    double sum = 0.0, sq = 0.0, a0 = a[0] + a[1] + a[2], Hm = 0.0;
    for (int t = 0; t < n; t++) {
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(9, 0, (uint64_t)t, MATTN_PURPOSE_DIRICHLET));
        double l[3], mx = -INFINITY, Z = 0, H = 0;
        for (int i = 0; i < 3; i++) { mattn_rng_gamma(&r, a[i], &l[i]); mx = fmax(mx, l[i]); }
        for (int i = 0; i < 3; i++) Z += exp(l[i] - mx);
        for (int i = 0; i < 3; i++) {
            const double al = exp(l[i] - mx) / Z;
            if (al > 0) H -= al * log(al);
        }
        sum += H;
        sq += H * H;
    }
    for (int i = 0; i < 3; i++) Hm -= a[i] / a0 * log(a[i] / a0);
    const double eh = sum / n, se = sqrt((sq / n - eh * eh) / n), mc = Hm - eh;
    if (!(fabs(mc - mattn_dir_mutual_info(a, 3)) <= 5 * se)) {
        print_error("MI: Monte Carlo %.6f (se %.2g), closed form %.6f\n", mc, se, mattn_dir_mutual_info(a, 3));
        fail();
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirichlet_mutual_info),
        cmocka_unit_test(test_special_functions),   cmocka_unit_test(test_entropy_kl_vectors),
        cmocka_unit_test(test_entropy_kl_fd),       cmocka_unit_test(test_prng_known_answers),
        cmocka_unit_test(test_gamma_known_answers), cmocka_unit_test(test_dirichlet_moments), cmocka_unit_test(test_gamma_grad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
