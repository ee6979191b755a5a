/*
 * llama_routing.c — the routing of a pretrained model (docs/design.md §5):
 * its config, the per-block controllers and feature maps, the route of each
 * token, and the routing file.
 *
 * A block's route for a chunk of tokens: the argmax of its controller's
 * logits (the Meta-Attention layer's prior-free controller of
 * attention/controller.c over the block's normalised input, position
 * feature t / (context - 1) or, by default, 0), among the experts the
 * config allows, ties to the lower index; or, for a fixed
 * block, the expert whose cumulative share first exceeds a uniform hashed
 * from (seed, block, position), so that the same position always takes the
 * same expert whatever the chunking.
 *
 * The file (safetensors, all F32 but the shares): metadata format
 * "metaattn-routing", format_version "1", the config keys (window, sinks,
 * controller_hidden, feature_dim, seed, position, experts) and the model's shape (n_layers,
 * d_model, n_heads, n_kv_heads, head_dim: checked on load); tensors
 * route.fixed (I32, n_layers), route.share (F64, n_layers x 3) and per
 * block blk.L.controller.net.{0,3}.{weight,bias} (the layer's names) and
 * blk.L.fmap_q.weight (H, dh, fd), blk.L.fmap_k.weight (Hkv, dh, fd).
 * Loading checks every tensor (dtype, shape, finite) before it replaces the
 * routing attached, so a bad file leaves the model as it was.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama/llama.h"

#define ROUTING_FORMAT "metaattn-routing"
#define ROUTING_VERSION "1"
#define N_TENSORS 6 /* per block */

mattn_llama_routing_config mattn_llama_routing_default(void) {
    return (mattn_llama_routing_config){.window = 256, .sinks = 4, .controller_hidden = 32, .feature_dim = 0,
                                        .seed = 0};
}

void mattn_llama_routing_free(mattn_llama_routing *r) {
    if (!r) return;
    for (int l = 0; r->layers && l < r->n_layers; l++) {
        mattn_controller_free(&r->layers[l].ctrl);
        mattn_afree(r->layers[l].fq);
        mattn_afree(r->layers[l].fk);
    }
    mattn_free(r->layers);
    mattn_free(r);
}

static mattn_status check_config(mattn_llama *m, const mattn_llama_routing_config *c, const char *where) {
    const char *bad = c->window < 1 ? "window" : c->sinks < 0 ? "sinks" : c->controller_hidden < 1 ? "controller_hidden"
                      : c->feature_dim < 0 ? "feature_dim" : NULL;
    const long long v = c->window < 1 ? c->window : c->sinks < 0 ? c->sinks
                        : c->controller_hidden < 1 ? c->controller_hidden : c->feature_dim;
    if (bad)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: %s = %lld is out of range (window >= 1, sinks >= 0, "
                         "controller_hidden >= 1, feature_dim >= 0)", where, bad, v);
    if (c->position != 0 && c->position != 1)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: position = %d is neither 0 nor 1", where, c->position);
    if (c->experts < 0 || c->experts > 7)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: experts = %d is not a mask of the three experts (0..7)", where,
                         c->experts);
    if (c->window > 1 << 20 || c->sinks > 1 << 20 || c->controller_hidden > 4096 || c->feature_dim > 4096)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: window %d, sinks %d, controller_hidden %d or feature_dim "
                         "%d is implausibly large", where, c->window, c->sinks, c->controller_hidden, c->feature_dim);
    return MATTN_OK;
}

