/*
 * tokenizer.c — the byte-level BPE tokenizer built from GGUF metadata: the
 * vocabulary and each token's bytes, the token types, the merges as a table
 * of symbol pairs, the special ids and the special tokens' texts; decode.
 * Pre-tokenization and encoding are tok_encode.c.
 *
 * Building goes through the spelled (byte-level) strings of the file: every
 * token, every merge's two halves and their concatenation is a symbol, found
 * by its spelling in a hash table that lives only during init.  A spelling
 * that is no token (a broken or pruned vocabulary) gets a virtual symbol id
 * >= n_vocab, so the merge table works on ids alone and encoding never builds
 * or compares a string.  Duplicate spellings: the last token wins (llama.cpp's
 * and Hugging Face's dictionaries); a duplicate merge keeps its first rank.
 */
#include <stdlib.h>
#include <string.h>

#include "llama/tok_impl.h"

// ----------------------------------------------------------------------------
// build-time state: symbols by spelling

typedef struct tok_view {
    const char *p;
    uint32_t len;
} tok_view;

typedef struct tok_build {
    const char *path;
    tok_view *sp;        /* [max_sym] every symbol's spelling: into the file, byte_sp or cat */
    int32_t n_sym, max_sym;
    int32_t *tab;        /* [mask + 1] symbol ids by spelling, -1 = empty */
    uint64_t mask;
    char *cat;           /* spellings A+B made by merges, one after the other */
    size_t cat_len, cat_cap;
    char byte_sp[512];   /* the spelled character of each byte (1 or 2 bytes at 2 * b) */
} tok_build;

static uint64_t str_hash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

/* The symbol spelled p[0..n), made anew when absent. */
static int32_t sym_get(tok_build *b, const char *p, uint32_t n) {
    for (uint64_t i = str_hash(p, n) & b->mask;; i = (i + 1) & b->mask) {
        const int32_t id = b->tab[i];
        if (id < 0) {
            MATTN_ASSERT(b->n_sym < b->max_sym);
            b->sp[b->n_sym] = (tok_view){p, n};
            b->tab[i] = b->n_sym;
            return b->n_sym++;
        }
        if (b->sp[id].len == n && memcmp(b->sp[id].p, p, n) == 0) return id;
    }
}

/* Token id (its spelling already in sp[id]) into the table; a later token
 * of the same spelling replaces an earlier one. */
static void sym_put_token(tok_build *b, int32_t id) {
    const tok_view s = b->sp[id];
    for (uint64_t i = str_hash(s.p, s.len) & b->mask;; i = (i + 1) & b->mask) {
        const int32_t old = b->tab[i];
        if (old < 0 || (b->sp[old].len == s.len && memcmp(b->sp[old].p, s.p, s.len) == 0)) {
            b->tab[i] = id;
            return;
        }
    }
}

/* Merge (l, r) -> out at rank; an earlier merge of the same pair stands. */
static void pair_put(mattn_tok *t, int32_t l, int32_t r, int32_t rank, int32_t out) {
    const uint64_t key = tok_pair_key(l, r);
    for (uint64_t i = tok_pair_hash(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        tok_pair *p = &t->pairs[i];
        if (p->key == key) return;
        if (p->key == TOK_PAIR_EMPTY) {
            *p = (tok_pair){key, rank, out};
            return;
        }
    }
}

// ----------------------------------------------------------------------------
// token bytes

/* A normal token's spelling mapped back to bytes into out (room for n):
 * every character must be one of bytes_to_unicode's 256, else the spelling
 * is taken as it is (Hugging Face's rule for such tokens). */
static uint32_t unspell(const char *p, uint32_t n, char *out) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < n;) {
        const unsigned c = (unsigned char)p[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
            i += 1;
        } else if (c >= 0xC2 && c <= 0xDF && i + 1 < n && ((unsigned char)p[i + 1] & 0xC0) == 0x80) {
            cp = (c & 0x1Fu) << 6 | ((unsigned char)p[i + 1] & 0x3Fu);
            i += 2;
        } else {
            break;
        }
        const int byte = tok_cp_to_byte(cp);
        if (byte < 0) break;
        out[k++] = (char)byte;
        if (i == n) return k;
    }
    memcpy(out, p, n);
    return n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Token bytes by type (tokenizer.h, "Decoding"). */
