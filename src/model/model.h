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

// ----------------------------------------------------------------------------
// the model's private state (model.c, model_decode.c)

typedef struct block_params {
    float *ln1w, *ln1b, *ln2w, *ln2b, *w1, *b1, *w2, *b2;
} block_params;

typedef struct block_acts {
    float *ln1, *mean1, *rstd1, *att, *mid, *ln2, *mean2, *rstd2, *h, *g, *gd, *f;
} block_acts;

typedef struct model_param {
    char name[160];
    mattn_tensor t;
    int layer, index;        /* layer parameter (layer >= 0) or own (-1) */
} model_param;

struct mattn_model {
    mattn_lm_config cfg;
    char errmsg[MATTN_ERRMSG_LEN];
    int L, D, V, F, Tmax;
    mattn_layer **layers;
    mattn_stats *stats;
    /* own parameters and their gradients: identical layouts */
    float *own, *gown;
    size_t n_own;
    float *tok, *pos, *lnfw, *lnfb;
    block_params *bp;
    int n_params;
    model_param *params;
    int training;
    uint64_t step;
    /* activations for (aB, aT) */
    int aB, aT;
    char *arena;
    int32_t *idx, *tgt;
    float **res;              /* L+1 residual streams (N, D) */
    block_acts *ba;
    float *lnf, *meanf, *rstdf, *logits, *probs;
    int has_targets;
    int64_t count;
    uint64_t f_step;
    int f_training;
    /* backward scratch */
    char *g_arena;
    int gB, gT;
    float *dres, *dtmp, *dln, *dF1, *dF2, *dlogits;
};

/* NaN/Inf in the model's own weights (embeddings, LayerNorms, FFNs). */
mattn_status mattn_model_check_own_weights(mattn_model *m);
/* Index of the first non-finite logit of rows (N, V), or rows * V. */
size_t mattn_model_bad_logit(const mattn_model *m, const float *logits, int64_t rows);

#endif
