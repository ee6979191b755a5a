/*
 * config.c — mattn_config: defaults and presets equal to the Python library's
 * MetaAttnConfig, validation naming the bad field and value, and the JSON
 * round trip (cJSON).  JSON keys are exactly the struct's field names.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "attention/attention.h"

// ----------------------------------------------------------------------------
// defaults and presets

mattn_config mattn_config_default(void) {
    mattn_config c;
    memset(&c, 0, sizeof c);
    c.d_model = 512;
    c.n_heads = 8;
    c.window_size = 64;
    c.dropout = 0.1;
    c.controller_hidden = 128;
    c.n_experts = 3;
    c.expert_costs[0] = 1.0;
    c.expert_costs[1] = 0.15;
    c.expert_costs[2] = 0.30;
    c.beta_0 = 1.0;
    c.epsilon = 0.01;
    c.elbo_weight = 1.0;
    c.sample_posterior = 1;
    c.hard_routing = 0;
    c.hard_top_k = 1;
    c.gumbel_temp = 1.0;
    c.uncertainty_threshold = 1.0;
    c.cost_lambda = 0.0;
    c.entropy_coeff = 0.0;
    c.temperature = 1.0;
    c.controller = MATTN_CONTROLLER_BAYESIAN;
    c.causal = 0;
    c.share_qkv = 0;
    c.seed = 0;
    c.cost_target = -1.0;
    c.full_share = -1.0;
    c.usage_floor = 0.0;
    c.dual_lr = 0.05;
    c.hard_train = MATTN_HARD_GUMBEL;
    c.kl_mode = MATTN_KL_TOKEN;
    c.free_bits = 0.0;
    c.uncertainty = MATTN_UNCERTAINTY_ENTROPY;
    return c;
}

static const struct {
    const char *name;
    int d_model, n_heads, window_size, controller_hidden;
} presets[] = {
    {"small", 128, 4, 32, 64},
    {"base", 512, 8, 64, 128},
    {"large", 1024, 16, 128, 256},
    {"llama_7b", 4096, 32, 256, 512},
    {"gpt2", 768, 12, 64, 192},
    {"gpt2_medium", 1024, 16, 128, 256},
};

mattn_status mattn_config_preset(const char *name, mattn_config *out) {
    if (!name || !out)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_config_preset: %s is NULL",
                               !name ? "name" : "out");
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) != 0) continue;
        *out = mattn_config_default();
        out->d_model = presets[i].d_model;
        out->n_heads = presets[i].n_heads;
        out->window_size = presets[i].window_size;
        out->controller_hidden = presets[i].controller_hidden;
        return MATTN_OK;
    }
    return mattn_set_error(MATTN_ERR_NOT_FOUND,
                           "unknown preset '%s' (expected small, base, large, llama_7b, gpt2, "
                           "gpt2_medium)", name);
}

// ----------------------------------------------------------------------------
// validation

#define BAD(...) return mattn_set_error(MATTN_ERR_INVALID_ARG, __VA_ARGS__)

/* metaattn's own fields */
static mattn_status validate_own(const mattn_config *c) {
    const int named = c->experts[0][0] != 0;
    for (int i = 0; i < c->n_experts; i++) {
        if (memchr(c->experts[i], 0, MATTN_EXPERT_NAME_LEN) == NULL) BAD("experts[%d] is not terminated", i);
        if (named != (c->experts[i][0] != 0))
            BAD("experts must name all %d experts (one per expert_costs entry) or none", c->n_experts);
    }
    if (!(c->cost_target < 0.0 || c->cost_target <= 1.0) || isnan(c->cost_target))
        BAD("cost_target must be in [0, 1] (or < 0: off), got %g", c->cost_target);
    if (!(c->full_share < 0.0 || c->full_share <= 1.0) || isnan(c->full_share))
        BAD("full_share must be in [0, 1] (or < 0: off), got %g", c->full_share);
    if (!(c->usage_floor >= 0.0 && c->usage_floor * c->n_experts <= 1.0))
        BAD("usage_floor must be in [0, 1/%d] (one share per expert), got %g", c->n_experts, c->usage_floor);
    if (!(c->dual_lr > 0.0 && isfinite(c->dual_lr))) BAD("dual_lr must be > 0, got %g", c->dual_lr);
    if (c->hard_train != MATTN_HARD_GUMBEL && c->hard_train != MATTN_HARD_STRAIGHT_THROUGH)
        BAD("hard_train must be gumbel or straight-through, got %d", (int)c->hard_train);
    if (c->kl_mode != MATTN_KL_TOKEN && c->kl_mode != MATTN_KL_BATCH)
        BAD("kl_mode must be token or batch, got %d", (int)c->kl_mode);
    if (!(c->free_bits >= 0.0 && isfinite(c->free_bits))) BAD("free_bits must be >= 0, got %g", c->free_bits);
    if (c->uncertainty != MATTN_UNCERTAINTY_ENTROPY && c->uncertainty != MATTN_UNCERTAINTY_MUTUAL_INFO)
        BAD("uncertainty must be entropy or mutual_info, got %d", (int)c->uncertainty);
    return MATTN_OK;
}

