/*
 * test_tok_bad.c — the tokenizer built from inconsistent or malformed GGUF
 * metadata, each file written here byte by byte (tests/gguf_build.h) from
 * tok_tiny's vocabulary with one thing changed, opened from an exact-size
 * heap buffer (AddressSanitizer sees any overread) and given to
 * mattn_tok_init_gguf:
 *  - refused, with the status and a message naming the key, the index and
 *    the value: merges without a space (or with nothing on one side), token
 *    types of another count, type or range, an empty vocabulary, tokens or
 *    merges of the wrong type or missing, special ids out of range or of the
 *    wrong type, flags that are not bools, an unknown model or pre type;
 *  - accepted, with the behaviour tokenizer.h defines (llama.cpp's): merges
 *    naming strings that are no token, duplicate spellings, no byte tokens,
 *    empty special tokens, no merges.
 * Every message is printed (docs/errors.md quotes them).
 */
#include "test_util.h"

#include "gguf_build.h"
#include "io/io.h"
#include "llama/tokenizer.h"

/* tok_tiny's ids (test_tokenizer_unit.c) */
#define B(c) (4 + (int32_t)(unsigned char)(c) - ((unsigned char)(c) > 0x7E))
enum { BC = 258, AB, ABC, AA, XYZ, SP_A, T12, SP2, SP4, PQ, PQR, N_VOCAB };

/* One tokenizer file: tok_tiny's pairs, each replaceable. */
typedef struct tok_parts {
    const char *model, *pre;
    gb_vocab v;
    size_t n_types;                 /* token types written */
    int64_t bos, eos;               /* written as UINT32 */
    const char *omit;               /* a key left out */
    const char *replace;            /* a key written by extra instead */
    void (*extra)(gguf_build *g);   /* one more pair (or the replacement) */
} tok_parts;

static void parts_tiny(tok_parts *p) {
    memset(p, 0, sizeof *p);
    p->model = "gpt2", p->pre = "smollm";
    gb_vocab_tiny(&p->v);
    p->n_types = p->v.n;
    p->bos = 1, p->eos = 2;
}

static int keep(const tok_parts *p, const char *key) {
    return (!p->omit || strcmp(p->omit, key) != 0) && (!p->replace || strcmp(p->replace, key) != 0);
}

static void write_parts(gguf_build *out, const tok_parts *p) {
    gguf_build g = {0};
    int n = 0;
    gb_kv_str(&g, "general.architecture", "llama"), n++;
    if (keep(p, "tokenizer.ggml.model")) gb_kv_str(&g, "tokenizer.ggml.model", p->model), n++;
    if (keep(p, "tokenizer.ggml.pre")) gb_kv_str(&g, "tokenizer.ggml.pre", p->pre), n++;
    if (keep(p, "tokenizer.ggml.tokens")) gb_kv_strs(&g, "tokenizer.ggml.tokens", p->v.tok, p->v.len, p->v.n), n++;
    if (keep(p, "tokenizer.ggml.token_type"))
        gb_kv_i32s(&g, "tokenizer.ggml.token_type", p->v.type, p->n_types), n++;
    if (keep(p, "tokenizer.ggml.merges")) gb_kv_strs(&g, "tokenizer.ggml.merges", p->v.merge, NULL, p->v.n_merges), n++;
    if (keep(p, "tokenizer.ggml.bos_token_id")) gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", (uint32_t)p->bos), n++;
    if (keep(p, "tokenizer.ggml.eos_token_id")) gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", (uint32_t)p->eos), n++;
    if (p->extra) p->extra(&g), n++;
    gb_header(out, 3, 0, (uint64_t)n);
    gb_put(out, g.b, g.n);
    gb_free(&g);
}

