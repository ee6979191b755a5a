/*
 * rng.c — the random numbers of docs/bayes-math.md §4: SplitMix64 for seeding,
 * xoshiro256** as the generator, one stream per (seed, step, token, purpose)
 * so results do not depend on the thread count, uniforms on the open interval,
 * Box-Muller normals and Marsaglia-Tsang Gamma samples (with the a < 1 boost).
 * Also the weight initialisers, which draw from one stream in order.
 */
#include <math.h>

#include "base/base.h"

// ----------------------------------------------------------------------------
// generators

uint64_t mattn_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t mattn_splitmix64_next(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ULL;
    return mattn_mix64(*state);
}

void mattn_rng_seed(mattn_rng *r, uint64_t seed) {
    uint64_t st = seed;
    for (int k = 0; k < 4; k++) r->s[k] = mattn_splitmix64_next(&st);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mattn_rng_next(mattn_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t mattn_stream_seed(uint64_t base, uint64_t step, uint64_t n, uint64_t purpose) {
    uint64_t s = mattn_mix64(base ^ 0x243F6A8885A308D3ULL);
    s = mattn_mix64(s ^ (step + 0x13198A2E03707344ULL));
    s = mattn_mix64(s ^ (n + 0xA4093822299F31D0ULL));
    s = mattn_mix64(s ^ (purpose + 0x082EFA98EC4E6C89ULL));
    return s;
}

// ----------------------------------------------------------------------------
// distributions

double mattn_rng_u01(mattn_rng *r) {
    return ((double)(mattn_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double mattn_rng_normal(mattn_rng *r) {
    double u1 = mattn_rng_u01(r);
    double u2 = mattn_rng_u01(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Gamma(a, 1) for finite a > 0; returns g and writes ln g (finite even when g
 * underflows).  Spec §4.5. */
double mattn_rng_gamma(mattn_rng *r, double a, double *log_g) {
    double log_boost = 0.0;
    if (a < 1.0) {
        log_boost = log(mattn_rng_u01(r)) / a;
        a += 1.0;
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, y;
        do {
            x = mattn_rng_normal(r);
            y = 1.0 + c * x;
        } while (y <= 0.0);
        double v = y * y * y, u = mattn_rng_u01(r), xx = x * x;
        if (u < 1.0 - 0.0331 * xx * xx || log(u) < 0.5 * xx + d * (1.0 - v + log(v))) {
            double lg = log(d) + 3.0 * log(y) + log_boost;
            if (log_g) *log_g = lg;
            return exp(lg);
        }
    }
}

// ----------------------------------------------------------------------------
// weight initialisers

void mattn_init_uniform(float *w, size_t n, int fan_in, mattn_rng *r) {
    double bound = 1.0 / sqrt((double)fan_in);
    for (size_t i = 0; i < n; i++) w[i] = (float)((2.0 * mattn_rng_u01(r) - 1.0) * bound);
}

void mattn_init_normal(float *w, size_t n, double std, mattn_rng *r) {
    for (size_t i = 0; i < n; i++) w[i] = (float)(std * mattn_rng_normal(r));
}