/* A routing of config cfg for model m, weights initialised (seeded). */
static mattn_status routing_alloc(mattn_llama *m, const mattn_llama_routing_config *cfg, mattn_llama_routing **out) {
    const mattn_llama_info *hp = &m->hp;
    mattn_llama_routing *r = mattn_calloc(1, sizeof *r);
    if (!r) return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for routing");
    r->cfg = *cfg;
    if (r->cfg.feature_dim == 0) r->cfg.feature_dim = hp->head_dim;
    r->n_layers = hp->n_layers;
    mattn_config cc = mattn_config_default();
    cc.d_model = hp->d_model;
    cc.n_heads = hp->n_heads;
    cc.controller_hidden = cfg->controller_hidden;
    cc.n_experts = MATTN_ROUTE_EXPERTS;
    cc.controller = MATTN_CONTROLLER_PRIOR_FREE;
    cc.dropout = 0.0;
    cc.causal = 1;
    cc.seed = cfg->seed;
    r->ccfg = cc;
    r->layers = mattn_calloc((size_t)r->n_layers, sizeof *r->layers);
    const int dh = hp->head_dim, fd = r->cfg.feature_dim;
    const size_t nq = (size_t)hp->n_heads * dh * fd, nk = (size_t)hp->n_kv_heads * dh * fd;
    mattn_status st = r->layers ? MATTN_OK : MATTN_ERR_NOMEM;
    for (int l = 0; st == MATTN_OK && l < r->n_layers; l++) {
        mattn_llama_route_layer *ly = &r->layers[l];
        mattn_rng rng;
        mattn_rng_seed(&rng, mattn_stream_seed(cfg->seed, (uint64_t)l, 0, MATTN_PURPOSE_INIT));
        st = mattn_controller_init(&ly->ctrl, &cc, &rng);
        if (st != MATTN_OK) break;
        ly->ctrl.pos_len = cfg->position ? hp->context_length : -1;
        ly->ctrl.b2[MATTN_ROUTE_FULL] = 1.0f; /* untrained: the original attention */
        ly->fq = mattn_amalloc(nq * sizeof(float));
        ly->fk = mattn_amalloc(nk * sizeof(float));
        if (!ly->fq || !ly->fk) {
            st = MATTN_ERR_NOMEM;
            break;
        }
        /* Hedgehog's init: W = identity (its first fd columns) */
        memset(ly->fq, 0, nq * sizeof(float));
        memset(ly->fk, 0, nk * sizeof(float));
        for (int h = 0; h < hp->n_heads + hp->n_kv_heads; h++) {
            float *w = h < hp->n_heads ? ly->fq + (size_t)h * dh * fd : ly->fk + (size_t)(h - hp->n_heads) * dh * fd;
            for (int i = 0; i < dh && i < fd; i++) w[(size_t)i * fd + i] = 1.0f;
        }
        ly->share[MATTN_ROUTE_FULL] = 1.0;
    }
    if (st != MATTN_OK) {
        mattn_llama_routing_free(r);
        return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for the routing of %d blocks", hp->n_layers);
    }
    *out = r;
    return MATTN_OK;
}

static void attach(mattn_llama *m, mattn_llama_routing *r) {
    mattn_llama_routing_free(m->routing);
    m->routing = r;
    r->serial = ++m->routing_serial;
}

mattn_status mattn_llama_routing_new(mattn_llama *m, const mattn_llama_routing_config *cfg) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_routing_new: model is NULL");
    if (!cfg) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_new: cfg is NULL");
    mattn_status st = check_config(m, cfg, "mattn_llama_routing_new");
    mattn_llama_routing *r = NULL;
    if (st == MATTN_OK) st = routing_alloc(m, cfg, &r);
    if (st == MATTN_OK) attach(m, r);
    return st;
}

void mattn_llama_routing_drop(mattn_llama *m) {
    if (!m || !m->routing) return;
    mattn_llama_routing_free(m->routing);
    m->routing = NULL;
    m->routing_serial++;
}

int mattn_llama_routing_attached(const mattn_llama *m) { return m && m->routing; }

mattn_status mattn_llama_routing_get_config(const mattn_llama *m, mattn_llama_routing_config *out) {
    if (!m || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_routing_get_config: %s is NULL",
                                           m ? "out" : "model");
    if (!m->routing)
        return LLAMA_ERR((mattn_llama *)m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_get_config: no routing "
                         "is attached");
    *out = m->routing->cfg;
    return MATTN_OK;
}

