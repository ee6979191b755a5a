/*
 * expert_local.c — the built-in "local" expert: sliding-window softmax attention, O(T w D).
 * Default cost 0.30.  Projections and the sparse forward live in experts.c.
 */
#include "attention/attention.h"

static mattn_status local_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_SOFTMAX, cfg->window_size, state);
}

const mattn_expert_vtable mattn_expert_local_vt = {
    .name = "local",
    .cost = 0.30,
    .init = local_init,
    MATTN_BUILTIN_OPS,
};
