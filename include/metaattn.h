/*
 * metaattn.h — the public API of libmetaattn.
 *
 * Meta-Attention routes every token, through a small learned controller, to
 * the attention algorithm it needs: exact softmax ("full"), linear kernel
 * attention ("linear") or sliding-window softmax ("local").  This header is
 * the contract and the reference: a function that is not declared here is not
 * part of the API.  The semantics are docs/design.md, the Bayesian
 * controller's math docs/bayes-math.md.
 *
 * Quick start — the calls a new user needs, in order:
 *
 *   One layer (examples/demo.c):
 *     mattn_config cfg = mattn_config_default();     // or mattn_config_preset()
 *     mattn_layer *l;  mattn_layer_init(&cfg, NULL, &l);   // built-in experts
 *     mattn_layer_set_training(l, 0);                // eval mode: no noise
 *     mattn_layer_forward(l, x, B, T, NULL, out, &aux, &stats);
 *     mattn_stats_format(&stats, line, sizeof line); // RoutingStats(...)
 *     mattn_layer_alpha(l);                          // (B,T,K) routing weights
 *     mattn_layer_save(l, "w.safetensors");  mattn_layer_load(l, ...);
 *     mattn_layer_free(l);
 *
 *   A language model (tools/train.c, tools/generate.c):
 *     mattn_lm_config lc;  mattn_lm_config_preset("tiny", &lc);
 *     mattn_model *m;  mattn_model_init(&lc, &m);
 *     mattn_data *d;  mattn_data_load("data/kjv.txt", 0.1, &d);
 *     mattn_adamw *o;  mattn_adamw_init(m, &opt, &o);   // opt = mattn_adamw_config_default()
 *     per step: mattn_data_batch(d, MATTN_SPLIT_TRAIN, seed, step, B, T, idx, tgt);
 *               mattn_model_zero_grad(m);  mattn_model_forward(m, idx, tgt, B, T, &loss, NULL);
 *               mattn_model_backward(m);  mattn_adamw_step(o, m, mattn_schedule_lr(...), NULL);
 *     mattn_model_save(m, "model.safetensors");  mattn_model_load(m, ...);
 *     mattn_model_cache *c;  mattn_model_cache_init(m, 1, &c);
 *     mattn_sampler *s;  mattn_sampler_init(&sc, &s);      // sc = mattn_sampler_config_default()
 *     per token: mattn_model_decode(m, c, &tok, logits);  mattn_sampler_sample(s, logits, V, &tok);
 *     mattn_model_layer_stats(m, i, &stats);         // how layer i routed
 *     mattn_sampler_free(s); mattn_model_cache_free(c); mattn_adamw_free(o); mattn_data_free(d);
 *     mattn_model_free(m);
 *
 *   A pretrained LLaMA-family model from GGUF: see "LLaMA-family decoders" below
 *     (mattn_llama_open, mattn_llama_cache_init, mattn_llama_forward, mattn_llama_decode).
 *
 *   Errors: every call returns mattn_status; mattn_layer_errmsg / mattn_model_errmsg /
 *   mattn_last_error() say what was wrong, mattn_status_str() names the code.
 *
 * Conventions (see docs/architecture.md):
 *   - Tensors are float32, row-major, contiguous.  x is (B, T, D), D = H * dh.
 *   - Functions that can fail return mattn_status (MATTN_OK == 0).  Handles
 *     keep a message naming the bad argument and its value (mattn_layer_errmsg);
 *     functions without a handle leave theirs in a thread-local buffer
 *     (mattn_last_error).  mattn_status_str() names a code.
 *   - The caller owns what it passes in.  Every *_init has a *_free and
 *     *_free(NULL) is a no-op.  On failure an out-handle is set to NULL.
 *   - The library never exits, aborts on bad input or prints, except through
 *     the log callback (mattn_set_log_callback).
 *   - Thread safety: distinct handles (layers, models, caches, optimizers,
 *     data sets) may be used from distinct threads at once, and give the same
 *     bits as when used one after the other (tests/test_threads.c runs two
 *     layers and two models concurrently).  One handle must not be used from
 *     two threads at once; a const handle may be read (e.g. mattn_layer_alpha,
 *     mattn_model_config) while no thread modifies it.  Error messages are
 *     per thread (mattn_last_error) and per handle.  Global state, to be set
 *     before starting threads: the expert registry (mattn_expert_register)
 *     and the log callback (mattn_set_log_callback).  Each call may run an
 *     OpenMP team of its own (omp_set_num_threads); two concurrent calls on 2
 *     cores then share them.
 */
#ifndef METAATTN_H
#define METAATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#  define MATTN_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#  define MATTN_DEPRECATED(msg)
#endif

#if defined(_WIN32) && defined(MATTN_SHARED)
#  ifdef MATTN_BUILD
#    define MATTN_API __declspec(dllexport)
#  else
#    define MATTN_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define MATTN_API __attribute__((visibility("default")))
#else
#  define MATTN_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

#define MATTN_VERSION        "0.2.0"
#define MATTN_VERSION_NUMBER 2000 /* X*1000000 + Y*1000 + Z */

/* The library's own MATTN_VERSION_NUMBER: compare with the header's to check
 * that header and library agree. */
