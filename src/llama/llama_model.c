/*
 * llama_model.c — a LLaMA-family model from a GGUF file: the architecture
 * check, the hyper-parameters from the llama.* keys, the tensor table
 * checked against them (names and shapes, llama.h), the norm weights copied
 * to float (a few KB); every matrix stays where it is in the mapping, in
 * its own type.  What the reader and this file refuse, they refuse by name.
 */
#include <stdio.h>
#include <string.h>

#include "llama/llama.h"
#include "llama/tokenizer.h"

// ----------------------------------------------------------------------------
// hyper-parameters

/* The thread's last error (set by a GGUF accessor) again as st, with the
 * accessor's message. */
static mattn_status keep_error(mattn_status st) { return mattn_set_error(st, "%s", mattn_last_error()); }

/* A required integer key in [lo, hi]. */
static mattn_status get_int(const mattn_gguf_file *f, const char *arch, const char *key, int lo, int hi, int *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    uint32_t v;
    mattn_status st = mattn_gguf_get_u32(f, k, &v);
    if (st == MATTN_ERR_NOT_FOUND)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: the key %s is missing", mattn_gguf_path(f), k);
    if (st != MATTN_OK) return keep_error(st);
    if (v < (uint32_t)lo || v > (uint32_t)hi)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s = %u is outside [%d, %d]", mattn_gguf_path(f), k, v, lo,
                               hi);
    *out = (int)v;
    return MATTN_OK;
}

/* An optional integer key: *out = dflt when absent, *present says which. */
static mattn_status opt_int(const mattn_gguf_file *f, const char *arch, const char *key, int lo, int hi, int dflt,
                            int *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!mattn_gguf_find_kv(f, k)) {
        *out = dflt;
        return MATTN_OK;
    }
    return get_int(f, arch, key, lo, hi, out);
}

/* An optional float key (> 0 and finite when present). */
static mattn_status opt_float(const mattn_gguf_file *f, const char *arch, const char *key, float dflt, int required,
                              float *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!mattn_gguf_find_kv(f, k)) {
        if (required) return mattn_set_error(MATTN_ERR_FORMAT, "%s: the key %s is missing", mattn_gguf_path(f), k);
        *out = dflt;
        return MATTN_OK;
    }
    float v;
    mattn_status st = mattn_gguf_get_f32(f, k, &v);
    if (st != MATTN_OK) return keep_error(st);
    if (!(v > 0.0f) || v == INFINITY)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s = %g must be positive and finite", mattn_gguf_path(f), k,
                               (double)v);
    *out = v;
    return MATTN_OK;
}

/* What this implementation does not do, refused by name rather than run
 * wrongly: RoPE scaling, partial rotary dimensions, key/value widths other
 * than the head dimension, experts. */
