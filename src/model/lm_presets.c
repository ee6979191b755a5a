/*
 * lm_presets.c — language-model configs for applications (metaattn.h,
 * "Language-model presets"): the byte-level presets tiny | small | base that
 * `metaattn train` trains, and a MetaLMConfig JSON file loaded and validated.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "base/base.h"

mattn_status mattn_lm_config_preset(const char *name, mattn_lm_config *out) {
    if (!name || !out)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_lm_config_preset: %s is NULL", !name ? "name" : "out");
    mattn_lm_config c = mattn_lm_config_default();
    c.vocab_size = 256;
    c.position_norm = 1; /* routing must not see the sequence's length: decode cache */
    c.attn.dropout = 0.0;
    if (!strcmp(name, "tiny")) {
        c.attn.d_model = 128;
        c.attn.n_heads = 4;
        c.attn.window_size = 32;
        c.attn.controller_hidden = 64;
        c.n_layers = 4;
        c.max_seq_len = 256;
        /* a model that routes (docs/results.md §7): K/V computed once, the
         * KL on the batch's routing under a prior that reaches every expert,
         * a budget with a share for full and a floor for every expert,
         * trained as deployed; uncertainty on the epistemic scale */
        c.attn.share_qkv = 1;
        c.attn.epsilon = 1.0;
        c.attn.kl_mode = MATTN_KL_BATCH;
        c.attn.cost_target = 0.35;
        c.attn.full_share = 0.1;
        c.attn.usage_floor = 0.05;
        c.attn.hard_train = MATTN_HARD_STRAIGHT_THROUGH;
        c.attn.uncertainty = MATTN_UNCERTAINTY_MUTUAL_INFO;
    } else if (!strcmp(name, "small") || !strcmp(name, "base")) {
        mattn_config_preset(name, &c.attn);
        c.attn.dropout = 0.1;
        c.n_layers = !strcmp(name, "small") ? 6 : 8;
        c.max_seq_len = 1024;
    } else {
        return mattn_set_error(MATTN_ERR_NOT_FOUND, "unknown preset '%s' (tiny, small, base)", name);
    }
    *out = c;
    return MATTN_OK;
}

/* The whole of a regular file of at most 64 MiB, NUL-terminated, in *text
 * (mattn_free). */
static mattn_status read_text(const char *path, char **text) {
    FILE *f = fopen(path, "rb");
    if (!f) return mattn_set_error(MATTN_ERR_IO, "cannot open model config '%s': %s", path, strerror(errno));
    struct stat sb;
    mattn_status st = MATTN_OK;
    char *buf = NULL;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        st = mattn_set_error(MATTN_ERR_IO, "model config '%s' is not a regular file", path);
    else if (sb.st_size > (64 << 20))
        st = mattn_set_error(MATTN_ERR_FORMAT, "model config '%s' is larger than 64 MiB", path);
    else if (!(buf = mattn_malloc((size_t)sb.st_size + 1)))
        st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory reading '%s'", path);
    else if (fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
        st = mattn_set_error(MATTN_ERR_IO, "cannot read model config '%s'", path);
    fclose(f);
    if (st == MATTN_OK) {
        buf[sb.st_size] = 0;
        if (strlen(buf) != (size_t)sb.st_size)
            st = mattn_set_error(MATTN_ERR_FORMAT, "model config '%s' contains a NUL byte", path);
    }
    if (st != MATTN_OK) mattn_free(buf);
    else *text = buf;
    return st;
}

mattn_status mattn_lm_config_load(const char *path, mattn_lm_config *out) {
    if (!path || !out)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_lm_config_load: %s is NULL", !path ? "path" : "out");
    char *json = NULL;
    mattn_status st = read_text(path, &json);
    if (st != MATTN_OK) return st;
    if ((st = mattn_lm_config_from_json(json, out)) != MATTN_OK) {
        char why[MATTN_ERRMSG_LEN];
        snprintf(why, sizeof why, "%s", mattn_last_error());
        mattn_set_error(st, "%s: %s", path, why);
    }
    mattn_free(json);
    return st;
}