MATTN_API int mattn_libversion_number(void);
MATTN_API const char *mattn_libversion(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */
/* ------------------------------------------------------------------------ */

typedef enum mattn_status {
    MATTN_OK = 0,
    MATTN_ERR_NOMEM = 1,       /* an allocation failed */
    MATTN_ERR_IO = 2,          /* open/read/write/rename failed */
    MATTN_ERR_FORMAT = 3,      /* a file or JSON text is malformed */
    MATTN_ERR_VERSION = 4,     /* unsupported format version */
    MATTN_ERR_INVALID_ARG = 5, /* an argument or config field is out of range */
    MATTN_ERR_SHAPE = 6,       /* tensor shapes disagree */
    MATTN_ERR_NUMERIC = 7,     /* NaN or Inf in an input, weight or result */
    MATTN_ERR_MISUSE = 8,      /* the library was used in the wrong order */
    MATTN_ERR_NOT_FOUND = 9,   /* a name (preset, expert, tensor) is unknown */
    MATTN_ERR_UNSUPPORTED = 10 /* valid request this build cannot do (yet) */
    /* new codes go at the end */
} mattn_status;

/* Static string naming the code, e.g. "invalid argument".  Never NULL. */
MATTN_API const char *mattn_status_str(mattn_status s);

/* Message of the last failed handle-less call on this thread ("" if none).
 * Owned by the library; valid until the next failing call on the thread. */
MATTN_API const char *mattn_last_error(void);

/* Log callback; level 0 = error, 1 = warning, 2 = info.  NULL restores the
 * default (silent). */
typedef void (*mattn_log_fn)(int level, const char *msg, void *user);
MATTN_API void mattn_set_log_callback(mattn_log_fn fn, void *user);

/* Release memory the library handed to the caller (JSON strings). */
MATTN_API void mattn_free(void *p);

/* ------------------------------------------------------------------------ */
/* Configuration (MetaAttnConfig)                                           */
/* ------------------------------------------------------------------------ */

#define MATTN_MAX_EXPERTS 8
/* Largest head dimension d_model / n_heads (the tiled kernels keep tiles of
 * up to 64 rows x this many floats on the stack). */
#define MATTN_MAX_HEAD_DIM 128

#define MATTN_EXPERT_NAME_LEN 32

/* Training-mode hard routing (hard_routing = 1 in training mode). */
typedef enum mattn_hard_train {
    MATTN_HARD_GUMBEL = 0,          /* the Python library: top-k Gumbel-softmax weights,
                                       every expert computed (k = 1: weight 1, so the
                                       task loss gives the router no gradient) */
    MATTN_HARD_STRAIGHT_THROUGH = 1 /* trained as deployed: the forward merges the top-k
                                       experts of alpha (weights as in eval), the backward
                                       takes d/dalpha = d/dweights (every expert computed) */
} mattn_hard_train;

/* The Bayesian ELBO's KL term. */
typedef enum mattn_kl_mode {
    MATTN_KL_TOKEN = 0,  /* the paper: mean_t KL[Dir(beta_hat_t) || Dir(beta)], less free_bits */
    MATTN_KL_BATCH = 1   /* KL[Dir(mean_t beta_hat_t) || Dir(beta)]: the batch's routing on the
                            whole matches the prior, single tokens may be confident */
} mattn_kl_mode;

/* The Bayesian uncertainty U_t the eval gate compares with uncertainty_threshold. */
typedef enum mattn_uncertainty_kind {
    MATTN_UNCERTAINTY_ENTROPY = 0,    /* the Python library: H[Dir(beta_hat_t)], <= -ln 2 for K = 3,
                                         so its default threshold 1 gates nothing */
    MATTN_UNCERTAINTY_MUTUAL_INFO = 1 /* epistemic part of the routing entropy, in nats, in
                                         [0, ln K]: H[E alpha] - E H[alpha] under Dir(beta_hat_t);
                                         large when the evidence sum(beta_hat) is small */
} mattn_uncertainty_kind;

typedef enum mattn_controller_kind {
    MATTN_CONTROLLER_BAYESIAN = 0,   /* Dirichlet posterior, ELBO (the paper) */
    MATTN_CONTROLLER_PRIOR_FREE = 1  /* softmax(logits / temperature)        */
} mattn_controller_kind;

/* Every field of the Python library's MetaAttnConfig plus controller, causal,
 * share_qkv and seed.  Get defaults from mattn_config_default() or a preset;
 * JSON keys are exactly these field names. */
typedef struct mattn_config {
    int d_model;                 /* D, default 512 */
    int n_heads;                 /* H, D % H == 0, default 8 */
    int window_size;             /* local expert radius w >= 1, default 64 */
    double dropout;              /* [0,1), attention probs + controller, default 0.1 */
    int controller_hidden;       /* Hc >= 1, default 128 */
    int n_experts;               /* K = number of expert_costs, 1..MATTN_MAX_EXPERTS */
    double expert_costs[MATTN_MAX_EXPERTS]; /* in [0,1], default [1.0, 0.15, 0.30] */
    double beta_0;               /* > 0, prior strength, default 1.0 */
    double epsilon;              /* > 0, prior floor, default 0.01 */
    double elbo_weight;          /* >= 0, weight of mean KL, default 1.0 */
    int sample_posterior;        /* training: alpha ~ Dir(beta_hat), default 1 */
    int hard_routing;            /* default 0 (soft merge) */
    int hard_top_k;              /* 1..K, default 1 */
    double gumbel_temp;          /* > 0, default 1.0 */
    double uncertainty_threshold;/* eta: Bayesian eval tokens with U < eta go hard, default 1.0 */
    double cost_lambda;          /* prior-free aux: expected-cost weight, default 0 */
    double entropy_coeff;        /* prior-free aux: entropy bonus, default 0 */
    double temperature;          /* > 0, prior-free softmax temperature, default 1.0 */
    mattn_controller_kind controller; /* default bayesian */
    int causal;                  /* causal forms of every expert, default 0 */
    int share_qkv;               /* one W_qkv / W_o for all built-in experts, default 0 */
    uint64_t seed;               /* init + training noise, default 0 */

    /* metaattn's own keys (docs/design.md §1; written to JSON only when they
     * differ from these defaults, so a config of the Python library's keys
     * stays loadable by it) */
    char experts[MATTN_MAX_EXPERTS][MATTN_EXPERT_NAME_LEN];
                                 /* registry names of the n_experts experts; "" (default):
                                    the first n_experts of full, linear, local.  E.g.
                                    ["local"] with expert_costs [0.3]: an all-local layer */
    double cost_target;          /* budget: per layer and training step, the merge weights'
                                    cost mean_t sum_k w_tk c_k must stay <= cost_target,
                                    by a Lagrange multiplier (dual ascent); < 0 = off (-1) */
    double full_share;           /* target mean merge weight of the "full" expert per layer
                                    (an equality constraint, same mechanism); < 0 = off (-1) */
    double usage_floor;          /* every expert keeps a mean merge weight >= usage_floor,
                                    so that none goes untrained; 0 = off (default) */
    double dual_lr;              /* step of the multipliers' dual ascent, > 0 (default 0.05) */
    mattn_hard_train hard_train; /* default MATTN_HARD_GUMBEL */
    mattn_kl_mode kl_mode;       /* default MATTN_KL_TOKEN */
    double free_bits;            /* token mode: KL below this many nats per token is free (0) */
    mattn_uncertainty_kind uncertainty; /* default MATTN_UNCERTAINTY_ENTROPY */
} mattn_config;

/* Defaults equal to the Python library's MetaAttnConfig(). */
MATTN_API mattn_config mattn_config_default(void);

/* Presets small, base, large, llama_7b, gpt2, gpt2_medium.  Unknown name:
 * MATTN_ERR_NOT_FOUND. */
MATTN_API mattn_status mattn_config_preset(const char *name, mattn_config *out);

/* MATTN_OK or MATTN_ERR_INVALID_ARG with a message naming the field and the
 * value (mattn_last_error). */
MATTN_API mattn_status mattn_config_validate(const mattn_config *cfg);

/* Parse a JSON object.  Missing keys take defaults; the Python-only keys
 * use_flash and backend are accepted and ignored; other keys are rejected by
 * name (MATTN_ERR_INVALID_ARG).  The result is validated. */
MATTN_API mattn_status mattn_config_from_json(const char *json, mattn_config *out);

/* Serialise to a JSON object (every field).  *json is freed with mattn_free. */
MATTN_API mattn_status mattn_config_to_json(const mattn_config *cfg, char **json);

/* File variants of the two above. */
MATTN_API mattn_status mattn_config_load(const char *path, mattn_config *out);
MATTN_API mattn_status mattn_config_save(const mattn_config *cfg, const char *path);

/* ------------------------------------------------------------------------ */
/* Masks                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct mattn_masks {
    const uint8_t *key_padding;  /* (B,T): nonzero = real token, 0 = padding; or NULL */
    const float *additive;       /* (T,T) or (B,T,T) added to scores (-INFINITY masks); or NULL */
    int additive_batched;        /* 1 if additive is (B,T,T) */
} mattn_masks;
/* Semantics: full and local add `additive` to their scores and drop padded
 * keys; linear drops padded keys from its sums and ignores `additive` (a
 * kernel feature map has no scores to add to).  A query that sees no key
 * gets a zero output. */

/* ------------------------------------------------------------------------ */
/* Tensors (named parameter views)                                          */
/* ------------------------------------------------------------------------ */

typedef struct mattn_tensor {
    const char *name;    /* state_dict name, e.g. "experts.0.qkv.weight" */
    int ndim;
    int64_t shape[4];
    float *data;         /* owned by the handle it came from */
    float *grad;         /* gradient of the same shape, or NULL before the
                            first backward / for experts without one */
} mattn_tensor;

/* ------------------------------------------------------------------------ */
/* Experts and the registry                                                 */
/* ------------------------------------------------------------------------ */

typedef struct mattn_expert mattn_expert;

/* One call of an expert's forward.  The expert computes its output only for
 * the tokens listed in rows (flat indices b*T+t, ascending); rows == NULL
 * means all B*T tokens.  It writes those rows of out and nothing else. */
typedef struct mattn_expert_call {
    const float *x;            /* (B,T,D) layer input */
    const float *qkv;          /* (B,T,3D) shared projections (share_qkv and
                                  vt->shared_qkv) or NULL; with it, out receives
                                  the attention core output before W_o */
    int B, T;
    const mattn_masks *masks;  /* may be NULL */
    const int32_t *rows;       /* token indices to compute or NULL for all */
    int64_t n_rows;            /* number of rows (B*T when rows == NULL) */
    float *out;                /* (B,T,D) */
    void *work;                /* workspace of workspace_size(B,T) bytes; an
                                  expert may keep activations in it: it is not
                                  touched until the expert's next call */
    int training;              /* dropout etc. only when nonzero */
    uint64_t seed, step;       /* noise streams: (seed, step) are unique per call */
    double flops;              /* out: floating-point operations executed */
} mattn_expert_call;

/* One call of an expert's backward, for the forward call just before it
 * (same x, B, T, masks, work, seed, step; every token was computed). */
typedef struct mattn_expert_grad_call {
    const float *x;            /* (B,T,D) layer input */
    const float *qkv;          /* shared projections, as in the forward, or NULL */
    float *g_qkv;              /* with qkv: (B,T,3D) dL/dqkv, accumulate (+=) */
    int B, T;
    const mattn_masks *masks;
    const float *out;          /* (B,T,D) what the forward wrote */
    const float *gout;         /* (B,T,D) dL/d(out) */
    float *gx;                 /* (B,T,D) dL/dx, accumulate (+=); may be NULL */
    void *work;                /* the forward's workspace, activations intact */
    void *gwork;               /* backward_workspace_size(B,T) bytes of scratch */
    int training;
    uint64_t seed, step;
} mattn_expert_grad_call;