static mattn_status check_unsupported(const mattn_gguf_file *f, const char *arch, int head_dim) {
    const char *path = mattn_gguf_path(f);
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    if (mattn_gguf_find_kv(f, k)) {
        mattn_gguf_str s;
        mattn_status st = mattn_gguf_get_str(f, k, &s);
        if (st != MATTN_OK) return keep_error(st);
        if (!mattn_gguf_str_eq(s, "none"))
            return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: %s = '%.*s': RoPE scaling is not supported (only "
                                   "'none')", path, k, (int)s.len, s.ptr);
    }
    const char *factors[] = {"rope.scaling.factor", "rope.scale_linear"};
    for (int i = 0; i < 2; i++) {
        snprintf(k, sizeof k, "%s.%s", arch, factors[i]);
        if (!mattn_gguf_find_kv(f, k)) continue;
        float v;
        mattn_status st = mattn_gguf_get_f32(f, k, &v);
        if (st != MATTN_OK) return keep_error(st);
        if (v != 0.0f && v != 1.0f)
            return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: %s = %g: RoPE scaling is not supported", path, k,
                                   (double)v);
    }
    const char *widths[] = {"rope.dimension_count", "attention.key_length", "attention.value_length"};
    for (int i = 0; i < 3; i++) {
        int v;
        mattn_status st = opt_int(f, arch, widths[i], 1, 1 << 20, head_dim, &v);
        if (st != MATTN_OK) return st;
        if (v != head_dim)
            return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: %s.%s = %d differs from the head dimension %d "
                                   "(embedding_length / head_count): not supported", path, arch, widths[i], v,
                                   head_dim);
    }
    int experts;
    mattn_status st = opt_int(f, arch, "expert_count", 0, 1 << 20, 0, &experts);
    if (st != MATTN_OK) return st;
    if (experts > 0)
        return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: %s.expert_count = %d: mixture-of-experts blocks are not "
                               "supported", path, arch, experts);
    for (int64_t i = 0; i < mattn_gguf_n_tensors(f); i++) {
        const mattn_gguf_tensor *t = mattn_gguf_tensor_at(f, i);
        const mattn_gguf_str n = t->name;
        const int bias = n.len > 5 && memcmp(n.ptr + n.len - 5, ".bias", 5) == 0;
        if (bias || mattn_gguf_str_eq(n, "rope_freqs.weight"))
            return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: tensor '%.*s': %s are not supported", path,
                                   (int)n.len, n.ptr, bias ? "biases" : "RoPE frequency factors");
    }
    return MATTN_OK;
}

static mattn_status read_hparams(const mattn_gguf_file *f, const char *arch, mattn_llama_info *hp) {
    mattn_status st;
    if ((st = get_int(f, arch, "block_count", 1, 1 << 12, &hp->n_layers)) ||
        (st = get_int(f, arch, "embedding_length", 1, 1 << 16, &hp->d_model)) ||
        (st = get_int(f, arch, "attention.head_count", 1, 1 << 12, &hp->n_heads)) ||
        (st = opt_int(f, arch, "attention.head_count_kv", 1, 1 << 12, hp->n_heads, &hp->n_kv_heads)) ||
        (st = get_int(f, arch, "feed_forward_length", 1, 1 << 20, &hp->ffn_dim)) ||
        (st = get_int(f, arch, "context_length", 1, 1 << 24, &hp->context_length)) ||
        (st = opt_float(f, arch, "attention.layer_norm_rms_epsilon", 0.0f, 1, &hp->rms_eps)) ||
        (st = opt_float(f, arch, "rope.freq_base", 10000.0f, 0, &hp->rope_base)))
        return st;
    const char *path = mattn_gguf_path(f);
    if (hp->d_model % hp->n_heads)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s.embedding_length %d is not a multiple of "
                               "attention.head_count %d", path, arch, hp->d_model, hp->n_heads);
    hp->head_dim = hp->d_model / hp->n_heads;
    if (hp->head_dim % 2 || hp->head_dim > MATTN_MAX_HEAD_DIM)
        return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: head dimension %d (embedding_length / head_count): "
                               "must be even and at most %d", path, hp->head_dim, MATTN_MAX_HEAD_DIM);
    if (hp->n_kv_heads > hp->n_heads || hp->n_heads % hp->n_kv_heads)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s.attention.head_count_kv %d does not divide head_count %d",
                               path, arch, hp->n_kv_heads, hp->n_heads);
    return check_unsupported(f, arch, hp->head_dim);
}

// ----------------------------------------------------------------------------
// tensors

/* Tensor `name` of shape (ne0) (ne1 = 0) or (ne0, ne1), ggml order. */
static mattn_status need(const mattn_gguf_file *f, const char *name, int64_t ne0, int64_t ne1,
                         const mattn_gguf_tensor **out) {
    const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, name);
    if (!t) return mattn_set_error(MATTN_ERR_FORMAT, "%s: tensor '%s' is missing", mattn_gguf_path(f), name);
    const int ok = t->n_dims <= (ne1 ? 2 : 1) && t->ne[0] == ne0 && t->ne[1] == (ne1 ? ne1 : 1);
    if (!ok) {
        char got[96] = "", want[64];
        for (int d = 0; d < t->n_dims; d++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
        }
        if (ne1) snprintf(want, sizeof want, "%lld, %lld", (long long)ne0, (long long)ne1);
        else snprintf(want, sizeof want, "%lld", (long long)ne0);
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: tensor '%s' has shape [%s] (ggml order), expected [%s]",
                               mattn_gguf_path(f), name, got, want);
    }
    *out = t;
    return MATTN_OK;
}

