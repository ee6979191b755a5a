/*
 * heads.c — mattn_for_heads(): the parallel loop every attention kernel runs,
 * one task per (batch, head), each thread with its own work buffer.
 */
#include "kernels/kernels.h"

double mattn_for_heads(int B, int H, size_t ws_floats, mattn_head_fn fn, void *ctx) {
    int nomem = 0;
    double sum = 0.0;
    #pragma omp parallel reduction(+ : sum)
    {
        float *ws = mattn_amalloc((ws_floats ? ws_floats : 1) * sizeof(float));
        if (!ws) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp barrier /* every thread knows before any task starts */
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                if (!nomem) sum += fn(ctx, b, h, ws);
        mattn_afree(ws);
    }
    return nomem ? -1.0 : sum;
}
