/*
 * llama_forward.c — the LLaMA decoder's forward over a cache: a call runs
 * its tokens' embedding rows, then block by block each of its chunks of up
 * to MATTN_LLAMA_CHUNK positions in order (run_tokens), per block
 *
 *   h = RMSNorm(x) * attn_norm
 *   q = h Wq^T, k = h Wk^T, v = h Wv^T
 *   RoPE on q and k at their positions        (k, v then into the cache: RoPE'd keys)
 *   a = causal GQA softmax attention of q over the cache's positions [0, p+M)
 *   x += a Wo^T
 *   h = RMSNorm(x) * ffn_norm
 *   x += (silu(h Wgate^T) * (h Wup^T)) Wdown^T
 *
 * and, when logits are wanted, RMSNorm(x) * output_norm times the head.
 * The attention is the project's softmax core with grouped-query heads and
 * a query chunk at the end of the keys (mattn_attn_softmax_forward, Tk =
 * p + M); one token through mattn_llama_decode takes the decode step
 * (mattn_attn_softmax_decode_kv) instead; both read the cache through its
 * mattn_kv view (head by head, halves or floats).  Every matrix goes through
 * mattn_llama_matmul.  The cache's length moves only when a call succeeds.
 */
#include <string.h>

#include "llama/llama.h"

// ----------------------------------------------------------------------------
// the cache

void mattn_llama_cache_free(mattn_llama_cache *c) {
    if (!c) return;
    mattn_afree(c->kv);
    mattn_afree(c->x);
    mattn_free(c->counts);
    mattn_afree(c->routes);
    mattn_afree(c->lin);
    mattn_afree(c->attn_ws);
    mattn_afree(c->mm_ws);
    mattn_afree(c->pack.buf);
    mattn_free(c);
}

/* A call's residual stream and RoPE table (cap rows), one chunk's other
 * activations, carved from one allocation (c->x is its base). */
static void chunk_layout(mattn_llama_cache *c, mattn_carver *cv, const mattn_llama_info *hp) {
    const size_t C = MATTN_LLAMA_CHUNK, D = (size_t)hp->d_model, Dq = (size_t)hp->n_heads * hp->head_dim;
    const size_t cap = (size_t)c->cap;
    const size_t Dkv = (size_t)hp->n_kv_heads * hp->head_dim;
    const size_t F = (size_t)hp->ffn_dim, f = sizeof(float);
    MATTN_CARVE(cv, c->x, cap * D * f);
    MATTN_CARVE(cv, c->h, C * D * f);
    MATTN_CARVE(cv, c->q, C * Dq * f);
    MATTN_CARVE(cv, c->k, C * Dkv * f);
    MATTN_CARVE(cv, c->v, C * Dkv * f);
    MATTN_CARVE(cv, c->att, C * Dq * f);
    MATTN_CARVE(cv, c->gate, C * F * f);
    MATTN_CARVE(cv, c->up, C * F * f);
    MATTN_CARVE(cv, c->rope, cap * (size_t)hp->head_dim * f);
    if (!c->routing_serial) return;
    const mattn_llama_routing *r = c->m->routing;
    const size_t nf = 2 * (size_t)r->cfg.feature_dim, Hc = (size_t)r->cfg.controller_hidden, K = MATTN_ROUTE_EXPERTS;
    MATTN_CARVE(cv, c->phq, (size_t)hp->n_heads * nf * f);
    MATTN_CARVE(cv, c->phk, (size_t)hp->n_kv_heads * nf * f);
    MATTN_CARVE(cv, c->rows, 2 * C * sizeof(int32_t));
    MATTN_CARVE(cv, c->route, C);
    MATTN_CARVE(cv, c->act.f, C * (D + 2) * f);
    MATTN_CARVE(cv, c->act.z1, C * Hc * f);
    MATTN_CARVE(cv, c->act.h, C * Hc * f);
    MATTN_CARVE(cv, c->act.logits, C * K * f);
    MATTN_CARVE(cv, c->act.alpha, C * K * f);
}

/* Bytes of a cache's linear state: per block S (Hkv, 2fd, dh) and z (Hkv, 2fd). */
static size_t lin_bytes(const mattn_llama *m) {
    const mattn_llama_info *hp = &m->hp;
    return (size_t)hp->n_layers * hp->n_kv_heads * 2 * (size_t)m->routing->cfg.feature_dim *
           ((size_t)hp->head_dim + 1) * sizeof(float);
}

