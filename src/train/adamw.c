/*
 * adamw.c — AdamW (PyTorch's torch.optim.AdamW arithmetic, decoupled weight
 * decay) and global gradient-norm clipping (torch.nn.utils.clip_grad_norm_).
 * Optimizer state (m, v, step) saves to and loads from safetensors for exact
 * resume.  The schedules are schedule.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

struct mattn_adamw {
    mattn_adamw_config cfg;
    int n;                 /* parameters */
    size_t *off, total;    /* offsets into m / v */
    uint8_t *decay;
    float *m, *v;
    int64_t t;             /* steps taken */
    int64_t model_step;    /* the model's step when the loaded state was saved */
    char errmsg[MATTN_ERRMSG_LEN];
};

mattn_adamw_config mattn_adamw_config_default(void) {
    return (mattn_adamw_config){.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1,
                                .grad_clip = 1.0, .decay_all = 0};
}

/* Decay 2-D weights only: not biases, LayerNorm or the embeddings. */
static int wants_decay(const mattn_tensor *t, int all) {
    if (all) return 1;
    return t->ndim == 2 && !strstr(t->name, "_emb.");
}

static size_t numel(const mattn_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

mattn_status mattn_adamw_init(mattn_model *model, const mattn_adamw_config *cfg, mattn_adamw **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_adamw_init: out is NULL");
    *out = NULL;
    if (!model || !cfg) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_adamw_init: %s is NULL", !model ? "model" : "cfg");
    if (!(cfg->lr >= 0) || !(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) ||
        !(cfg->eps > 0) || !(cfg->weight_decay >= 0) || !(cfg->grad_clip >= 0))
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "AdamW config out of range (lr %g, betas %g/%g, eps %g, weight_decay %g, grad_clip %g)",
                               cfg->lr, cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay, cfg->grad_clip);
    mattn_adamw *o = mattn_calloc(1, sizeof *o);
    if (!o) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for AdamW");
    o->cfg = *cfg;
    o->n = mattn_model_n_params(model);
    o->off = mattn_calloc((size_t)o->n + 1, sizeof *o->off);
    o->decay = mattn_calloc((size_t)o->n + 1, 1);
    if (!o->off || !o->decay) {
        mattn_adamw_free(o);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for AdamW");
    }
    for (int i = 0; i < o->n; i++) {
        mattn_tensor t;
        mattn_model_param(model, i, &t);
        o->off[i] = o->total;
        o->total += numel(&t);
        o->decay[i] = (uint8_t)wants_decay(&t, cfg->decay_all);
    }
    o->m = mattn_amalloc(o->total * sizeof(float));
    o->v = mattn_amalloc(o->total * sizeof(float));
    if (!o->m || !o->v) {
        const size_t total = o->total;
        mattn_adamw_free(o);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for AdamW state (%zu floats x 2)", total);
    }
    memset(o->m, 0, o->total * sizeof(float));
    memset(o->v, 0, o->total * sizeof(float));
    *out = o;
    return MATTN_OK;
}

void mattn_adamw_free(mattn_adamw *o) {
    if (!o) return;
    mattn_free(o->off);
    mattn_free(o->decay);
    mattn_afree(o->m);
    mattn_afree(o->v);
    mattn_free(o);
}

int64_t mattn_adamw_steps(const mattn_adamw *o) { return o ? o->t : 0; }
int64_t mattn_adamw_model_step(const mattn_adamw *o) { return o ? o->model_step : 0; }

