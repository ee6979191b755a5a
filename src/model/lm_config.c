/*
 * lm_config.c — the language model's configuration (the Python library's
 * MetaLMConfig): defaults, validation, JSON with the attention config
 * nested under "attn".
 */
#include <math.h>
#include <string.h>

#include <cJSON.h>

#include "model/model.h"

mattn_lm_config mattn_lm_config_default(void) {
    mattn_lm_config c;
    memset(&c, 0, sizeof c);
    c.attn = mattn_config_default();
    c.vocab_size = 50257;
    c.n_layers = 6;
    c.max_seq_len = 1024;
    c.ffn_multiplier = 4;
    c.tie_weights = 1;
    return c;
}

#define BAD(...) return mattn_set_error(MATTN_ERR_INVALID_ARG, __VA_ARGS__)

mattn_status mattn_lm_config_validate(const mattn_lm_config *c) {
    if (!c) BAD("lm config is NULL");
    mattn_status st = mattn_config_validate(&c->attn);
    if (st != MATTN_OK) return st;
    if (c->vocab_size < 1) BAD("vocab_size must be >= 1, got %d", c->vocab_size);
    if (c->n_layers < 1 || c->n_layers > 1024) BAD("n_layers must be in [1, 1024], got %d", c->n_layers);
    if (c->max_seq_len < 1) BAD("max_seq_len must be >= 1, got %d", c->max_seq_len);
    if (c->ffn_multiplier < 1 || c->ffn_multiplier > 64) BAD("ffn_multiplier must be in [1, 64], got %d", c->ffn_multiplier);
    if (!c->tie_weights) BAD("tie_weights = false is not supported (the head is tied to tok_emb)");
    if ((double)c->vocab_size * c->attn.d_model > 2e9 || (double)c->max_seq_len * c->attn.d_model > 2e9)
        BAD("vocab_size or max_seq_len too large for d_model %d", c->attn.d_model);
    return MATTN_OK;
}

static int json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9) return 0;
    *out = (int)v->valuedouble;
    return 1;
}

mattn_status mattn_lm_config_from_json(const char *json, mattn_lm_config *out) {
    if (!json || !out) BAD("mattn_lm_config_from_json: %s is NULL", !json ? "json" : "out");
    mattn_alloc_mark();
    cJSON *root = cJSON_Parse(json);
    if (!root && mattn_alloc_failed()) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory parsing model config JSON");
    if (!root) return mattn_set_error(MATTN_ERR_FORMAT, "model config is not valid JSON");
    mattn_lm_config c = mattn_lm_config_default();
    mattn_status st = MATTN_OK;
    if (!cJSON_IsObject(root)) st = mattn_set_error(MATTN_ERR_FORMAT, "model config JSON must be an object");
    const cJSON *v, *obj = st == MATTN_OK ? root : NULL;
    cJSON_ArrayForEach(v, obj) {
        const char *k = v->string;
        int *dst = !strcmp(k, "vocab_size") ? &c.vocab_size : !strcmp(k, "n_layers") ? &c.n_layers
                 : !strcmp(k, "max_seq_len") ? &c.max_seq_len : !strcmp(k, "ffn_multiplier") ? &c.ffn_multiplier : NULL;
        if (dst) {
            if (!json_int(v, dst)) st = mattn_set_error(MATTN_ERR_INVALID_ARG, "model config key '%s' must be an integer", k);
        } else if (!strcmp(k, "tie_weights")) {
            if (!cJSON_IsBool(v)) st = mattn_set_error(MATTN_ERR_INVALID_ARG, "model config key 'tie_weights' must be true or false");
            else c.tie_weights = cJSON_IsTrue(v);
        } else if (!strcmp(k, "position_norm")) {
            if (cJSON_IsString(v) && !strcmp(v->valuestring, "max_seq_len")) c.position_norm = MATTN_POSITION_NORM_MAX_SEQ_LEN;
            else if (cJSON_IsString(v) && !strcmp(v->valuestring, "length")) c.position_norm = MATTN_POSITION_NORM_LENGTH;
            else st = mattn_set_error(MATTN_ERR_INVALID_ARG, "model config key 'position_norm' must be \"length\" or \"max_seq_len\"");
        } else if (!strcmp(k, "attn")) {
            char *s = cJSON_IsObject(v) ? cJSON_PrintUnformatted(v) : NULL;
            if (!cJSON_IsObject(v)) st = mattn_set_error(MATTN_ERR_FORMAT, "model config key 'attn' must be an object");
            else if (!s) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory reading model config key 'attn'");
            else st = mattn_config_from_json(s, &c.attn);
            cJSON_free(s);
        } else {
            st = mattn_set_error(MATTN_ERR_INVALID_ARG, "unknown model config key '%s'", k);
        }
        if (st != MATTN_OK) break;
    }
    cJSON_Delete(root);
    if (st == MATTN_OK) {
        c.attn.causal = 1;
        st = mattn_lm_config_validate(&c);
    }
    if (st == MATTN_OK) *out = c;
    return st;
}

mattn_status mattn_lm_config_to_json(const mattn_lm_config *c, char **json) {
    if (!c || !json) BAD("mattn_lm_config_to_json: %s is NULL", !c ? "cfg" : "json");
    *json = NULL;
    char *attn = NULL;
    mattn_status st = mattn_config_to_json(&c->attn, &attn);
    if (st != MATTN_OK) return st;
    cJSON *o = cJSON_CreateObject(), *a = cJSON_Parse(attn);
    mattn_free(attn);
    int ok = o && a && cJSON_AddItemToObject(o, "attn", a);  /* every cJSON_Add* checked, as in config.c */
    if (!ok) cJSON_Delete(a);
    ok = ok && cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    ok = ok && cJSON_AddNumberToObject(o, "n_layers", c->n_layers);
    ok = ok && cJSON_AddNumberToObject(o, "max_seq_len", c->max_seq_len);
    ok = ok && cJSON_AddNumberToObject(o, "ffn_multiplier", c->ffn_multiplier);
    ok = ok && cJSON_AddBoolToObject(o, "tie_weights", c->tie_weights);
    ok = ok && cJSON_AddStringToObject(o, "position_norm", c->position_norm ? "max_seq_len" : "length");
    char *p = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    *json = p ? mattn_strdup(p) : NULL;
    cJSON_free(p);
    return *json ? MATTN_OK : mattn_set_error(MATTN_ERR_NOMEM, "out of memory printing model config JSON");
}
