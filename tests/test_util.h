/*
 * test_util.h — helpers shared by the cmocka tests: tensor comparison with a
 * report of the worst element, seeded random fill.  Included by exactly one
 * translation unit per test program, so static functions are fine here.
 */
#ifndef MATTN_TEST_UTIL_H
#define MATTN_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mattn_impl.h"

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

#endif
