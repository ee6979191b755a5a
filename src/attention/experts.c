/*
 * experts.c — the expert registry (public: users register their own experts
 * through a vtable, docs/design.md §1 "Experts") and the table of the three
 * built-in experts.  What the built-ins share (parameters, workspace, the
 * sparse forward and the backward) is in builtin.c; their attention cores
 * are kernels/attn_softmax.c (full and local) and kernels/attn_linear.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

// ----------------------------------------------------------------------------
// registry

/* The built-ins differ only in their core and window: full is exact softmax
 * attention, O(T^2 D); linear the ELU+1 kernel form, O(T D dh); local
 * softmax over a window of radius window_size, O(T w D).  Costs: the Python
 * library's defaults. */
static mattn_status full_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_SOFTMAX, -1, state);
}
static mattn_status linear_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_LINEAR, -1, state);
}
static mattn_status local_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_SOFTMAX, cfg->window_size, state);
}

#define BUILTIN(nm, c, fn)                                                                   \
    { .name = nm, .cost = c, .init = fn, .free = mattn_builtin_free,                          \
      .workspace_size = mattn_builtin_workspace_size, .forward = mattn_builtin_forward,      \
      .n_params = mattn_builtin_n_params, .param = mattn_builtin_param,                      \
      .backward = mattn_builtin_backward,                                                    \
      .backward_workspace_size = mattn_builtin_backward_workspace_size, .shared_qkv = 1 }
static const mattn_expert_vtable builtins[3] = {
    BUILTIN("full", 1.00, full_init),
    BUILTIN("linear", 0.15, linear_init),
    BUILTIN("local", 0.30, local_init),
};
#undef BUILTIN

#define MAX_REGISTERED 64
static const mattn_expert_vtable *g_registry[MAX_REGISTERED] = {&builtins[0], &builtins[1], &builtins[2]};
static int g_n_registered = 3;

static const mattn_expert_vtable *lookup(const char *name) {
    for (int i = 0; i < g_n_registered; i++)
        if (!strcmp(g_registry[i]->name, name)) return g_registry[i];
    return NULL;
}

mattn_status mattn_expert_register(const mattn_expert_vtable *vt) {
    if (!vt) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_expert_register: vt is NULL");
    if (!vt->name || !vt->name[0] || !vt->init || !vt->forward)
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "mattn_expert_register: vtable needs a name, init and forward");
    if (!(vt->cost >= 0.0 && vt->cost <= 1.0))
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "mattn_expert_register: cost of '%s' must be in [0, 1], got %g",
                               vt->name, vt->cost);
    for (int i = 0; i < g_n_registered; i++)
        if (!strcmp(g_registry[i]->name, vt->name)) {
            g_registry[i] = vt;
            return MATTN_OK;
        }
    if (g_n_registered == MAX_REGISTERED)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_expert_register: registry full (%d)",
                               MAX_REGISTERED);
    g_registry[g_n_registered++] = vt;
    return MATTN_OK;
}

mattn_status mattn_expert_build(const char *name, const mattn_config *cfg, mattn_expert **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_expert_build: out is NULL");
    *out = NULL;
    if (!name || !cfg)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_expert_build: %s is NULL",
                               !name ? "name" : "cfg");
    const mattn_expert_vtable *vt = lookup(name);
    if (!vt) return mattn_set_error(MATTN_ERR_NOT_FOUND, "unknown expert '%s'", name);
    mattn_status st = mattn_config_validate(cfg);
    if (st != MATTN_OK) return st;
    mattn_expert *e = mattn_calloc(1, sizeof *e);
    if (!e) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory building expert '%s'", name);
    e->vt = vt;
    st = vt->init(cfg, &e->state);
    if (st != MATTN_OK) {
        mattn_free(e);
        return st;
    }
    *out = e;
    return MATTN_OK;
}

void mattn_expert_free(mattn_expert *e) {
    if (!e) return;
    if (e->vt->free) e->vt->free(e->state);
    mattn_free(e);
}

const char *mattn_expert_name(const mattn_expert *e) { return e ? e->vt->name : NULL; }
double mattn_expert_cost(const mattn_expert *e) { return e ? e->vt->cost : 0.0; }