typedef struct mattn_expert_vtable {
    const char *name;          /* registry name, e.g. "full" */
    double cost;               /* normalised cost, full = 1.0 */
    /* Create the expert's state (parameters etc.) for cfg. */
    mattn_status (*init)(const mattn_config *cfg, void **state);
    void (*free)(void *state);
    /* Bytes of workspace for a (B,T) call; NULL means none. */
    size_t (*workspace_size)(const void *state, int B, int T);
    mattn_status (*forward)(void *state, mattn_expert_call *call);
    /* Parameters for load/save: names are relative ("qkv.weight"). */
    int (*n_params)(const void *state);
    mattn_status (*param)(void *state, int i, mattn_tensor *t);
    /* Optional (NULL: the layer cannot be trained with this expert).
     * Accumulates the parameter gradients (param()'s grad) and dL/dx. */
    mattn_status (*backward)(void *state, mattn_expert_grad_call *call);
    size_t (*backward_workspace_size)(const void *state, int B, int T);
    int shared_qkv;            /* 1: under share_qkv takes call->qkv (built-ins) */
} mattn_expert_vtable;

/* Register a vtable by name; the vtable must outlive its use (static).  The
 * built-ins "full", "linear", "local" are always registered.  Re-registering
 * a name replaces it.  Not thread-safe. */
MATTN_API mattn_status mattn_expert_register(const mattn_expert_vtable *vt);

/* Build an expert by registry name.  Unknown name: MATTN_ERR_NOT_FOUND. */
MATTN_API mattn_status mattn_expert_build(const char *name, const mattn_config *cfg,
                                          mattn_expert **out);
MATTN_API void mattn_expert_free(mattn_expert *e);
MATTN_API const char *mattn_expert_name(const mattn_expert *e);
MATTN_API double mattn_expert_cost(const mattn_expert *e);

/* ------------------------------------------------------------------------ */
/* Routing statistics (RoutingStats)                                        */
/* ------------------------------------------------------------------------ */

typedef struct mattn_stats {
    int n_experts;
    int64_t n_tokens;
    double weight[MATTN_MAX_EXPERTS];   /* mean alpha per expert */
    double entropy;                     /* mean Shannon entropy of alpha (nats) */
    double expected_cost;               /* mean_t sum_k alpha_k c_k */
    double collapsed;                   /* fraction of tokens with max alpha > 0.9 */
    double uncertainty;                 /* mean U_t (Bayesian), 0 for prior-free */
    int has_uncertainty;
    double hard_cost;                   /* projected: mean_t c[argmax alpha_t] */
    double exec_frac[MATTN_MAX_EXPERTS];/* fraction of tokens each expert executed */
    double flops[MATTN_MAX_EXPERTS];    /* FLOPs executed by each expert */
    double flops_shared;                /* shared projections (share_qkv) */
    double flops_controller;            /* controller MLP */
    double flops_total;                 /* everything executed */
    double seconds;                     /* wall-clock of the call (forward or decode step) */
} mattn_stats;

/* Write the documented line, e.g.
 *   RoutingStats(E1=0.341 | E2=0.381 | E3=0.278  entropy=1.0940  cost=0.4740
 *                collapsed=0.00%  uncertainty=-2.1000)
 * (one line).  Returns the length snprintf would write. */
MATTN_API int mattn_stats_format(const mattn_stats *s, char *buf, size_t n);

/* How routes depend on tokens and positions.  Joint counts, accumulated over
 * any number of forwards of a layer, of each token's route (the expert with
 * the largest merge weight: what hard routing runs) against its token id and
 * against its position bucket (n_buckets equal parts of [0, T)); their
 * mutual information in nats, the plug-in estimate with the Miller-Madow
 * correction ((cells - rows - cols + 1) / 2N; the plug-in alone is biased up
 * by about that much), clipped at 0.  0 means the route does not depend on
 * the token (or position) at all: a constant router. */
typedef struct mattn_route_counts mattn_route_counts;
MATTN_API mattn_status mattn_route_counts_init(int n_experts, int vocab, int n_buckets, mattn_route_counts **out);
MATTN_API void mattn_route_counts_free(mattn_route_counts *c);
MATTN_API void mattn_route_counts_reset(mattn_route_counts *c);
struct mattn_layer;
/* tokens (B,T): the ids of the layer's last forward (or decode step, T = 1). */
MATTN_API mattn_status mattn_route_counts_add(mattn_route_counts *c, const struct mattn_layer *l,
                                              const int32_t *tokens);
MATTN_API double mattn_route_counts_mi_token(const mattn_route_counts *c);
MATTN_API double mattn_route_counts_mi_position(const mattn_route_counts *c);
MATTN_API int64_t mattn_route_counts_total(const mattn_route_counts *c);

/* ------------------------------------------------------------------------ */
/* The Meta-Attention layer                                                 */
/* ------------------------------------------------------------------------ */

typedef struct mattn_layer mattn_layer;

/* Create a layer.  experts: cfg->n_experts experts, or NULL for the
 * built-ins: the first n_experts (1 to 3) of full, linear, local — with
 * expert_costs = [1.0] the layer is plain softmax attention (the all-full
 * baseline; alpha is 1 for every token).  On success the
 * layer owns the experts passed in; on failure the caller still does.
 * Weights are initialised as the Python library does (experts: PyTorch's
 * nn.Linear default, controller: N(0, 0.02), zero biases) from cfg->seed. */
MATTN_API mattn_status mattn_layer_init(const mattn_config *cfg, mattn_expert **experts,
                                        mattn_layer **out);
MATTN_API void mattn_layer_free(mattn_layer *l);
MATTN_API const char *mattn_layer_errmsg(const mattn_layer *l);
MATTN_API const mattn_config *mattn_layer_config(const mattn_layer *l);

/* Forced routes, for benchmarks, routing studies and fixed hybrids: with
 * hard routing, the token at position t of every sequence runs expert
 * expert[t] alone (weight 1) instead of the controller's choice; the
 * controller still runs (its statistics are reported) but plays no part:
 * no aux loss, no gradient (its parameters' gradients stay zero), its
 * budget multipliers frozen.  In training mode every expert is still
 * computed (the backward needs every row), the others with weight 0, so a
 * forced layer trains exactly the expert it runs.  Positions must stay
 * below n: a forward with T > n or a decode step at position >= n fails with
 * MATTN_ERR_INVALID_ARG.  The layer keeps a copy; expert == NULL clears. */
MATTN_API mattn_status mattn_layer_force_routes(mattn_layer *l, const uint8_t *expert, int n);

/* Gradients on (default) or off.  Off is inference (like torch.no_grad):
 * the experts share one workspace and output buffer and each expert's output
 * is merged as soon as it is computed, so a forward's memory does not grow
 * with the number of experts; outputs are the same; mattn_layer_backward
 * after such a forward fails with MATTN_ERR_MISUSE. */
MATTN_API void mattn_layer_set_grad(mattn_layer *l, int enabled);

/* Training mode (default) samples the posterior, applies dropout and Gumbel
 * noise from the seed; eval mode uses the posterior mean and no dropout. */
MATTN_API void mattn_layer_set_training(mattn_layer *l, int training);
/* The noise step: every training-mode forward draws its noise (Dirichlet
 * samples, dropout, Gumbel) from streams keyed by (seed, step) and then
 * advances it.  Setting it replays a forward's noise exactly (gradient
 * checks, resuming a run). */
MATTN_API uint64_t mattn_layer_step(const mattn_layer *l);
MATTN_API void mattn_layer_set_step(mattn_layer *l, uint64_t step);
/* The controller's position feature, "position_norm" (one name for one
 * idea: the LM config field and JSON key are position_norm too).  Default
 * (max_len 0): pos_t = t/(T-1) as in the Python library, which makes a
 * token's routing depend on the sequence's length (i.e. on the future).
 * max_len > 0: pos_t = t/(max_len-1), causal, and T may not exceed max_len;
 * the language model uses this with max_seq_len (position_norm
 * "max_seq_len") so that decoding with a cache reproduces the full forward. */
MATTN_API mattn_status mattn_layer_set_position_norm(mattn_layer *l, int max_len);

/* Single-token decoding of a causal layer with a fixed position length:
 * x (B, D) is the token at position mattn_layer_cache_length() of each of
 * the B sequences; out (B, D).  Built-in experts only.  NaN/Inf: the
 * weights are checked when the cache is made (MATTN_ERR_NUMERIC), x and the
 * output at every step; a step whose output is not finite has already
 * entered the cache, so the cache refuses steps (MATTN_ERR_MISUSE) until
 * mattn_layer_cache_reset. */
typedef struct mattn_layer_cache mattn_layer_cache;
MATTN_API mattn_status mattn_layer_cache_init(mattn_layer *l, int B, int capacity, mattn_layer_cache **out);
MATTN_API void mattn_layer_cache_free(mattn_layer_cache *c);
MATTN_API void mattn_layer_cache_reset(mattn_layer_cache *c);
MATTN_API int mattn_layer_cache_length(const mattn_layer_cache *c);
MATTN_API mattn_status mattn_layer_decode(mattn_layer *l, mattn_layer_cache *c, const float *x, float *out,
                                          mattn_stats *stats);