static uint32_t token_bytes(int type, const char *p, uint32_t n, char *out) {
    switch (type) {
    case MATTN_TOK_BYTE:
        if (n == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
            out[0] = (char)(hexval(p[3]) * 16 + hexval(p[4]));
            return 1;
        }
        return unspell(p, n, out);
    case MATTN_TOK_UNDEFINED:
    case MATTN_TOK_NORMAL:
        return unspell(p, n, out);
    default: /* control, user-defined, unknown, unused: their text */
        memcpy(out, p, n);
        return n;
    }
}

// ----------------------------------------------------------------------------
// reading the metadata

static mattn_status read_vocab(mattn_tok *t, tok_build *b, const mattn_gguf_file *f, const mattn_gguf_value *tokens) {
    const mattn_gguf_value *types = mattn_gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (types && types->type != MATTN_GGUF_ARRAY)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: tokenizer.ggml.token_type is %s, expected an array of %d token "
                               "types", b->path, mattn_gguf_vtype_name(types->type), t->n_vocab);
    if (types && types->n != tokens->n)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens (one "
                               "type per token)", b->path, (unsigned long long)types->n, t->n_vocab);
    size_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        mattn_gguf_str s;
        mattn_status st = mattn_gguf_arr_str(f, tokens, (uint64_t)i, &s);
        if (st != MATTN_OK) return st;
        if (s.len > UINT32_MAX / 2)
            return mattn_set_error(MATTN_ERR_FORMAT, "%s: token %d is %zu bytes long", b->path, i, s.len);
        int64_t type = MATTN_TOK_NORMAL;
        if (types && (st = mattn_gguf_arr_i64(f, types, (uint64_t)i, &type)) != MATTN_OK) return st;
        if (type < MATTN_TOK_UNDEFINED || type > MATTN_TOK_BYTE)
            return mattn_set_error(MATTN_ERR_FORMAT, "%s: token %d '%.*s' has type %lld (tokenizer.ggml.token_type: 0..6)",
                                   b->path, i, (int)(s.len < 64 ? s.len : 64), s.ptr, (long long)type);
        t->type[i] = (uint8_t)type;
        b->sp[i] = (tok_view){s.ptr, (uint32_t)s.len};
        total += s.len;
    }
    if (total > UINT32_MAX)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: the vocabulary's tokens add up to %zu bytes", b->path, total);
    b->n_sym = t->n_vocab;
    for (int32_t i = 0; i < t->n_vocab; i++) sym_put_token(b, i);
    if (!(t->bytes = mattn_malloc(total ? total : 1)))
        return mattn_set_error(MATTN_ERR_NOMEM, "%s: out of memory for the vocabulary (%zu bytes)", b->path, total);
    uint32_t at = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->off[i] = at;
        at += token_bytes(t->type[i], b->sp[i].p, b->sp[i].len, t->bytes + at);
    }
    t->off[t->n_vocab] = at;
    /* the symbol each byte starts as: its spelled character's token */
    for (int c = 0; c < 256; c++) {
        const uint32_t cp = tok_byte_to_cp((unsigned)c);
        char *sp = b->byte_sp + 2 * c;
        uint32_t n = 1;
        if (cp < 0x80) sp[0] = (char)cp;
        else {
            sp[0] = (char)(0xC0 | cp >> 6);
            sp[1] = (char)(0x80 | (cp & 0x3F));
            n = 2;
        }
        t->byte_sym[c] = sym_get(b, sp, n);
    }
    return MATTN_OK;
}

/* merges: "A B" (split at the first space after the first byte, as
 * llama.cpp does), rank = position. */
static mattn_status read_merges(mattn_tok *t, tok_build *b, const mattn_gguf_file *f, const mattn_gguf_value *merges) {
    for (uint64_t i = 0; i < merges->n; i++) {
        mattn_gguf_str s;
        mattn_status st = mattn_gguf_arr_str(f, merges, i, &s);
        if (st != MATTN_OK) return st;
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp || sp + 1 == s.ptr + s.len || s.len > UINT32_MAX / 2)
            return mattn_set_error(MATTN_ERR_FORMAT, "%s: merge %llu '%.*s' is not two tokens separated by a space",
                                   b->path, (unsigned long long)i, (int)(s.len < 64 ? s.len : 64), s.ptr);
        const uint32_t na = (uint32_t)(sp - s.ptr), nb = (uint32_t)(s.len - na - 1);
        const int32_t l = sym_get(b, s.ptr, na), r = sym_get(b, sp + 1, nb);
        MATTN_ASSERT(b->cat_len + na + nb <= b->cat_cap);
        char *ab = b->cat + b->cat_len;
        memcpy(ab, s.ptr, na);
        memcpy(ab + na, sp + 1, nb);
        const int32_t n0 = b->n_sym, out = sym_get(b, ab, na + nb);
        if (out >= n0) b->cat_len += na + nb; /* a new symbol keeps its spelling */
        pair_put(t, l, r, (int32_t)i, out);
    }
    return MATTN_OK;
}

