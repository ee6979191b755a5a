/*
 * llama_routed.c — the experts of a routed block (docs/design.md §5), over
 * the block's pretrained projections: the chunk's queries (RoPE'd) and the
 * cache's keys and values, shared by all three:
 *
 *   full    the softmax core over every key [0, t]: the original attention;
 *   local   the softmax core over [t - window, t] and the sinks [0, sinks);
 *   linear  phi(q)^T S_t / phi(q)^T z_t with S_t = sum_{s<=t} phi(k_s) v_s^T,
 *           z_t = sum_{s<=t} phi(k_s), phi(x) = [softmax(x W), softmax(-x W)]
 *           per head (W of the query head or of the K/V head: dh x fd).
 *
 * Every token's key enters the linear state (S, z per K/V head, in the
 * cache), whatever its own route, so a linear query sees the whole prefix;
 * the state is carried token by token, so a chunk and its tokens one by one
 * give the same bits.  Each expert runs only on its tokens: the softmax
 * core's forward over the rows routed to it (a chunk) or its decode step (one
 * token, reading only [lo, t] and the sinks: a local step reads window +
 * sinks keys, not the cache).
 */
#include <string.h>

#include "llama/llama.h"

void mattn_llama_feature_map(const float *x, const float *W, int dh, int fd, float *phi) {
    float *u = phi; /* u in the first half, then overwritten in place */
    for (int j = 0; j < fd; j++) u[j] = 0.0f;
    for (int i = 0; i < dh; i++) mattn_axpy(u, x[i], W + (size_t)i * fd, fd);
    float mx = u[0], mn = u[0];
    for (int j = 1; j < fd; j++) mx = u[j] > mx ? u[j] : mx, mn = u[j] < mn ? u[j] : mn;
    double zp = 0.0, zn = 0.0;
    for (int j = 0; j < fd; j++) {
        const float v = u[j];
        zp += (phi[j] = expf(v - mx));
        zn += (phi[fd + j] = expf(mn - v));
    }
    const float ip = (float)(1.0 / zp), in = (float)(1.0 / zn);
    for (int j = 0; j < fd; j++) phi[j] *= ip, phi[fd + j] *= in;
}

/* FLOPs of one token's linear attention: the key features and state update
 * of every K/V head, and (query) the query features and read of every
 * query head; exp counted as one. */
static double linear_flops(const mattn_llama_info *hp, int fd, int query) {
    const double dh = hp->head_dim, F = 2.0 * fd, feat = 2.0 * dh * fd + 4.0 * F;
    double f = hp->n_kv_heads * (feat + 2.0 * F * dh + F);
    if (query) f += hp->n_heads * (feat + 2.0 * F * dh + 2.0 * F + dh);
    return f;
}

/* Block l's linear state over the chunk's M tokens (c->k, c->v, RoPE'd),
 * the linear rows' outputs into c->att.  Threads over K/V heads (each owns
 * its state and its group's query heads). */
static double linear_chunk(const mattn_llama *m, mattn_llama_cache *c, int l, int M) {
    const mattn_llama_info *hp = &m->hp;
    const mattn_llama_route_layer *ly = &m->routing->layers[l];
    const int H = hp->n_heads, Hkv = hp->n_kv_heads, dh = hp->head_dim, g = H / Hkv;
    const int fd = m->routing->cfg.feature_dim, F = 2 * fd, Dq = H * dh, Dkv = Hkv * dh;
    float *S0 = c->lin + (size_t)l * Hkv * F * (dh + 1), *z0 = S0 + (size_t)Hkv * F * dh;
    int nq = 0;
    for (int t = 0; t < M; t++) nq += c->route[t] == MATTN_ROUTE_LINEAR;
    #pragma omp parallel for schedule(static) if (Hkv > 1)
    for (int j = 0; j < Hkv; j++) {
        float *S = S0 + (size_t)j * F * dh, *z = z0 + (size_t)j * F;
        float *phk = c->phk + (size_t)j * F, *phq = c->phq + (size_t)j * g * F;
        for (int t = 0; t < M; t++) {
            const float *k = c->k + (size_t)t * Dkv + (size_t)j * dh, *v = c->v + (size_t)t * Dkv + (size_t)j * dh;
            mattn_llama_feature_map(k, ly->fk + (size_t)j * dh * fd, dh, fd, phk);
            for (int f = 0; f < F; f++) {
                mattn_axpy(S + (size_t)f * dh, phk[f], v, dh);
                z[f] += phk[f];
            }
            if (c->route[t] != MATTN_ROUTE_LINEAR) continue;
            for (int h = j * g; h < (j + 1) * g; h++) {
                float *o = c->att + (size_t)t * Dq + (size_t)h * dh;
                mattn_llama_feature_map(c->q + (size_t)t * Dq + (size_t)h * dh, ly->fq + (size_t)h * dh * fd, dh, fd, phq);
                for (int d = 0; d < dh; d++) o[d] = 0.0f;
                for (int f = 0; f < F; f++) mattn_axpy(o, phq[f], S + (size_t)f * dh, dh);
                const float inv = 1.0f / mattn_dot(phq, z, F); /* > 0: softmax features, z holds this key */
                for (int d = 0; d < dh; d++) o[d] *= inv;
            }
        }
    }
    return M * linear_flops(hp, fd, 0) + nq * (linear_flops(hp, fd, 1) - linear_flops(hp, fd, 0));
}