/* Run the layer.  x (B,T,D) -> out (B,T,D).  aux_loss and stats may be NULL.
 * Errors: MATTN_ERR_INVALID_ARG (NULL pointers, B or T < 1),
 * MATTN_ERR_NUMERIC (non-finite x, a weight holding NaN/Inf, or a non-finite
 * output: the activations overflowed).  Each call in training mode advances the
 * layer's noise step. */
MATTN_API mattn_status mattn_layer_forward(mattn_layer *l, const float *x, int B, int T,
                                           const mattn_masks *masks, float *out,
                                           float *aux_loss, mattn_stats *stats);

/* Views into the last forward's routing, owned by the layer, valid until the
 * next forward: alpha (B,T,K) controller weights; merge_weights (B,T,K) the
 * weights the merge actually used (alpha under soft routing, the top-k or
 * Gumbel weights under hard routing); beta_hat (B,T,K) and uncertainty
 * (B,T) — NULL for the prior-free controller. */
MATTN_API const float *mattn_layer_alpha(const mattn_layer *l);
MATTN_API const float *mattn_layer_merge_weights(const mattn_layer *l);
MATTN_API const float *mattn_layer_beta_hat(const mattn_layer *l);
MATTN_API const float *mattn_layer_uncertainty(const mattn_layer *l);

/* Parameter tensors (as PyTorch's parameters(): n_params counts tensors)
 * under the Python library's state_dict names. */
MATTN_API int mattn_layer_n_params(const mattn_layer *l);
MATTN_API mattn_status mattn_layer_param(mattn_layer *l, int i, mattn_tensor *t);

/* Backward of the last forward (training mode, or soft routing in eval mode;
 * eval-mode hard routing runs experts sparsely and cannot be differentiated:
 * MATTN_ERR_MISUSE).  x and masks must be the forward's; gout (B,T,D) is
 * dL/d(out) and g_aux dL/d(aux_loss) (1 when the aux loss is added to the
 * loss).  Accumulates (+=) every parameter gradient (mattn_layer_param()'s
 * grad) and, when gx is non-NULL, dL/dx (B,T,D).  The first call allocates
 * the gradients, zeroed. */
MATTN_API mattn_status mattn_layer_backward(mattn_layer *l, const float *x, const mattn_masks *masks,
                                            const float *gout, float g_aux, float *gx);
/* Allocate (first call) and zero every parameter gradient. */
MATTN_API mattn_status mattn_layer_zero_grad(mattn_layer *l);

/* The budget's Lagrange multipliers (cost_target, full_share, usage_floor):
 * after each training step, one dual-ascent step from what the step's
 * training forward measured of the merge weights (lambda += dual_lr x
 * violation, clipped at 0 for the inequalities).  A no-op when no constraint
 * is on; MATTN_ERR_MISUSE without a training forward since the last update.
 * The multipliers (n_duals of them: cost, full share, one floor per expert;
 * 0 when no constraint is on) are saved with the weights as the buffer
 * "controller.duals", so that a resumed run continues exactly. */
MATTN_API mattn_status mattn_layer_update_duals(mattn_layer *l);
MATTN_API int mattn_layer_n_duals(const mattn_layer *l);
MATTN_API double *mattn_layer_duals(mattn_layer *l);

/* Weights as safetensors: every parameter, the buffers "costs" and
 * "controller.prior_beta" (Bayesian), and __metadata__["config"].  Save
 * writes a temp file and renames it.  Load checks names, shapes, dtypes and
 * buffers against the layer's config. */
MATTN_API mattn_status mattn_layer_save(mattn_layer *l, const char *path);
MATTN_API mattn_status mattn_layer_load(mattn_layer *l, const char *path);


/* ------------------------------------------------------------------------ */
/* The Meta-Attention language model (docs/design.md §1 "Language model")  */
/* ------------------------------------------------------------------------ */

typedef enum mattn_position_norm {
    MATTN_POSITION_NORM_LENGTH = 0,      /* pos_t = t/(T-1) */
    MATTN_POSITION_NORM_MAX_SEQ_LEN = 1  /* pos_t = t/(max_seq_len-1) */
} mattn_position_norm;

/* MetaLMConfig.  attn.causal is forced on: a language model uses the causal
 * form of every expert. */
typedef struct mattn_lm_config {
    mattn_config attn;
    int vocab_size;       /* 256 for the byte-level tokenizer */
    int n_layers;
    int max_seq_len;      /* positions (pos_emb rows) */
    int ffn_multiplier;   /* FFN width = ffn_multiplier * d_model */
    int tie_weights;      /* head.weight = tok_emb.weight (only 1 is supported) */
    union {               /* JSON "position_norm": "length" (the Python library's
                             t/(T-1), the default when the key is absent) or
                             "max_seq_len" (causal; decoding needs it); see
                             mattn_layer_set_position_norm */
        mattn_position_norm position_norm;
        int causal_positions MATTN_DEPRECATED("use position_norm"); /* the old name */
    };
} mattn_lm_config;

/* Python defaults (vocab 50257, 6 layers, 1024 positions, 4x, tied) with
 * attn = mattn_config_default(). */
MATTN_API mattn_lm_config mattn_lm_config_default(void);
MATTN_API mattn_status mattn_lm_config_validate(const mattn_lm_config *cfg);
/* JSON with the MetaLMConfig keys, "attn" nested (a MetaAttnConfig object). */
MATTN_API mattn_status mattn_lm_config_from_json(const char *json, mattn_lm_config *out);
MATTN_API mattn_status mattn_lm_config_to_json(const mattn_lm_config *cfg, char **json); /* mattn_free */

typedef struct mattn_model mattn_model;

/* Weights initialised as the Python library does (every Linear and
 * Embedding weight N(0, 0.02), biases 0, LayerNorm 1/0) from attn.seed. */
MATTN_API mattn_status mattn_model_init(const mattn_lm_config *cfg, mattn_model **out);
MATTN_API void mattn_model_free(mattn_model *m);
MATTN_API const char *mattn_model_errmsg(const mattn_model *m);
MATTN_API const mattn_lm_config *mattn_model_config(const mattn_model *m);
MATTN_API void mattn_model_set_training(mattn_model *m, int training);
/* Gradients on/off for every layer (mattn_layer_set_grad): off for inference. */
MATTN_API void mattn_model_set_grad(mattn_model *m, int enabled);
MATTN_API uint64_t mattn_model_step(const mattn_model *m);
MATTN_API void mattn_model_set_step(mattn_model *m, uint64_t step);
/* Override the routing knobs of every layer (schedules): cost_lambda,
 * elbo_weight, temperature, gumbel_temp, hard_routing, hard_train,
 * uncertainty_threshold, cost_target, full_share (a budget that was off
 * stays off, and on stays on: the multipliers are part of the model). */
MATTN_API mattn_status mattn_model_set_routing(mattn_model *m, const mattn_config *knobs);
/* mattn_layer_update_duals for every layer: once per training step. */
MATTN_API mattn_status mattn_model_update_duals(mattn_model *m);

/* Forward over idx (B,T) token ids in [0, vocab), T <= max_seq_len.  With
 * targets (B,T; < 0 = ignore) *loss receives mean cross-entropy + the sum of
 * the layers' aux losses, and *lm_loss (if non-NULL) the cross-entropy
 * alone; without targets both are left untouched.  Logits (B,T,V) via
 * mattn_model_logits.  MATTN_ERR_NUMERIC names a weight holding NaN/Inf, or
 * reports a non-finite loss (with targets) or logits (without). */
MATTN_API mattn_status mattn_model_forward(mattn_model *m, const int32_t *idx, const int32_t *targets, int B,
                                           int T, float *loss, float *lm_loss);
MATTN_API const float *mattn_model_logits(const mattn_model *m);
/* The layers (routing views, stats of the last forward). */
MATTN_API mattn_layer *mattn_model_layer(mattn_model *m, int i);
MATTN_API mattn_status mattn_model_layer_stats(const mattn_model *m, int i, mattn_stats *out);
/* Backward of the last forward with targets, dloss = 1; accumulates. */
MATTN_API mattn_status mattn_model_backward(mattn_model *m);
MATTN_API mattn_status mattn_model_zero_grad(mattn_model *m);
/* Parameter tensors (n_params counts tensors) under MetaLanguageModel's
 * state_dict names; numel: their total number of scalars. */
