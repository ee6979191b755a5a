/*
 * controller_row.c — one row of a routed SmolLM2 block's controller
 * (578 -> 32, 74 KB of fp32 weights) with sgemm against the rows' dot
 * products, each timed with its weights in cache and after 64 MB were
 * streamed past them (as the model's matrices do between decode steps).
 * The comparison behind src/attention/controller.c's rows_wt:
 *
 *   gcc -O2 -march=native -o /tmp/controller_row bench/surgery/controller_row.c -lopenblas
 *   OPENBLAS_NUM_THREADS=1 /tmp/controller_row
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 16 partial sums, as kernels.h's mattn_dot */
static float dot(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0}, s = 0.0f;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

int main(void) {
    enum { IN = 578, HC = 32, LAYERS = 30, ROUNDS = 2000 };
    const size_t big = (size_t)64 << 20;
    float *W = malloc(sizeof(float) * IN * HC * LAYERS), *f = malloc(sizeof(float) * IN), z[HC];
    char *ev = malloc(big);
    if (!W || !f || !ev) return 1;
    memset(ev, 1, big);
    for (int i = 0; i < IN * HC * LAYERS; i++) W[i] = (float)rand() / (float)RAND_MAX;
    for (int i = 0; i < IN; i++) f[i] = 1.0f / (float)(i + 1);
    double t[2][2] = {{0}}; /* [sgemm, dots][in cache, evicted] */
    volatile long sink = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < big; i += 64) sink += ev[i];
        const int mode = r & 1;
        const float *w = W + (size_t)(r % LAYERS) * IN * HC;
        for (int evicted = 1; evicted >= 0; evicted--) { /* first from memory, then again from cache */
            const double t0 = now();
            if (mode == 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, HC, IN, 1.0f, f, IN, w, IN, 0.0f, z, HC);
            else
                for (int j = 0; j < HC; j++) z[j] = dot(f, w + (size_t)j * IN, IN);
            t[mode][evicted] += now() - t0;
        }
    }
    const double n = ROUNDS / 2;
    printf("sgemm: %.2f us in cache, %.2f us evicted; dot products: %.2f us in cache, %.2f us evicted\n",
           t[0][0] / n * 1e6, t[0][1] / n * 1e6, t[1][0] / n * 1e6, t[1][1] / n * 1e6);
    free(W), free(f), free(ev);
    return (int)(sink & 0);
}