mattn_status mattn_llama_cache_init_kv(mattn_llama *m, int context, mattn_llama_kv kv, mattn_llama_cache **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_cache_init: out is NULL");
    *out = NULL;
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_cache_init: model is NULL");
    const mattn_llama_info *hp = &m->hp;
    if (context == 0) context = hp->context_length;
    if (context < 1 || context > hp->context_length)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "context = %d is outside [1, %d] (the model's "
                         "llama.context_length; 0 takes it)", context, hp->context_length);
    if (kv != MATTN_LLAMA_KV_F16 && kv != MATTN_LLAMA_KV_F32)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_cache_init_kv: kv = %d is neither "
                         "MATTN_LLAMA_KV_F16 (0) nor MATTN_LLAMA_KV_F32 (1)", (int)kv);
    mattn_llama_cache *c = mattn_calloc(1, sizeof *c);
    if (!c) return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for a cache");
    c->m = m;
    c->cap = context;
    c->f16 = kv == MATTN_LLAMA_KV_F16;
    c->routing_serial = m->routing ? m->routing->serial : 0;
    c->counts = mattn_calloc((size_t)hp->n_layers * MATTN_ROUTE_EXPERTS, sizeof *c->counts);
    int routed_ok = 1;
    if (m->routing) {
        c->routes = mattn_amalloc((size_t)context * hp->n_layers);
        c->lin_bytes = lin_bytes(m);
        c->lin = mattn_amalloc(c->lin_bytes);
        routed_ok = c->routes && c->lin;
        if (c->lin) memset(c->lin, 0, c->lin_bytes);
    }
    const int threads = mattn_max_threads();
    const size_t dkv = (size_t)hp->n_kv_heads * hp->head_dim;
    const size_t kv_bytes = (size_t)hp->n_layers * 2 * (size_t)context * dkv * (c->f16 ? 2 : sizeof(float)); /* sizeof: 8 in the double build */
    c->kv = mattn_amalloc(kv_bytes); /* untouched until positions fill it */
    mattn_carver cv = {NULL, 0};
    chunk_layout(c, &cv, hp);
    cv.base = mattn_amalloc(cv.off);
    if (cv.base) {
        cv.off = 0;
        chunk_layout(c, &cv, hp);
    }
    c->attn_ws_bytes = mattn_attn_softmax_scratch(context, hp->head_dim, 0, threads);
    c->attn_ws = mattn_amalloc(c->attn_ws_bytes);
    c->mm_ws_bytes = mattn_llama_matmul_scratch(m->kmax, MATTN_LLAMA_CHUNK, threads);
    c->mm_ws = mattn_amalloc(c->mm_ws_bytes);
    const size_t pack_bytes = mattn_attn_pack_bytes(context, hp->head_dim, hp->n_kv_heads);
    c->pack = (mattn_attn_pack){mattn_amalloc(pack_bytes), context, 0};
    if (c->pack.buf) memset(c->pack.buf, 0, pack_bytes); /* read past a tile's keys, masked: never garbage */
    if (!c->kv || !c->x || !c->attn_ws || !c->mm_ws || !c->pack.buf || !c->counts || !routed_ok) {
        mattn_llama_cache_free(c);
        return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for a cache of %d positions (%.1f MB of keys and "
                         "values)", context, (double)kv_bytes / 1e6);
    }
    *out = c;
    return MATTN_OK;
}

mattn_status mattn_llama_cache_init(mattn_llama *m, int context, mattn_llama_cache **out) {
    return mattn_llama_cache_init_kv(m, context, MATTN_LLAMA_KV_F16, out);
}

void mattn_llama_cache_reset(mattn_llama_cache *c) {
    if (!c) return;
    c->n = 0;
    c->poisoned = 0;
    c->attn_flops = c->attn_secs = 0.0;
    memset(c->counts, 0, (size_t)c->m->hp.n_layers * MATTN_ROUTE_EXPERTS * sizeof *c->counts);
    if (c->lin) memset(c->lin, 0, c->lin_bytes); /* the routing it was made for may be gone */
}

mattn_status mattn_llama_cache_routing(const mattn_llama_cache *c, int64_t *counts, double *attn_flops,
                                       double *attn_secs, const uint8_t **routes) {
    if (!c) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_cache_routing: cache is NULL");
    if (counts) memcpy(counts, c->counts, (size_t)c->m->hp.n_layers * MATTN_ROUTE_EXPERTS * sizeof *counts);
    if (attn_flops) *attn_flops = c->attn_flops;
    if (attn_secs) *attn_secs = c->attn_secs;
    if (routes) *routes = c->routes;
    return MATTN_OK;
}
int mattn_llama_cache_length(const mattn_llama_cache *c) { return c ? c->n : 0; }
int mattn_llama_cache_context(const mattn_llama_cache *c) { return c ? c->cap : 0; }