mattn_status mattn_llama_routing_fix(mattn_llama *m, int layer, const double *share) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: model is NULL");
    if (!m->routing) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: no routing is attached");
    if (!share) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: share is NULL");
    mattn_llama_routing *r = m->routing;
    if (layer < -1 || layer >= r->n_layers)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: layer = %d is outside [-1, %d)", layer,
                         r->n_layers);
    double sum = 0.0;
    for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) {
        if (!(share[e] >= 0.0 && share[e] <= 1.0))
            return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: share[%d] = %g is outside [0, 1]",
                             e, share[e]);
        sum += share[e];
    }
    if (fabs(sum - 1.0) > 1e-9)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_fix: the shares sum to %.12g, not 1", sum);
    for (int l = layer < 0 ? 0 : layer; l < (layer < 0 ? r->n_layers : layer + 1); l++) {
        r->layers[l].fixed = 1;
        memcpy(r->layers[l].share, share, sizeof r->layers[l].share);
    }
    r->serial = ++m->routing_serial; /* caches keep a linear state only where it is used: made anew */
    return MATTN_OK;
}

int mattn_llama_routing_uses(const mattn_llama_routing *r, int l, int e) {
    if (r->layers[l].fixed) return r->layers[l].share[e] > 0.0;
    return !r->cfg.experts || (r->cfg.experts >> e & 1);
}

// ----------------------------------------------------------------------------
// the route

