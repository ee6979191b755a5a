/*
 * consumer.c — a program outside the metaattn tree, built against an
 * installed libmetaattn (see README.md here): one small Meta-Attention layer
 * (mattn_config_default() shrunk to D=32, H=4) on a deterministic input, in
 * eval mode; prints the library version and the RoutingStats line.  Every
 * status is checked; exit status 0 only if everything succeeded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <metaattn.h>

#define CHECK(call)                                                              \
    do {                                                                         \
        mattn_status st_ = (call);                                               \
        if (st_ != MATTN_OK) {                                                   \
            fprintf(stderr, "consumer: %s failed: %s: %s\n", #call,              \
                    mattn_status_str(st_), layer ? mattn_layer_errmsg(layer)     \
                                                 : mattn_last_error());          \
            goto fail;                                                           \
        }                                                                        \
    } while (0)

int main(void) {
    enum { B = 2, T = 16 };
    mattn_layer *layer = NULL;
    float *x = NULL, *out = NULL;
    int rc = 1;

    if (mattn_libversion_number() != MATTN_VERSION_NUMBER) {
        fprintf(stderr, "consumer: header %s but library %s\n", MATTN_VERSION, mattn_libversion());
        return 1;
    }
    mattn_config cfg = mattn_config_default();
    cfg.d_model = 32;
    cfg.n_heads = 4;
    cfg.window_size = 4;
    cfg.controller_hidden = 16;
    cfg.seed = 7;
    CHECK(mattn_config_validate(&cfg));
    CHECK(mattn_layer_init(&cfg, NULL, &layer));
    mattn_layer_set_training(layer, 0);

    const int D = cfg.d_model;
    x = malloc(sizeof(float) * B * T * D);
    out = malloc(sizeof(float) * B * T * D);
    if (!x || !out) {
        fprintf(stderr, "consumer: out of memory\n");
        goto fail;
    }
    for (int i = 0; i < B * T * D; i++) x[i] = (float)sin(0.37 * i + 0.1 * (i % 7));

    float aux = 0.0f;
    mattn_stats stats;
    CHECK(mattn_layer_forward(layer, x, B, T, NULL, out, &aux, &stats));
    double sum = 0.0;
    for (int i = 0; i < B * T * D; i++) {
        if (!isfinite(out[i])) {
            fprintf(stderr, "consumer: out[%d] = %g\n", i, out[i]);
            goto fail;
        }
        sum += fabs(out[i]);
    }
    if (stats.n_tokens != (int64_t)B * T || stats.n_experts != cfg.n_experts) {
        fprintf(stderr, "consumer: stats for %lld tokens, %d experts; expected %d, %d\n",
                (long long)stats.n_tokens, stats.n_experts, B * T, cfg.n_experts);
        goto fail;
    }
    char line[512];
    int n = mattn_stats_format(&stats, line, sizeof line);
    if (n <= 0 || (size_t)n >= sizeof line) {
        fprintf(stderr, "consumer: mattn_stats_format returned %d\n", n);
        goto fail;
    }
    printf("metaattn %s: D=%d H=%d B=%d T=%d, eval, sum|out|=%.6f\n", mattn_libversion(), cfg.d_model,
           cfg.n_heads, B, T, sum);
    printf("%s\n", line);
    rc = 0;
fail:
    mattn_layer_free(layer);
    free(x);
    free(out);
    return rc;
}