/* A norm weight as float into dst (D). */
static mattn_status norm(const mattn_gguf_file *f, const char *name, int D, float *dst) {
    const mattn_gguf_tensor *t;
    mattn_status st = need(f, name, D, 0, &t);
    if (st != MATTN_OK) return st;
    if (mattn_gguf_dequant_ref(t->type, t->data, dst, D) != MATTN_OK) /* a quantised norm of odd length */
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: tensor '%s': %s", mattn_gguf_path(f), name, mattn_last_error());
    return MATTN_OK;
}

static mattn_status load_tensors(mattn_llama *m) {
    const mattn_gguf_file *f = m->f;
    mattn_llama_info *hp = &m->hp;
    const int D = hp->d_model, Dq = hp->n_heads * hp->head_dim, Dkv = hp->n_kv_heads * hp->head_dim;
    const int F = hp->ffn_dim, L = hp->n_layers;
    const mattn_gguf_tensor *te = mattn_gguf_find_tensor(f, "token_embd.weight");
    if (!te) return mattn_set_error(MATTN_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", mattn_gguf_path(f));
    if (te->ne[1] < 1 || te->ne[1] > INT32_MAX)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: token_embd.weight has %lld rows", mattn_gguf_path(f),
                               (long long)te->ne[1]);
    hp->vocab_size = (int)te->ne[1];
    int vocab_key;
    mattn_status st = opt_int(f, "llama", "vocab_size", 1, INT32_MAX, hp->vocab_size, &vocab_key);
    if (st != MATTN_OK) return st;
    if (vocab_key != hp->vocab_size)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: llama.vocab_size = %d but token_embd.weight has %d rows",
                               mattn_gguf_path(f), vocab_key, hp->vocab_size);
    if ((st = need(f, "token_embd.weight", D, hp->vocab_size, &m->tok_embd))) return st;
    /* the tokenizer, built on first use, must give ids of this embedding */
    const mattn_gguf_value *tokens = mattn_gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (tokens && tokens->type == MATTN_GGUF_ARRAY && tokens->n != (uint64_t)hp->vocab_size)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu tokens but token_embd.weight "
                               "has %d rows (one per token)", mattn_gguf_path(f), (unsigned long long)tokens->n,
                               hp->vocab_size);
    m->output = mattn_gguf_find_tensor(f, "output.weight");
    hp->tied_output = m->output == NULL;
    if (m->output && (st = need(f, "output.weight", D, hp->vocab_size, &m->output))) return st;
    if (!m->output) m->output = m->tok_embd;

    m->layers = mattn_calloc((size_t)L, sizeof *m->layers);
    m->norms = mattn_malloc(sizeof(float) * (size_t)(2 * L + 1) * D);
    if (!m->layers || !m->norms) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for the model's tables");
    hp->n_params = te->n_elements + (hp->tied_output ? 0 : m->output->n_elements);
    hp->weight_bytes = m->output->nbytes; /* the head, tied or not */
    for (int l = 0; l < L; l++) {
        mattn_llama_layer *ly = &m->layers[l];
        char name[96];
        struct { const char *suffix; int64_t ne0, ne1; const mattn_gguf_tensor **t; } mats[] = {
            {"attn_q", D, Dq, &ly->wq},       {"attn_k", D, Dkv, &ly->wk},   {"attn_v", D, Dkv, &ly->wv},
            {"attn_output", Dq, D, &ly->wo}, {"ffn_gate", D, F, &ly->w_gate}, {"ffn_up", D, F, &ly->w_up},
            {"ffn_down", F, D, &ly->w_down},
        };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, mats[i].suffix);
            if ((st = need(f, name, mats[i].ne0, mats[i].ne1, mats[i].t))) return st;
            hp->n_params += (*mats[i].t)->n_elements;
            hp->weight_bytes += (*mats[i].t)->nbytes;
        }
        float *an = m->norms + (size_t)2 * l * D, *fn = an + D;
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((st = norm(f, name, D, an))) return st;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((st = norm(f, name, D, fn))) return st;
        ly->attn_norm = an, ly->ffn_norm = fn;
        hp->n_params += 2 * (int64_t)D;
    }
    float *on = m->norms + (size_t)2 * L * D;
    if ((st = norm(f, "output_norm.weight", D, on))) return st;
    m->out_norm = on;
    hp->n_params += D;
    if (mattn_find_nonfinite(m->norms, (size_t)(2 * L + 1) * D) < (size_t)(2 * L + 1) * D)
        return mattn_set_error(MATTN_ERR_NUMERIC, "%s: a norm weight is not finite", mattn_gguf_path(f));
    m->kmax = D > F ? D : F;
    if (Dq > m->kmax) m->kmax = Dq;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// the handle