MATTN_API int mattn_model_n_params(const mattn_model *m);
MATTN_API mattn_status mattn_model_param(mattn_model *m, int i, mattn_tensor *t);
MATTN_API int64_t mattn_model_numel(const mattn_model *m);
/* safetensors: parameters and buffers under the Python names (tied head not
 * stored), __metadata__ config (MetaLMConfig JSON) and format keys; written
 * atomically.  Load checks names, shapes and buffers against the model. */
MATTN_API mattn_status mattn_model_save(mattn_model *m, const char *path);
MATTN_API mattn_status mattn_model_load(mattn_model *m, const char *path);
/* Decoding with a cache (needs position_norm max_seq_len): per layer and expert, K/V
 * for full, a ring of the last window+1 positions for local, the running
 * (S, z) for linear.  Each step takes one token per sequence (B of them),
 * routes it on its own (eval mode; the layers' hard_routing decides soft or
 * hard), appends it to every cache and writes the next-token logits (B, V).
 * Equals the full forward over the same prefix.  No allocation per step.
 * NaN/Inf weights fail mattn_model_cache_init; a weight that turns NaN/Inf
 * later fails the step that uses it (non-finite logits or routing), and the
 * cache then needs mattn_model_cache_reset, as for the layer cache. */
typedef struct mattn_model_cache mattn_model_cache;
MATTN_API mattn_status mattn_model_cache_init(mattn_model *m, int B, mattn_model_cache **out);
MATTN_API void mattn_model_cache_free(mattn_model_cache *c);
MATTN_API void mattn_model_cache_reset(mattn_model_cache *c);
MATTN_API int mattn_model_cache_length(const mattn_model_cache *c);
MATTN_API mattn_status mattn_model_decode(mattn_model *m, mattn_model_cache *c, const int32_t *tokens, float *logits);

/* The config stored in a saved model's safetensors metadata, without
 * loading its weights. */
MATTN_API mattn_status mattn_model_file_config(const char *path, mattn_lm_config *out);

/* ------------------------------------------------------------------------ */
/* LLaMA-family decoders read from GGUF (docs/design.md §5)                 */
/* ------------------------------------------------------------------------ */

/* A pretrained LLaMA-style decoder (general.architecture "llama": SmolLM2,
 * TinyLlama, ...) read from a GGUF file, for inference: token embedding, N
 * blocks of x += Attn(RMSNorm(x)) and x += SwiGLU(RMSNorm(x)), a final
 * RMSNorm and the output head (output.weight, or the token embedding when
 * the file has none); attention with RoPE and grouped-query heads.  The
 * weights stay in the memory-mapped file in their own types (F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1); nothing is converted up front.
 *
 * Quick start (one sequence):
 *   mattn_llama *m;  mattn_llama_open("models/SmolLM2-135M-Instruct.Q4_1.gguf", &m);
 *   mattn_llama_info info;  mattn_llama_get_info(m, &info);     // info.vocab_size = V
 *   mattn_llama_cache *c;  mattn_llama_cache_init(m, 0, &c);    // 0: the model's context
 *   mattn_llama_forward(m, c, prompt, n - 1, NULL);             // prefill, no logits needed
 *   mattn_llama_decode(m, c, prompt[n - 1], logits);            // logits (V) of the next token
 *   per token: mattn_sampler_sample(s, logits, V, &tok);  mattn_llama_decode(m, c, tok, logits);
 *   mattn_llama_cache_free(c);  mattn_llama_free(m);
 * Errors: mattn_llama_errmsg(m) (or mattn_last_error() when there is no
 * handle) names the argument or key and the value.
 *
 * Thread safety: a model is read-only once open; distinct caches of one
 * model may run forward/decode from distinct threads at once (error
 * messages then race on the model's buffer: use mattn_last_error, per
 * thread).  One cache must not be used from two threads at once. */
typedef struct mattn_llama mattn_llama;

typedef struct mattn_llama_info {
    int n_layers;          /* llama.block_count */
    int d_model;           /* llama.embedding_length */
    int n_heads;           /* llama.attention.head_count */
    int n_kv_heads;        /* llama.attention.head_count_kv (= n_heads without GQA) */
    int head_dim;          /* d_model / n_heads */
    int ffn_dim;           /* llama.feed_forward_length */
    int vocab_size;        /* rows of token_embd.weight */
    int context_length;    /* llama.context_length: the longest cache */
    float rms_eps;         /* llama.attention.layer_norm_rms_epsilon */
    float rope_base;       /* llama.rope.freq_base (10000 when absent) */
    int tied_output;       /* 1: no output.weight, the head is token_embd.weight */
    int64_t n_params;      /* scalars in all the weights */
    size_t weight_bytes;   /* bytes of the matrices one token's forward reads, in their file
                              types: every block's seven (q, k, v, output, gate, up, down)
                              and the output head (token_embd.weight when tied); not the
                              norms or the embedding row.  Times decode tokens/s: the
                              weight bandwidth of decoding */
} mattn_llama_info;

/* Open and check a GGUF file: general.architecture must be "llama"
 * (another is MATTN_ERR_UNSUPPORTED, named), the hyper-parameters come from
 * the llama.* keys, and every tensor a block needs must be there with the
 * shape they imply (MATTN_ERR_FORMAT naming the tensor, its shape and the
 * expected one).  Unsupported features are refused by name
 * (MATTN_ERR_UNSUPPORTED): RoPE scaling, partial rotary dimensions, rope
 * frequency factors, attention biases, experts.  MATTN_ERR_IO: cannot open
 * or map.  The file stays mapped until mattn_llama_free; on failure *out =
 * NULL and mattn_last_error() says why. */
MATTN_API mattn_status mattn_llama_open(const char *path, mattn_llama **out);
MATTN_API void mattn_llama_free(mattn_llama *m);
MATTN_API const char *mattn_llama_errmsg(const mattn_llama *m);
MATTN_API mattn_status mattn_llama_get_info(const mattn_llama *m, mattn_llama_info *out);

/* How the activations enter the products with quantised weights (Q8_0,
 * Q4_0, Q4_1; float weights always take fp32 activations):
 *   MATTN_LLAMA_ACT_Q8   (the default) quantised on the fly to 8-bit blocks
 *                        of 32, as llama.cpp does: the fast path; logits
 *                        then differ from an fp32 reference of the
 *                        dequantised weights as llama.cpp's do (SmolLM2-135M
 *                        Q4_1: both ~0.6-0.7 at most on logits up to 30,
 *                        tests/test_llama_model.c);
 *   MATTN_LLAMA_ACT_F32  kept in fp32, the weights dequantised in registers:
 *                        the fp32 reference to rounding (2e-5), slower.
 * It applies from the next call on; caches stay valid (their keys and
 * values were computed under the setting of their time).  Not while another
 * thread runs the model.  Another value: MATTN_ERR_INVALID_ARG. */
typedef enum mattn_llama_act { MATTN_LLAMA_ACT_Q8 = 0, MATTN_LLAMA_ACT_F32 = 1 } mattn_llama_act;
MATTN_API mattn_status mattn_llama_set_activations(mattn_llama *m, mattn_llama_act act);

/* A decode cache: one sequence's RoPE'd keys and values for every layer
 * (context x n_kv_heads*head_dim each, allocated up front; the memory is
 * touched only as positions fill) and the activations of a forward.
 * context 0 takes the model's context_length; more than that is
 * MATTN_ERR_INVALID_ARG.  How the keys and values are stored:
 *   MATTN_LLAMA_KV_F16  (mattn_llama_cache_init) IEEE halves, rounded to
 *                       nearest even, as llama.cpp's default cache: half
 *                       the memory and half the bytes a decode step reads
 *                       at long context; with fp32 activations, logits
 *                       move by 1e-2 at most (SmolLM2, logits up to 30:
 *                       tests/test_llama_model.c);
 *   MATTN_LLAMA_KV_F32  floats: with MATTN_LLAMA_ACT_F32, the fp32
 *                       reference to rounding.
 * Another value: MATTN_ERR_INVALID_ARG. */
typedef struct mattn_llama_cache mattn_llama_cache;
typedef enum mattn_llama_kv { MATTN_LLAMA_KV_F16 = 0, MATTN_LLAMA_KV_F32 = 1 } mattn_llama_kv;
MATTN_API mattn_status mattn_llama_cache_init(mattn_llama *m, int context, mattn_llama_cache **out);
MATTN_API mattn_status mattn_llama_cache_init_kv(mattn_llama *m, int context, mattn_llama_kv kv,
                                                 mattn_llama_cache **out);
MATTN_API void mattn_llama_cache_free(mattn_llama_cache *c);
MATTN_API void mattn_llama_cache_reset(mattn_llama_cache *c);          /* length 0 */
MATTN_API int mattn_llama_cache_length(const mattn_llama_cache *c);    /* positions held */
MATTN_API int mattn_llama_cache_context(const mattn_llama_cache *c);   /* positions it can hold */

