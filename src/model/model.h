/*
 * model.h — the model floor, internal: the GPT-style byte LM's building
 * blocks (LayerNorm, GELU, linear, embeddings, dropout, cross-entropy).
 */
#ifndef MATTN_MODEL_H
#define MATTN_MODEL_H

#include "attention/attention.h"

// ----------------------------------------------------------------------------
// language-model building blocks (nn.c); backward passes accumulate (+=)

void mattn_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int64_t N, int C);
void mattn_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *mean, const float *rstd, const float *w, int64_t N, int C);
void mattn_linear_forward(float *out, const float *x, const float *W, const float *b, int64_t N, int I, int O);
void mattn_linear_backward(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W,
                           int64_t N, int I, int O);
void mattn_embed_forward(float *out, const int32_t *idx, const float *tok, const float *pos, int B, int T, int C);
void mattn_embed_backward(float *dtok, float *dpos, const float *dout, const int32_t *idx, int B, int T, int C);
void mattn_dropout_forward(float *out, const float *x, int64_t n, float p, uint64_t key);
void mattn_dropout_backward(float *dx, const float *dout, int64_t n, float p, uint64_t key);
double mattn_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int64_t N, int V,
                                  int64_t *n_counted);
void mattn_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int64_t N, int V,
                                 int64_t count, float dloss);

#endif