// ----------------------------------------------------------------------------
// the forward

static void add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* The chunk's keys and values (c->k, c->v: M rows of Hkv*dh) into layer l's
 * cache at positions p.. (head by head; halves rounded to nearest even). */
static void store_kv(mattn_llama_cache *c, int l, int p, int M) {
    const mattn_llama_info *hp = &c->m->hp;
    const int dh = hp->head_dim, Dkv = hp->n_kv_heads * dh;
    const mattn_kv kv = mattn_llama_cache_view(c, l);
    for (int j = 0; j < hp->n_kv_heads; j++)
        for (int t = 0; t < M; t++) {
            const size_t at = (size_t)(j * kv.hstride + (int64_t)(p + t) * kv.ld);
            const float *k = c->k + (size_t)t * Dkv + (size_t)j * dh, *v = c->v + (size_t)t * Dkv + (size_t)j * dh;
            if (c->f16) {
                uint16_t *K = (uint16_t *)kv.k + at, *V = (uint16_t *)kv.v + at;
                for (int i = 0; i < dh; i++) K[i] = mattn_f32_to_f16(k[i]), V[i] = mattn_f32_to_f16(v[i]);
            } else {
                memcpy((float *)kv.k + at, k, sizeof(float) * dh);
                memcpy((float *)kv.v + at, v, sizeof(float) * dh);
            }
        }
}

/* Attention of the chunk's M queries (positions p .. p+M-1) over the cache's
 * positions [0, p+M) of layer l -> c->att: the original attention, or the
 * routed experts (llama_routed.c); its FLOPs and time into the cache's
 * counters. */
static mattn_status attention(const mattn_llama *m, mattn_llama_cache *c, int l, int p, int M, int decode) {
    const mattn_llama_info *hp = &m->hp;
    const int H = hp->n_heads, dh = hp->head_dim, g = H / hp->n_kv_heads, Dq = H * dh;
    const mattn_kv kv = mattn_llama_cache_view(c, l);
    const double t0 = mattn_now();
    double fl = 0.0;
    mattn_status st = MATTN_OK;
    if (m->routing) {
        st = mattn_llama_attention_routed(m, c, l, p, M, decode, &fl);
    } else if (decode) {
        fl = mattn_attn_softmax_decode_kv(c->q, &kv, H, g, dh, 0, 0, p, 0, c->att);
    } else {
        mattn_attn_args a = {.B = 1, .T = M, .Tk = p + M, .H = H, .dh = dh, .q = c->q, .ld = Dq, .kv = &kv,
                             .kv_group = g, .out = c->att, .ldo = Dq, .causal = 1, .window = -1,
                             .scratch = c->attn_ws, .scratch_bytes = c->attn_ws_bytes,
                             .pack = g > 1 ? &c->pack : NULL};
        fl = mattn_attn_softmax_forward(&a);
        MATTN_ASSERT(fl >= 0.0); /* the scratch was sized for the cache's context */
    }
    if (!m->routing) c->counts[l * MATTN_ROUTE_EXPERTS + MATTN_ROUTE_FULL] += M;
    c->attn_flops += fl;
    c->attn_secs += mattn_now() - t0;
    return st;
}

/* Block l over M rows x (M <= MATTN_LLAMA_CHUNK) at positions p.., RoPE
 * table rope (M, dh). */
