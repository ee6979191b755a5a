/*
 * model_io.c — the language model in and out as safetensors, under
 * MetaLanguageModel's state_dict names: every parameter, each layer's
 * buffers (blocks.N.attn.costs, blocks.N.attn.controller.prior_beta), the
 * MetaLMConfig JSON in __metadata__["config"] and the noise/training step in
 * __metadata__["step"] (restored on load).  The tied head.weight is not
 * written (safetensors has no shared tensors); a file that has it loads if it
 * equals tok_emb.weight.  Loading is all-or-nothing: every tensor is checked
 * (name, dtype, shape, finiteness; buffers against the config) and staged
 * before any weight changes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

#define MODEL_FORMAT "metaattn-model"
#define MODEL_FORMAT_VERSION "1"

mattn_status mattn_model_save(mattn_model *m, const char *path) {
    if (!m || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_save: %s is NULL", !m ? "model" : "path");
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int np = mattn_model_n_params(m), L = cfg->n_layers, K = cfg->attn.n_experts;
    const int bayes = cfg->attn.controller == MATTN_CONTROLLER_BAYESIAN;
    mattn_st_entry *ent = mattn_calloc((size_t)np + 3 * (size_t)L, sizeof *ent);
    int64_t(*shapes)[4] = mattn_calloc((size_t)np + 3 * (size_t)L, sizeof *shapes);
    char(*names)[128] = mattn_calloc(3 * (size_t)L, sizeof *names);
    float costs[MATTN_MAX_EXPERTS], prior[MATTN_MAX_EXPERTS];
    char *json = NULL;
    mattn_status st = (!ent || !shapes || !names) ? mattn_set_error(MATTN_ERR_NOMEM, "out of memory saving '%s'", path)
                                                  : mattn_lm_config_to_json(cfg, &json);
    mattn_prior_buffers(&cfg->attn, costs, prior);
    int n = 0;
    for (int i = 0; st == MATTN_OK && i < np; i++) {
        mattn_tensor t;
        mattn_model_param(m, i, &t);
        const size_t cnt = (size_t)t.shape[0] * (t.ndim > 1 ? (size_t)t.shape[1] : 1), bad = mattn_find_nonfinite(t.data, cnt);
        if (bad < cnt) {
            st = mattn_set_error(MATTN_ERR_NUMERIC, "%s: not saved: weight '%s' holds %g at %zu", path, t.name, (double)t.data[bad], bad);
            break;
        }
        memcpy(shapes[n], t.shape, sizeof shapes[n]);
        ent[n] = (mattn_st_entry){t.name, MATTN_ST_F32, t.ndim, shapes[n], t.data};
        n++;
    }
    for (int l = 0; st == MATTN_OK && l < L; l++) {
        snprintf(names[2 * l], sizeof names[0], "blocks.%d.attn.costs", l);
        shapes[n][0] = K;
        ent[n] = (mattn_st_entry){names[2 * l], MATTN_ST_F32, 1, shapes[n], costs};
        n++;
        if (bayes) {
            snprintf(names[2 * l + 1], sizeof names[0], "blocks.%d.attn.controller.prior_beta", l);
            shapes[n][0] = K;
            ent[n] = (mattn_st_entry){names[2 * l + 1], MATTN_ST_F32, 1, shapes[n], prior};
            n++;
        }
        mattn_layer *ly = mattn_model_layer(m, l);
        if (mattn_layer_n_duals(ly)) {
            snprintf(names[2 * L + l], sizeof names[0], "blocks.%d.attn.controller.duals", l);
            shapes[n][0] = mattn_layer_n_duals(ly);
            ent[n] = (mattn_st_entry){names[2 * L + l], MATTN_ST_F64, 1, shapes[n], mattn_layer_duals(ly)};
            n++;
        }
    }
    if (st == MATTN_OK) {
        char step[32];
        snprintf(step, sizeof step, "%llu", (unsigned long long)mattn_model_step(m));
        const char *meta[] = {"config", json, "format", MODEL_FORMAT, "format_version", MODEL_FORMAT_VERSION,
                              "step", step};
        char err[MATTN_ERRMSG_LEN];
        st = mattn_st_write(path, ent, n, meta, 4, err, sizeof err);
        if (st != MATTN_OK) mattn_set_error(st, "%s", err);
    }
    mattn_free(json);
    mattn_free(ent);
    mattn_free(shapes);
    mattn_free(names);
    return st;
}

mattn_status mattn_model_file_config(const char *path, mattn_lm_config *out) {
    if (!path || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_file_config: %s is NULL", !path ? "path" : "out");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return mattn_set_error(st, "%s", err);
    const char *json = mattn_st_meta(f, "config");
    if (!json) st = mattn_set_error(MATTN_ERR_FORMAT, "%s: no __metadata__[\"config\"]: not a metaattn/MetaLanguageModel checkpoint", path);
    else if ((st = mattn_lm_config_from_json(json, out)) != MATTN_OK)
        mattn_set_error(st, "%s: config: %s", path, mattn_last_error());
    mattn_st_close(f);
    return st;
}

/* Index of a buffer name "blocks.<l>.attn.<what>", or -1. */
static int buffer_layer(const char *name, int L, const char **what) {
    int l, pos = 0;
    if (sscanf(name, "blocks.%d.attn.%n", &l, &pos) != 1 || pos == 0 || l < 0 || l >= L) return -1;
    *what = name + pos;
    return l;
}