/* Run tokens[0..n) at positions length..length+n-1 of the cache (causal:
 * each attends to the cache and to the tokens before it) and append them.
 * logits (n, vocab_size): the next-token logits after each token, or NULL
 * to skip the output head (a prompt's prefill).  Any n works: the tokens
 * are processed in chunks, and calls of any lengths give what one call
 * gives.  Errors leave the cache as it was: MATTN_ERR_INVALID_ARG for n < 1,
 * a token outside [0, vocab_size) (its index and value named) or a cache
 * that would overflow its context; MATTN_ERR_NUMERIC when the activations
 * or the logits are not finite. */
MATTN_API mattn_status mattn_llama_forward(mattn_llama *m, mattn_llama_cache *c, const int32_t *tokens, int n,
                                           float *logits);
/* One token (generation): mattn_llama_forward of n = 1 through the decode
 * step of the attention kernels; logits (vocab_size) must not be NULL.
 * The step runs on the OpenMP team (omp_get_max_threads()) or, when
 * another process competes for the cores and half of it was measured
 * faster, on half of it: each cache times its steps and tries the other
 * team size now and then (one step in 64).  The result is the same bits
 * either way; the caller's thread count is restored before it returns. */
MATTN_API mattn_status mattn_llama_decode(mattn_llama *m, mattn_llama_cache *c, int32_t token, float *logits);

/* Routing (surgery, docs/design.md §5): a pretrained model's attention as a
 * Meta-Attention layer.  Each block's experts share the pretrained Q/K/V/O
 * and the cache's keys and values (one K/V per token for all experts):
 *   MATTN_ROUTE_FULL    the original attention, exactly;
 *   MATTN_ROUTE_LINEAR  linear attention over every key up to its own through a
 *                       learned feature map of the RoPE'd queries and keys,
 *                       phi(x) = [softmax(x W), softmax(-x W)] per head
 *                       (W: head_dim x feature_dim, identity-initialised as
 *                       Hedgehog's), the cache keeping the running state;
 *   MATTN_ROUTE_LOCAL   softmax over the keys [t - window, t] plus the
 *                       attention sinks [0, sinks).
 * Each token of each block takes one expert (hard routing): the argmax of
 * the block's controller (features [RMSNorm(x); its norm; position or 0], an
 * MLP, as mattn_config's prior-free controller), or, for a block made
 * token-independent by mattn_llama_routing_fix, an expert drawn with fixed
 * probabilities from a hash of (seed, block, position).  The routing lives
 * beside the model (mattn_llama_routing_save/load: a small safetensors
 * file of the new weights and this config); the GGUF is never rewritten.
 * Attach or drop routing only while no forward runs; caches made before
 * are refused by the next forward (make new ones). */
enum { MATTN_ROUTE_FULL = 0, MATTN_ROUTE_LINEAR = 1, MATTN_ROUTE_LOCAL = 2, MATTN_ROUTE_EXPERTS = 3 };
typedef struct mattn_llama_routing_config {
    int window;            /* local: keys [t - window, t], >= 1 (default 256) */
    int sinks;             /* local: keys [0, sinks) as well, >= 0 (default 4) */
    int controller_hidden; /* controller MLP width, >= 1 (default 32) */
    int feature_dim;       /* linear: W is head_dim x feature_dim, 2 * feature_dim features (default head_dim) */
    uint64_t seed;         /* controller init and token-independent draws (default 0) */
    int position;          /* 1: the controllers see the position t / (context_length - 1); 0 (default): not
                            * (routes trained at one length then hold at others) */
    int experts;           /* the experts a controller may route to, a mask of 1 << MATTN_ROUTE_*; 0 (default):
                            * all three (token-independent blocks take their shares whatever it says) */
} mattn_llama_routing_config;
MATTN_API mattn_llama_routing_config mattn_llama_routing_default(void);
/* Attach fresh routing (controllers initialised as mattn_config's, biases
 * favouring full: every token goes to full until trained); a zero
 * feature_dim takes head_dim.  Replaces any routing attached. */
MATTN_API mattn_status mattn_llama_routing_new(mattn_llama *m, const mattn_llama_routing_config *cfg);
/* Load a routing file made for this model's shape (n_layers, d_model, heads,
 * head_dim are checked by name) and attach it. */
MATTN_API mattn_status mattn_llama_routing_load(mattn_llama *m, const char *path);
MATTN_API mattn_status mattn_llama_routing_save(mattn_llama *m, const char *path);
MATTN_API void mattn_llama_routing_drop(mattn_llama *m);                  /* back to the original model */
MATTN_API int mattn_llama_routing_attached(const mattn_llama *m);
MATTN_API mattn_status mattn_llama_routing_get_config(const mattn_llama *m, mattn_llama_routing_config *out);
/* Make block `layer` (-1: every block) token-independent: each token takes
 * expert e with probability share[e] (MATTN_ROUTE_EXPERTS of them, >= 0,
 * summing to 1; (1, 0, 0) is the original attention, (0, 0, 1) StreamingLLM's
 * sinks + window).  Saved with the routing; caches made before are refused
 * by the next forward (they keep a linear state only where it was used). */
MATTN_API mattn_status mattn_llama_routing_fix(mattn_llama *m, int layer, const double *share);
/* What a cache executed since it was made or reset: counts (n_layers,
 * MATTN_ROUTE_EXPERTS) tokens per block and expert, attention FLOPs and
 * seconds (the attention cores only, every block); any pointer may be
 * NULL.  routes: the expert of position t in block l at routes[t * n_layers
 * + l] for the cache's positions (valid until the next call on the cache;
 * NULL without routing). */
MATTN_API mattn_status mattn_llama_cache_routing(const mattn_llama_cache *c, int64_t *counts, double *attn_flops,
                                                 double *attn_secs, const uint8_t **routes);

/* Distillation of the routing (docs/design.md §5.3): the new weights
 * (controllers, feature maps) trained so that the routed model imitates the
 * original, the base frozen.  A trainer trains the routing attached when it
 * was made: after mattn_llama_routing_new/load/fix/drop its calls are
 * refused (make a new one).  Per step, one sequence of n tokens: the
 * teacher is the original model (every token on full), the student the
 * routed one, each block running its tokens through their routes (hard
 * routing with straight-through gradients: trained as deployed); the loss
 *   KL(teacher || student) of the next-token distributions, mean over positions
 *   + map_weight * mean over blocks of |a_linear - a_full|^2 / |a_full|^2
 *     (the feature maps imitate each block's softmax attention: the
 *     layer-local attention transfer of Hedgehog and LoLCATs)
 *   + dual * (share of full over blocks and tokens - full_share)
 * with the multiplier dual >= 0 raised by dual_lr per step while the share
 * is above the budget (dual ascent), or with calibrate the full bias of the
 * controllers set after each step so that the share is the budget (the
 * routers learn which tokens go to full, the calibration how many); Adam
 * on the new weights.  The model's
 * routing (mattn_llama_routing_new/load) is what is trained, in place. */
typedef struct mattn_distill mattn_distill;
typedef struct mattn_distill_config {
    double full_share;   /* budget: the mean share of full over blocks and tokens, in [0, 1]; < 0: none (-1) */
    double lr;           /* Adam's step of the controllers (default 1e-3) */
    double map_lr;       /* of the feature maps (default 1e-3) */
    double map_weight;   /* weight of the attention-transfer term (default 1) */
    double kl_weight;    /* weight of the KL (default 1; 0: the layer-local stage, maps only) */
    double dual_lr;      /* dual ascent step per unit of excess share (default 1) */
    int soft;            /* 1: merge the experts by the controller's softmax (the gradient checks); 0: hard */
    double st_temperature; /* hard routes: the straight-through gradient of the logits z is that of
                          * softmax(z / st_temperature) (default 1: the controller's own softmax); above 1 it
                          * stays alive where the controller is sure (a saturated softmax passes no gradient to
                          * the tokens it routes away from full) */
    double route_weight; /* weight of the routing target (default 0: none): mean over the controlled
                          * blocks and tokens of BCE(sigmoid(z_full - z_other), y), y = 1 on the token-blocks
                          * where local's output is furthest from full's (|a_full - a_local|^2 over the
                          * block's mean |a_full|^2), as many as full_share of them (a quarter without a
                          * budget), 0 elsewhere (a stop-gradient): the routers learn where local errs most */
    int calibrate;       /* 1: after each step, shift every controller's full bias so that the step's share
                          * of full would have been full_share exactly (the margins' quantile); the multiplier
                          * then stays 0 unless dual_lr > 0 (default 0: dual ascent only) */
} mattn_distill_config;
typedef struct mattn_distill_stats {
    double loss, kl, map_mse, dual;
    double route;                        /* the routing target's BCE (route_weight > 0), else 0 */
    double share[MATTN_ROUTE_EXPERTS];   /* executed share of each expert over blocks and tokens */
    double grad_norm;                    /* of the new weights, before the update */
} mattn_distill_stats;
MATTN_API mattn_distill_config mattn_distill_default(void);
/* A trainer of m's attached routing for sequences of up to max_tokens
 * (>= 2) tokens: it copies the model's matrices to fp32 (4 bytes per
 * weight) and keeps every block's activations (about 1 MB per token for
 * SmolLM2-135M). */