static mattn_status read_id(const mattn_tok *t, const mattn_gguf_file *f, const char *key, int32_t *out) {
    *out = -1;
    const mattn_gguf_value *v = mattn_gguf_find_kv(f, key);
    if (!v) return MATTN_OK;
    int64_t id;
    mattn_status st = mattn_gguf_val_i64(f, v, &id);
    if (st != MATTN_OK) return st;
    if (id < 0 || id >= t->n_vocab)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s = %lld is not a token id (the vocabulary has %d tokens)",
                               mattn_gguf_path(f), key, (long long)id, t->n_vocab);
    *out = (int32_t)id;
    return MATTN_OK;
}

static mattn_status read_flag(const mattn_gguf_file *f, const char *key, int *out) {
    *out = 0;
    const mattn_gguf_value *v = mattn_gguf_find_kv(f, key);
    return v ? mattn_gguf_val_bool(f, v, out) : MATTN_OK;
}

static mattn_status read_special(mattn_tok *t, const mattn_gguf_file *f) {
    mattn_status st;
    if ((st = read_id(t, f, "tokenizer.ggml.bos_token_id", &t->bos)) != MATTN_OK ||
        (st = read_id(t, f, "tokenizer.ggml.eos_token_id", &t->eos)) != MATTN_OK ||
        (st = read_id(t, f, "tokenizer.ggml.unknown_token_id", &t->unk)) != MATTN_OK ||
        (st = read_id(t, f, "tokenizer.ggml.padding_token_id", &t->pad)) != MATTN_OK ||
        (st = read_flag(f, "tokenizer.ggml.add_bos_token", &t->add_bos)) != MATTN_OK ||
        (st = read_flag(f, "tokenizer.ggml.add_eos_token", &t->add_eos)) != MATTN_OK)
        return st;
    return MATTN_OK;
}

typedef struct { uint32_t len; int32_t id; } tok_by_len;

static int by_len_desc(const void *a, const void *b) {
    const tok_by_len *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The tokens chat mode recognises in the text, longest first. */
static mattn_status list_special(mattn_tok *t, const char *path) {
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const int ty = t->type[i];
        n += (ty == MATTN_TOK_CONTROL || ty == MATTN_TOK_USER_DEFINED || ty == MATTN_TOK_UNKNOWN) &&
             t->off[i + 1] > t->off[i];
    }
    tok_by_len *tmp = mattn_malloc(sizeof *tmp * (size_t)(n ? n : 1));
    if (!tmp || !(t->special = mattn_malloc(sizeof *t->special * (size_t)(n ? n : 1)))) {
        mattn_free(tmp);
        return mattn_set_error(MATTN_ERR_NOMEM, "%s: out of memory for %d special tokens", path, n);
    }
    n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const int ty = t->type[i];
        if ((ty == MATTN_TOK_CONTROL || ty == MATTN_TOK_USER_DEFINED || ty == MATTN_TOK_UNKNOWN) &&
            t->off[i + 1] > t->off[i])
            tmp[n++] = (tok_by_len){t->off[i + 1] - t->off[i], i};
    }
    qsort(tmp, (size_t)n, sizeof *tmp, by_len_desc);
    for (int32_t k = 0; k < n; k++) {
        t->special[k] = tmp[k].id;
        const unsigned char c0 = (unsigned char)t->bytes[t->off[tmp[k].id]];
        t->special_first[c0 >> 3] |= (uint8_t)(1u << (c0 & 7));
    }
    t->n_special = n;
    mattn_free(tmp);
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// init

