/*
 * layer_io.c — layer weights in and out as safetensors, under the Python
 * library's state_dict names (experts.N.qkv.weight, controller.net.0.weight,
 * ..., buffers costs and controller.prior_beta), with the config JSON in
 * __metadata__["config"].  Loading is all-or-nothing: every tensor is checked
 * (name, dtype, shape, finiteness; buffers against the config) and staged
 * before the layer's weights are touched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

#define LAYER_FORMAT "metaattn-layer"
#define LAYER_FORMAT_VERSION "1"

static mattn_status fail(mattn_layer *l, mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static mattn_status fail(mattn_layer *l, mattn_status st, const char *fmt, ...) {
    char msg[MATTN_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mattn_set_error_h(mattn_layer_errbuf(l), st, "%s", msg);
}

mattn_status mattn_layer_save(mattn_layer *l, const char *path) {
    if (!l || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_save: %s is NULL", !l ? "layer" : "path");
    const mattn_config *cfg = mattn_layer_config(l);
    int np = mattn_layer_n_params(l), K = cfg->n_experts;
    mattn_st_entry *ent = mattn_calloc((size_t)np + 3, sizeof *ent);
    int64_t(*shapes)[4] = mattn_calloc((size_t)np + 3, sizeof *shapes);
    float costs[MATTN_MAX_EXPERTS], prior[MATTN_MAX_EXPERTS];
    char *json = NULL;
    mattn_status st = (!ent || !shapes) ? fail(l, MATTN_ERR_NOMEM, "out of memory saving '%s'", path)
                                        : mattn_config_to_json(cfg, &json);
    int n = 0;
    for (int i = 0; st == MATTN_OK && i < np; i++) {
        mattn_tensor t;
        mattn_layer_param(l, i, &t);
        size_t cnt = 1;
        for (int d = 0; d < t.ndim; d++) cnt *= (size_t)t.shape[d];
        const size_t bad = mattn_find_nonfinite(t.data, cnt);
        if (bad < cnt) {
            st = fail(l, MATTN_ERR_NUMERIC, "%s: not saved: weight '%s' holds %g at %zu", path, t.name, (double)t.data[bad], bad);
            break;
        }
        memcpy(shapes[n], t.shape, sizeof shapes[n]);
        ent[n] = (mattn_st_entry){t.name, MATTN_ST_F32, t.ndim, shapes[n], t.data};
        n++;
    }
    if (st == MATTN_OK) {
        mattn_prior_buffers(cfg, costs, prior);
        shapes[n][0] = K;
        ent[n] = (mattn_st_entry){"costs", MATTN_ST_F32, 1, shapes[n], costs};
        n++;
        if (cfg->controller == MATTN_CONTROLLER_BAYESIAN) {
            shapes[n][0] = K;
            ent[n] = (mattn_st_entry){"controller.prior_beta", MATTN_ST_F32, 1, shapes[n], prior};
            n++;
        }
        if (mattn_layer_n_duals(l)) {
            shapes[n][0] = mattn_layer_n_duals(l);
            ent[n] = (mattn_st_entry){"controller.duals", MATTN_ST_F64, 1, shapes[n], mattn_layer_duals(l)};
            n++;
        }
        const char *meta[] = {"config", json, "format", LAYER_FORMAT, "format_version", LAYER_FORMAT_VERSION};
        char err[MATTN_ERRMSG_LEN];
        st = mattn_st_write(path, ent, n, meta, 3, err, sizeof err);
        if (st != MATTN_OK) fail(l, st, "%s", err);
    } else if (json == NULL && ent && shapes) {
        fail(l, st, "%s", mattn_last_error());
    }
    mattn_free(json);
    mattn_free(ent);
    mattn_free(shapes);
    return st;
}

/* Check a buffer tensor against expected values. */
static mattn_status check_buffer(mattn_layer *l, const mattn_st_file *f, const char *path,
                                 const char *name, const float *want, int K, float tol) {
    const mattn_st_tensor *t = mattn_st_find(f, name);
    if (!t) return MATTN_OK; /* buffers are optional on load */
    if (t->ndim != 1 || t->shape[0] != K)
        return fail(l, MATTN_ERR_SHAPE, "%s: buffer '%s' has %lld values, the config has %d experts",
                    path, name, (long long)t->numel, K);
    float got[MATTN_MAX_EXPERTS];
    mattn_st_to_f32(t, got);
    for (int k = 0; k < K; k++)
        if (!(fabsf(got[k] - want[k]) <= tol))
            return fail(l, MATTN_ERR_INVALID_ARG, "%s: buffer '%s'[%d] = %g but the config gives %g",
                        path, name, k, (double)got[k], (double)want[k]);
    return MATTN_OK;
}

static int is_float_dtype(mattn_st_dtype d) {
    return d == MATTN_ST_F32 || d == MATTN_ST_F64 || d == MATTN_ST_F16 || d == MATTN_ST_BF16;
}