mattn_status mattn_config_validate(const mattn_config *c) {
    if (!c) BAD("config is NULL");
    if (c->d_model < 1) BAD("d_model must be >= 1, got %d", c->d_model);
    if (c->n_heads < 1) BAD("n_heads must be >= 1, got %d", c->n_heads);
    if (c->d_model % c->n_heads != 0)
        BAD("d_model (%d) must be divisible by n_heads (%d)", c->d_model, c->n_heads);
    if (c->d_model / c->n_heads > MATTN_MAX_HEAD_DIM)
        BAD("head dimension d_model / n_heads = %d / %d = %d exceeds %d; use more heads",
            c->d_model, c->n_heads, c->d_model / c->n_heads, MATTN_MAX_HEAD_DIM);
    if (c->window_size < 1) BAD("window_size must be >= 1, got %d", c->window_size);
    if (!(c->dropout >= 0.0 && c->dropout < 1.0))
        BAD("dropout must be in [0, 1), got %g", c->dropout);
    if (c->controller_hidden < 1)
        BAD("controller_hidden must be >= 1, got %d", c->controller_hidden);
    if (c->n_experts < 1 || c->n_experts > MATTN_MAX_EXPERTS)
        BAD("expert_costs must hold 1..%d costs, got %d", MATTN_MAX_EXPERTS, c->n_experts);
    for (int i = 0; i < c->n_experts; i++)
        if (!(c->expert_costs[i] >= 0.0 && c->expert_costs[i] <= 1.0))
            BAD("expert_costs[%d] must be in [0, 1], got %g", i, c->expert_costs[i]);
    if (!(c->beta_0 > 0.0 && isfinite(c->beta_0))) BAD("beta_0 must be > 0, got %g", c->beta_0);
    if (!(c->epsilon > 0.0 && isfinite(c->epsilon)))
        BAD("epsilon must be > 0, got %g", c->epsilon);
    if (!(c->elbo_weight >= 0.0 && isfinite(c->elbo_weight)))
        BAD("elbo_weight must be finite and >= 0, got %g", c->elbo_weight);
    if (c->hard_top_k < 1 || c->hard_top_k > c->n_experts)
        BAD("hard_top_k must be in [1, %d] (the number of experts), got %d", c->n_experts,
            c->hard_top_k);
    if (!(c->gumbel_temp > 0.0 && isfinite(c->gumbel_temp)))
        BAD("gumbel_temp must be > 0, got %g", c->gumbel_temp);
    if (!(c->temperature > 0.0 && isfinite(c->temperature)))
        BAD("temperature must be > 0, got %g", c->temperature);
    if (isnan(c->uncertainty_threshold))
        BAD("uncertainty_threshold must not be NaN");
    if (!isfinite(c->cost_lambda)) BAD("cost_lambda must be finite, got %g", c->cost_lambda);
    if (!isfinite(c->entropy_coeff))
        BAD("entropy_coeff must be finite, got %g", c->entropy_coeff);
    if (c->controller != MATTN_CONTROLLER_BAYESIAN && c->controller != MATTN_CONTROLLER_PRIOR_FREE)
        BAD("controller must be bayesian or prior-free, got %d", (int)c->controller);
    return validate_own(c);
}

// ----------------------------------------------------------------------------
// JSON

static mattn_status json_int(const cJSON *v, const char *key, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 2147483647.0)
        BAD("config key '%s' must be an integer", key);
    *out = (int)v->valuedouble;
    return MATTN_OK;
}

/* A number, or "inf" / "-inf" (JSON has no infinity; to_json writes these,
 * e.g. uncertainty_threshold = inf: every token takes its top-1 expert). */
