/*
 * llama.h — the LLaMA-family decoder, internal: the model's state (the
 * GGUF mapping and views of its tensors), the cache, and the pieces the
 * forward is made of — the one matmul every weight goes through, RMSNorm,
 * RoPE, SwiGLU, the embedding lookup.  Public API: include/metaattn.h
 * ("LLaMA-family decoders").
 *
 * Layout (GGUF, llama.cpp's names and ggml's dimension order, ne[0] the
 * contiguous row length):
 *   token_embd.weight      (D, V)         rows are tokens; the tied head
 *   blk.i.attn_norm.weight (D)
 *   blk.i.attn_q.weight    (D, H*dh)      rows are output features
 *   blk.i.attn_k.weight    (D, Hkv*dh)
 *   blk.i.attn_v.weight    (D, Hkv*dh)
 *   blk.i.attn_output.weight (H*dh, D)
 *   blk.i.ffn_norm.weight  (D)
 *   blk.i.ffn_gate.weight  (D, F), blk.i.ffn_up.weight (D, F), blk.i.ffn_down.weight (F, D)
 *   output_norm.weight     (D)
 *   output.weight          (D, V)         optional
 * Q and K rows are in GGUF's "llama" order: llama.cpp's converter permutes
 * Hugging Face's q_proj/k_proj rows so that the rotation pairs of RoPE are
 * the adjacent elements (2i, 2i+1) of each head (ggml's normal rope mode),
 * where Hugging Face pairs i with i + dh/2 (rotate_half).
 *
 * Floor: includes kernels/ (the attention cores), io/ (the GGUF reader and
 * safetensors) and attention/ (the controller routed blocks share with the
 * Meta-Attention layer).
 */
#ifndef MATTN_LLAMA_H
#define MATTN_LLAMA_H

#include "attention/attention.h" /* the controller of routed blocks */
#include "io/io.h"
#include "kernels/kernels.h"

// ----------------------------------------------------------------------------
// the model

typedef struct mattn_llama_layer {
    const mattn_gguf_tensor *wq, *wk, *wv, *wo;          /* attention projections */
    const mattn_gguf_tensor *w_gate, *w_up, *w_down;     /* SwiGLU */
    const float *attn_norm, *ffn_norm;                   /* (D) fp32 copies */
} mattn_llama_layer;

// ----------------------------------------------------------------------------
// routing (llama_routing.c: the routes and the file; llama_routed.c: the experts)

typedef struct mattn_llama_route_layer {
    int fixed;                          /* 1: token-independent, by share; 0: the controller */
    double share[MATTN_ROUTE_EXPERTS];  /* fixed: probability of each expert */
    mattn_controller ctrl;              /* (D+2 -> Hc -> 3) prior-free */
    float *fq;                          /* (H, dh, fd) query feature maps */
    float *fk;                          /* (Hkv, dh, fd) key feature maps */
} mattn_llama_route_layer;

typedef struct mattn_llama_routing {
    mattn_llama_routing_config cfg;     /* feature_dim resolved */
    mattn_config ccfg;                  /* the controllers' config (prior-free, no dropout) */
    int n_layers;
    mattn_llama_route_layer *layers;
    uint64_t serial;                    /* which attachment (caches remember it) */
} mattn_llama_routing;

/* The controller's expert from its logits z (3): the largest among the
 * mask's experts (0: all), ties to the lower index. */
static inline int mattn_llama_route_argmax(const float *z, int mask) {
    int e = -1;
    for (int k = 0; k < MATTN_ROUTE_EXPERTS; k++)
        if ((!mask || (mask >> k & 1)) && (e < 0 || z[k] > z[e])) e = k;
    return e;
}

/* The experts of a chunk's tokens at positions p.. in block l -> route (M);
 * h (M, D) the block's normalised input, act the controller's scratch for
 * MATTN_LLAMA_CHUNK rows. */
mattn_status mattn_llama_route(const mattn_llama_routing *r, int l, const float *h, int M, int p, int pos_len,
                               mattn_ctrl_act *act, uint8_t *route);
