/*
 * test_tokenizer.c — the byte-level BPE tokenizer (src/llama/) on the real
 * vocabulary of SmolLM2-135M-Instruct (49152 tokens, 48900 merges, pre type
 * "smollm"), read from the GGUF file ($METAATTN_GGUF_MODEL, else
 * models/SmolLM2-135M-Instruct.Q4_1.gguf; absent: skipped, exit 77), against
 * the reference encodings of tests/fixtures/tokenizer_ref.safetensors
 * (Hugging Face tokenizers, checked against llama.cpp, by
 * gen_tokenizer_fixture.py) of tests/fixtures/tokenizer_text.txt: the whole
 * text, each line alone, pseudo-random chunks alone, chat strings with and
 * without special tokens; decode back byte for byte; invalid UTF-8, NUL and
 * very long pieces round-trip; bad ids are errors.  Prints the encode
 * throughput (no assertion on it).  The hand-made vocabularies and the
 * allocation failures are test_tokenizer_unit.c.
 */
#include "test_util.h"

#include <unistd.h>

#include "io/io.h"
#include "llama/tokenizer.h"

#define TEXT "tests/fixtures/tokenizer_text.txt"
#define REF "tests/fixtures/tokenizer_ref.safetensors"

static const char *g_path;
static mattn_gguf_file *g_file;
static mattn_tok *g_tok;
static mattn_st_file *g_ref;
static char *g_text;
static size_t g_len;

static char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    const long len = ftell(fp);
    rewind(fp);
    char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, fp) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return b;
}

