/*
 * demo.c — the README's main job for now: one Meta-Attention layer (preset
 * "small": D=128, H=4, w=32) on random input, with both controllers and both
 * routing modes in eval mode.  Prints RoutingStats, the share of tokens each
 * expert executed, the FLOPs executed and the wall-clock time of the forward.
 * Weights are the library's default init, so the controller is untrained:
 * its routing mirrors the prior (Bayesian) or is near uniform (prior-free).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "metaattn.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(void) {
    const int B = 2, T = 512;
    mattn_config cfg;
    mattn_config_preset("small", &cfg);
    const int D = cfg.d_model;
    float *x = malloc(sizeof(float) * B * T * D), *out = malloc(sizeof(float) * B * T * D);
    if (!x || !out) return 1;
    srand(1);
    for (int i = 0; i < B * T * D; i++) x[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;

    printf("metaattn %s demo: one layer, preset small (D=%d H=%d w=%d), B=%d T=%d, eval mode\n\n",
           mattn_libversion(), cfg.d_model, cfg.n_heads, cfg.window_size, B, T);
    for (int c = 0; c < 2; c++) {
        for (int hard = 0; hard < 2; hard++) {
            cfg.controller = c ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
            cfg.hard_routing = hard;
            mattn_layer *l;
            if (mattn_layer_init(&cfg, NULL, &l) != MATTN_OK) {
                fprintf(stderr, "demo: %s\n", mattn_last_error());
                return 1;
            }
            mattn_layer_set_training(l, 0);
            mattn_stats s;
            float aux;
            mattn_layer_forward(l, x, B, T, NULL, out, &aux, &s); /* warm-up, plans the arena */
            double ms = 1e30;
            for (int rep = 0; rep < 5; rep++) { /* best of 5 */
                double t0 = now();
                if (mattn_layer_forward(l, x, B, T, NULL, out, &aux, &s) != MATTN_OK) {
                    fprintf(stderr, "demo: %s\n", mattn_layer_errmsg(l));
                    return 1;
                }
                double dt = 1e3 * (now() - t0);
                ms = dt < ms ? dt : ms;
            }
            char line[512];
            mattn_stats_format(&s, line, sizeof line);
            printf("controller=%-10s routing=%s\n  %s\n", c ? "prior-free" : "bayesian", hard ? "hard" : "soft", line);
            printf("  projected hard cost=%.4f  executed tokens: full=%.1f%% linear=%.1f%% local=%.1f%%\n",
                   s.hard_cost, 100 * s.exec_frac[0], 100 * s.exec_frac[1], 100 * s.exec_frac[2]);
            printf("  executed %.3f GFLOP (full %.3f, linear %.3f, local %.3f, controller %.3f) in %.1f ms (best of 5)\n\n",
                   1e-9 * s.flops_total, 1e-9 * s.flops[0], 1e-9 * s.flops[1], 1e-9 * s.flops[2],
                   1e-9 * s.flops_controller, ms);
            mattn_layer_free(l);
        }
    }
    free(x);
    free(out);
    return 0;
}