void mattn_llama_routing_free(mattn_llama_routing *r);
/* Does block l ever route to expert e (a fixed share > 0, or a controller
 * allowed to)? */
int mattn_llama_routing_uses(const mattn_llama_routing *r, int l, int e);

/* Hedgehog's feature map of one head: phi (2 fd) = [softmax(u), softmax(-u)],
 * u = x W for x (dh), W (dh, fd) row-major (llama_routed.c). */
void mattn_llama_feature_map(const float *x, const float *W, int dh, int fd, float *phi);

struct mattn_llama_cache;
/* Block l's routed attention of the chunk in c (M queries at positions p..,
 * RoPE'd q, k, v, the keys already in the cache; c->h the block's
 * normalised input) -> c->att; the routes recorded, FLOPs added. */
mattn_status mattn_llama_attention_routed(const mattn_llama *m, struct mattn_llama_cache *c, int l, int p, int M,
                                          int decode, double *flops);

struct mattn_llama {
    mattn_gguf_file *f;
    mattn_llama_info hp;
    mattn_llama_layer *layers;                 /* (n_layers) */
    const mattn_gguf_tensor *tok_embd, *output; /* output == tok_embd when tied */
    float *norms;                               /* every norm weight, fp32: 2 per layer, then the final one */
    const float *out_norm;
    int kmax;                                   /* longest matrix row: the matmul's buffer */
    int f32x;                                   /* 1: fp32 activations (mattn_llama_set_activations) */
    struct mattn_tok *tok;                      /* built on first use (llama_tokenize.c), or NULL */
    mattn_llama_routing *routing;               /* attached routing, or NULL: the original model */
    uint64_t routing_serial;                    /* attachments so far */
    char errmsg[MATTN_ERRMSG_LEN];
};

/* Errors of a call on model m: its message buffer and the thread's. */
#define LLAMA_ERR(m, st, ...) mattn_set_error_h((m)->errmsg, st, __VA_ARGS__)

// ----------------------------------------------------------------------------
// the cache

/* Tokens per chunk of a forward: the activations are sized for this many. */
#define MATTN_LLAMA_CHUNK 64

/* The team of a sequence's decode steps (llama_forward.c): the full team
 * or half of it, whichever took less time per step lately. */
typedef struct mattn_llama_team {
    int steps;          /* decode steps taken */
    int arm;            /* 0: the full team, 1: half of it */
    int seen[2];
    double ema[2];      /* seconds per step of each, smoothed */
} mattn_llama_team;

struct mattn_llama_cache {
    const mattn_llama *m;
    mattn_llama_team team;
    int n, cap;                 /* positions held, positions it can hold */
    int f16;                    /* K and V stored as IEEE halves (MATTN_LLAMA_KV_F16), else floats */
    void *kv;                   /* per layer K then V, each head by head (Hkv, cap, dh): a head's keys are one
                                 * sequential stream for the decode step; RoPE'd keys */
    /* a call's residual stream and RoPE table, one chunk's other activations, carved from one
     * allocation (x is its base) */
    float *x;                   /* (cap, D) the residual stream of a call's tokens */
    float *h;                   /* (C, D) normalised */
    float *q;                   /* (C, H*dh) queries, RoPE'd */
    float *k, *v;               /* (C, Hkv*dh) the chunk's keys (RoPE'd) and values, before the cache */
    float *att;                 /* (C, H*dh) attention output */
    float *gate, *up;           /* (C, F) */
    float *rope;                /* (cap, dh) cos, sin of each pair at a call's positions */
    void *attn_ws;  size_t attn_ws_bytes;   /* the softmax core's scratch, for cap keys */
    mattn_attn_pack pack;       /* a block's keys packed for a call's chunks (kernels.h) */
    /* what the attention executed (mattn_llama_cache_routing) */
    int64_t *counts;            /* (n_layers, MATTN_ROUTE_EXPERTS) tokens per block and expert */
    double attn_flops, attn_secs;
    /* routing (when the model had it as the cache was made) */
    uint64_t routing_serial;    /* 0: made for the original model */
    int poisoned;               /* a call failed after the linear state took some of its tokens */
    uint8_t *routes;            /* (cap, n_layers) the expert of each position in each block */
    float *lin;                 /* per block the linear state: S (Hkv, 2fd, dh) then z (Hkv, 2fd) */
    size_t lin_bytes;           /* its size */
    float *phq, *phk;           /* (H, 2fd), (Hkv, 2fd) one token's features */
    int32_t *rows;              /* (2, C) a chunk's rows of full, then of local */
    uint8_t *route;             /* (C) a chunk's experts in one block */
    mattn_ctrl_act act;         /* the controller's activations for a chunk */
    void *mm_ws;    size_t mm_ws_bytes;     /* the matmul's scratch, for a chunk */
};

