/*
 * custom_expert.c — register a user expert and run a layer with it.
 *
 * The "scaled_identity" expert returns s * x (a learnable-free stand-in for a
 * cheap expert, cost 0.05).  It is registered by name through a vtable, built
 * with mattn_expert_build, and mixed with the built-in "full" and "linear".
 * Exits 0 when the layer ran and its output is finite, 1 otherwise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "metaattn.h"

typedef struct { int D; float scale; } scaled_identity;

static mattn_status si_init(const mattn_config *cfg, void **state) {
    scaled_identity *s = malloc(sizeof *s);
    if (!s) return MATTN_ERR_NOMEM;
    s->D = cfg->d_model;
    s->scale = 0.5f;
    *state = s;
    return MATTN_OK;
}

static void si_free(void *state) { free(state); }

/* Writes only the rows it is asked for, as the contract requires. */
static mattn_status si_forward(void *state, mattn_expert_call *c) {
    const scaled_identity *s = state;
    for (int64_t r = 0; r < c->n_rows; r++) {
        int64_t tok = c->rows ? c->rows[r] : r;
        for (int d = 0; d < s->D; d++) c->out[tok * s->D + d] = s->scale * c->x[tok * s->D + d];
    }
    c->flops = (double)c->n_rows * s->D;
    return MATTN_OK;
}

static const mattn_expert_vtable scaled_identity_vt = {
    .name = "scaled_identity", .cost = 0.05, .init = si_init, .free = si_free, .forward = si_forward,
};

int main(void) {
    if (mattn_expert_register(&scaled_identity_vt) != MATTN_OK) {
        fprintf(stderr, "register: %s\n", mattn_last_error());
        return 1;
    }
    mattn_config cfg;
    mattn_config_preset("small", &cfg);
    cfg.expert_costs[2] = 0.05; /* full, linear, scaled_identity */

    const char *names[3] = {"full", "linear", "scaled_identity"};
    mattn_expert *experts[3] = {0};
    for (int k = 0; k < 3; k++)
        if (mattn_expert_build(names[k], &cfg, &experts[k]) != MATTN_OK) {
            fprintf(stderr, "build %s: %s\n", names[k], mattn_last_error());
            return 1;
        }
    mattn_layer *layer;
    if (mattn_layer_init(&cfg, experts, &layer) != MATTN_OK) { /* the layer now owns the experts */
        fprintf(stderr, "layer: %s\n", mattn_last_error());
        return 1;
    }
    const int B = 2, T = 64, D = cfg.d_model;
    float *x = malloc(sizeof(float) * B * T * D), *out = malloc(sizeof(float) * B * T * D);
    for (int i = 0; x && i < B * T * D; i++) x[i] = sinf(0.1f * i);
    int ok = x && out;
    mattn_layer_set_training(layer, 0);
    mattn_stats s;
    float aux;
    if (ok && mattn_layer_forward(layer, x, B, T, NULL, out, &aux, &s) != MATTN_OK) {
        fprintf(stderr, "forward: %s\n", mattn_layer_errmsg(layer));
        ok = 0;
    }
    if (ok) {
        char line[512];
        mattn_stats_format(&s, line, sizeof line);
        printf("experts: %s, %s, %s\n%s\n", mattn_expert_name(experts[0]),
               mattn_expert_name(experts[1]), mattn_expert_name(experts[2]), line);
        for (int i = 0; i < B * T * D; i++) ok &= isfinite(out[i]) != 0;
    }
    mattn_layer_free(layer);
    free(x);
    free(out);
    return ok ? 0 : 1;
}