static mattn_status run_block(mattn_llama *m, mattn_llama_cache *c, int l, float *x, int M, int p, const float *rope,
                              int decode) {
    const mattn_llama_info *hp = &m->hp;
    const mattn_llama_layer *ly = &m->layers[l];
    const int D = hp->d_model, H = hp->n_heads, Hkv = hp->n_kv_heads, dh = hp->head_dim, F = hp->ffn_dim;
    void *ws = c->mm_ws;
    const size_t wsb = c->mm_ws_bytes;
    const int f32x = m->f32x;
    if (decode && m->routing && !m->routing->layers[l].fixed) mattn_controller_prefetch(&m->routing->layers[l].ctrl);
    mattn_llama_rmsnorm(c->h, x, ly->attn_norm, M, D, hp->rms_eps);
    const mattn_gguf_tensor *qkv[3] = {ly->wq, ly->wk, ly->wv}, *gu[2] = {ly->w_gate, ly->w_up};
    float *qkv_out[3] = {c->q, c->k, c->v}, *gu_out[2] = {c->gate, c->up};
    mattn_llama_matmul_n(3, qkv, c->h, M, qkv_out, ws, wsb, f32x);
    mattn_llama_rope(c->q, M, H * dh, H, dh, rope);
    mattn_llama_rope(c->k, M, Hkv * dh, Hkv, dh, rope);
    store_kv(c, l, p, M);
    mattn_status st = attention(m, c, l, p, M, decode);
    if (st != MATTN_OK) return LLAMA_ERR(m, st, "block %d at position %d: %s", l, p, mattn_last_error());
    mattn_llama_matmul(ly->wo, c->att, M, c->h, ws, wsb, f32x);
    add(x, c->h, (size_t)M * D);
    mattn_llama_rmsnorm(c->h, x, ly->ffn_norm, M, D, hp->rms_eps);
    mattn_llama_matmul_n(2, gu, c->h, M, gu_out, ws, wsb, f32x);
    mattn_llama_swiglu(c->gate, c->up, (int64_t)M * F);
    mattn_llama_matmul(ly->w_down, c->gate, M, c->h, ws, wsb, f32x);
    add(x, c->h, (size_t)M * D);
    return MATTN_OK;
}

/* After the last block: M rows x at positions p.. checked, their logits
 * (M, V) when wanted.  MATTN_ERR_NUMERIC (message set) when not finite. */
static mattn_status run_head(mattn_llama *m, mattn_llama_cache *c, const float *x, int M, int p, float *logits) {
    const mattn_llama_info *hp = &m->hp;
    const int D = hp->d_model;
    const size_t nx = (size_t)M * D, bad = mattn_find_nonfinite(x, nx);
    if (bad < nx)
        return LLAMA_ERR(m, MATTN_ERR_NUMERIC, "the hidden state is not finite (%g) at position %d after the last "
                         "block: a weight is NaN/Inf or the activations overflowed", (double)x[bad],
                         p + (int)(bad / D));
    if (!logits) return MATTN_OK;
    const size_t V = (size_t)hp->vocab_size, nl = (size_t)M * V;
    mattn_llama_rmsnorm(c->h, x, m->out_norm, M, D, hp->rms_eps);
    mattn_llama_matmul(m->output, c->h, M, logits, c->mm_ws, c->mm_ws_bytes, m->f32x);
    const size_t bl = mattn_find_nonfinite(logits, nl);
    if (bl < nl)
        return LLAMA_ERR(m, MATTN_ERR_NUMERIC, "logit %zu is not finite (%g) at position %d: a weight of the "
                         "output head is NaN/Inf", bl % V, (double)logits[bl], p + (int)(bl / V));
    return MATTN_OK;
}

/* Tokens tok[0..n) at positions p..; logits (n, V) or NULL.  Block by
 * block, each over the call's chunks of MATTN_LLAMA_CHUNK rows in order:
 * a chunk sees the keys of the chunks before it, as token by token, and the
 * block's keys are packed once for the call (c->pack), not once per chunk;
 * the same bits as chunk by chunk through every block. */
static mattn_status run_tokens(mattn_llama *m, mattn_llama_cache *c, const int32_t *tok, int n, int p,
                               float *logits, int decode) {
    const mattn_llama_info *hp = &m->hp;
    const int D = hp->d_model, dh = hp->head_dim, C = MATTN_LLAMA_CHUNK;
    for (int i = 0; i < n; i++) mattn_llama_row(m->tok_embd, tok[i], c->x + (size_t)i * D);
    mattn_llama_rope_table(c->rope, p, n, dh, (double)hp->rope_base);
    for (int l = 0; l < hp->n_layers; l++) {
        c->pack.n = 0; /* another block's keys */
        for (int i = 0; i < n; i += C) {
            const int M = n - i < C ? n - i : C;
            mattn_status st = run_block(m, c, l, c->x + (size_t)i * D, M, p + i, c->rope + (size_t)i * dh, decode);
            if (st != MATTN_OK) return st;
        }
    }
    for (int i = 0; i < n; i += C) {
        const int M = n - i < C ? n - i : C;
        mattn_status st = run_head(m, c, c->x + (size_t)i * D, M, p + i,
                                   logits ? logits + (size_t)i * hp->vocab_size : NULL);
        if (st != MATTN_OK) return st;
    }
    return MATTN_OK;
}

