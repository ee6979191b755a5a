/*
 * heads.c — mattn_for_heads(): the parallel loop every attention kernel runs,
 * one task per (batch, head), each thread with its own slot of the scratch
 * the caller passed in.
 */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/kernels.h"

size_t mattn_heads_scratch(size_t ws_floats, int threads) {
    return (size_t)(threads > 0 ? threads : 1) * mattn_align_up((ws_floats ? ws_floats : 1) * sizeof(float));
}

double mattn_for_heads(int B, int H, size_t ws_floats, void *scratch, size_t scratch_bytes, mattn_head_fn fn,
                       void *ctx) {
    const size_t slot = mattn_align_up((ws_floats ? ws_floats : 1) * sizeof(float));
    size_t slots = scratch ? scratch_bytes / slot : 0;
    if (slots < 1) return -1.0;
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
#endif
    if ((size_t)team > slots) team = (int)slots;
    double sum = 0.0;
    #pragma omp parallel num_threads(team) reduction(+ : sum)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *ws = (float *)((char *)scratch + (size_t)tid * slot);
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) sum += fn(ctx, b, h, ws);
    }
    return sum;
}
