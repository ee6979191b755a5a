/*
 * tok_encode.c — encoding: the pre-tokenizer table and its PCRE2 regexes,
 * special tokens in chat mode, the regex cascade, byte-level BPE within each
 * piece (tokenizer.h says what each step does).
 *
 * The regexes are llama.cpp's (src/llama-vocab.cpp, llm_tokenizer_bpe: the
 * regex_exprs of each LLAMA_VOCAB_PRE_TYPE_*), with one change: llama.cpp
 * spells GPT-2's pattern without its last alternative "|\s+", which its
 * hand-written GPT-2 splitter (unicode.cpp) handles anyway; a regex engine
 * needs it, and Hugging Face's ByteLevel pre-tokenizer has it.  Adding a pre
 * type is one entry of PRE_TYPES.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama/tok_impl.h"

// ----------------------------------------------------------------------------
// pre-tokenizers

#define RE_DIGIT "\\p{N}"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static const tok_pre_type PRE_TYPES[] = {
    {"gpt-2", 1, {RE_GPT2}},
    /* SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel;
     * llama.cpp: LLAMA_VOCAB_PRE_TYPE_SMOLLM (with starcoder, refact, ...) */
    {"smollm", 2, {RE_DIGIT, RE_GPT2}},
};
#define N_PRE_TYPES (sizeof PRE_TYPES / sizeof PRE_TYPES[0])

const tok_pre_type *tok_pre_find(const char *name, size_t len) {
    for (size_t i = 0; i < N_PRE_TYPES; i++)
        if (strlen(PRE_TYPES[i].name) == len && memcmp(PRE_TYPES[i].name, name, len) == 0) return &PRE_TYPES[i];
    return NULL;
}

void tok_pre_names(char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_PRE_TYPES && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", PRE_TYPES[i].name);
}

static void *pcre_alloc(PCRE2_SIZE n, void *data) {
    (void)data;
    return mattn_malloc(n);
}
static void pcre_release(void *p, void *data) {
    (void)data;
    mattn_free(p);
}

/* Compile the pre type's regexes: UTF, Unicode properties for \s \p{..},
 * and PCRE2_MATCH_INVALID_UTF (invalid UTF-8 in the subject matches nothing
 * instead of failing the match).  JIT when the build has it; the
 * interpreter otherwise (same matches). */
mattn_status tok_regex_init(mattn_tok *t) {
    pcre2_compile_context *cc = NULL;
    if (!(t->gctx = pcre2_general_context_create(pcre_alloc, pcre_release, NULL)) ||
        !(cc = pcre2_compile_context_create(t->gctx)))
        return mattn_set_error(MATTN_ERR_NOMEM, "pre-tokenizer '%s': out of memory for PCRE2 contexts", t->pre->name);
    t->jit = 1;
    for (int i = 0; i < t->pre->n_regex; i++) {
        int err;
        PCRE2_SIZE at;
        t->re[i] = pcre2_compile((PCRE2_SPTR)t->pre->regex[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, cc);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            pcre2_compile_context_free(cc);
            if (err == PCRE2_ERROR_HEAP_FAILED)
                return mattn_set_error(MATTN_ERR_NOMEM, "pre-tokenizer '%s': out of memory compiling regex %d",
                                       t->pre->name, i);
            return mattn_set_error(MATTN_ERR_FORMAT, "pre-tokenizer '%s': regex %d at offset %zu: %s",
                                   t->pre->name, i, (size_t)at, (const char *)msg);
        }
        if (pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE) != 0) t->jit = 0; /* interpreted */
    }
    pcre2_compile_context_free(cc);
    return MATTN_OK;
}

void tok_regex_free(mattn_tok *t) {
    for (int i = 0; i < TOK_MAX_REGEX; i++) pcre2_code_free(t->re[i]);
    pcre2_general_context_free(t->gctx);
}

// ----------------------------------------------------------------------------
// one encode call's state

typedef struct tok_sym {
    int32_t id;    /* -1: merged into its left neighbour */
    int32_t prev, next;  /* -1: none; symbol i starts at byte i of the piece */
} tok_sym;

