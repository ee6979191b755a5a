/*
 * gguf_build.h — a GGUF file written byte by byte into a growing buffer,
 * for the tests and the fuzz targets that need files the fixtures do not
 * have (inconsistent tokenizers, models with one thing wrong): the header,
 * metadata pairs of the scalar and array types the tokenizer and the model
 * read, tensor infos and the data section.  Nothing is checked: the point
 * is to write what a hostile or broken writer would.
 *
 *   gguf_build g = {0};
 *   gb_header(&g, 3, n_tensors, n_kv);
 *   gb_kv_str(&g, "general.architecture", "llama");
 *   ...
 *   gb_free(&g);
 */
#ifndef MATTN_GGUF_BUILD_H
#define MATTN_GGUF_BUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gguf_build {
    unsigned char *b;
    size_t n, cap;
} gguf_build;

static inline void gb_put(gguf_build *g, const void *p, size_t n) {
    if (g->n + n > g->cap) {
        size_t cap = g->cap ? g->cap : 4096;
        while (cap < g->n + n) cap *= 2;
        unsigned char *nb = realloc(g->b, cap);
        if (!nb) { fprintf(stderr, "gguf_build: out of memory\n"); abort(); }
        g->b = nb, g->cap = cap;
    }
    if (n) memcpy(g->b + g->n, p, n);
    g->n += n;
}
static inline void gb_u8(gguf_build *g, uint8_t v) { gb_put(g, &v, 1); }
static inline void gb_u32(gguf_build *g, uint32_t v) {
    const unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                                (unsigned char)(v >> 24)};
    gb_put(g, b, 4);
}
static inline void gb_u64(gguf_build *g, uint64_t v) { gb_u32(g, (uint32_t)v); gb_u32(g, (uint32_t)(v >> 32)); }
static inline void gb_f32(gguf_build *g, float v) { uint32_t b; memcpy(&b, &v, 4); gb_u32(g, b); }
static inline void gb_strn(gguf_build *g, const char *s, size_t n) { gb_u64(g, n); gb_put(g, s, n); }
static inline void gb_str(gguf_build *g, const char *s) { gb_strn(g, s, strlen(s)); }
static inline void gb_free(gguf_build *g) { free(g->b); g->b = NULL; g->n = g->cap = 0; }

/* Magic, version, the two counts; the buffer starts over. */
static inline void gb_header(gguf_build *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    g->n = 0;
    gb_put(g, "GGUF", 4);
    gb_u32(g, version);
    gb_u64(g, n_tensors);
    gb_u64(g, n_kv);
}

/* Value types (gguf.h's MATTN_GGUF_*, repeated so that this header needs
 * nothing of the library). */
enum { GB_U8 = 0, GB_I32 = 5, GB_F32 = 6, GB_BOOL = 7, GB_STR = 8, GB_ARR = 9, GB_U32 = 4, GB_U64 = 10, GB_I64 = 11 };

static inline void gb_kv_u32(gguf_build *g, const char *key, uint32_t v) { gb_str(g, key); gb_u32(g, GB_U32); gb_u32(g, v); }
static inline void gb_kv_i32(gguf_build *g, const char *key, int32_t v) { gb_str(g, key); gb_u32(g, GB_I32); gb_u32(g, (uint32_t)v); }
static inline void gb_kv_f32(gguf_build *g, const char *key, float v) { gb_str(g, key); gb_u32(g, GB_F32); gb_f32(g, v); }
static inline void gb_kv_bool(gguf_build *g, const char *key, int v) { gb_str(g, key); gb_u32(g, GB_BOOL); gb_u8(g, (uint8_t)v); }
static inline void gb_kv_str(gguf_build *g, const char *key, const char *v) { gb_str(g, key); gb_u32(g, GB_STR); gb_str(g, v); }

/* An array of n strings (each NUL-terminated, or of the lengths lens[i]
 * when lens is not NULL). */
static inline void gb_kv_strs(gguf_build *g, const char *key, const char *const *v, const size_t *lens, size_t n) {
    gb_str(g, key);
    gb_u32(g, GB_ARR);
    gb_u32(g, GB_STR);
    gb_u64(g, n);
    for (size_t i = 0; i < n; i++) gb_strn(g, v[i], lens ? lens[i] : strlen(v[i]));
}
static inline void gb_kv_i32s(gguf_build *g, const char *key, const int32_t *v, size_t n) {
    gb_str(g, key);
    gb_u32(g, GB_ARR);
    gb_u32(g, GB_I32);
    gb_u64(g, n);
    for (size_t i = 0; i < n; i++) gb_u32(g, (uint32_t)v[i]);
}