static int setup(void **state) {
    (void)state;
    if (!g_path) return 0;
    char err[MATTN_ERRMSG_LEN];
    if (mattn_gguf_open(g_path, &g_file, err, sizeof err) != MATTN_OK) {
        print_error("%s\n", err);
        return -1;
    }
    const double t0 = mattn_now();
    if (mattn_tok_init_gguf(g_file, &g_tok) != MATTN_OK) {
        print_error("%s\n", mattn_last_error());
        return -1;
    }
    print_message("  tokenizer built in %.1f ms (pre '%s', regex JIT %s)\n", (mattn_now() - t0) * 1e3,
                  mattn_tok_pre_name(g_tok), mattn_tok_jit(g_tok) ? "on" : "off");
    if (mattn_st_open(REF, &g_ref, err, sizeof err) != MATTN_OK || !(g_text = read_all(TEXT, &g_len))) {
        print_error("%s: %s\n", REF, err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mattn_tok_free(g_tok);
    mattn_gguf_close(g_file);
    mattn_st_close(g_ref);
    free(g_text);
    return 0;
}

static const mattn_st_tensor *ref(const char *name, mattn_st_dtype dtype) {
    const mattn_st_tensor *t = mattn_st_find(g_ref, name);
    if (!t || t->dtype != dtype || t->ndim != 1) fail_msg("%s: no 1-D %s tensor '%s'", REF, mattn_st_dtype_name(dtype), name);
    return t;
}
static int32_t i32_at(const mattn_st_tensor *t, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}
static int64_t i64_at(const mattn_st_tensor *t, int64_t i) {
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

static int32_t *encode(const char *s, size_t len, int flags, size_t *n) {
    int32_t *ids = malloc(sizeof *ids * (len + 1));
    assert_non_null(ids);
    if (mattn_tok_encode(g_tok, s, len, flags, ids, len + 1, n) != MATTN_OK) fail_msg("%s", mattn_last_error());
    return ids;
}

/* "'piece' 'piece' ..." of ids[a..b) for a message */
static const char *show(const int32_t *ids, size_t a, size_t b, size_t n) {
    static char buf[600];
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = a; i < b && i < n && at < sizeof buf - 80; i++) {
        const char *p;
        size_t k;
        if (mattn_tok_piece(g_tok, ids[i], MATTN_TOK_SPECIAL, &p, &k) != MATTN_OK) k = 0;
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%d:'", i > a ? " " : "", ids[i]);
        for (size_t j = 0; j < k && at < sizeof buf - 20; j++) {
            const unsigned char c = (unsigned char)p[j];
            at += (size_t)snprintf(buf + at, sizeof buf - at, c >= 0x20 && c < 0x7f && c != '\'' ? "%c" : "\\x%02x", c);
        }
        at += (size_t)snprintf(buf + at, sizeof buf - at, "'");
    }
    return buf;
}

/* got[0..ng) == want[w0..w0+nw) of the reference tensor, else the first
 * difference with its context and its byte offset in the piece. */
static void compare(const char *what, const char *s, const int32_t *got, size_t ng, const mattn_st_tensor *want,
                    int64_t w0, size_t nw) {
    int32_t *w = malloc(sizeof *w * (nw + 1));
    assert_non_null(w);
    for (size_t i = 0; i < nw; i++) w[i] = i32_at(want, w0 + (int64_t)i);
    size_t i = 0;
    while (i < ng && i < nw && got[i] == w[i]) i++;
    if (i < ng || i < nw) {
        size_t off = 0;
        mattn_tok_decode(g_tok, got, i, MATTN_TOK_SPECIAL, NULL, 0, &off);
        char ctx[200];
        snprintf(ctx, sizeof ctx, "%.60s", s + off);
        const size_t a = i > 3 ? i - 3 : 0;
        char mine[600];
        snprintf(mine, sizeof mine, "%s", show(got, a, i + 5, ng));
        fail_msg("%s: %zu ids, the reference %zu; first difference at id %zu (byte %zu, text '%s'):\n"
                 "  ours      %s\n  reference %s", what, ng, nw, i, off, ctx, mine, show(w, a, i + 5, nw));
    }
    free(w);
}

static void expect_roundtrip(const char *what, const int32_t *ids, size_t n, int flags, const char *s, size_t len) {
    char *back = malloc(len + 1);
    assert_non_null(back);
    size_t m = 0;
    if (mattn_tok_decode(g_tok, ids, n, flags, back, len + 1, &m) != MATTN_OK) fail_msg("%s", mattn_last_error());
    if (m != len || memcmp(back, s, len) != 0) {
        size_t i = 0;
        while (i < m && i < len && back[i] == s[i]) i++;
        fail_msg("%s: decode gave %zu bytes for %zu, first difference at byte %zu", what, m, len, i);
    }
    free(back);
}

static void test_vocab(void **state) {
    (void)state;
    if (!g_path) skip();
    assert_int_equal(mattn_tok_n_vocab(g_tok), 49152);
    assert_int_equal(mattn_tok_bos(g_tok), 1);
    assert_int_equal(mattn_tok_eos(g_tok), 2);
    assert_int_equal(mattn_tok_unk(g_tok), 0);
    assert_int_equal(mattn_tok_pad(g_tok), 2);
    assert_int_equal(mattn_tok_add_bos(g_tok), 0);
    assert_string_equal(mattn_tok_pre_name(g_tok), "smollm");
    assert_int_equal(mattn_tok_find_special(g_tok, "<|im_start|>", 12), 1);
    assert_int_equal(mattn_tok_find_special(g_tok, "<|im_end|>", 10), 2);
    assert_int_equal(mattn_tok_find_special(g_tok, "<empty_output>", 14), 16);
    for (int32_t i = 0; i < 17; i++) assert_int_equal(mattn_tok_token_type(g_tok, i), MATTN_TOK_CONTROL);
    assert_int_equal(mattn_tok_token_type(g_tok, 17), MATTN_TOK_NORMAL);
    const char *p;
    size_t n;
    assert_int_equal(mattn_tok_piece(g_tok, 43239, 0, &p, &n), MATTN_OK); /* "Ġabc" */
    assert_true(n == 4 && memcmp(p, " abc", 4) == 0);
    assert_int_equal(mattn_tok_piece(g_tok, 49151, 0, &p, &n), MATTN_OK);
    assert_true(n == 7 && memcmp(p, "ectable", 7) == 0);
}

static void test_whole(void **state) {
    (void)state;
    if (!g_path) skip();
    const mattn_st_tensor *want = ref("whole", MATTN_ST_I32);
    size_t n;
    int32_t *ids = encode(g_text, g_len, 0, &n);
    compare("the whole text", g_text, ids, n, want, 0, (size_t)want->numel);
    expect_roundtrip("the whole text", ids, n, 0, g_text, g_len);
    /* throughput on one thread: the best of 5 */
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = mattn_now();
        size_t m;
        assert_int_equal(mattn_tok_encode(g_tok, g_text, g_len, 0, ids, g_len + 1, &m), MATTN_OK);
        const double dt = mattn_now() - t0;
        if (dt < best) best = dt;
    }
    print_message("  encode: %zu bytes -> %zu ids in %.2f ms: %.1f MB/s, %.2f M ids/s\n", g_len, n, best * 1e3,
                  (double)g_len / best / 1e6, (double)n / best / 1e6);
    free(ids);
}

/* Each piece of a cut set (lines, chunks) encoded alone. */
static void check_cut(const char *name) {
    char key[64];
    snprintf(key, sizeof key, "%s_offsets", name);
    const mattn_st_tensor *offs = ref(key, MATTN_ST_I64);
    snprintf(key, sizeof key, "%s_ids", name);
    const mattn_st_tensor *want = ref(key, MATTN_ST_I32);
    snprintf(key, sizeof key, "%s_ids_offsets", name);
    const mattn_st_tensor *woffs = ref(key, MATTN_ST_I64);
    assert_int_equal(offs->numel, woffs->numel);
    assert_int_equal(i64_at(offs, offs->numel - 1), (int64_t)g_len);
    for (int64_t k = 0; k + 1 < offs->numel; k++) {
        const size_t a = (size_t)i64_at(offs, k), b = (size_t)i64_at(offs, k + 1);
        size_t n;
        int32_t *ids = encode(g_text + a, b - a, 0, &n);
        char what[96];
        snprintf(what, sizeof what, "%s %lld (bytes %zu..%zu)", name, (long long)k, a, b);
        const int64_t w0 = i64_at(woffs, k);
        compare(what, g_text + a, ids, n, want, w0, (size_t)(i64_at(woffs, k + 1) - w0));
        expect_roundtrip(what, ids, n, 0, g_text + a, b - a);
        free(ids);
    }
    print_message("  %s: %lld pieces alone agree with the reference\n", name, (long long)offs->numel - 1);
}

static void test_lines(void **state) {
    (void)state;
    if (!g_path) skip();
    check_cut("line");
}

static void test_chunks(void **state) {
    (void)state;
    if (!g_path) skip();
    check_cut("chunk");
}

static void test_chat(void **state) {
    (void)state;
    if (!g_path) skip();
    const mattn_st_tensor *text = ref("chat_text", MATTN_ST_U8), *offs = ref("chat_offsets", MATTN_ST_I64);
    const mattn_st_tensor *chat = ref("chat_ids", MATTN_ST_I32), *choffs = ref("chat_ids_offsets", MATTN_ST_I64);
    const mattn_st_tensor *plain = ref("chat_plain_ids", MATTN_ST_I32);
    const mattn_st_tensor *ploffs = ref("chat_plain_ids_offsets", MATTN_ST_I64);
    for (int64_t k = 0; k + 1 < offs->numel; k++) {
        const char *s = (const char *)text->data + i64_at(offs, k);
        const size_t len = (size_t)(i64_at(offs, k + 1) - i64_at(offs, k));
        char what[64];
        size_t n;
        snprintf(what, sizeof what, "chat string %lld, special tokens", (long long)k);
        int32_t *ids = encode(s, len, MATTN_TOK_SPECIAL, &n);
        compare(what, s, ids, n, chat, i64_at(choffs, k), (size_t)(i64_at(choffs, k + 1) - i64_at(choffs, k)));
        expect_roundtrip(what, ids, n, MATTN_TOK_SPECIAL, s, len);
        /* without MATTN_TOK_SPECIAL decode drops the control tokens' text */
        size_t m, specials = 0;
        assert_int_equal(mattn_tok_decode(g_tok, ids, n, 0, NULL, 0, &m), MATTN_OK);
        for (size_t i = 0; i < n; i++)
            if (mattn_tok_token_type(g_tok, ids[i]) == MATTN_TOK_CONTROL) {
                const char *p;
                size_t pl;
                assert_int_equal(mattn_tok_piece(g_tok, ids[i], MATTN_TOK_SPECIAL, &p, &pl), MATTN_OK);
                specials += pl;
            }
        assert_int_equal(m + specials, len);
        free(ids);
        snprintf(what, sizeof what, "chat string %lld, plain text", (long long)k);
        ids = encode(s, len, 0, &n);
        compare(what, s, ids, n, plain, i64_at(ploffs, k), (size_t)(i64_at(ploffs, k + 1) - i64_at(ploffs, k)));
        for (size_t i = 0; i < n; i++) assert_int_equal(mattn_tok_token_type(g_tok, ids[i]), MATTN_TOK_NORMAL);
        expect_roundtrip(what, ids, n, 0, s, len);
        free(ids);
    }
}

/* The 21 bytes SmolLM2's vocabulary has no token for (read with the gguf
 * package): encode drops them. */
static int missing_byte(unsigned char c) {
    static const unsigned char missing[] = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5,
                                            0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF};
    return memchr(missing, c, sizeof missing) != NULL;
}