void mattn_llama_free(mattn_llama *m) {
    if (!m) return;
    mattn_tok_free(m->tok);
    mattn_llama_routing_free(m->routing);
    mattn_gguf_close(m->f);
    mattn_free(m->layers);
    mattn_free(m->norms);
    mattn_free(m);
}

mattn_status mattn_llama_open(const char *path, mattn_llama **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_open: out is NULL");
    *out = NULL;
    if (!path) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_open: path is NULL");
    mattn_llama *m = mattn_calloc(1, sizeof *m);
    if (!m) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for a model handle");
    char err[MATTN_ERRMSG_LEN];
    mattn_status st = mattn_gguf_open(path, &m->f, err, sizeof err);
    if (st != MATTN_OK) {
        mattn_llama_free(m);
        return mattn_set_error(st, "%s", err);
    }
    mattn_gguf_str arch;
    st = mattn_gguf_get_str(m->f, "general.architecture", &arch);
    if (st == MATTN_ERR_NOT_FOUND) st = mattn_set_error(MATTN_ERR_FORMAT, "%s: general.architecture is missing", path);
    else if (st != MATTN_OK) st = keep_error(st);
    else if (!mattn_gguf_str_eq(arch, "llama"))
        st = mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: general.architecture is '%.*s': only 'llama' is supported",
                             path, (int)arch.len, arch.ptr);
    if (st == MATTN_OK) st = read_hparams(m->f, "llama", &m->hp);
    if (st == MATTN_OK) st = load_tensors(m);
    if (st != MATTN_OK) {
        mattn_llama_free(m); /* the message is in the thread's buffer */
        return st;
    }
    *out = m;
    return MATTN_OK;
}

const char *mattn_llama_errmsg(const mattn_llama *m) { return m ? m->errmsg : "model is NULL"; }

mattn_status mattn_llama_set_activations(mattn_llama *m, mattn_llama_act act) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_set_activations: model is NULL");
    if (act != MATTN_LLAMA_ACT_Q8 && act != MATTN_LLAMA_ACT_F32)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_set_activations: act = %d is neither "
                         "MATTN_LLAMA_ACT_Q8 (0) nor MATTN_LLAMA_ACT_F32 (1)", (int)act);
    m->f32x = act == MATTN_LLAMA_ACT_F32;
    return MATTN_OK;
}

mattn_status mattn_llama_get_info(const mattn_llama *m, mattn_llama_info *out) {
    if (!m || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_get_info: %s is NULL",
                                           m ? "out" : "the model");
    *out = m->hp;
    return MATTN_OK;
}