static mattn_status json_num(const cJSON *v, const char *key, double *out) {
    if (cJSON_IsString(v) && (!strcmp(v->valuestring, "inf") || !strcmp(v->valuestring, "-inf"))) {
        *out = v->valuestring[0] == '-' ? -INFINITY : INFINITY;
        return MATTN_OK;
    }
    if (!cJSON_IsNumber(v)) BAD("config key '%s' must be a number (or \"inf\", \"-inf\")", key);
    *out = v->valuedouble;
    return MATTN_OK;
}

static cJSON *add_num(cJSON *o, const char *key, double v) {
    return isinf(v) ? cJSON_AddStringToObject(o, key, v > 0 ? "inf" : "-inf") : cJSON_AddNumberToObject(o, key, v);
}

static mattn_status json_bool(const cJSON *v, const char *key, int *out) {
    if (!cJSON_IsBool(v)) BAD("config key '%s' must be true or false", key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return MATTN_OK;
}

/* One of the string-valued enums: the index of v in names[0..n), or an error. */
static mattn_status json_enum(const cJSON *v, const char *key, const char *const *names, int n, int *out) {
    for (int i = 0; cJSON_IsString(v) && i < n; i++)
        if (!strcmp(v->valuestring, names[i])) {
            *out = i;
            return MATTN_OK;
        }
    char list[128] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
    BAD("config key '%s' must be one of %s, got %s", key, list, cJSON_IsString(v) ? v->valuestring : "a non-string");
}

static const char *const hard_train_names[] = {"gumbel", "straight-through"};
static const char *const kl_mode_names[] = {"token", "batch"};
static const char *const uncertainty_names[] = {"entropy", "mutual_info"};

/* metaattn's own keys (docs/design.md §1 "Configuration"). */
static mattn_status json_own(mattn_config *c, const cJSON *v) {
    const char *k = v->string;
    int e;
    mattn_status st;
#define NUM(name) if (!strcmp(k, #name)) return json_num(v, k, &c->name)
    NUM(cost_target); NUM(full_share); NUM(usage_floor); NUM(dual_lr); NUM(free_bits);
#undef NUM
#define ENUM(name, names, type)                                                   \
    if (!strcmp(k, #name)) {                                                      \
        if ((st = json_enum(v, k, names, (int)(sizeof names / sizeof *names), &e)) == MATTN_OK) \
            c->name = (type)e;                                                    \
        return st;                                                                \
    }
    ENUM(hard_train, hard_train_names, mattn_hard_train);
    ENUM(kl_mode, kl_mode_names, mattn_kl_mode);
    ENUM(uncertainty, uncertainty_names, mattn_uncertainty_kind);
#undef ENUM
    if (!strcmp(k, "experts")) {
        if (!cJSON_IsArray(v)) BAD("config key 'experts' must be an array of expert names");
        const int n = cJSON_GetArraySize(v);
        if (n < 1 || n > MATTN_MAX_EXPERTS) BAD("experts must name 1..%d experts, got %d", MATTN_MAX_EXPERTS, n);
        memset(c->experts, 0, sizeof c->experts);
        for (int i = 0; i < n; i++) {
            const cJSON *x = cJSON_GetArrayItem(v, i);
            if (!cJSON_IsString(x) || !x->valuestring[0] || strlen(x->valuestring) >= MATTN_EXPERT_NAME_LEN)
                BAD("experts[%d] must be a name of 1..%d characters", i, MATTN_EXPERT_NAME_LEN - 1);
            strcpy(c->experts[i], x->valuestring);
        }
        return MATTN_OK;
    }
    BAD("unknown config key '%s'", k);
}

/* Apply one key of a JSON object to c. */
static mattn_status json_field(mattn_config *c, const cJSON *v) {
    const char *k = v->string;
#define INT(name) if (!strcmp(k, #name)) return json_int(v, k, &c->name)
#define NUM(name) if (!strcmp(k, #name)) return json_num(v, k, &c->name)
#define BOOL(name) if (!strcmp(k, #name)) return json_bool(v, k, &c->name)
    INT(d_model); INT(n_heads); INT(window_size); NUM(dropout); INT(controller_hidden);
    NUM(beta_0); NUM(epsilon); NUM(elbo_weight); BOOL(sample_posterior); BOOL(hard_routing);
    INT(hard_top_k); NUM(gumbel_temp); NUM(uncertainty_threshold); NUM(cost_lambda);
    NUM(entropy_coeff); NUM(temperature); BOOL(causal); BOOL(share_qkv);
#undef INT
#undef NUM
#undef BOOL
    if (!strcmp(k, "expert_costs")) {
        if (!cJSON_IsArray(v)) BAD("config key 'expert_costs' must be an array of numbers");
        int n = cJSON_GetArraySize(v);
        if (n < 1 || n > MATTN_MAX_EXPERTS)
            BAD("expert_costs must hold 1..%d costs, got %d", MATTN_MAX_EXPERTS, n);
        c->n_experts = n;
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(v, i);
            if (!cJSON_IsNumber(e)) BAD("expert_costs[%d] must be a number", i);
            c->expert_costs[i] = e->valuedouble;
        }
        return MATTN_OK;
    }
    if (!strcmp(k, "controller")) {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, "bayesian"))
            c->controller = MATTN_CONTROLLER_BAYESIAN;
        else if (cJSON_IsString(v) && !strcmp(v->valuestring, "prior-free"))
            c->controller = MATTN_CONTROLLER_PRIOR_FREE;
        else
            BAD("config key 'controller' must be \"bayesian\" or \"prior-free\", got %s",
                cJSON_IsString(v) ? v->valuestring : "a non-string");
        return MATTN_OK;
    }
    if (!strcmp(k, "seed")) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != floor(v->valuedouble))
            BAD("config key 'seed' must be an integer in [0, 2^53]");
        c->seed = (uint64_t)v->valuedouble;
        return MATTN_OK;
    }
    if (!strcmp(k, "use_flash") || !strcmp(k, "backend")) return MATTN_OK; /* Python-only */
    return json_own(c, v);
}

