/*
 * expert_linear.c — the built-in "linear" expert: ELU+1 kernel (linear) attention, O(T dh D).
 * Default cost 0.15.  Projections and the sparse forward live in experts.c.
 */
#include "attention/attention.h"

static mattn_status linear_init(const mattn_config *cfg, void **state) {
    return mattn_builtin_init(cfg, MATTN_CORE_LINEAR, -1, state);
}

const mattn_expert_vtable mattn_expert_linear_vt = {
    .name = "linear",
    .cost = 0.15,
    .init = linear_init,
    MATTN_BUILTIN_OPS,
};