mattn_status mattn_llama_route(const mattn_llama_routing *r, int l, const float *h, int M, int p, int pos_len,
                               mattn_ctrl_act *act, uint8_t *route) {
    const mattn_llama_route_layer *ly = &r->layers[l];
    if (ly->fixed) {
        const uint64_t key = mattn_stream_seed(r->cfg.seed, (uint64_t)l, 0, MATTN_PURPOSE_ROUTE);
        for (int t = 0; t < M; t++) {
            const double u = mattn_hash_u01(key, (uint64_t)(p + t));
            double c = 0.0;
            int e = MATTN_ROUTE_EXPERTS - 1;
            while (e > 0 && ly->share[e] == 0.0) e--; /* the last expert with a share takes u ~ 1 */
            for (int k = 0; k < MATTN_ROUTE_EXPERTS; k++)
                if (ly->share[k] > 0.0 && u < (c += ly->share[k])) {
                    e = k;
                    break;
                }
            route[t] = (uint8_t)e;
        }
        return MATTN_OK;
    }
    mattn_controller cc = ly->ctrl; /* a copy: the position offset is the call's */
    cc.pos_len = r->cfg.position ? pos_len : -1;
    cc.pos_offset = p;
    double aux;
    /* on one thread: a chunk's <= 64 rows (2.4 MFLOP for SmolLM2) are less
     * than the wake-up of a sleeping team costs (5 % of a routed prefill's
     * attention at 2 threads) */
    const int team = mattn_max_threads();
    mattn_set_max_threads(1);
    mattn_status st = mattn_controller_forward(&cc, &r->ccfg, act, h, 1, M, 0, 0, &aux);
    mattn_set_max_threads(team);
    if (st != MATTN_OK) return st;
    for (int t = 0; t < M; t++) {
        route[t] = (uint8_t)mattn_llama_route_argmax(act->logits + (size_t)t * MATTN_ROUTE_EXPERTS, r->cfg.experts);
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// the file

/* Tensor i (< N_TENSORS) of block l: name, data, shape. */
static float *block_tensor(const mattn_llama *m, const mattn_llama_routing *r, int l, int i, char *name, size_t cap,
                           int *ndim, int64_t *shape) {
    static const char *const names[N_TENSORS] = {"controller.net.0.weight", "controller.net.0.bias",
                                                 "controller.net.3.weight", "controller.net.3.bias",
                                                 "fmap_q.weight", "fmap_k.weight"};
    const mattn_llama_info *hp = &m->hp;
    mattn_llama_route_layer *ly = &r->layers[l];
    const int Hc = ly->ctrl.Hc, fd = r->cfg.feature_dim;
    snprintf(name, cap, "blk.%d.%s", l, names[i]);
    switch (i) {
    case 0: *ndim = 2; shape[0] = Hc; shape[1] = hp->d_model + 2; return ly->ctrl.w1;
    case 1: *ndim = 1; shape[0] = Hc; return ly->ctrl.b1;
    case 2: *ndim = 2; shape[0] = MATTN_ROUTE_EXPERTS; shape[1] = Hc; return ly->ctrl.w2;
    case 3: *ndim = 1; shape[0] = MATTN_ROUTE_EXPERTS; return ly->ctrl.b2;
    case 4: *ndim = 3; shape[0] = hp->n_heads; shape[1] = hp->head_dim; shape[2] = fd; return ly->fq;
    default: *ndim = 3; shape[0] = hp->n_kv_heads; shape[1] = hp->head_dim; shape[2] = fd; return ly->fk;
    }
}

static int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

mattn_status mattn_llama_routing_save(mattn_llama *m, const char *path) {
    if (!m || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_routing_save: %s is NULL", m ? "path" : "model");
    if (!m->routing) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_routing_save: no routing is attached");
    mattn_llama_routing *r = m->routing;
    const mattn_llama_info *hp = &m->hp;
    const int L = r->n_layers, n = 2 + L * N_TENSORS;
    mattn_st_entry *ent = mattn_calloc((size_t)n, sizeof *ent);
    int64_t(*shapes)[3] = mattn_calloc((size_t)n, sizeof *shapes);
    char(*names)[64] = mattn_calloc((size_t)n, sizeof *names);
    int32_t *fixed = mattn_calloc((size_t)L, sizeof *fixed);
    double *share = mattn_calloc((size_t)L * MATTN_ROUTE_EXPERTS, sizeof *share);
    mattn_status st = ent && shapes && names && fixed && share ? MATTN_OK
                      : LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory saving '%s'", path);
    for (int l = 0; st == MATTN_OK && l < L; l++) {
        fixed[l] = r->layers[l].fixed;
        memcpy(share + (size_t)l * MATTN_ROUTE_EXPERTS, r->layers[l].share, sizeof r->layers[l].share);
        for (int i = 0; i < N_TENSORS; i++) {
            const int k = 2 + l * N_TENSORS + i;
            int nd;
            float *d = block_tensor(m, r, l, i, names[k], sizeof names[k], &nd, shapes[k]);
            const size_t cnt = (size_t)numel(nd, shapes[k]), bad = mattn_find_nonfinite(d, cnt);
            if (bad < cnt) {
                st = LLAMA_ERR(m, MATTN_ERR_NUMERIC, "%s: not saved: '%s' holds %g at %zu", path, names[k],
                               (double)d[bad], bad);
                break;
            }
            ent[k] = (mattn_st_entry){names[k], MATTN_ST_F32, nd, shapes[k], d};
        }
    }
    if (st == MATTN_OK) {
        shapes[0][0] = L;
        shapes[1][0] = L;
        shapes[1][1] = MATTN_ROUTE_EXPERTS;
        ent[0] = (mattn_st_entry){"route.fixed", MATTN_ST_I32, 1, shapes[0], fixed};
        ent[1] = (mattn_st_entry){"route.share", MATTN_ST_F64, 2, shapes[1], share};
        char v[12][32];
        const long long vals[12] = {r->cfg.window, r->cfg.sinks, r->cfg.controller_hidden, r->cfg.feature_dim, 0,
                                    hp->n_layers, hp->d_model, hp->n_heads, hp->n_kv_heads, hp->head_dim,
                                    r->cfg.position, r->cfg.experts};
        for (int i = 0; i < 12; i++) snprintf(v[i], sizeof v[i], "%lld", vals[i]);
        snprintf(v[4], sizeof v[4], "%" PRIu64, r->cfg.seed);
        const char *meta[] = {"format", ROUTING_FORMAT, "format_version", ROUTING_VERSION, "window", v[0],
                              "sinks", v[1], "controller_hidden", v[2], "feature_dim", v[3], "seed", v[4],
                              "n_layers", v[5], "d_model", v[6], "n_heads", v[7], "n_kv_heads", v[8],
                              "head_dim", v[9], "position", v[10], "experts", v[11]};
        char err[MATTN_ERRMSG_LEN];
        st = mattn_st_write(path, ent, n, meta, (int)(sizeof meta / sizeof meta[0]) / 2, err, sizeof err);
        if (st != MATTN_OK) LLAMA_ERR(m, st, "%s", err);
    }
    mattn_free(ent);
    mattn_free(shapes);
    mattn_free(names);
    mattn_free(fixed);
    mattn_free(share);
    return st;
}

/* Metadata key as an integer in [lo, hi]. */
static mattn_status meta_int(mattn_llama *m, const mattn_st_file *f, const char *path, const char *key, long long lo,
                             long long hi, long long *out) {
    const char *s = mattn_st_meta(f, key);
    if (!s) return LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: metadata '%s' is missing: not a routing file", path, key);
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: metadata %s = '%s' is not an integer in [%lld, %lld]", path, key,
                         s, lo, hi);
    *out = v;
    return MATTN_OK;
}

static mattn_status meta_u64(mattn_llama *m, const mattn_st_file *f, const char *path, const char *key,
                             uint64_t *out) {
    const char *s = mattn_st_meta(f, key);
    if (!s) return LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: metadata '%s' is missing: not a routing file", path, key);
    char *end;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: metadata %s = '%s' is not an unsigned 64-bit integer", path, key, s);
    *out = v;
    return MATTN_OK;
}

/* The file's tensor name: dtype dt, shape (ndim, shape), finite. */
static const mattn_st_tensor *find_checked(mattn_llama *m, const mattn_st_file *f, const char *path, const char *name,
                                           mattn_st_dtype dt, int ndim, const int64_t *shape, mattn_status *st) {
    const mattn_st_tensor *t = mattn_st_find(f, name);
    char want[64] = "", got[64] = "";
    for (int d = 0; t && d < ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "", (long long)shape[d]);
    for (int d = 0; t && d < t->ndim; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (!t) *st = LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    else if (t->dtype != dt)
        *st = LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: tensor '%s' is %s, expected %s", path, name,
                        mattn_st_dtype_name(t->dtype), mattn_st_dtype_name(dt));
    else if (t->ndim != ndim || strcmp(want, got) != 0)
        *st = LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%s] for this model", path,
                        name, got, want);
    else return t;
    return NULL;
}