mattn_status mattn_config_from_json(const char *json, mattn_config *out) {
    if (!json || !out) BAD("mattn_config_from_json: %s is NULL", !json ? "json" : "out");
    mattn_alloc_mark();
    const char *at = NULL; /* where parsing stopped (not cJSON_GetErrorPtr: a global, racy across threads) */
    cJSON *root = cJSON_ParseWithOpts(json, &at, 0);
    if (!root && mattn_alloc_failed()) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory parsing config JSON");
    if (!root) {
        return mattn_set_error(MATTN_ERR_FORMAT, "config is not valid JSON (near '%.20s')",
                               at ? at : "");
    }
    mattn_status st = MATTN_OK;
    if (!cJSON_IsObject(root))
        st = mattn_set_error(MATTN_ERR_FORMAT, "config JSON must be an object");
    mattn_config c = mattn_config_default();
    for (const cJSON *v = root->child; st == MATTN_OK && v; v = v->next) {
        for (const cJSON *w = root->child; w != v; w = w->next)
            if (!strcmp(w->string, v->string)) {
                st = mattn_set_error(MATTN_ERR_FORMAT, "config key '%s' appears twice", v->string);
                break;
            }
        if (st == MATTN_OK) st = json_field(&c, v);
    }
    cJSON_Delete(root);
    if (st == MATTN_OK) st = mattn_config_validate(&c);
    if (st == MATTN_OK) *out = c;
    return st;
}

