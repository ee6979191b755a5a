/*
 * gelu.c — GELU, exact erf form, vectorised (simd.h's erf and exp), with its
 * derivative; the plain twins use erf() and exp() of libm in double.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/simd.h"

// Vectorised (simd.h's erf and exp); the last partial vector goes through a
// zero-padded copy, so every element sees the same arithmetic.

/* Load n - i (< MATTN_VL) trailing elements, zero-padded. */
static inline mattn_vf vload_tail(const float *p, int64_t m) {
    _Alignas(64) float t[MATTN_VL] = {0};
    memcpy(t, p, (size_t)m * sizeof(float));
    return vload(t);
}
static inline void vstore_tail(float *p, mattn_vf v, int64_t m) {
    _Alignas(64) float t[MATTN_VL];
    vstore(t, v);
    memcpy(p, t, (size_t)m * sizeof(float));
}

void mattn_gelu_forward(float *out, const float *x, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL) vstore(out + i, vgelu(vload(x + i)));
    if (nv < n) vstore_tail(out + nv, vgelu(vload_tail(x + nv, n - nv)), n - nv);
}

void mattn_gelu_backward(float *dx, const float *x, const float *dout, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL)
        vstore(dx + i, vload(dx + i) + vgelu_grad(vload(x + i)) * vload(dout + i));
    if (nv < n) {
        const int64_t m = n - nv;
        vstore_tail(dx + nv, vload_tail(dx + nv, m) + vgelu_grad(vload_tail(x + nv, m)) * vload_tail(dout + nv, m), m);
    }
}

void mattn_gelu_grad_mul(float *g, const float *x, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL) vstore(g + i, vload(g + i) * vgelu_grad(vload(x + i)));
    if (nv < n) vstore_tail(g + nv, vload_tail(g + nv, n - nv) * vgelu_grad(vload_tail(x + nv, n - nv)), n - nv);
}