/* The softmax experts (full, local) over the chunk's rows routed to them:
 * one pass of the tiled kernel for both (one parallel region, each K/V
 * head's keys packed once for both), an expert with at most FEW_ROWS rows
 * as decode steps instead (the tiled kernel packs every key its rows see,
 * which a few full rows do not pay for); a decode step: its token. */
#define FEW_ROWS 4
static double softmax_rows(const mattn_llama *m, mattn_llama_cache *c, int l, int p, int M, int decode) {
    const mattn_llama_info *hp = &m->hp;
    const int H = hp->n_heads, dh = hp->head_dim, g = H / hp->n_kv_heads, Dq = H * dh;
    const int window = m->routing->cfg.window, sinks = m->routing->cfg.sinks;
    const mattn_kv kv = mattn_llama_cache_view(c, l);
    if (decode) {
        const int local = c->route[0] == MATTN_ROUTE_LOCAL, lo = local && p - window > 0 ? p - window : 0;
        return mattn_attn_softmax_decode_kv(c->q, &kv, H, g, dh, local ? sinks : 0, lo, p, 0, c->att);
    }
    int32_t *rows[2] = {c->rows, c->rows + MATTN_LLAMA_CHUNK};
    int64_t n[2] = {0, 0};
    for (int t = 0; t < M; t++)
        if (c->route[t] != MATTN_ROUTE_LINEAR) {
            const int e = c->route[t] == MATTN_ROUTE_LOCAL;
            rows[e][n[e]++] = t;
        }
    mattn_attn_args a[2];
    int na = 0;
    double fl = 0.0;
    for (int e = 0; e < 2; e++) {
        if (n[e] == 0) continue;
        if (n[e] <= FEW_ROWS && n[e] < M) { /* as decode steps (all rows of a chunk: tiles, as the original model) */
            for (int64_t i = 0; i < n[e]; i++) {
                const int t = rows[e][i], lo = e && p + t - window > 0 ? p + t - window : 0;
                fl += mattn_attn_softmax_decode_kv(c->q + (size_t)t * Dq, &kv, H, g, dh, e ? sinks : 0, lo, p + t, 0,
                                                   c->att + (size_t)t * Dq);
            }
            continue;
        }
        a[na++] = (mattn_attn_args){.B = 1, .T = M, .Tk = p + M, .H = H, .dh = dh, .q = c->q, .ld = Dq, .kv = &kv,
                                    .kv_group = g, .out = c->att, .ldo = Dq, .causal = 1, .window = e ? window : -1,
                                    .sinks = e ? sinks : 0, .rows = n[e] < M ? rows[e] : NULL,
                                    .n_rows = n[e] < M ? n[e] : 0, .scratch = c->attn_ws,
                                    .scratch_bytes = c->attn_ws_bytes, .pack = g > 1 ? &c->pack : NULL};
    }
    if (na) {
        const double f = mattn_attn_softmax_forward_n(a, na);
        MATTN_ASSERT(f >= 0.0); /* the scratch was sized for the cache's context */
        fl += f;
    }
    return fl;
}

mattn_status mattn_llama_attention_routed(const mattn_llama *m, mattn_llama_cache *c, int l, int p, int M, int decode,
                                          double *flops) {
    const mattn_llama_routing *r = m->routing;
    const int L = m->hp.n_layers;
    mattn_status st = mattn_llama_route(r, l, c->h, M, p, m->hp.context_length, &c->act, c->route);
    if (st != MATTN_OK) return st;
    for (int t = 0; t < M; t++) {
        c->routes[(size_t)(p + t) * L + l] = c->route[t];
        c->counts[l * MATTN_ROUTE_EXPERTS + c->route[t]]++;
    }
    const mattn_controller *cc = &r->layers[l].ctrl;
    double fl = r->layers[l].fixed ? 0.0 : 2.0 * M * ((double)cc->Hc * (cc->D + 2) + (double)cc->Hc * cc->K);
    if (!decode || c->route[0] != MATTN_ROUTE_LINEAR) fl += softmax_rows(m, c, l, p, M, decode);
    if (mattn_llama_routing_uses(r, l, MATTN_ROUTE_LINEAR)) fl += linear_chunk(m, c, l, M);
    *flops += fl;
    return MATTN_OK;
}