/* A tensor info of nd dims ne[0..nd), ggml type, offset into the data. */
static inline void gb_tensor(gguf_build *g, const char *name, int nd, const int64_t *ne, uint32_t type, uint64_t off) {
    gb_str(g, name);
    gb_u32(g, (uint32_t)nd);
    for (int d = 0; d < nd; d++) gb_u64(g, (uint64_t)ne[d]);
    gb_u32(g, type);
    gb_u64(g, off);
}
/* Zeros up to the next multiple of align. */
static inline void gb_align(gguf_build *g, size_t align) {
    while (g->n % align) gb_u8(g, 0);
}

/* The UTF-8 of GPT-2's bytes_to_unicode character for byte b into out (1 or
 * 2 bytes, returned): the spelling of the byte's token. */
static inline size_t gb_byte_spelling(unsigned b, char *out) {
    uint32_t cp;
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) cp = b;
    else if (b <= 0x20) cp = 256 + b;
    else if (b <= 0xA0) cp = 289 + (b - 0x7F);
    else cp = 323;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* The vocabulary of tests/fixtures/tok_tiny.gguf (gen_tokenizer_fixture.py,
 * write_tiny): 4 special tokens (<|endoftext|> <|im_start|> <|im_end|>
 * control, <tool> user-defined), the 256 byte characters but '~' and 0xFF
 * in byte order, 11 merged tokens; 13 merges. */
typedef struct gb_vocab {
    const char *tok[300];
    size_t len[300];
    int32_t type[300];
    size_t n;
    const char *merge[32];
    size_t n_merges;
    char sp[256][2];  /* the byte characters' spellings */
} gb_vocab;

static inline void gb_vocab_tiny(gb_vocab *v) {
    static const char *const special[4] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"};
    static const char *const merged[11] = {"bc", "ab", "abc", "aa", "xyz", ("\xc4\xa0" "a"), "12", "\xc4\xa0\xc4\xa0",
                                           "\xc4\xa0\xc4\xa0\xc4\xa0\xc4\xa0", "pq", "pqr"};
    static const char *const merges[13] = {"b c", "a b", "a bc", "a a", "x y", "xy z", "\xc4\xa0 a", "1 2",
                                           "\xc4\xa0 \xc4\xa0", "\xc4\xa0\xc4\xa0 \xc4\xa0\xc4\xa0", "p q", "pq r", "a b"};
    v->n = 0;
    for (int i = 0; i < 4; i++) {
        v->tok[v->n] = special[i], v->len[v->n] = strlen(special[i]), v->type[v->n] = i < 3 ? 3 : 4;
        v->n++;
    }
    for (unsigned b = 0; b < 256; b++) {
        if (b == '~' || b == 0xFF) continue;
        v->len[v->n] = gb_byte_spelling(b, v->sp[b]);
        v->tok[v->n] = v->sp[b], v->type[v->n] = 1;
        v->n++;
    }
    for (int i = 0; i < 11; i++) {
        v->tok[v->n] = merged[i], v->len[v->n] = strlen(merged[i]), v->type[v->n] = 1;
        v->n++;
    }
    v->n_merges = 13;
    for (int i = 0; i < 13; i++) v->merge[i] = merges[i];
}

/* The seven tokenizer pairs of a vocabulary: model, pre, tokens, token
 * types, merges, bos and eos ids. */
static inline void gb_tokenizer_kv(gguf_build *g, const char *model, const char *pre, const gb_vocab *v, int32_t bos,
                                   int32_t eos) {
    gb_kv_str(g, "tokenizer.ggml.model", model);
    gb_kv_str(g, "tokenizer.ggml.pre", pre);
    gb_kv_strs(g, "tokenizer.ggml.tokens", v->tok, v->len, v->n);
    gb_kv_i32s(g, "tokenizer.ggml.token_type", v->type, v->n);
    gb_kv_strs(g, "tokenizer.ggml.merges", v->merge, NULL, v->n_merges);
    gb_kv_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    gb_kv_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
}

#endif