/* Every tensor of the file is a parameter, the tied head or a buffer that
 * agrees with the config; the budget's multipliers are read into duals
 * (L x (2 + MATTN_MAX_EXPERTS)); *head: the file's head.weight or NULL. */
static mattn_status check_names_buffers(mattn_model *m, const mattn_st_file *f, const char *path, double *duals,
                                        const mattn_st_tensor **head) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int np = mattn_model_n_params(m), L = cfg->n_layers, K = cfg->attn.n_experts;
    float costs[MATTN_MAX_EXPERTS], prior[MATTN_MAX_EXPERTS];
    mattn_prior_buffers(&cfg->attn, costs, prior);
    mattn_status st = MATTN_OK;
    for (int i = 0; st == MATTN_OK && i < mattn_st_count(f); i++) {
        const mattn_st_tensor *t = mattn_st_get(f, i);
        const char *what;
        int l = buffer_layer(t->name, L, &what);
        if (l >= 0 && (!strcmp(what, "costs") || !strcmp(what, "controller.prior_beta"))) {
            const float *want = what[0] == 'c' && what[1] == 'o' && what[2] == 's' ? costs : prior;
            float got[MATTN_MAX_EXPERTS];
            if (t->ndim != 1 || t->shape[0] != K)
                st = mattn_set_error(MATTN_ERR_SHAPE, "%s: buffer '%s' has %lld values, the config has %d experts", path, t->name, (long long)t->numel, K);
            else {
                mattn_st_to_f32(t, got);
                for (int k = 0; k < K && st == MATTN_OK; k++)
                    if (!(fabsf(got[k] - want[k]) <= 1e-5f))
                        st = mattn_set_error(MATTN_ERR_INVALID_ARG, "%s: buffer '%s'[%d] = %g but the config gives %g", path, t->name, k, (double)got[k], (double)want[k]);
            }
            continue;
        }
        if (l >= 0 && !strcmp(what, "controller.duals") && mattn_layer_n_duals(mattn_model_layer(m, l))) {
            st = mattn_duals_read(t, path, mattn_layer_n_duals(mattn_model_layer(m, l)),
                                  duals + (size_t)l * (2 + MATTN_MAX_EXPERTS));
            continue;
        }
        if (!strcmp(t->name, "head.weight")) { *head = t; continue; }
        int known = 0;
        for (int j = 0; !known && j < np; j++) {
            mattn_tensor p;
            mattn_model_param(m, j, &p);
            known = !strcmp(p.name, t->name);
        }
        if (!known) st = mattn_set_error(MATTN_ERR_FORMAT, "%s: unexpected tensor '%s' for this model config", path, t->name);
    }
    return st;
}