typedef struct tok_bigram {
    int32_t rank, left, right;
    int32_t lid, rid, out;  /* the ids when queued (a changed symbol makes it stale), the merge's result */
} tok_bigram;

#define TOK_SMALL 64 /* pieces up to this many bytes use the stack */

typedef struct tok_run {
    const mattn_tok *t;
    const unsigned char *text;
    pcre2_match_data *md;
    tok_sym *sym;          /* [cap_sym] */
    tok_bigram *heap;      /* [3 * cap_sym]: n - 1 pairs at first, at most 2 more per merge */
    size_t cap_sym;
    tok_sym small_sym[TOK_SMALL];
    tok_bigram small_heap[3 * TOK_SMALL];
    int32_t *ids;          /* NULL: count only */
    size_t cap, n;
} tok_run;

static inline void emit(tok_run *r, int32_t id) {
    if (r->ids && r->n < r->cap) r->ids[r->n] = id;
    r->n++;
}

/* A final symbol spanning s[0..n): its token, or its bytes' tokens; a byte
 * without a token is dropped (llama.cpp; Hugging Face too, its BPE having no
 * unknown token for these vocabularies). */
static void emit_sym(tok_run *r, int32_t id, const unsigned char *s, size_t n) {
    const mattn_tok *t = r->t;
    if (id < t->n_vocab) {
        emit(r, id);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const int32_t b = t->byte_sym[s[i]];
        if (b < t->n_vocab) emit(r, b);
    }
}