/* tokenizer.ggml.model must be "gpt2" and tokenizer.ggml.pre a known type. */
static mattn_status read_kind(mattn_tok *t, const mattn_gguf_file *f) {
    const char *path = mattn_gguf_path(f);
    mattn_gguf_str s;
    mattn_status st = mattn_gguf_get_str(f, "tokenizer.ggml.model", &s);
    if (st != MATTN_OK) return st;
    if (!mattn_gguf_str_eq(s, "gpt2"))
        return mattn_set_error(MATTN_ERR_UNSUPPORTED,
                               "%s: tokenizer.ggml.model '%.*s' is not supported (only 'gpt2', byte-level BPE)", path,
                               (int)(s.len < 64 ? s.len : 64), s.ptr);
    char known[256];
    tok_pre_names(known, sizeof known);
    const mattn_gguf_value *v = mattn_gguf_find_kv(f, "tokenizer.ggml.pre");
    if (!v) return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: no tokenizer.ggml.pre (the pre-tokenizer; known: %s)",
                                   path, known);
    if ((st = mattn_gguf_val_str(f, v, &s)) != MATTN_OK) return st;
    if (!(t->pre = tok_pre_find(s.ptr, s.len)))
        return mattn_set_error(MATTN_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre '%.*s' is not supported (known: %s)",
                               path, (int)(s.len < 64 ? s.len : 64), s.ptr, known);
    return MATTN_OK;
}

/* Sizes and allocations of t and b for n tokens and m merges. */
static mattn_status alloc_build(mattn_tok *t, tok_build *b, const mattn_gguf_file *f, const mattn_gguf_value *merges) {
    const uint64_t m = merges->n;
    if ((uint64_t)t->n_vocab + 256 + 3 * m > INT32_MAX)
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %d tokens and %llu merges are too many", b->path, t->n_vocab,
                               (unsigned long long)m);
    for (uint64_t i = 0; i < m; i++) { /* room for every merge's concatenation */
        mattn_gguf_str s;
        mattn_status st = mattn_gguf_arr_str(f, merges, i, &s);
        if (st != MATTN_OK) return st;
        b->cat_cap += s.len;
    }
    b->max_sym = t->n_vocab + 256 + 3 * (int32_t)m;
    b->mask = pow2_at_least(2 * (uint64_t)b->max_sym) - 1;
    t->pair_mask = pow2_at_least(2 * m) - 1;
    t->type = mattn_malloc((size_t)t->n_vocab);
    t->off = mattn_malloc(sizeof *t->off * ((size_t)t->n_vocab + 1));
    t->pairs = mattn_malloc(sizeof *t->pairs * (t->pair_mask + 1));
    b->sp = mattn_malloc(sizeof *b->sp * (size_t)b->max_sym);
    b->tab = mattn_malloc(sizeof *b->tab * (b->mask + 1));
    b->cat = mattn_malloc(b->cat_cap ? b->cat_cap : 1);
    if (!t->type || !t->off || !t->pairs || !b->sp || !b->tab || !b->cat)
        return mattn_set_error(MATTN_ERR_NOMEM, "%s: out of memory for a vocabulary of %d tokens and %llu merges",
                               b->path, t->n_vocab, (unsigned long long)m);
    memset(b->tab, 0xff, sizeof *b->tab * (b->mask + 1));
    for (uint64_t i = 0; i <= t->pair_mask; i++) t->pairs[i].key = TOK_PAIR_EMPTY;
    return MATTN_OK;
}

mattn_status mattn_tok_init_gguf(const mattn_gguf_file *f, mattn_tok **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_init_gguf: NULL out");
    *out = NULL;
    if (!f) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_init_gguf: NULL file");
    mattn_tok *t = mattn_calloc(1, sizeof *t);
    if (!t) return mattn_set_error(MATTN_ERR_NOMEM, "%s: out of memory for a tokenizer", mattn_gguf_path(f));
    t->bos = t->eos = t->unk = t->pad = -1;
    tok_build b = {.path = mattn_gguf_path(f)};
    const mattn_gguf_value *tokens, *merges;
    mattn_status st = read_kind(t, f);
    if (st == MATTN_OK) st = mattn_gguf_get_arr(f, "tokenizer.ggml.tokens", MATTN_GGUF_STRING, &tokens);
    if (st == MATTN_OK) st = mattn_gguf_get_arr(f, "tokenizer.ggml.merges", MATTN_GGUF_STRING, &merges);
    if (st == MATTN_OK && (tokens->n == 0 || tokens->n > INT32_MAX / 2))
        st = mattn_set_error(MATTN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu tokens (1 to %d allowed)", b.path,
                             (unsigned long long)tokens->n, INT32_MAX / 2);
    if (st == MATTN_OK) {
        t->n_vocab = (int32_t)tokens->n;
        st = alloc_build(t, &b, f, merges);
    }
    if (st == MATTN_OK) st = read_vocab(t, &b, f, tokens);
    if (st == MATTN_OK) st = read_merges(t, &b, f, merges);
    if (st == MATTN_OK) st = read_special(t, f);
    if (st == MATTN_OK) st = list_special(t, b.path);
    if (st == MATTN_OK) st = tok_regex_init(t);
    mattn_free(b.sp);
    mattn_free(b.tab);
    mattn_free(b.cat);
    if (st != MATTN_OK) {
        mattn_tok_free(t);
        return st;
    }
    *out = t;
    return MATTN_OK;
}