/* Layer l's keys and values as the attention kernels read them
 * (kernels.h's mattn_kv: position s of K/V head j at element
 * s*dh + j*cap*dh). */
static inline mattn_kv mattn_llama_cache_view(const mattn_llama_cache *c, int l) {
    const int64_t dh = c->m->hp.head_dim, half = (int64_t)c->m->hp.n_kv_heads * c->cap * dh;
    const size_t esz = c->f16 ? 2 : sizeof(float);
    const char *base = (const char *)c->kv + (size_t)l * 2 * (size_t)half * esz;
    return (mattn_kv){base, base + (size_t)half * esz, dh, (int64_t)c->cap * dh, c->f16};
}

// ----------------------------------------------------------------------------
// the matmul (llama_matmul.c): every weight matrix goes through it

/* y (M, N) = x (M, K) W^T for a GGUF matrix W of ne = (K, N) in any type the
 * reader supports: mattn_qmatmul (kernels/quant.h: 8-bit blocks of x for
 * the quantised types, its error bound there) or with f32x != 0
 * mattn_qmatmul_f32x (fp32 x for every type), threaded over the rows of W;
 * every y element is computed by one thread in a fixed order, so the result
 * depends neither on the thread count nor, for the 8-bit path, on M.
 * scratch: mattn_llama_matmul_scratch(K, M, threads) bytes for up to M rows
 * of x (too little -> an assertion). */
size_t mattn_llama_matmul_scratch(int64_t K, int M, int threads);
void mattn_llama_matmul(const mattn_gguf_tensor *W, const float *x, int M, float *y, void *scratch,
                        size_t scratch_bytes, int f32x);
/* The same for n matrices of one input (q, k, v; gate, up): one parallel
 * region and x quantised once when they share a type and K (else one
 * mattn_llama_matmul each); the same bits either way. */
void mattn_llama_matmul_n(int n, const mattn_gguf_tensor *const *Ws, const float *x, int M, float *const *ys,
                          void *scratch, size_t scratch_bytes, int f32x);

// ----------------------------------------------------------------------------
// the blocks' pieces (llama_ops.c)

/* y (M, D) = x / sqrt(mean(x^2) + eps) * w, row by row (sums in double);
 * y may be x. */
void mattn_llama_rmsnorm(float *y, const float *x, const float *w, int M, int D, float eps);
/* The rotation of each pair at positions pos0 .. pos0+M-1: tab (M, dh) holds
 * per position cos(theta_i) at 2i and sin(theta_i) at 2i+1, theta_i =
 * pos * base^(-2i/dh), computed in double. */
void mattn_llama_rope_table(float *tab, int pos0, int M, int dh, double base);
/* Rotate every head of x (M rows of stride ld, n_heads heads of dh) by the
 * table: pairs (2i, 2i+1) of each head (GGUF's llama layout),
 *   x'[2i] = x[2i] cos - x[2i+1] sin,  x'[2i+1] = x[2i] sin + x[2i+1] cos. */
void mattn_llama_rope(float *x, int M, int ld, int n_heads, int dh, const float *tab);
/* g (n) = silu(g) * u, silu(a) = a / (1 + exp(-a)). */
void mattn_llama_swiglu(float *g, const float *u, int64_t n);
/* Row `row` of a GGUF matrix (ne[0] floats), dequantised into y. */
void mattn_llama_row(const mattn_gguf_tensor *W, int64_t row, float *y);

#endif