mattn_status mattn_layer_load(mattn_layer *l, const char *path) {
    if (!l || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_load: %s is NULL", !l ? "layer" : "path");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return fail(l, st, "%s", err);
    const mattn_config *cfg = mattn_layer_config(l);
    const int np = mattn_layer_n_params(l), K = cfg->n_experts;

    /* every tensor in the file must be a parameter or a known buffer */
    for (int i = 0; st == MATTN_OK && i < mattn_st_count(f); i++) {
        const char *name = mattn_st_get(f, i)->name;
        int known = !strcmp(name, "costs") || !strcmp(name, "controller.prior_beta") ||
                    (!strcmp(name, "controller.duals") && mattn_layer_n_duals(l));
        for (int j = 0; !known && j < np; j++) {
            mattn_tensor t;
            mattn_layer_param(l, j, &t);
            known = !strcmp(t.name, name);
        }
        if (!known) st = fail(l, MATTN_ERR_FORMAT, "%s: unexpected tensor '%s' for this layer config", path, name);
    }
    float costs[MATTN_MAX_EXPERTS], prior[MATTN_MAX_EXPERTS];
    mattn_prior_buffers(cfg, costs, prior);
    if (st == MATTN_OK) st = check_buffer(l, f, path, "costs", costs, K, 1e-6f);
    if (st == MATTN_OK && cfg->controller == MATTN_CONTROLLER_BAYESIAN)
        st = check_buffer(l, f, path, "controller.prior_beta", prior, K, 1e-5f);
    double duals[2 + MATTN_MAX_EXPERTS] = {0}; /* absent: a run that has not started */
    const mattn_st_tensor *dt = mattn_st_find(f, "controller.duals");
    if (st == MATTN_OK && dt && mattn_layer_n_duals(l) &&
        (st = mattn_duals_read(dt, path, mattn_layer_n_duals(l), duals)) != MATTN_OK)
        fail(l, st, "%s", mattn_last_error());

    /* stage every parameter, then commit */
    size_t total = 0;
    for (int j = 0; j < np; j++) {
        mattn_tensor t;
        mattn_layer_param(l, j, &t);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        total += n;
    }
    float *stage = st == MATTN_OK ? mattn_malloc((total ? total : 1) * sizeof(float)) : NULL;
    if (st == MATTN_OK && !stage) st = fail(l, MATTN_ERR_NOMEM, "out of memory loading '%s'", path);
    size_t off = 0;
    for (int j = 0; st == MATTN_OK && j < np; j++) {
        mattn_tensor t;
        mattn_layer_param(l, j, &t);
        const mattn_st_tensor *s = mattn_st_find(f, t.name);
        if (!s) {
            st = fail(l, MATTN_ERR_FORMAT, "%s: missing tensor '%s'", path, t.name);
            break;
        }
        if (!is_float_dtype(s->dtype)) {
            st = fail(l, MATTN_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type (F32)",
                      path, t.name, mattn_st_dtype_name(s->dtype));
            break;
        }
        int same = s->ndim == t.ndim;
        for (int d = 0; same && d < t.ndim; d++) same = s->shape[d] == t.shape[d];
        if (!same) {
            char want[64], got[64];
            int a = snprintf(want, sizeof want, "[");
            for (int d = 0; d < t.ndim; d++) a += snprintf(want + a, sizeof want - (size_t)a, "%s%lld", d ? "," : "", (long long)t.shape[d]);
            snprintf(want + a, sizeof want - (size_t)a, "]");
            a = snprintf(got, sizeof got, "[");
            for (int d = 0; d < s->ndim && a < 56; d++) a += snprintf(got + a, sizeof got - (size_t)a, "%s%lld", d ? "," : "", (long long)s->shape[d]);
            snprintf(got + a, sizeof got - (size_t)a, "]");
            st = fail(l, MATTN_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config needs %s", path, t.name, got, want);
            break;
        }
        mattn_st_to_f32(s, stage + off);
        for (int64_t i = 0; i < s->numel; i++)
            if (!isfinite(stage[off + i])) {
                st = fail(l, MATTN_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value at index %lld",
                          path, t.name, (long long)i);
                break;
            }
        off += (size_t)s->numel;
    }
    if (st == MATTN_OK) {
        off = 0;
        for (int j = 0; j < np; j++) {
            mattn_tensor t;
            mattn_layer_param(l, j, &t);
            size_t n = 1;
            for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
            memcpy(t.data, stage + off, n * sizeof(float));
            off += n;
        }
        if (mattn_layer_n_duals(l)) memcpy(mattn_layer_duals(l), duals, (size_t)mattn_layer_n_duals(l) * sizeof(double));
    }
    mattn_free(stage);
    mattn_st_close(f);
    return st;
}