mattn_status mattn_adamw_step(mattn_adamw *o, mattn_model *model, double lr, double *grad_norm) {
    if (!o || !model) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_adamw_step: %s is NULL", !o ? "optimizer" : "model");
    if (mattn_model_n_params(model) != o->n)
        return mattn_set_error(MATTN_ERR_MISUSE, "mattn_adamw_step: the model has %d parameters, the optimizer %d",
                               mattn_model_n_params(model), o->n);
    /* global norm over every gradient, in double */
    double ss = 0.0;
    for (int i = 0; i < o->n; i++) {
        mattn_tensor t;
        mattn_model_param(model, i, &t);
        if (!t.grad) return mattn_set_error(MATTN_ERR_MISUSE, "mattn_adamw_step: '%s' has no gradient (run a backward first)", t.name);
        const size_t n = numel(&t);
        double s = 0.0;
        #pragma omp parallel for reduction(+ : s) schedule(static)
        for (size_t j = 0; j < n; j++) s += (double)t.grad[j] * t.grad[j];
        ss += s;
    }
    const double norm = sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return mattn_set_error(MATTN_ERR_NUMERIC, "gradient norm is %g: step skipped, weights unchanged", norm);
    float clip = 1.0f;
    if (o->cfg.grad_clip > 0.0 && norm > 0.0) {
        const double c = o->cfg.grad_clip / (norm + 1e-6);
        if (c < 1.0) clip = (float)c;
    }
    o->t++;
    const double b1 = o->cfg.beta1, b2 = o->cfg.beta2;
    const double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
    const float step_size = (float)(lr / bc1), sbc2 = (float)sqrt(bc2), eps = (float)o->cfg.eps;
    const float b1f = (float)b1, b2f = (float)b2;
    for (int i = 0; i < o->n; i++) {
        mattn_tensor t;
        mattn_model_param(model, i, &t);
        const size_t n = numel(&t);
        float *m = o->m + o->off[i], *v = o->v + o->off[i];
        const float wd = o->decay[i] ? (float)(1.0 - lr * o->cfg.weight_decay) : 1.0f;
        #pragma omp parallel for schedule(static)
        for (size_t j = 0; j < n; j++) {
            const float g = t.grad[j] * clip;
            t.data[j] *= wd;
            m[j] = b1f * m[j] + (1.0f - b1f) * g;
            v[j] = b2f * v[j] + (1.0f - b2f) * g * g;
            t.data[j] -= step_size * m[j] / (sqrtf(v[j]) / sbc2 + eps);
        }
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// state in and out: tensors "exp_avg.<name>" and "exp_avg_sq.<name>",
// metadata step and the hyper-parameters

mattn_status mattn_adamw_save(const mattn_adamw *o, mattn_model *model, const char *path) {
    if (!o || !model || !path) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_adamw_save: NULL argument");
    if (mattn_find_nonfinite(o->m, o->total) < o->total || mattn_find_nonfinite(o->v, o->total) < o->total)
        return mattn_set_error(MATTN_ERR_NUMERIC, "%s: not saved: the optimizer state holds a non-finite value", path);
    mattn_st_entry *e = mattn_calloc(2 * (size_t)o->n + 1, sizeof *e);
    char (*names)[176] = mattn_calloc(2 * (size_t)o->n + 1, sizeof *names);
    int64_t (*shapes)[4] = mattn_calloc((size_t)o->n + 1, sizeof *shapes);
    if (!e || !names || !shapes) {
        mattn_free(e); mattn_free(names); mattn_free(shapes);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory saving '%s'", path);
    }
    for (int i = 0; i < o->n; i++) {
        mattn_tensor t;
        mattn_model_param(model, i, &t);
        memcpy(shapes[i], t.shape, sizeof shapes[i]);
        snprintf(names[2 * i], sizeof names[0], "exp_avg.%s", t.name);
        snprintf(names[2 * i + 1], sizeof names[0], "exp_avg_sq.%s", t.name);
        e[2 * i] = (mattn_st_entry){names[2 * i], MATTN_ST_F32, t.ndim, shapes[i], o->m + o->off[i]};
        e[2 * i + 1] = (mattn_st_entry){names[2 * i + 1], MATTN_ST_F32, t.ndim, shapes[i], o->v + o->off[i]};
    }
    char step[32], mstep[32], hp[256];
    snprintf(step, sizeof step, "%lld", (long long)o->t);
    snprintf(mstep, sizeof mstep, "%llu", (unsigned long long)mattn_model_step(model));
    snprintf(hp, sizeof hp, "{\"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, \"eps\": %.17g, \"weight_decay\": %.17g, \"grad_clip\": %.17g}",
             o->cfg.lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, o->cfg.grad_clip);
    const char *meta[] = {"format", "metaattn-adamw", "format_version", "1", "step", step, "hparams", hp,
                          "model_step", mstep};
    char err[MATTN_ERRMSG_LEN];
    mattn_status st = mattn_st_write(path, e, 2 * o->n, meta, 5, err, sizeof err);
    if (st != MATTN_OK) mattn_set_error(st, "%s", err);
    mattn_free(e); mattn_free(names); mattn_free(shapes);
    return st;
}

mattn_status mattn_adamw_load(mattn_adamw *o, mattn_model *model, const char *path) {
    if (!o || !model || !path) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_adamw_load: NULL argument");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return mattn_set_error(st, "%s", err);
    const char *fmt = mattn_st_meta(f, "format"), *step = mattn_st_meta(f, "step");
    char *end = NULL;
    long long t = step ? strtoll(step, &end, 10) : -1;
    if (!fmt || strcmp(fmt, "metaattn-adamw") != 0 || !step || *end || t < 0)
        st = mattn_set_error(MATTN_ERR_FORMAT, "%s: not a metaattn optimizer state (format/step metadata)", path);
    if (st == MATTN_OK && mattn_st_count(f) != 2 * o->n)
        st = mattn_set_error(MATTN_ERR_SHAPE, "%s: %d tensors, the model needs %d", path, mattn_st_count(f), 2 * o->n);
    float *m = NULL, *v = NULL;
    if (st == MATTN_OK) {
        m = mattn_malloc(o->total * sizeof(float) + 1);
        v = mattn_malloc(o->total * sizeof(float) + 1);
        if (!m || !v) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory loading '%s'", path);
    }
    for (int i = 0; st == MATTN_OK && i < o->n; i++) {
        mattn_tensor t;
        mattn_model_param(model, i, &t);
        char name[176];
        for (int k = 0; k < 2 && st == MATTN_OK; k++) {
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", t.name);
            const mattn_st_tensor *s = mattn_st_find(f, name);
            if (!s || s->dtype != MATTN_ST_F32 || (size_t)s->numel != numel(&t))
                st = mattn_set_error(MATTN_ERR_SHAPE, "%s: '%s' missing or not F32 of %zu values", path, name, numel(&t));
            else {
                float *dst = (k ? v : m) + o->off[i];
                mattn_st_to_f32(s, dst);
                if (mattn_find_nonfinite(dst, numel(&t)) < numel(&t))
                    st = mattn_set_error(MATTN_ERR_NUMERIC, "%s: '%s' holds a non-finite value", path, name);
            }
        }
    }
    const char *ms = mattn_st_meta(f, "model_step");
    long long model_step = ms ? strtoll(ms, &end, 10) : -1;
    if (st == MATTN_OK && ms && (*end || model_step < 0))
        st = mattn_set_error(MATTN_ERR_FORMAT, "%s: metadata model_step '%s' is not a step", path, ms);
    if (st == MATTN_OK) {
        memcpy(o->m, m, o->total * sizeof(float));
        memcpy(o->v, v, o->total * sizeof(float));
        o->t = t;
        o->model_step = ms ? model_step : t;
    }
    mattn_free(m);
    mattn_free(v);
    mattn_st_close(f);
    return st;
}