static mattn_status load_block(mattn_llama *m, mattn_llama_routing *r, const mattn_st_file *f, const char *path,
                               int l) {
    mattn_status st = MATTN_OK;
    for (int i = 0; i < N_TENSORS; i++) {
        char name[64];
        int nd;
        int64_t shape[3];
        float *d = block_tensor(m, r, l, i, name, sizeof name, &nd, shape);
        const mattn_st_tensor *t = find_checked(m, f, path, name, MATTN_ST_F32, nd, shape, &st);
        if (!t) return st;
        mattn_st_to_f32(t, d);
        const size_t cnt = (size_t)t->numel, bad = mattn_find_nonfinite(d, cnt);
        if (bad < cnt)
            return LLAMA_ERR(m, MATTN_ERR_NUMERIC, "%s: tensor '%s' holds %g at %zu", path, name, (double)d[bad], bad);
    }
    return MATTN_OK;
}

static mattn_status load_file(mattn_llama *m, const mattn_st_file *f, const char *path, mattn_llama_routing **out) {
    const char *fmt = mattn_st_meta(f, "format"), *ver = mattn_st_meta(f, "format_version");
    if (!fmt || strcmp(fmt, ROUTING_FORMAT) != 0)
        return LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: metadata format is '%s', not '" ROUTING_FORMAT "': not a routing "
                         "file", path, fmt ? fmt : "(missing)");
    if (!ver || strcmp(ver, ROUTING_VERSION) != 0)
        return LLAMA_ERR(m, MATTN_ERR_UNSUPPORTED, "%s: format_version '%s' is not supported (this build reads "
                         ROUTING_VERSION ")", path, ver ? ver : "(missing)");
    const mattn_llama_info *hp = &m->hp;
    static const char *const shape_keys[] = {"n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim"};
    const int have[] = {hp->n_layers, hp->d_model, hp->n_heads, hp->n_kv_heads, hp->head_dim};
    mattn_status st = MATTN_OK;
    for (int i = 0; i < 5; i++) {
        long long v;
        if ((st = meta_int(m, f, path, shape_keys[i], 0, INT32_MAX, &v)) != MATTN_OK) return st;
        if (v != have[i])
            return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "%s: made for %s = %lld, the model has %d: a routing file of "
                             "another model", path, shape_keys[i], v, have[i]);
    }
    long long w, s, hc, fd, pos, ex;
    uint64_t seed = 0;
    if ((st = meta_int(m, f, path, "window", 1, 1 << 20, &w)) != MATTN_OK ||
        (st = meta_int(m, f, path, "experts", 0, 7, &ex)) != MATTN_OK ||
        (st = meta_int(m, f, path, "position", 0, 1, &pos)) != MATTN_OK ||
        (st = meta_int(m, f, path, "sinks", 0, 1 << 20, &s)) != MATTN_OK ||
        (st = meta_int(m, f, path, "controller_hidden", 1, 4096, &hc)) != MATTN_OK ||
        (st = meta_int(m, f, path, "feature_dim", 1, 4096, &fd)) != MATTN_OK ||
        (st = meta_u64(m, f, path, "seed", &seed)) != MATTN_OK)
        return st;
    mattn_llama_routing_config cfg = {(int)w, (int)s, (int)hc, (int)fd, (uint64_t)seed, (int)pos, (int)ex};
    mattn_llama_routing *r = NULL;
    if ((st = routing_alloc(m, &cfg, &r)) != MATTN_OK) return st;
    const int64_t sf[1] = {hp->n_layers}, ss[2] = {hp->n_layers, MATTN_ROUTE_EXPERTS};
    const mattn_st_tensor *tf = find_checked(m, f, path, "route.fixed", MATTN_ST_I32, 1, sf, &st);
    const mattn_st_tensor *ts = tf ? find_checked(m, f, path, "route.share", MATTN_ST_F64, 2, ss, &st) : NULL;
    for (int l = 0; ts && st == MATTN_OK && l < hp->n_layers; l++) {
        int32_t fx;
        double sh[MATTN_ROUTE_EXPERTS], sum = 0.0;
        memcpy(&fx, (const char *)tf->data + 4 * (size_t)l, 4);
        memcpy(sh, (const char *)ts->data + sizeof sh * (size_t)l, sizeof sh);
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) sum += sh[e] >= 0.0 && sh[e] <= 1.0 ? sh[e] : NAN;
        if ((fx != 0 && fx != 1) || !(fabs(sum - 1.0) <= 1e-9))
            st = LLAMA_ERR(m, MATTN_ERR_FORMAT, "%s: block %d: route.fixed %d / route.share (%g, %g, %g): fixed must "
                           "be 0 or 1 and the shares in [0, 1] summing to 1", path, l, fx, sh[0], sh[1], sh[2]);
        r->layers[l].fixed = fx;
        memcpy(r->layers[l].share, sh, sizeof sh);
        if (st == MATTN_OK) st = load_block(m, r, f, path, l);
    }
    if (st != MATTN_OK || !ts) {
        mattn_llama_routing_free(r);
        return st != MATTN_OK ? st : MATTN_ERR_FORMAT;
    }
    *out = r;
    return MATTN_OK;
}

mattn_status mattn_llama_routing_load(mattn_llama *m, const char *path) {
    if (!m || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_routing_load: %s is NULL", m ? "path" : "model");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return LLAMA_ERR(m, st, "%s", err);
    mattn_llama_routing *r = NULL;
    st = load_file(m, f, path, &r);
    mattn_st_close(f);
    if (st == MATTN_OK) attach(m, r);
    return st;
}