MATTN_API mattn_status mattn_distill_new(mattn_llama *m, const mattn_distill_config *cfg, int max_tokens,
                                         mattn_distill **out);
MATTN_API void mattn_distill_free(mattn_distill *d);
MATTN_API const char *mattn_distill_errmsg(const mattn_distill *d);
/* Change the config between steps (a stage to the next); checked as by new. */
MATTN_API mattn_status mattn_distill_set_config(mattn_distill *d, const mattn_distill_config *cfg);
/* One step on tokens[0..n): forward, backward, update.  weights (n floats
 * in [0, 1e6], not all 0; NULL: all 1) weigh each position's KL: the KL
 * is sum_t weights[t] KL_t / sum_t weights[t] (a retrieval prompt's answer
 * can count as much as the text around it). */
MATTN_API mattn_status mattn_distill_step(mattn_distill *d, const int32_t *tokens, const float *weights, int n,
                                          mattn_distill_stats *st);
/* The loss of tokens[0..n) without an update (held-out evaluation). */
MATTN_API mattn_status mattn_distill_eval(mattn_distill *d, const int32_t *tokens, const float *weights, int n,
                                          mattn_distill_stats *st);
/* The optimiser's state (Adam's moments, step, the multiplier) to and from
 * a safetensors file, for exact resume beside the routing file. */
MATTN_API mattn_status mattn_distill_save_state(mattn_distill *d, const char *path);
MATTN_API mattn_status mattn_distill_load_state(mattn_distill *d, const char *path);
MATTN_API int64_t mattn_distill_steps(const mattn_distill *d);

/* The model's tokenizer: byte-level BPE from the GGUF metadata (built on
 * the first call; a file without one fails then, MATTN_ERR_FORMAT or
 * MATTN_ERR_UNSUPPORTED naming what is missing).  tokenize encodes
 * text[0..len) (any bytes) without adding BOS/EOS; special != 0 is chat
 * mode, where the text of special tokens ("<|im_start|>") becomes their id.
 * ids == NULL only counts; when cap is too small the first cap ids are
 * written, *n_out is the number needed and MATTN_ERR_INVALID_ARG says so.
 * token_piece gives the bytes of one id (not NUL-terminated, valid until
 * mattn_llama_free; control tokens are empty unless special != 0). */
MATTN_API mattn_status mattn_llama_tokenize(mattn_llama *m, const char *text, size_t len, int special,
                                            int32_t *ids, size_t cap, size_t *n_out);
MATTN_API mattn_status mattn_llama_token_piece(mattn_llama *m, int32_t id, int special, const char **bytes,
                                               size_t *len);
/* The tokenizer's BOS and EOS ids (-1 when the file names none; either
 * pointer may be NULL); the id of the special token whose text is text
 * ("<|im_end|>"), -1 when there is none.  Errors: the tokenizer's. */
MATTN_API mattn_status mattn_llama_special_tokens(mattn_llama *m, int32_t *bos, int32_t *eos);
MATTN_API mattn_status mattn_llama_find_token(mattn_llama *m, const char *text, int32_t *id);
/* tokenizer.chat_template, as the file has it (a Jinja template; not
 * NUL-terminated, valid until mattn_llama_free); MATTN_ERR_NOT_FOUND when
 * the file has none.  metaattn chat understands ChatML templates. */
MATTN_API mattn_status mattn_llama_chat_template(mattn_llama *m, const char **text, size_t *len);

/* ------------------------------------------------------------------------ */
/* Training: AdamW, clipping, schedules                                      */
/* ------------------------------------------------------------------------ */

typedef struct mattn_adamw_config {
    double lr, beta1, beta2, eps;
    double weight_decay;   /* decoupled; applied to 2-D weights except embeddings */
    double grad_clip;      /* max global gradient norm; 0 = off */
    int decay_all;         /* 1: decay every parameter */
} mattn_adamw_config;

typedef struct mattn_adamw mattn_adamw;

/* lr 3e-4, betas 0.9/0.95, eps 1e-8, weight_decay 0.1, grad_clip 1. */
MATTN_API mattn_adamw_config mattn_adamw_config_default(void);
MATTN_API mattn_status mattn_adamw_init(mattn_model *model, const mattn_adamw_config *cfg, mattn_adamw **out);
MATTN_API void mattn_adamw_free(mattn_adamw *o);
/* One update with learning rate lr from the model's gradients (PyTorch
 * AdamW arithmetic after clip_grad_norm_).  *grad_norm (may be NULL) gets
 * the pre-clip global norm.  A non-finite norm: MATTN_ERR_NUMERIC and the
 * weights are left unchanged.  Saves (model, layer, optimizer) refuse
 * non-finite values with MATTN_ERR_NUMERIC, the file left as it was. */
MATTN_API mattn_status mattn_adamw_step(mattn_adamw *o, mattn_model *model, double lr, double *grad_norm);
MATTN_API int64_t mattn_adamw_steps(const mattn_adamw *o);   /* updates made */
/* After mattn_adamw_load: the model's step (mattn_model_step) when the state
 * was saved, which exceeds the update count when steps were skipped; a
 * checkpoint pair with different steps was interrupted between its saves. */
MATTN_API int64_t mattn_adamw_model_step(const mattn_adamw *o);
MATTN_API mattn_status mattn_adamw_save(const mattn_adamw *o, mattn_model *model, const char *path);
MATTN_API mattn_status mattn_adamw_load(mattn_adamw *o, mattn_model *model, const char *path);

/* Learning rate: linear warmup to lr over `warmup` steps, then cosine decay
 * to min_lr at `total`. */
MATTN_API double mattn_schedule_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);
/* The Python library's ramps: start before warmup, end after max_steps. */
MATTN_API double mattn_schedule_cosine_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end);
MATTN_API double mattn_schedule_linear_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end);

/* ------------------------------------------------------------------------ */
/* Byte-level text data                                                      */
/* ------------------------------------------------------------------------ */

typedef struct mattn_data mattn_data;

/* The two parts of a corpus: the first bytes train, the last val_fraction validate. */
typedef enum mattn_split { MATTN_SPLIT_TRAIN = 0, MATTN_SPLIT_VAL = 1 } mattn_split;

/* Read a whole file; the last val_fraction of its bytes is the validation
 * split.  Missing, unreadable or empty file: a clear error. */
MATTN_API mattn_status mattn_data_load(const char *path, double val_fraction, mattn_data **out);
MATTN_API void mattn_data_free(mattn_data *d);
MATTN_API size_t mattn_data_size(const mattn_data *d, mattn_split split);
MATTN_API const uint8_t *mattn_data_bytes(const mattn_data *d);
/* Record mode: the file is back-to-back records of `length` bytes (e.g. the
 * recall task of bench/experiments/recall.py); the split falls on a record
 * boundary (the last ceil(val_fraction x records) records validate) and
 * every window starts at a record start (T + 1 <= length).  length 0
 * returns to windows anywhere.  A file size that is not a multiple of
 * length: MATTN_ERR_INVALID_ARG. */
MATTN_API mattn_status mattn_data_set_records(mattn_data *d, int length);
/* B random windows of T+1 bytes from the split, a pure function of
 * (seed, step): idx (B,T) = the first T bytes, targets (B,T) = the next. */
MATTN_API mattn_status mattn_data_batch(const mattn_data *d, mattn_split split, uint64_t seed, uint64_t step, int B, int T,
                                        int32_t *idx, int32_t *targets);
/* Window i of n evenly spaced windows over the split (T+1 bytes; in record
 * mode record round(i (R-1)/(n-1)) of the split's R records). */
MATTN_API mattn_status mattn_data_window(const mattn_data *d, mattn_split split, int64_t i, int64_t n, int T, int32_t *idx,
                                         int32_t *targets);

/* ======================================================================== */
/* Tools for applications: sampling, LM presets, tensor files, build info.   */
/* What the metaattn CLI uses beyond the API above; it includes nothing else. */
/* ======================================================================== */

/* ------------------------------------------------------------------------ */
/* Sampling the next token                                                  */
/* ------------------------------------------------------------------------ */

