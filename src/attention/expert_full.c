/*
 * expert_full.c — the built-in "full" expert: exact multi-head softmax attention, O(T^2 D).
 * Default cost 1.00.  Projections and the sparse forward live in experts.c.
 */
#include "attention/attention.h"

static mattn_status full_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_SOFTMAX, -1, state);
}

const mattn_expert_vtable mattn_expert_full_vt = {
    .name = "full",
    .cost = 1.00,
    .init = full_init,
    MATTN_BUILTIN_OPS,
};