mattn_status mattn_config_to_json(const mattn_config *c, char **json) {
    if (!c || !json) BAD("mattn_config_to_json: %s is NULL", !c ? "cfg" : "json");
    *json = NULL;
    cJSON *o = cJSON_CreateObject();
    /* every cJSON_Add* returns NULL when an allocation fails: check them all,
     * so no field is ever silently dropped from a file */
    int ok = o != NULL;
#define NUM(k, v) ok = ok && add_num(o, k, v)
#define BOOL(k, v) ok = ok && cJSON_AddBoolToObject(o, k, v)
    NUM("d_model", c->d_model);
    NUM("n_heads", c->n_heads);
    NUM("window_size", c->window_size);
    NUM("dropout", c->dropout);
    NUM("controller_hidden", c->controller_hidden);
    double costs[MATTN_MAX_EXPERTS];
    for (int i = 0; i < c->n_experts && i < MATTN_MAX_EXPERTS; i++) costs[i] = c->expert_costs[i];
    cJSON *arr = ok ? cJSON_CreateDoubleArray(costs, c->n_experts) : NULL;
    if (arr && !cJSON_AddItemToObject(o, "expert_costs", arr)) cJSON_Delete(arr), arr = NULL;
    ok = ok && arr;
    NUM("beta_0", c->beta_0);
    NUM("epsilon", c->epsilon);
    NUM("elbo_weight", c->elbo_weight);
    BOOL("sample_posterior", c->sample_posterior);
    BOOL("hard_routing", c->hard_routing);
    NUM("hard_top_k", c->hard_top_k);
    NUM("gumbel_temp", c->gumbel_temp);
    NUM("uncertainty_threshold", c->uncertainty_threshold);
    NUM("cost_lambda", c->cost_lambda);
    NUM("entropy_coeff", c->entropy_coeff);
    NUM("temperature", c->temperature);
    ok = ok && cJSON_AddStringToObject(o, "controller",
                                       c->controller == MATTN_CONTROLLER_PRIOR_FREE ? "prior-free" : "bayesian");
    BOOL("causal", c->causal);
    BOOL("share_qkv", c->share_qkv);
    NUM("seed", (double)c->seed);
    const mattn_config d = mattn_config_default();
    if (c->experts[0][0]) {
        const char *names[MATTN_MAX_EXPERTS];
        for (int i = 0; i < c->n_experts; i++) names[i] = c->experts[i];
        cJSON *ea = ok ? cJSON_CreateStringArray(names, c->n_experts) : NULL;
        if (ea && !cJSON_AddItemToObject(o, "experts", ea)) cJSON_Delete(ea), ea = NULL;
        ok = ok && ea;
    }
    if (c->cost_target != d.cost_target) NUM("cost_target", c->cost_target);
    if (c->full_share != d.full_share) NUM("full_share", c->full_share);
    if (c->usage_floor != d.usage_floor) NUM("usage_floor", c->usage_floor);
    if (c->dual_lr != d.dual_lr) NUM("dual_lr", c->dual_lr);
    if (c->hard_train != d.hard_train) ok = ok && cJSON_AddStringToObject(o, "hard_train", hard_train_names[c->hard_train]);
    if (c->kl_mode != d.kl_mode) ok = ok && cJSON_AddStringToObject(o, "kl_mode", kl_mode_names[c->kl_mode]);
    if (c->free_bits != d.free_bits) NUM("free_bits", c->free_bits);
    if (c->uncertainty != d.uncertainty)
        ok = ok && cJSON_AddStringToObject(o, "uncertainty", uncertainty_names[c->uncertainty]);
#undef NUM
#undef BOOL
    char *p = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    /* copy into our allocator, so mattn_free releases it whatever cJSON's hooks are */
    char *s = p ? mattn_strdup(p) : NULL;
    cJSON_free(p);
    if (!s) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory printing config JSON");
    *json = s;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// files

mattn_status mattn_config_load(const char *path, mattn_config *out) {
    if (!path || !out) BAD("mattn_config_load: %s is NULL", !path ? "path" : "out");
    FILE *f = fopen(path, "rb");
    if (!f) return mattn_set_error(MATTN_ERR_IO, "cannot open config '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    mattn_status st = MATTN_OK;
    for (;;) {
        if (cap - len < 4096) {
            if (cap > (64u << 20)) { st = mattn_set_error(MATTN_ERR_FORMAT, "config '%s' is larger than 64 MiB", path); break; }
            char *nb = mattn_realloc(buf, cap ? cap * 2 : 8192);
            if (!nb) { st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory reading '%s'", path); break; }
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) st = mattn_set_error(MATTN_ERR_IO, "cannot read config '%s'", path);
            break;
        }
    }
    fclose(f);
    if (st == MATTN_OK) {
        buf[len] = 0;
        if (strlen(buf) != len)
            st = mattn_set_error(MATTN_ERR_FORMAT, "config '%s' contains a NUL byte", path);
        else {
            st = mattn_config_from_json(buf, out);
            if (st != MATTN_OK) {
                char tmp[MATTN_ERRMSG_LEN];
                snprintf(tmp, sizeof tmp, "%s", mattn_last_error());
                mattn_set_error(st, "%s: %s", path, tmp);
            }
        }
    }
    mattn_free(buf);
    return st;
}

mattn_status mattn_config_save(const mattn_config *c, const char *path) {
    if (!path) BAD("mattn_config_save: path is NULL");
    char *s = NULL;
    mattn_status st = mattn_config_to_json(c, &s);
    if (st != MATTN_OK) return st;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = mattn_set_error(MATTN_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    } else {
        int ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, path) != 0) {
            st = mattn_set_error(MATTN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
            remove(tmp);
        }
    }
    mattn_free(s);
    return st;
}
