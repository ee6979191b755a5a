/*
 * tok_impl.h — private to tokenizer.c and tok_encode.c: the tokenizer's
 * state, GPT-2's bytes <-> unicode mapping and the merge table.
 */
#ifndef MATTN_TOK_IMPL_H
#define MATTN_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/base.h"
#include "llama/tokenizer.h"

#define TOK_MAX_REGEX 4

/* A pre-tokenizer: its tokenizer.ggml.pre name and its regexes, applied in
 * order (tok_encode.c holds the table). */
typedef struct tok_pre_type {
    const char *name;
    int n_regex;
    const char *regex[TOK_MAX_REGEX];
} tok_pre_type;

/* One merge: the pair of symbols (left << 32 | right; TOK_PAIR_EMPTY: a
 * free slot), its rank, the symbol it makes.  A symbol is a token id, or a
 * "virtual" id >= n_vocab for a string that merges produce or consume but
 * the vocabulary lacks (encode falls back to its bytes' tokens). */
typedef struct tok_pair {
    uint64_t key;
    int32_t rank;
    int32_t out;
} tok_pair;
#define TOK_PAIR_EMPTY UINT64_MAX

struct mattn_tok {
    int32_t n_vocab;
    int32_t bos, eos, unk, pad;   /* -1: none */
    int add_bos, add_eos;
    uint8_t *type;                /* [n_vocab] mattn_tok_type */
    uint32_t *off;                /* [n_vocab + 1]: token i's bytes are bytes[off[i] .. off[i + 1]) */
    char *bytes;                  /* every token's bytes (decoded), one after the other */
    int32_t byte_sym[256];        /* the symbol a byte starts as */
    tok_pair *pairs;              /* [pair_mask + 1] open addressing, linear probing */
    uint64_t pair_mask;
    int32_t *special;             /* [n_special] ids of control/user-defined/unknown tokens, longest text first */
    int32_t n_special;
    uint8_t special_first[32];    /* bitmap of the first bytes of their texts */
    const tok_pre_type *pre;
    pcre2_general_context *gctx;  /* PCRE2 allocates through mattn_malloc */
    pcre2_code *re[TOK_MAX_REGEX];
    int jit;
};

/* bytes_to_unicode (GPT-2, openai/gpt-2 encoder.py): the printable bytes
 * '!'..'~', 0xA1..0xAC, 0xAE..0xFF stand for themselves, the other 68 take
 * the code points 256.. in byte order. */
static inline uint32_t tok_byte_to_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256 + b;          /* 33 code points 256..288 */
    if (b <= 0xA0) return 289 + (b - 0x7F); /* 34 code points 289..322 */
    return 323;                             /* 0xAD */
}
/* The inverse: the byte code point cp stands for, -1 if none. */
static inline int tok_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 289 + 0x7F);
    if (cp == 323) return 0xAD;
    return -1;
}

static inline uint64_t tok_pair_hash(uint64_t key) { return (key * 0x9E3779B97F4A7C15ULL) >> 20; }
static inline uint64_t tok_pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)l << 32 | (uint32_t)r; }

/* The merge of symbols l, r, or NULL. */
static inline const tok_pair *tok_find_pair(const mattn_tok *t, int32_t l, int32_t r) {
    const uint64_t key = tok_pair_key(l, r);
    for (uint64_t i = tok_pair_hash(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        const tok_pair *p = &t->pairs[i];
        if (p->key == key) return p;
        if (p->key == TOK_PAIR_EMPTY) return NULL;
    }
}

/* tok_encode.c: the pre type named name[0..len), NULL if unknown; the names
 * of the known ones for a message; compile t->pre's regexes (sets t->re,
 * t->jit, and t->gctx). */
const tok_pre_type *tok_pre_find(const char *name, size_t len);
void tok_pre_names(char *buf, size_t n);
mattn_status tok_regex_init(mattn_tok *t);
void tok_regex_free(mattn_tok *t);

#endif