void mattn_tok_free(mattn_tok *t) {
    if (!t) return;
    tok_regex_free(t);
    mattn_free(t->type);
    mattn_free(t->off);
    mattn_free(t->bytes);
    mattn_free(t->pairs);
    mattn_free(t->special);
    mattn_free(t);
}

// ----------------------------------------------------------------------------
// accessors, decode

int32_t mattn_tok_n_vocab(const mattn_tok *t) { return t ? t->n_vocab : 0; }
int32_t mattn_tok_bos(const mattn_tok *t) { return t ? t->bos : -1; }
int32_t mattn_tok_eos(const mattn_tok *t) { return t ? t->eos : -1; }
int32_t mattn_tok_unk(const mattn_tok *t) { return t ? t->unk : -1; }
int32_t mattn_tok_pad(const mattn_tok *t) { return t ? t->pad : -1; }
int mattn_tok_add_bos(const mattn_tok *t) { return t ? t->add_bos : 0; }
int mattn_tok_add_eos(const mattn_tok *t) { return t ? t->add_eos : 0; }
const char *mattn_tok_pre_name(const mattn_tok *t) { return t ? t->pre->name : NULL; }
int mattn_tok_jit(const mattn_tok *t) { return t ? t->jit : 0; }

int mattn_tok_token_type(const mattn_tok *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab ? t->type[id] : -1;
}

int32_t mattn_tok_find_special(const mattn_tok *t, const char *text, size_t len) {
    if (!t || (!text && len)) return -1;
    for (int32_t k = 0; k < t->n_special; k++) {
        const int32_t id = t->special[k];
        if (t->off[id + 1] - t->off[id] == len && memcmp(t->bytes + t->off[id], text, len) == 0) return id;
    }
    return -1;
}

/* id's bytes as decode emits them (id in range). */
static size_t piece_of(const mattn_tok *t, int32_t id, int flags, const char **p) {
    const int ty = t->type[id];
    *p = t->bytes + t->off[id];
    if (!(flags & MATTN_TOK_SPECIAL) && (ty == MATTN_TOK_CONTROL || ty == MATTN_TOK_UNKNOWN || ty == MATTN_TOK_UNUSED))
        return 0;
    return t->off[id + 1] - t->off[id];
}

mattn_status mattn_tok_piece(const mattn_tok *t, int32_t id, int flags, const char **bytes, size_t *len) {
    if (!t || !bytes || !len) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_piece: NULL argument");
    if (id < 0 || id >= t->n_vocab)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_piece: token id %d is out of range (%d tokens)", id,
                               t->n_vocab);
    *len = piece_of(t, id, flags, bytes);
    return MATTN_OK;
}

mattn_status mattn_tok_decode(const mattn_tok *t, const int32_t *ids, size_t n, int flags, char *out, size_t cap,
                              size_t *len_out) {
    if (!t || (!ids && n) || !len_out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_decode: NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_decode: ids[%zu] = %d is out of range (%d tokens)",
                                   i, ids[i], t->n_vocab);
        const char *p;
        total += piece_of(t, ids[i], flags, &p);
    }
    *len_out = total;
    if (!out) return MATTN_OK;
    size_t at = 0;
    for (size_t i = 0; i < n && at < cap; i++) {
        const char *p;
        size_t k = piece_of(t, ids[i], flags, &p);
        if (k > cap - at) k = cap - at;
        memcpy(out + at, p, k);
        at += k;
    }
    if (total < cap) out[total] = '\0';
    if (total > cap)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_decode: %zu bytes needed, room for %zu", total, cap);
    return MATTN_OK;
}