/* How to pick a token from next-token logits.  temperature 0 is greedy (the
 * first largest logit, no randomness drawn).  Otherwise a draw from
 * softmax(logits / temperature) restricted to the top_k largest logits
 * (0 = all; logits tied with the k-th stay in) and, of those, to the nucleus:
 * the smallest run of largest logits whose probability reaches top_p (logits
 * tied with its last stay in; 1 = off). */
typedef struct mattn_sampler_config {
    double temperature;  /* finite, >= 0; default 0.8 */
    int top_k;           /* >= 0; default 40 */
    double top_p;        /* in (0, 1]; default 1 */
    uint64_t seed;       /* the random stream; default 1 */
} mattn_sampler_config;

/* temperature 0.8, top_k 40, top_p 1, seed 1 (metaattn generate's defaults). */
MATTN_API mattn_sampler_config mattn_sampler_config_default(void);

/* A sampler: the config and its random stream.  Two samplers made from the
 * same config and given the same logits, call after call, pick the same
 * tokens.  Bad config (NaN or
 * negative temperature, top_k < 0, top_p outside (0, 1]):
 * MATTN_ERR_INVALID_ARG naming the field and the value (mattn_last_error). */
typedef struct mattn_sampler mattn_sampler;
MATTN_API mattn_status mattn_sampler_init(const mattn_sampler_config *cfg, mattn_sampler **out);
MATTN_API void mattn_sampler_free(mattn_sampler *s);
/* Pick *token in [0, V) from logits (V).  -INFINITY masks a token; NaN,
 * +INFINITY or every logit -INFINITY: MATTN_ERR_NUMERIC.  Advances the
 * stream unless greedy.  Errors leave their message in mattn_last_error. */
MATTN_API mattn_status mattn_sampler_sample(mattn_sampler *s, const float *logits, int V, int32_t *token);

/* ------------------------------------------------------------------------ */
/* Language-model presets and config files                                  */
/* ------------------------------------------------------------------------ */

/* The byte-level (vocab 256) presets `metaattn train` trains, with causal
 * positions (decode cache) and the given shape:
 *   tiny:  D 128, 4 heads, window 32, controller 64, 4 layers, 256 positions,
 *          dropout 0;
 *   small, base: the mattn_config_preset of that name, 6 / 8 layers, 1024
 *          positions, dropout 0.1.
 * Unknown name: MATTN_ERR_NOT_FOUND naming it and the presets; *out is left
 * as it was. */
MATTN_API mattn_status mattn_lm_config_preset(const char *name, mattn_lm_config *out);

/* Read a MetaLMConfig JSON file (mattn_lm_config_from_json; the result is
 * validated).  Errors name the path: MATTN_ERR_IO (cannot open or read, not
 * a regular file), MATTN_ERR_FORMAT (over 64 MiB, a NUL byte, bad JSON) or
 * from_json's status; *out is left as it was. */
MATTN_API mattn_status mattn_lm_config_load(const char *path, mattn_lm_config *out);

/* ------------------------------------------------------------------------ */
/* Tensor files (safetensors)                                               */
/* ------------------------------------------------------------------------ */

/* Element types of a safetensors file. */
typedef enum mattn_dtype {
    MATTN_DTYPE_F32 = 0, MATTN_DTYPE_F64, MATTN_DTYPE_F16, MATTN_DTYPE_BF16,
    MATTN_DTYPE_I64, MATTN_DTYPE_I32, MATTN_DTYPE_I16, MATTN_DTYPE_I8,
    MATTN_DTYPE_U8, MATTN_DTYPE_BOOL
} mattn_dtype;
/* mattn_dtype_name: the format's name ("F32", "BF16", ...; "?" if unknown).
 * mattn_dtype_is_float: 1 for F32, F64, F16 and BF16, else 0. */
MATTN_API const char *mattn_dtype_name(mattn_dtype d);
MATTN_API int mattn_dtype_is_float(mattn_dtype d);

#define MATTN_TENSORS_MAX_DIMS 8

typedef struct mattn_tensor_info {
    const char *name;   /* owned by the file handle */
    mattn_dtype dtype;
    int ndim;
    int64_t shape[MATTN_TENSORS_MAX_DIMS];
    int64_t numel;      /* product of the shape */
} mattn_tensor_info;

/* A safetensors file open for reading (memory-mapped).  Open checks the
 * whole header before anything is read: offsets within the file, known
 * dtypes, sizes that match the shapes, no overlaps or holes, unique names;
 * errors name the path and the problem (MATTN_ERR_IO cannot open or map,
 * MATTN_ERR_FORMAT malformed), in mattn_last_error. */
typedef struct mattn_tensors mattn_tensors;
MATTN_API mattn_status mattn_tensors_open(const char *path, mattn_tensors **out);
MATTN_API void mattn_tensors_free(mattn_tensors *f);
MATTN_API int mattn_tensors_count(const mattn_tensors *f);
/* Tensor i in [0, count), in file order. */
MATTN_API mattn_status mattn_tensors_info(const mattn_tensors *f, int i, mattn_tensor_info *info);
/* By name; absent: MATTN_ERR_NOT_FOUND (info may be NULL: a presence test). */
MATTN_API mattn_status mattn_tensors_find(const mattn_tensors *f, const char *name, mattn_tensor_info *info);
/* __metadata__[key], or NULL; owned by the handle. */
MATTN_API const char *mattn_tensors_meta(const mattn_tensors *f, const char *key);
/* Copy tensor `name` into dst as float32, converting from any dtype (floats,
 * integers, bool as 0/1): a caller that wants a float tensor checks
 * mattn_dtype_is_float(info.dtype) first.  n must be its numel
 * (MATTN_ERR_SHAPE); values are not checked for NaN/Inf. */
MATTN_API mattn_status mattn_tensors_read_f32(const mattn_tensors *f, const char *name, float *dst, int64_t n);

/* One float32 tensor to write: shape has ndim (0..8) entries, data
 * prod(shape) floats. */
typedef struct mattn_tensors_entry {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} mattn_tensors_entry;

/* Write n tensors (in that order) and n_meta metadata pairs meta[2i] = key,
 * meta[2i+1] = value (n_meta may be 0) as one safetensors file, atomically:
 * a temporary file, fsynced, renamed over path; on failure path is left as
 * it was.  Empty or duplicate names, negative dimensions: MATTN_ERR_INVALID_ARG;
 * MATTN_ERR_IO names the path and the reason. */
MATTN_API mattn_status mattn_tensors_write(const char *path, const mattn_tensors_entry *t, int n,
                                           const char *const *meta, int n_meta);

/* ------------------------------------------------------------------------ */
/* Build information                                                        */
/* ------------------------------------------------------------------------ */

/* How this build of the library was compiled, for reports and bug reports. */
typedef struct mattn_build_info {
    int vector_bytes;   /* SIMD vector width of the kernels: 64 (AVX-512), 32 (AVX2), 16 (SSE, NEON) */
    const char *gemm;   /* the matrix products: CBLAS (OpenBLAS) or the built-in GEMM; static */
    int openmp;         /* 1 if built with OpenMP */
} mattn_build_info;
MATTN_API mattn_status mattn_build_info_get(mattn_build_info *out);

/* ------------------------------------------------------------------------ */
/* Deprecated names (0.1.0), kept for one release; see CHANGELOG.md         */
/* ------------------------------------------------------------------------ */

MATTN_DEPRECATED("use mattn_layer_merge_weights")
static inline const float *mattn_layer_weights(const mattn_layer *l) { return mattn_layer_merge_weights(l); }
MATTN_DEPRECATED("use mattn_layer_set_position_norm")
static inline mattn_status mattn_layer_set_position_length(mattn_layer *l, int length) {
    return mattn_layer_set_position_norm(l, length);
}
MATTN_DEPRECATED("use mattn_model_numel")
static inline int64_t mattn_model_n_weights(const mattn_model *m) { return mattn_model_numel(m); }
MATTN_DEPRECATED("use mattn_model_file_config")
static inline mattn_status mattn_model_config_load(const char *path, mattn_lm_config *out) {
    return mattn_model_file_config(path, out);
}
MATTN_DEPRECATED("use mattn_schedule_lr")
static inline double mattn_lr_schedule(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr) {
    return mattn_schedule_lr(step, warmup, total, lr, min_lr);
}
MATTN_DEPRECATED("use mattn_schedule_cosine_ramp")
static inline double mattn_cosine_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end) {
    return mattn_schedule_cosine_ramp(step, warmup, max_steps, start, end);
}
MATTN_DEPRECATED("use mattn_schedule_linear_ramp")
static inline double mattn_linear_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end) {
    return mattn_schedule_linear_ramp(step, warmup, max_steps, start, end);
}

#ifdef __cplusplus
}
#endif
#endif /* METAATTN_H */
