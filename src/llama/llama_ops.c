/*
 * llama_ops.c — the LLaMA blocks' own pieces: RMSNorm, RoPE in GGUF's
 * "llama" pair layout, SwiGLU, and a dequantised row of a GGUF matrix (the
 * embedding lookup).  Plain loops: next to the matmuls they cost nothing.
 *
 * RoPE: the rotation pairs of a head are its adjacent elements (2i, 2i+1)
 * with angle pos * base^(-2i/dh), i < dh/2 — ggml's normal rope mode, which
 * llama.cpp uses for LLM_ARCH_LLAMA (llama_model_rope_type: "a normal RoPE,
 * operating on pairs of consecutive head values"), on Q/K weights that
 * convert_hf_to_gguf.py's LlamaModel.permute reordered from Hugging Face's
 * rotate_half layout (pairs i, i + dh/2): that permutation sends HF row
 * j*dh/2 + i of a head to GGUF row 2i + j.  The angles are computed in
 * double and rounded once.
 */
#include <math.h>

#include "llama/llama.h"

void mattn_llama_rmsnorm(float *y, const float *x, const float *w, int M, int D, float eps) {
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * D;
        float *yr = y + (size_t)m * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        const float r = (float)(1.0 / sqrt(ss / D + (double)eps));
        for (int i = 0; i < D; i++) yr[i] = xr[i] * r * w[i];
    }
}

void mattn_llama_rope_table(float *tab, int pos0, int M, int dh, double base) {
    for (int m = 0; m < M; m++) {
        const double pos = (double)pos0 + m;
        float *t = tab + (size_t)m * dh;
        for (int i = 0; i < dh / 2; i++) {
            const double theta = pos * pow(base, -2.0 * i / dh);
            t[2 * i] = (float)cos(theta);
            t[2 * i + 1] = (float)sin(theta);
        }
    }
}

void mattn_llama_rope(float *x, int M, int ld, int n_heads, int dh, const float *tab) {
    for (int m = 0; m < M; m++) {
        const float *t = tab + (size_t)m * dh;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)m * ld + (size_t)h * dh;
            for (int i = 0; i < dh; i += 2) {
                const float c = t[i], s = t[i + 1], x0 = v[i], x1 = v[i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + 1] = x0 * s + x1 * c;
            }
        }
    }
}

void mattn_llama_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void mattn_llama_row(const mattn_gguf_tensor *W, int64_t row, float *y) {
    const size_t row_bytes = mattn_gguf_nbytes(W->type, W->ne[0]);
    mattn_status st = mattn_gguf_dequant_ref(W->type, (const unsigned char *)W->data + (size_t)row * row_bytes, y,
                                             W->ne[0]);
    MATTN_ASSERT(st == MATTN_OK); /* type and row length were checked at open */
}