mattn_status mattn_model_load(mattn_model *m, const char *path) {
    if (!m || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_load: %s is NULL", !m ? "model" : "path");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return mattn_set_error(st, "%s", err);
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int np = mattn_model_n_params(m), L = cfg->n_layers;
    const mattn_st_tensor *head = NULL;
    double *duals = mattn_calloc((size_t)L * (2 + MATTN_MAX_EXPERTS), sizeof *duals); /* absent: zero */
    if (!duals) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory loading '%s'", path);

    if (st == MATTN_OK) st = check_names_buffers(m, f, path, duals, &head);
    size_t total = 0;
    for (int j = 0; j < np; j++) {
        mattn_tensor p;
        mattn_model_param(m, j, &p);
        total += (size_t)p.shape[0] * (p.ndim > 1 ? (size_t)p.shape[1] : 1);
    }
    float *stage = st == MATTN_OK ? mattn_malloc(total * sizeof(float)) : NULL;
    if (st == MATTN_OK && !stage) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory loading '%s'", path);
    size_t off = 0;
    for (int j = 0; st == MATTN_OK && j < np; j++) {
        mattn_tensor p;
        mattn_model_param(m, j, &p);
        const mattn_st_tensor *s = mattn_st_find(f, p.name);
        size_t n = (size_t)p.shape[0] * (p.ndim > 1 ? (size_t)p.shape[1] : 1);
        if (!s) { st = mattn_set_error(MATTN_ERR_NOT_FOUND, "%s: missing tensor '%s'", path, p.name); break; }
        if (s->dtype != MATTN_ST_F32 && s->dtype != MATTN_ST_F64 && s->dtype != MATTN_ST_F16 && s->dtype != MATTN_ST_BF16) {
            st = mattn_set_error(MATTN_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type", path, p.name, mattn_st_dtype_name(s->dtype));
            break;
        }
        int same = s->ndim == p.ndim;
        for (int d = 0; same && d < p.ndim; d++) same = s->shape[d] == p.shape[d];
        if (!same) {
            st = mattn_set_error(MATTN_ERR_SHAPE, "%s: tensor '%s' has shape [%lld%s%lld], the model needs [%lld%s%lld]", path, p.name,
                                 (long long)(s->ndim ? s->shape[0] : 0), s->ndim > 1 ? ", " : "", (long long)(s->ndim > 1 ? s->shape[1] : 0),
                                 (long long)p.shape[0], p.ndim > 1 ? ", " : "", (long long)(p.ndim > 1 ? p.shape[1] : 0));
            break;
        }
        mattn_st_to_f32(s, stage + off);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(stage[off + i])) {
                st = mattn_set_error(MATTN_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value at %zu", path, p.name, i);
                break;
            }
        off += n;
    }
    if (st == MATTN_OK && head) {
        /* a tied head must equal tok_emb (staged first: offset 0) */
        mattn_tensor p;
        mattn_model_param(m, 0, &p);
        float *h = mattn_malloc((size_t)head->numel * sizeof(float) + 1);
        if (!h) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory loading '%s'", path);
        else if (head->numel != p.shape[0] * p.shape[1])
            st = mattn_set_error(MATTN_ERR_SHAPE, "%s: head.weight does not match tok_emb.weight's shape", path);
        else {
            mattn_st_to_f32(head, h);
            if (memcmp(h, stage, (size_t)head->numel * sizeof(float)) != 0)
                st = mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: head.weight differs from tok_emb.weight (untied head is not supported)", path);
        }
        mattn_free(h);
    }
    const char *step = mattn_st_meta(f, "step");
    char *end = NULL;
    unsigned long long sv = step ? strtoull(step, &end, 10) : 0;
    if (st == MATTN_OK && step && (*end || !step[0]))
        st = mattn_set_error(MATTN_ERR_FORMAT, "%s: __metadata__ step '%s' is not an integer", path, step);
    if (st == MATTN_OK) {
        if (step) mattn_model_set_step(m, (uint64_t)sv);
        off = 0;
        for (int j = 0; j < np; j++) {
            mattn_tensor p;
            mattn_model_param(m, j, &p);
            size_t n = (size_t)p.shape[0] * (p.ndim > 1 ? (size_t)p.shape[1] : 1);
            memcpy(p.data, stage + off, n * sizeof(float));
            off += n;
        }
        for (int l = 0; l < L; l++) {
            mattn_layer *ly = mattn_model_layer(m, l);
            memcpy(mattn_layer_duals(ly), duals + (size_t)l * (2 + MATTN_MAX_EXPERTS),
                   (size_t)mattn_layer_n_duals(ly) * sizeof(double));
        }
    }
    mattn_free(duals);
    mattn_free(stage);
    mattn_st_close(f);
    return st;
}