/* encode s (both modes), decode: s again but the missing bytes */
static void expect_bytes_back(const char *what, const char *s, size_t len) {
    char *want = malloc(len + 1);
    assert_non_null(want);
    size_t k = 0;
    for (size_t i = 0; i < len; i++)
        if (!missing_byte((unsigned char)s[i])) want[k++] = s[i];
    for (int flags = 0; flags <= MATTN_TOK_SPECIAL; flags++) {
        size_t n;
        int32_t *ids = encode(s, len, flags, &n);
        for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < 49152);
        expect_roundtrip(what, ids, n, MATTN_TOK_SPECIAL, want, k);
        free(ids);
    }
    free(want);
}

/* Bytes that are no valid UTF-8, NUL, control bytes: encoded (both modes)
 * and decoded back exactly, but for the bytes the vocabulary lacks. */
static void test_invalid_utf8(void **state) {
    (void)state;
    if (!g_path) skip();
    static const char *const cases[] = {
        "\xff", "\xfe\xff", "\x80", "abc\x80" "def", "\xc3", "caf\xc3", "\xc3(", "\xe2\x82", "\xe2\x82(x",
        "\xf0\x9f\x98", "\xf0\x9f\x98 x", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xf8\x88\x80\x80\x80", "  \xff  \xff", "12\xff" "34", "it\xff's", "\xff<|im_end|>\xff",
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) expect_bytes_back(cases[c], cases[c], strlen(cases[c]));
    const char nul[] = "a\0b\0\0 \0 x\0<|im_end|>\0";
    expect_bytes_back("NUL bytes", nul, sizeof nul - 1);
    /* every byte value, alone and after a letter */
    for (int c = 0; c < 256; c++) {
        const char one[2] = {'q', (char)c};
        expect_bytes_back("one byte", one + 1, 1);
        expect_bytes_back("a letter and a byte", one, 2);
    }
    /* random bytes, and random bytes spliced into the text */
    uint64_t s = 99;
    char buf[4096];
    for (int it = 0; it < 200; it++) {
        const size_t len = (size_t)(mattn_splitmix64_next(&s) % sizeof buf);
        const size_t at = (size_t)(mattn_splitmix64_next(&s) % (g_len - sizeof buf));
        memcpy(buf, g_text + at, len);
        for (size_t i = 0; i < len; i++)
            if (it % 2 || mattn_splitmix64_next(&s) % 16 == 0) buf[i] = (char)mattn_splitmix64_next(&s);
        expect_bytes_back("random bytes", buf, len);
    }
}