static mattn_status check_call(mattn_llama *m, mattn_llama_cache *c, const int32_t *tokens, int n, const char *fn) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "%s: model is NULL", fn);
    if (!c || !tokens) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: %s is NULL", fn, c ? "tokens" : "cache");
    if (c->m != m) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: the cache belongs to another model", fn);
    const uint64_t serial = m->routing ? m->routing->serial : 0;
    if (c->routing_serial != serial)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: the cache was made %s; routing was attached or dropped since: "
                         "make a new cache", fn, c->routing_serial ? "for other routing" : "without routing");
    if (c->poisoned)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: a failed call left the cache's linear state ahead of its "
                         "length: reset the cache", fn);
    if (n < 1) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: n = %d tokens, must be >= 1", fn, n);
    if (n > c->cap - c->n)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: %d tokens at position %d overflow the cache's context %d",
                         fn, n, c->n, c->cap);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.vocab_size)
            return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: tokens[%d] = %d is outside [0, %d)", fn, i, tokens[i],
                             m->hp.vocab_size);
    return MATTN_OK;
}

mattn_status mattn_llama_forward(mattn_llama *m, mattn_llama_cache *c, const int32_t *tokens, int n,
                                 float *logits) {
    mattn_status st = check_call(m, c, tokens, n, "mattn_llama_forward");
    if (st != MATTN_OK) return st;
    st = run_tokens(m, c, tokens, n, c->n, logits, 0);
    if (st != MATTN_OK) { /* positions past c->n are rewritten by the next call; a linear state is not */
        c->poisoned = c->lin != NULL;
        return st;
    }
    c->n += n;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// the decode step's team
//
// A decode step is ~150 short parallel regions (a few per block), each
// ending at a barrier.  When another process takes a core now and then,
// every barrier waits for the thread it descheduled, and the step runs at
// the pace of the two threads' shared time on CPU — slower than one thread
// alone (decode is bound by memory bandwidth, which one thread gets 0.5 of).
// So each sequence measures its steps' wall time with the full team and
// with half of it and keeps the faster: every TEAM_PROBE steps (and once
// early, at step TEAM_FIRST) one step tries the other, whose measurement
// replaces that team's estimate; the team's own steps update its estimate
// smoothly, but before that first probe it is their fastest (the first
// steps after a prefill took up to 2.6x a step's time here).  The kernels
// give the same bits for any team size, so this changes the speed only.  On an idle machine a probe costs one step at
// half speed in TEAM_PROBE (~1 %).

#define TEAM_FIRST 4
#define TEAM_PROBE 64

static int team_pick(mattn_llama_team *t) {
    const int s = t->steps;
    const int probe = s == TEAM_FIRST || (s > TEAM_FIRST && (s - TEAM_FIRST) % TEAM_PROBE == 0);
    if (!t->seen[0] || !t->seen[1]) return probe ? !t->seen[1] : 0;
    const int best = t->ema[1] < t->ema[0];
    return probe ? !best : best;
}

static void team_update(mattn_llama_team *t, int arm, double secs) {
    const int own = arm == t->arm;
    /* before the first probe the fastest step so far: the first two steps after a prefill took 1.2-2.6x a
     * step's time on 2 threads, and blended into the estimate (probe at step 2) they made the half team look
     * faster in 3 of 8 runs of bench --decode 32 (the routed SmolLM2 at 2048: 80 tokens/s, not 130) */
    if (t->steps < TEAM_FIRST) t->ema[arm] = t->seen[arm] && secs > t->ema[arm] ? t->ema[arm] : secs;
    else t->ema[arm] = t->seen[arm] && own ? 0.75 * t->ema[arm] + 0.25 * secs : secs;
    t->seen[arm] = 1;
    if (t->seen[0] && t->seen[1]) t->arm = t->ema[1] < t->ema[0];
    t->steps++;
}

mattn_status mattn_llama_decode(mattn_llama *m, mattn_llama_cache *c, int32_t token, float *logits) {
    mattn_status st = check_call(m, c, &token, 1, "mattn_llama_decode");
    if (st != MATTN_OK) return st;
    if (!logits) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_decode: logits is NULL");
    const int full = mattn_max_threads(), arm = full > 1 ? team_pick(&c->team) : 0;
    if (arm) mattn_set_max_threads(full / 2);
    const double t0 = mattn_now();
    st = run_tokens(m, c, &token, 1, c->n, logits, 1);
    if (arm) mattn_set_max_threads(full);
    if (full > 1) team_update(&c->team, arm, mattn_now() - t0);
    if (st == MATTN_OK) c->n++;
    else c->poisoned = c->lin != NULL;
    return st;
}