static inline int bigram_less(const tok_bigram *a, const tok_bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(tok_bigram *h, size_t *n, tok_bigram x) {
    size_t i = (*n)++;
    while (i > 0) {
        const size_t p = (i - 1) / 2;
        if (!bigram_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static tok_bigram heap_pop(tok_bigram *h, size_t *n) {
    const tok_bigram top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && bigram_less(&h[c + 1], &h[c])) c++;
        if (!bigram_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

static inline void queue_pair(const mattn_tok *t, const tok_sym *sym, tok_bigram *h, size_t *nh, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const tok_pair *p = tok_find_pair(t, sym[l].id, sym[r].id);
    if (p) heap_push(h, nh, (tok_bigram){p->rank, l, r, sym[l].id, sym[r].id, p->out});
}

/* Byte-level BPE on one piece s[0..n) (llama.cpp's llm_tokenizer_bpe_session:
 * lowest rank first, ties to the leftmost pair). */
static mattn_status bpe(tok_run *r, const unsigned char *s, size_t n) {
    const mattn_tok *t = r->t;
    if (n == 1) {
        emit_sym(r, t->byte_sym[s[0]], s, 1);
        return MATTN_OK;
    }
    tok_sym *sym = r->small_sym;
    tok_bigram *h = r->small_heap;
    if (n > TOK_SMALL) {
        if (n > r->cap_sym) {
            if (n > INT32_MAX) return mattn_set_error(MATTN_ERR_INVALID_ARG, "tokenizer: a piece of %zu bytes", n);
            mattn_free(r->sym);
            mattn_free(r->heap);
            r->cap_sym = n;
            r->sym = mattn_malloc(sizeof *r->sym * n);
            r->heap = mattn_malloc(sizeof *r->heap * 3 * n);
            if (!r->sym || !r->heap) {
                r->cap_sym = 0;
                return mattn_set_error(MATTN_ERR_NOMEM, "tokenizer: out of memory for a piece of %zu bytes", n);
            }
        }
        sym = r->sym;
        h = r->heap;
    }
    for (size_t i = 0; i < n; i++)
        sym[i] = (tok_sym){t->byte_sym[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) queue_pair(t, sym, h, &nh, (int32_t)i, (int32_t)i + 1);
    while (nh) {
        const tok_bigram b = heap_pop(h, &nh);
        tok_sym *L = &sym[b.left], *R = &sym[b.right];
        if (L->id != b.lid || L->next != b.right || R->id != b.rid) continue; /* stale */
        L->id = b.out;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = b.left;
        R->id = -1;
        queue_pair(t, sym, h, &nh, L->prev, b.left);
        queue_pair(t, sym, h, &nh, b.left, L->next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        emit_sym(r, sym[i].id, s + i, (size_t)(sym[i].next >= 0 ? sym[i].next : (int32_t)n) - (size_t)i);
    return MATTN_OK;
}

/* Regex `stage` on the piece text[s..e): matches and the gaps between them
 * go on to the next stage, the last stage's pieces to BPE. */
static mattn_status split(tok_run *r, int stage, size_t s, size_t e) {
    const mattn_tok *t = r->t;
    if (stage == t->pre->n_regex) return bpe(r, r->text + s, e - s);
    const size_t len = e - s;
    size_t pos = 0, from = 0;
    mattn_status st;
    while (from < len) {
        int rc = pcre2_match(t->re[stage], r->text + s, len, from, 0, r->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the JIT's 32 KiB stack: the interpreter uses the heap */
            rc = pcre2_match(t->re[stage], r->text + s, len, from, PCRE2_NO_JIT, r->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            if (rc == PCRE2_ERROR_NOMEMORY) return mattn_set_error(MATTN_ERR_NOMEM, "tokenizer: regex: %s", msg);
            return mattn_set_error(MATTN_ERR_INVALID_ARG, "tokenizer: regex %d failed at byte %zu: %s", stage, s + from,
                                   (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
        const size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match (none of PRE_TYPES has one): search on from the next character */
            from = ms + 1;
            while (from < len && (r->text[s + from] & 0xC0) == 0x80) from++;
            continue;
        }
        if (ms > pos && (st = split(r, stage + 1, s + pos, s + ms)) != MATTN_OK) return st;
        if ((st = split(r, stage + 1, s + ms, s + me)) != MATTN_OK) return st;
        pos = from = me;
    }
    return pos < len ? split(r, stage + 1, s + pos, e) : MATTN_OK;
}

/* The special token starting at text[i] (leftmost-longest), -1 if none. */
static int32_t special_at(const mattn_tok *t, const unsigned char *text, size_t i, size_t len, size_t *n) {
    if (!(t->special_first[text[i] >> 3] & (1u << (text[i] & 7)))) return -1;
    for (int32_t k = 0; k < t->n_special; k++) {
        const int32_t id = t->special[k];
        const size_t m = t->off[id + 1] - t->off[id];
        if (m <= len - i && memcmp(t->bytes + t->off[id], text + i, m) == 0) {
            *n = m;
            return id;
        }
    }
    return -1;
}

static mattn_status encode_all(tok_run *r, size_t len, int flags) {
    const mattn_tok *t = r->t;
    if (!(flags & MATTN_TOK_SPECIAL) || t->n_special == 0) return len ? split(r, 0, 0, len) : MATTN_OK;
    size_t seg = 0;
    for (size_t i = 0; i < len;) {
        size_t m;
        const int32_t id = special_at(t, r->text, i, len, &m);
        if (id < 0) {
            i++;
            continue;
        }
        mattn_status st;
        if (i > seg && (st = split(r, 0, seg, i)) != MATTN_OK) return st;
        emit(r, id);
        seg = i += m;
    }
    return seg < len ? split(r, 0, seg, len) : MATTN_OK;
}

mattn_status mattn_tok_encode(const mattn_tok *t, const char *text, size_t len, int flags, int32_t *ids, size_t cap,
                              size_t *n_out) {
    if (!t || (!text && len) || !n_out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_encode: NULL argument");
    *n_out = 0;
    tok_run run, *r = &run;
    r->t = t;
    r->text = (const unsigned char *)text;
    r->sym = NULL;
    r->heap = NULL;
    r->cap_sym = 0;
    r->ids = ids;
    r->cap = cap;
    r->n = 0;
    r->md = pcre2_match_data_create(1, t->gctx);
    mattn_status st = r->md ? encode_all(r, len, flags)
                            : mattn_set_error(MATTN_ERR_NOMEM, "mattn_tok_encode: out of memory for match data");
    pcre2_match_data_free(r->md);
    mattn_free(r->sym);
    mattn_free(r->heap);
    if (st == MATTN_OK) {
        *n_out = r->n;
        if (ids && r->n > cap)
            st = mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_tok_encode: %zu ids needed, room for %zu", r->n, cap);
    }
    return st;
}