/* Build the tokenizer of p: the status, and *out when it is MATTN_OK. */
static mattn_status build(const tok_parts *p, mattn_tok **out) {
    gguf_build g = {0};
    write_parts(&g, p);
    const size_t len = g.n;
    unsigned char *copy = malloc(len);   /* exact size: ASan sees a read past the end */
    memcpy(copy, g.b, len);
    gb_free(&g);
    char err[MATTN_ERRMSG_LEN];
    mattn_gguf_file *f = NULL;
    if (mattn_gguf_open_memory(copy, len, "tok.gguf", &f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    *out = (mattn_tok *)out;
    const mattn_status st = mattn_tok_init_gguf(f, out);
    if (st != MATTN_OK) assert_null(*out);
    mattn_gguf_close(f);   /* a built tokenizer keeps no pointer into the file */
    free(copy);
    return st;
}

static void expect_refused(const char *what, const tok_parts *p, mattn_status want, const char *fragment) {
    mattn_tok *t;
    const mattn_status st = build(p, &t);
    if (st != want || !strstr(mattn_last_error(), fragment))
        fail_msg("%s: status %d (%s), message '%s'; wanted status %d and '%s'", what, st, mattn_status_str(st),
                 mattn_last_error(), want, fragment);
    print_message("  %-34s %-22s %s\n", what, mattn_status_str(st), mattn_last_error());
}

static mattn_tok *expect_built(const char *what, const tok_parts *p) {
    mattn_tok *t;
    if (build(p, &t) != MATTN_OK) fail_msg("%s: %s", what, mattn_last_error());
    return t;
}

static void expect_ids(const mattn_tok *t, const char *s, int flags, const int32_t *want, size_t n) {
    int32_t ids[64];
    size_t got = 0;
    assert_int_equal(mattn_tok_encode(t, s, strlen(s), flags, ids, 64, &got), MATTN_OK);
    assert_int_equal(got, n);
    if (n) assert_memory_equal(ids, want, n * sizeof *ids);
}
#define EXPECT(t, s, flags, ...)                                                         \
    do {                                                                                 \
        const int32_t want_[] = {__VA_ARGS__};                                           \
        expect_ids(t, s, flags, want_, sizeof want_ / sizeof want_[0]);                  \
    } while (0)

// ----------------------------------------------------------------------------
// refused

static void test_bad_merges(void **state) {
    (void)state;
    static const char *const bad[] = {"abc", " ab", "ab ", "", " ", "a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok_parts p;
        parts_tiny(&p);
        p.v.merge[p.v.n_merges++] = bad[i];
        char what[64], want[96];
        snprintf(what, sizeof what, "merge '%s'", bad[i]);
        snprintf(want, sizeof want, "tok.gguf: merge 13 '%s' is not two tokens separated by a space", bad[i]);
        expect_refused(what, &p, MATTN_ERR_FORMAT, want);
    }
    tok_parts p;
    parts_tiny(&p);
    p.omit = "tokenizer.ggml.merges";
    expect_refused("no merges", &p, MATTN_ERR_NOT_FOUND, "no metadata key 'tokenizer.ggml.merges'");
}

static void merges_i32(gguf_build *g) {
    const int32_t v[2] = {1, 2};
    gb_kv_i32s(g, "tokenizer.ggml.merges", v, 2);
}
static void types_u32(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.token_type", 1); }
static void types_str(gguf_build *g) {
    static const char *const s[1] = {"1"};
    gb_kv_strs(g, "tokenizer.ggml.token_type", s, NULL, 1);
}
static void types_str_all(gguf_build *g) {
    const char *s[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) s[i] = "1";
    gb_kv_strs(g, "tokenizer.ggml.token_type", s, NULL, N_VOCAB);
}
static void tokens_str(gguf_build *g) { gb_kv_str(g, "tokenizer.ggml.tokens", "abc"); }
static void tokens_i32(gguf_build *g) {
    const int32_t v[3] = {1, 2, 3};
    gb_kv_i32s(g, "tokenizer.ggml.tokens", v, 3);
}
static void tokens_none(gguf_build *g) { gb_kv_strs(g, "tokenizer.ggml.tokens", NULL, NULL, 0); }
static void types_none(gguf_build *g) { gb_kv_i32s(g, "tokenizer.ggml.token_type", NULL, 0); }

static void test_bad_vocab(void **state) {
    (void)state;
    tok_parts p;
    parts_tiny(&p);
    p.n_types = N_VOCAB - 1;
    expect_refused("token types: one short", &p, MATTN_ERR_FORMAT,
                   "tok.gguf: tokenizer.ggml.token_type has 268 entries for 269 tokens (one type per token)");
    parts_tiny(&p);
    p.v.type[N_VOCAB] = 1;
    p.n_types = N_VOCAB + 1;
    expect_refused("token types: one too many", &p, MATTN_ERR_FORMAT, "token_type has 270 entries for 269 tokens");
    parts_tiny(&p);
    p.replace = "tokenizer.ggml.token_type", p.extra = types_u32;
    expect_refused("token types: a scalar", &p, MATTN_ERR_FORMAT,
                   "tok.gguf: tokenizer.ggml.token_type is UINT32, expected an array of 269 token types");
    p.extra = types_str;
    expect_refused("token types: 1 string", &p, MATTN_ERR_FORMAT, "token_type has 1 entries for 269 tokens");
    p.extra = types_str_all;
    expect_refused("token types: strings", &p, MATTN_ERR_FORMAT,
                   "metadata 'tokenizer.ggml.token_type'[0] is STRING, expected an integer (i64)");
    const int32_t bad_types[2] = {7, -1};
    for (int i = 0; i < 2; i++) {
        parts_tiny(&p);
        p.v.type[B('a')] = bad_types[i];
        char want[96];
        snprintf(want, sizeof want, "tok.gguf: token %d 'a' has type %d (tokenizer.ggml.token_type: 0..6)", B('a'),
                 bad_types[i]);
        expect_refused(i ? "token type -1" : "token type 7", &p, MATTN_ERR_FORMAT, want);
    }
    parts_tiny(&p);
    p.replace = "tokenizer.ggml.tokens", p.extra = tokens_none;
    p.omit = "tokenizer.ggml.token_type";
    expect_refused("empty vocabulary", &p, MATTN_ERR_FORMAT, "tok.gguf: tokenizer.ggml.tokens has 0 tokens");
    parts_tiny(&p);
    p.replace = "tokenizer.ggml.tokens", p.extra = tokens_str;
    expect_refused("tokens: a string", &p, MATTN_ERR_FORMAT,
                   "metadata 'tokenizer.ggml.tokens' is STRING, expected an array of STRING");
    p.extra = tokens_i32;
    expect_refused("tokens: integers", &p, MATTN_ERR_FORMAT,
                   "metadata 'tokenizer.ggml.tokens' is an array of INT32, expected an array of STRING");
    p.replace = NULL, p.extra = NULL, p.omit = "tokenizer.ggml.tokens";
    expect_refused("no tokens", &p, MATTN_ERR_NOT_FOUND, "no metadata key 'tokenizer.ggml.tokens'");
    parts_tiny(&p);
    p.replace = "tokenizer.ggml.merges", p.extra = merges_i32;
    expect_refused("merges: integers", &p, MATTN_ERR_FORMAT, "is an array of INT32, expected an array of STRING");
    parts_tiny(&p);
    p.replace = "tokenizer.ggml.token_type", p.extra = types_none;
    expect_refused("token types: empty", &p, MATTN_ERR_FORMAT, "token_type has 0 entries for 269 tokens");
}

static void bos_i32(gguf_build *g) { gb_kv_i32(g, "tokenizer.ggml.bos_token_id", -1); }
static void bos_str(gguf_build *g) { gb_kv_str(g, "tokenizer.ggml.bos_token_id", "1"); }
static void bos_f32(gguf_build *g) { gb_kv_f32(g, "tokenizer.ggml.bos_token_id", 1.0f); }
static void unk_big(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.unknown_token_id", 100000); }
static void pad_big(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.padding_token_id", N_VOCAB); }
static void add_bos_u32(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.add_bos_token", 1); }
static void model_u32(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.model", 2); }
static void pre_u32(gguf_build *g) { gb_kv_u32(g, "tokenizer.ggml.pre", 2); }

static void test_bad_ids_and_kinds(void **state) {
    (void)state;
    tok_parts p;
    parts_tiny(&p);
    p.bos = N_VOCAB;
    expect_refused("bos id = vocabulary size", &p, MATTN_ERR_FORMAT,
                   "tok.gguf: tokenizer.ggml.bos_token_id = 269 is not a token id (the vocabulary has 269 tokens)");
    parts_tiny(&p);
    p.eos = UINT32_MAX;
    expect_refused("eos id = 2^32 - 1", &p, MATTN_ERR_FORMAT, "tokenizer.ggml.eos_token_id = 4294967295 is not a token id");
    struct { const char *what; void (*extra)(gguf_build *); const char *replace; mattn_status st; const char *msg; } c[] = {
        {"bos id -1 (INT32)", bos_i32, "tokenizer.ggml.bos_token_id", MATTN_ERR_FORMAT,
         "tokenizer.ggml.bos_token_id = -1 is not a token id"},
        {"bos id a string", bos_str, "tokenizer.ggml.bos_token_id", MATTN_ERR_FORMAT,
         "metadata 'tokenizer.ggml.bos_token_id' is STRING, expected an integer (i64)"},
        {"bos id a float", bos_f32, "tokenizer.ggml.bos_token_id", MATTN_ERR_FORMAT,
         "metadata 'tokenizer.ggml.bos_token_id' is FLOAT32, expected an integer (i64)"},
        {"unknown id out of range", unk_big, NULL, MATTN_ERR_FORMAT,
         "tokenizer.ggml.unknown_token_id = 100000 is not a token id"},
        {"padding id out of range", pad_big, NULL, MATTN_ERR_FORMAT,
         "tokenizer.ggml.padding_token_id = 269 is not a token id"},
        {"add_bos_token not a bool", add_bos_u32, NULL, MATTN_ERR_FORMAT,
         "metadata 'tokenizer.ggml.add_bos_token' is UINT32, expected BOOL"},
        {"model not a string", model_u32, "tokenizer.ggml.model", MATTN_ERR_FORMAT,
         "metadata 'tokenizer.ggml.model' is UINT32, expected STRING"},
        {"pre not a string", pre_u32, "tokenizer.ggml.pre", MATTN_ERR_FORMAT,
         "metadata 'tokenizer.ggml.pre' is UINT32, expected STRING"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        parts_tiny(&p);
        p.extra = c[i].extra, p.replace = c[i].replace;
        expect_refused(c[i].what, &p, c[i].st, c[i].msg);
    }
    parts_tiny(&p);
    p.model = "llama";
    expect_refused("model 'llama'", &p, MATTN_ERR_UNSUPPORTED,
                   "tok.gguf: tokenizer.ggml.model 'llama' is not supported (only 'gpt2', byte-level BPE)");
    parts_tiny(&p);
    p.omit = "tokenizer.ggml.model";
    expect_refused("no model", &p, MATTN_ERR_NOT_FOUND, "no metadata key 'tokenizer.ggml.model'");
    parts_tiny(&p);
    p.pre = "qwen2";
    expect_refused("pre 'qwen2'", &p, MATTN_ERR_UNSUPPORTED,
                   "tok.gguf: tokenizer.ggml.pre 'qwen2' is not supported (known: gpt-2, smollm)");
    parts_tiny(&p);
    p.omit = "tokenizer.ggml.pre";
    expect_refused("no pre", &p, MATTN_ERR_UNSUPPORTED, "tok.gguf: no tokenizer.ggml.pre (the pre-tokenizer; known:");
}

// ----------------------------------------------------------------------------
// accepted, with defined behaviour

static void test_accepted_oddities(void **state) {
    (void)state;
    tok_parts p;
    /* merges whose halves are no token and no earlier merge's result: they
     * never apply (llama.cpp keeps them too; Hugging Face refuses the file) */
    parts_tiny(&p);
    p.v.merge[p.v.n_merges++] = "foo bar";
    p.v.merge[p.v.n_merges++] = "\xe2\x82\xac \xe2\x82\xac";   /* "€ €": not even the byte alphabet */
    p.v.merge[p.v.n_merges++] = "f o";
    mattn_tok *t = expect_built("merges naming no token", &p);
    EXPECT(t, "abc", 0, ABC);
    EXPECT(t, "foobar", 0, B('f'), B('o'), B('o'), B('b'), B('a'), B('r'));  /* "fo" is no token: its bytes */
    mattn_tok_free(t);
    /* a duplicate spelling: the last token of it wins */
    parts_tiny(&p);
    p.v.tok[p.v.n] = "ab", p.v.len[p.v.n] = 2, p.v.type[p.v.n] = 1, p.v.n++;
    p.n_types = p.v.n;
    t = expect_built("duplicate token 'ab'", &p);
    EXPECT(t, "ab", 0, N_VOCAB);
    EXPECT(t, "abc", 0, ABC);
    mattn_tok_free(t);
    /* no byte tokens at all: text encodes to nothing, special tokens still work */
    parts_tiny(&p);
    p.v.n = 4, p.n_types = 4, p.v.n_merges = 0;
    t = expect_built("only special tokens", &p);
    size_t n = 1;
    assert_int_equal(mattn_tok_encode(t, "abc", 3, 0, NULL, 0, &n), MATTN_OK);
    assert_int_equal(n, 0);
    EXPECT(t, "x<|im_end|>y", MATTN_TOK_SPECIAL, 2);
    mattn_tok_free(t);
    /* an empty control token: never matched in chat mode */
    parts_tiny(&p);
    p.v.len[3] = 0, p.v.type[3] = 3;
    t = expect_built("empty control token", &p);
    EXPECT(t, "ab<tool>", MATTN_TOK_SPECIAL, AB, B('<'), B('t'), B('o'), B('o'), B('l'), B('>'));
    const char *piece;
    assert_int_equal(mattn_tok_piece(t, 3, MATTN_TOK_SPECIAL, &piece, &n), MATTN_OK);
    assert_int_equal(n, 0);
    mattn_tok_free(t);
    /* no merges: every byte its own token */
    parts_tiny(&p);
    p.v.n_merges = 0;
    t = expect_built("no merges", &p);
    EXPECT(t, "abc", 0, B('a'), B('b'), B('c'));
    mattn_tok_free(t);
    /* no token types: all normal */
    parts_tiny(&p);
    p.omit = "tokenizer.ggml.token_type";
    t = expect_built("no token types", &p);
    assert_int_equal(mattn_tok_token_type(t, 0), MATTN_TOK_NORMAL);
    EXPECT(t, "<tool>", MATTN_TOK_SPECIAL, B('<'), B('t'), B('o'), B('o'), B('l'), B('>'));
    mattn_tok_free(t);
    /* no special ids: -1 */
    parts_tiny(&p);
    p.omit = "tokenizer.ggml.bos_token_id";
    t = expect_built("no bos id", &p);
    assert_int_equal(mattn_tok_bos(t), -1);
    assert_int_equal(mattn_tok_eos(t), 2);
    mattn_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_merges),
        cmocka_unit_test(test_bad_vocab),
        cmocka_unit_test(test_bad_ids_and_kinds),
        cmocka_unit_test(test_accepted_oddities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
