/*
 * llama_tokenize.c — the public face of the model's tokenizer
 * (tokenizer.h): byte-level BPE built from the GGUF metadata on first use,
 * so that models without a tokenizer (test fixtures) still open.
 */
#include <string.h>

#include "llama/llama.h"
#include "llama/tokenizer.h"

/* The tokenizer, built on the first call. */
static mattn_status tok_of(mattn_llama *m, mattn_tok **t) {
    if (!m->tok) {
        mattn_status st = mattn_tok_init_gguf(m->f, &m->tok);
        if (st != MATTN_OK) return LLAMA_ERR(m, st, "tokenizer: %s", mattn_last_error());
    }
    *t = m->tok;
    return MATTN_OK;
}

mattn_status mattn_llama_tokenize(mattn_llama *m, const char *text, size_t len, int special, int32_t *ids, size_t cap,
                                  size_t *n_out) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_tokenize: m is NULL");
    if (!n_out || (!text && len))
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_tokenize: %s is NULL", !n_out ? "n_out" : "text");
    mattn_tok *t = NULL;
    mattn_status st = tok_of(m, &t);
    if (st != MATTN_OK) return st;
    st = mattn_tok_encode(t, text, len, special ? MATTN_TOK_SPECIAL : 0, ids, cap, n_out);
    return st == MATTN_OK ? st : LLAMA_ERR(m, st, "%s", mattn_last_error());
}

mattn_status mattn_llama_token_piece(mattn_llama *m, int32_t id, int special, const char **bytes, size_t *len) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_token_piece: m is NULL");
    if (!bytes || !len)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_token_piece: %s is NULL", !bytes ? "bytes" : "len");
    mattn_tok *t = NULL;
    mattn_status st = tok_of(m, &t);
    if (st != MATTN_OK) return st;
    st = mattn_tok_piece(t, id, special ? MATTN_TOK_SPECIAL : 0, bytes, len);
    return st == MATTN_OK ? st : LLAMA_ERR(m, st, "%s", mattn_last_error());
}

mattn_status mattn_llama_special_tokens(mattn_llama *m, int32_t *bos, int32_t *eos) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_special_tokens: m is NULL");
    mattn_tok *t = NULL;
    mattn_status st = tok_of(m, &t);
    if (st != MATTN_OK) return st;
    if (bos) *bos = mattn_tok_bos(t);
    if (eos) *eos = mattn_tok_eos(t);
    return MATTN_OK;
}

mattn_status mattn_llama_find_token(mattn_llama *m, const char *text, int32_t *id) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_find_token: m is NULL");
    if (!text || !id)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_find_token: %s is NULL", !text ? "text" : "id");
    mattn_tok *t = NULL;
    mattn_status st = tok_of(m, &t);
    if (st != MATTN_OK) return st;
    *id = mattn_tok_find_special(t, text, strlen(text));
    return MATTN_OK;
}

mattn_status mattn_llama_chat_template(mattn_llama *m, const char **text, size_t *len) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_llama_chat_template: m is NULL");
    if (!text || !len)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_llama_chat_template: %s is NULL", !text ? "text" : "len");
    mattn_gguf_str s;
    const mattn_status st = mattn_gguf_get_str(m->f, "tokenizer.chat_template", &s);
    if (st != MATTN_OK) {
        *text = NULL, *len = 0;
        return LLAMA_ERR(m, st, "%s", mattn_last_error());
    }
    *text = s.ptr, *len = s.len;
    return MATTN_OK;
}