/* Long runs: one piece of 300 KB of letters (BPE in O(n log n)), of spaces,
 * of digits, of one emoji, of a punctuation mark; no JIT stack trouble. */
static void test_long(void **state) {
    (void)state;
    if (!g_path) skip();
    const size_t len = 300000;
    char *s = malloc(len);
    assert_non_null(s);
    static const char *const unit[] = {"a", "ab", " ", "\n", "7", "\xf0\x9f\x98\x80", "!", " x", "\t \n"};
    for (size_t u = 0; u < sizeof unit / sizeof unit[0]; u++) {
        const size_t k = strlen(unit[u]);
        for (size_t i = 0; i < len; i++) s[i] = unit[u][i % k];
        const size_t m = len - len % k;
        const double t0 = mattn_now();
        size_t n;
        int32_t *ids = encode(s, m, 0, &n);
        const double dt = mattn_now() - t0;
        expect_roundtrip("a long run", ids, n, 0, s, m);
        print_message("  %zu bytes of '%s' repeated: %zu ids in %.1f ms\n", m,
                      u == 2 ? "space" : u == 3 ? "\\n" : u == 8 ? "\\t \\n" : unit[u], n, dt * 1e3);
        free(ids);
    }
    free(s);
}

static void test_bad_ids(void **state) {
    (void)state;
    if (!g_path) skip();
    const int32_t ids[] = {100, 49152};
    char out[64];
    size_t n;
    assert_int_equal(mattn_tok_decode(g_tok, ids, 2, 0, out, sizeof out, &n), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "ids[1] = 49152 is out of range (49152 tokens)"));
    const char *p;
    assert_int_equal(mattn_tok_piece(g_tok, -1, 0, &p, &n), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "token id -1 is out of range"));
}

int main(void) {
    const char *env = getenv("METAATTN_GGUF_MODEL");
    g_path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(g_path, R_OK) != 0) {
        printf("test_tokenizer: %s not found (set METAATTN_GGUF_MODEL): skipped\n", g_path);
        g_path = NULL;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab),  cmocka_unit_test(test_whole),        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_chunks), cmocka_unit_test(test_chat),         cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_long),   cmocka_unit_test(test_bad_ids),
    };
    const int failed = cmocka_run_group_tests(tests, setup, teardown);
    return failed ? failed : g_path ? 0 : 77; /* 77: ctest's SKIP_RETURN_CODE */
}
