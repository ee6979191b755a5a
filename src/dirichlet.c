/*
 * dirichlet.c — special functions and Dirichlet closed forms in double
 * (spec/bayes_math.md §2-§3): digamma and trigamma (recurrence to x >= 10,
 * then the asymptotic series, Cephes coefficients), a thread-safe lgamma,
 * the Dirichlet differential entropy and KL[Dir(a) || Dir(b)] with their
 * gradients.  Callers guarantee finite arguments > 0 (spec §7.3).
 */
#define _DEFAULT_SOURCE
#include <math.h>

#include "mattn_impl.h"

double mattn_lgamma(double x) {
    int sign;
    return lgamma_r(x, &sign);
}

double mattn_digamma(double x) {
    double r = 0.0;
    while (x < 10.0) {
        r -= 1.0 / x;
        x += 1.0;
    }
    double z = 1.0 / (x * x);
    double s = z * (1.0 / 12 - z * (1.0 / 120 - z * (1.0 / 252 - z * (1.0 / 240 - z * (1.0 / 132
               - z * (691.0 / 32760 - z * (1.0 / 12)))))));
    return r + log(x) - 0.5 / x - s;
}

double mattn_trigamma(double x) {
    double r = 0.0;
    while (x < 10.0) {
        r += 1.0 / (x * x);
        x += 1.0;
    }
    double z = 1.0 / (x * x);
    double s = z * (1.0 / 6 - z * (1.0 / 30 - z * (1.0 / 42 - z * (1.0 / 30 - z * (5.0 / 66
               - z * (691.0 / 2730 - z * (7.0 / 6 - z * (3617.0 / 510))))))));
    return r + (1.0 + 0.5 / x + s) / x;
}

/* H[Dir(a)] = sum lnG(a_i) - lnG(a0) + (a0-K) psi(a0) - sum (a_i-1) psi(a_i)
 * dH/da_j = (a0-K) psi1(a0) - (a_j-1) psi1(a_j)                        (§3.1) */
double mattn_dir_entropy(const double *a, int K, double *grad) {
    double a0 = 0.0;
    for (int i = 0; i < K; i++) a0 += a[i];
    double H = -mattn_lgamma(a0) + (a0 - K) * mattn_digamma(a0);
    for (int i = 0; i < K; i++) H += mattn_lgamma(a[i]) - (a[i] - 1.0) * mattn_digamma(a[i]);
    if (grad) {
        double t = (a0 - K) * mattn_trigamma(a0);
        for (int i = 0; i < K; i++) grad[i] = t - (a[i] - 1.0) * mattn_trigamma(a[i]);
    }
    return H;
}

/* KL[Dir(a) || Dir(b)] = lnG(a0) - sum lnG(a_i) - lnG(b0) + sum lnG(b_i)
 *                        + sum (a_i - b_i)(psi(a_i) - psi(a0))
 * dKL/da_j = (a_j - b_j) psi1(a_j) - (a0 - b0) psi1(a0)                 (§3.2) */
double mattn_dir_kl(const double *a, const double *b, int K, double *grad) {
    double a0 = 0.0, b0 = 0.0;
    for (int i = 0; i < K; i++) {
        a0 += a[i];
        b0 += b[i];
    }
    double p0 = mattn_digamma(a0);
    double KL = mattn_lgamma(a0) - mattn_lgamma(b0);
    for (int i = 0; i < K; i++)
        KL += mattn_lgamma(b[i]) - mattn_lgamma(a[i]) + (a[i] - b[i]) * (mattn_digamma(a[i]) - p0);
    if (grad) {
        double t = (a0 - b0) * mattn_trigamma(a0);
        for (int i = 0; i < K; i++) grad[i] = (a[i] - b[i]) * mattn_trigamma(a[i]) - t;
    }
    return KL;
}
