/*
 * dirichlet.c — special functions and Dirichlet closed forms in double
 * (docs/bayes-math.md §2-§3): digamma and trigamma (recurrence to x >= 10,
 * then the asymptotic series, Cephes coefficients), a thread-safe lgamma,
 * the Dirichlet differential entropy and KL[Dir(a) || Dir(b)] with their
 * gradients.  Callers guarantee finite arguments > 0 (docs/bayes-math.md §7.3).
 */
#define _DEFAULT_SOURCE
#include <math.h>

#include "attention/attention.h"

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

// ----------------------------------------------------------------------------
// reparameterisation gradient of Gamma(a, 1) samples (docs/bayes-math.md §5.2, §5.4):
// PyTorch's standard_gamma_grad_one, branch for branch.

static double grad_series(double a, double x) { /* branch S, x < 0.8f */
    if (x == 0.0) return 0.0;
    double s1 = 0.0, s2 = 0.0, term = 1.0; /* term = (-x)^n / n! */
    for (int n = 0; n <= 5; n++) {
        if (n) term *= -x / n;
        s1 += term / (a + n);
        s2 += term / ((a + n) * (a + n));
    }
    return -x * exp(x) * ((log(x) - mattn_digamma(a)) * s1 - s2);
}

static double grad_mode(double a, double x) { /* branch M */
    return (1.0 + 24.0 * a + 288.0 * a * a) *
           (1440.0 * a * a + 3600.0 * a * x - 720.0 * x * x + 107.0 * a + 318.0 * x - 65.0 * x * x / a) /
           (1244160.0 * a * a * a * a);
}

static double grad_saddle(double a, double x) { /* branch A */
    const double s = sqrt(8.0 * a), L = log(x / a);
    const double A = s / (a - x), Bv = pow(x - a - a * L, -1.5);
    const double C = x < a ? A - Bv : A + Bv;
    const double E = L * C - sqrt(2.0 / a) * (a + x) / ((a - x) * (a - x));
    const double sigma = 1.0 + 1.0 / (12.0 * a) + 1.0 / (288.0 * a * a);
    return -sigma * x * E / s;
}

static double grad_rational(double a, double x) { /* branch R */
    static const double C0[8] = {0.16009398, -0.094634809, 0.025146376, -0.0030648343,
                                 1, 0.32668115, 0.10406089, 0.0014179084};
    static const double C1[8] = {0.53487893, 0.1298071, 0.065735949, -0.0015649758,
                                 0.16639465, 0.020070113, -0.0035938915, -0.00058392623};
    static const double C2[8] = {0.040121004, -0.0065914022, -0.0026286047, -0.0013441777,
                                 0.017050642, -0.0021309326, 0.00085092367, -1.5247877e-07};
    const double u = log(x / a), v = log(a);
    double k[8];
    for (int j = 0; j < 8; j++) k[j] = C0[j] + C1[j] * u + C2[j] * u * u;
    const double P = k[0] + k[1] * v + k[2] * v * v + k[3] * v * v * v;
    const double Q = k[4] + k[5] * v + k[6] * v * v + k[7] * v * v * v;
    return exp(P / Q);
}

double mattn_gamma_grad(double a, double x) {
    if (x < (double)0.8f) return grad_series(a, x);
    if (a > 8.0)
        return x >= (double)0.9f * a && x <= (double)1.1f * a ? grad_mode(a, x) : grad_saddle(a, x);
    return grad_rational(a, x);
}

/* d ln g / da from ln g, finite even when g underflows (§5.4). */
double mattn_dlng_da(double a, double log_x) {
    if (log_x < log((double)0.8f)) {
        const double x = exp(log_x);
        double s1 = 0.0, s2 = 0.0, term = 1.0;
        for (int n = 0; n <= 5; n++) {
            if (n) term *= -x / n;
            s1 += term / (a + n);
            s2 += term / ((a + n) * (a + n));
        }
        return -exp(x) * ((log_x - mattn_digamma(a)) * s1 - s2);
    }
    const double x = exp(log_x);
    return mattn_gamma_grad(a, x) / x;
}

/* E H[Cat(p)] under p ~ Dir(a) is psi(a0 + 1) - sum_i (a_i/a0) psi(a_i + 1)
 * (docs/bayes-math.md §3.6). */
double mattn_dir_mutual_info(const double *a, int K) {
    double a0 = 0.0, H = 0.0, EH;
    for (int i = 0; i < K; i++) a0 += a[i];
    EH = mattn_digamma(a0 + 1.0);
    for (int i = 0; i < K; i++) {
        const double m = a[i] / a0;
        if (m > 0.0) H -= m * log(m);
        EH -= m * mattn_digamma(a[i] + 1.0);
    }
    const double mi = H - EH;
    return mi > 0.0 ? mi : 0.0; /* rounding can leave -1e-16 */
}
