/*
 * test_tokenizer_unit.c — the byte-level BPE tokenizer (src/llama/) on the
 * hand-made vocabularies of tests/fixtures/gen_tokenizer_fixture.py
 * (tok_tiny*.gguf, tok_bad_*.gguf), every expected id worked out by hand:
 * merge order and ties, a merge result that is no token, a byte without a
 * token (dropped), the digit split of "smollm" against "gpt-2", whitespace runs,
 * special tokens only in chat mode, decode, the output conventions, the
 * refusals, every allocation failing in turn.  The real vocabulary
 * (SmolLM2) against a reference tokenizer is test_tokenizer.c.
 */
#include "test_util.h"

#include <limits.h>

#include "io/io.h"
#include "llama/tokenizer.h"

#define TINY "tests/fixtures/tok_tiny.gguf"
#define TINY_GPT2 "tests/fixtures/tok_tiny_gpt2.gguf"

/* tok_tiny's ids: 4 special tokens, then the 256 bytes but '~' and 0xFF in
 * byte order, then the merged tokens. */
#define B(c) (4 + (int32_t)(unsigned char)(c) - ((unsigned char)(c) > 0x7E))
enum { BC = 258, AB, ABC, AA, XYZ, SP_A, T12, SP2, SP4, PQ, PQR, N_VOCAB };
#define SP B(' ')

static mattn_gguf_file *g_file, *g_file_gpt2;
static mattn_tok *g_tok, *g_tok_gpt2;

static mattn_tok *open_tok(const char *path, mattn_gguf_file **f) {
    char err[MATTN_ERRMSG_LEN];
    if (mattn_gguf_open(path, f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    mattn_tok *t = NULL;
    if (mattn_tok_init_gguf(*f, &t) != MATTN_OK) fail_msg("%s", mattn_last_error());
    return t;
}

static int setup(void **state) {
    (void)state;
    g_tok = open_tok(TINY, &g_file);
    g_tok_gpt2 = open_tok(TINY_GPT2, &g_file_gpt2);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mattn_tok_free(g_tok);
    mattn_tok_free(g_tok_gpt2);
    mattn_gguf_close(g_file);
    mattn_gguf_close(g_file_gpt2);
    return 0;
}

/* encode s (C string) and compare with want[0..n) */
static void expect_ids(const mattn_tok *t, const char *s, size_t len, int flags, const int32_t *want, size_t n) {
    int32_t ids[256];
    size_t got = 0;
    mattn_status st = mattn_tok_encode(t, s, len, flags, ids, 256, &got);
    if (st != MATTN_OK) fail_msg("encode '%s': %s", s, mattn_last_error());
    int same = got == n;
    for (size_t i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        char a[512] = "", b[512] = "";
        for (size_t i = 0; i < got && i < 40; i++) snprintf(a + strlen(a), sizeof a - strlen(a), " %d", ids[i]);
        for (size_t i = 0; i < n && i < 40; i++) snprintf(b + strlen(b), sizeof b - strlen(b), " %d", want[i]);
        fail_msg("encode '%s' (flags %d): got [%s ], expected [%s ]", s, flags, a, b);
    }
}
#define EXPECT_NONE(t, s, flags) expect_ids(t, s, sizeof(s) - 1, flags, NULL, 0)
#define EXPECT(t, s, flags, ...)                                                           \
    do {                                                                                   \
        const int32_t want_[] = {__VA_ARGS__};                                             \
        expect_ids(t, s, sizeof(s) - 1, flags, want_, sizeof want_ / sizeof want_[0]);     \
    } while (0)

static void test_vocab(void **state) {
    (void)state;
    assert_int_equal(mattn_tok_n_vocab(g_tok), N_VOCAB);
    assert_int_equal(mattn_tok_bos(g_tok), 1);
    assert_int_equal(mattn_tok_eos(g_tok), 2);
    assert_int_equal(mattn_tok_unk(g_tok), 0);
    assert_int_equal(mattn_tok_pad(g_tok), 2);
    assert_int_equal(mattn_tok_add_bos(g_tok), 0);
    assert_string_equal(mattn_tok_pre_name(g_tok), "smollm");
    assert_string_equal(mattn_tok_pre_name(g_tok_gpt2), "gpt-2");
    assert_int_equal(mattn_tok_token_type(g_tok, 0), MATTN_TOK_CONTROL);
    assert_int_equal(mattn_tok_token_type(g_tok, 3), MATTN_TOK_USER_DEFINED);
    assert_int_equal(mattn_tok_token_type(g_tok, B('a')), MATTN_TOK_NORMAL);
    assert_int_equal(mattn_tok_token_type(g_tok, N_VOCAB), -1);
    assert_int_equal(mattn_tok_token_type(g_tok, -1), -1);
    assert_int_equal(mattn_tok_find_special(g_tok, "<|im_end|>", 10), 2);
    assert_int_equal(mattn_tok_find_special(g_tok, "<tool>", 6), 3);
    assert_int_equal(mattn_tok_find_special(g_tok, "ab", 2), -1);
    /* pieces: bytes back through bytes_to_unicode */
    const char *p;
    size_t n;
    assert_int_equal(mattn_tok_piece(g_tok, SP_A, 0, &p, &n), MATTN_OK);
    assert_true(n == 2 && memcmp(p, " a", 2) == 0);
    assert_int_equal(mattn_tok_piece(g_tok, B(0), 0, &p, &n), MATTN_OK);
    assert_true(n == 1 && p[0] == 0);
    assert_int_equal(mattn_tok_piece(g_tok, B(0xAD), 0, &p, &n), MATTN_OK);
    assert_true(n == 1 && (unsigned char)p[0] == 0xAD);
    assert_int_equal(mattn_tok_piece(g_tok, 1, 0, &p, &n), MATTN_OK);
    assert_int_equal(n, 0); /* control: nothing unless asked */
    assert_int_equal(mattn_tok_piece(g_tok, 1, MATTN_TOK_SPECIAL, &p, &n), MATTN_OK);
    assert_true(n == 12 && memcmp(p, "<|im_start|>", 12) == 0);
    assert_int_equal(mattn_tok_piece(g_tok, 3, 0, &p, &n), MATTN_OK);
    assert_true(n == 6 && memcmp(p, "<tool>", 6) == 0); /* user-defined: always */
    assert_int_equal(mattn_tok_piece(g_tok, N_VOCAB, 0, &p, &n), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "token id 269 is out of range"));
}

static void test_merges(void **state) {
    (void)state;
    EXPECT(g_tok, "abc", 0, ABC);       /* b c (rank 0) before a b (rank 1), then a bc */
    EXPECT(g_tok, "ab", 0, AB);
    EXPECT(g_tok, "abab", 0, AB, AB);
    EXPECT(g_tok, "cab", 0, B('c'), AB);
    EXPECT(g_tok, "aaa", 0, AA, B('a'));  /* ties: leftmost first */
    EXPECT(g_tok, "aaaa", 0, AA, AA);
    EXPECT(g_tok, "aaaaa", 0, AA, AA, B('a'));
    EXPECT(g_tok, "xyz", 0, XYZ);       /* x y -> xy (no token) -> xy z -> xyz */
    EXPECT(g_tok, "xy", 0, B('x'), B('y')); /* xy is no token: its bytes */
    EXPECT(g_tok, "xyzxy", 0, XYZ, B('x'), B('y'));
    EXPECT(g_tok, "pqr", 0, PQR);
    EXPECT(g_tok, "pqrpq", 0, PQR, PQ);
    EXPECT(g_tok, " a", 0, SP_A);
    EXPECT(g_tok, "a a", 0, B('a'), SP_A);
    EXPECT(g_tok, " abc", 0, SP, ABC);  /* b c (0), a bc (2) come before Ġ a (6), which then has no a left */
}

static void test_empty_and_missing(void **state) {
    (void)state;
    size_t n = 99;
    int32_t ids[4];
    assert_int_equal(mattn_tok_encode(g_tok, NULL, 0, 0, ids, 4, &n), MATTN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(mattn_tok_encode(g_tok, "", 0, MATTN_TOK_SPECIAL, ids, 4, &n), MATTN_OK);
    assert_int_equal(n, 0);
    EXPECT_NONE(g_tok, "~", 0);                      /* a byte without a token: dropped */
    EXPECT(g_tok, "a~b", 0, B('a'), B('b'));
    EXPECT_NONE(g_tok, "\xff", 0);
    EXPECT(g_tok, "ab\xff", 0, AB);
    EXPECT(g_tok, "a~~a", 0, B('a'), B('a'));           /* "~~" is a piece of its own: no "a a" */
    EXPECT(g_tok, "\x00" "ab", 0, B(0), AB);
}

static void test_digits(void **state) {
    (void)state;
    EXPECT(g_tok, "12", 0, B('1'), B('2'));          /* smollm: every digit alone */
    EXPECT(g_tok_gpt2, "12", 0, T12);                /* gpt-2: " ?\p{N}+" */
    EXPECT(g_tok, "a12b", 0, B('a'), B('1'), B('2'), B('b'));
    EXPECT(g_tok_gpt2, "a12b", 0, B('a'), T12, B('b'));
    EXPECT(g_tok, " 12", 0, SP, B('1'), B('2'));
    EXPECT(g_tok_gpt2, " 12", 0, SP, T12);           /* Ġ1 is no merge: Ġ, 12 */
}

static void test_whitespace(void **state) {
    (void)state;
    /* \s+(?!\S) leaves the last space of a run to the word after it */
    EXPECT(g_tok, "    x", 0, SP2, SP, SP, B('x'));
    EXPECT(g_tok, "    ", 0, SP4);                   /* at the end the whole run */
    EXPECT(g_tok, "     ", 0, SP4, SP);
    EXPECT(g_tok, "  a", 0, SP, SP_A);
    EXPECT(g_tok, "a\n\nb", 0, B('a'), B('\n'), B('\n'), B('b'));
    /* a digit ends a piece under smollm: the spaces before it see the end */
    EXPECT(g_tok, "  1", 0, SP2, B('1'));
    EXPECT(g_tok_gpt2, "  1", 0, SP, B(' '), B('1'));
}

static void test_special(void **state) {
    (void)state;
    EXPECT(g_tok, "<|im_start|>ab<|im_end|>", MATTN_TOK_SPECIAL, 1, AB, 2);
    EXPECT(g_tok, "<|im_start|>ab<|im_end|>", 0, B('<'), B('|'), B('i'), B('m'), B('_'), B('s'), B('t'), B('a'),
           B('r'), B('t'), B('|'), B('>'), AB, B('<'), B('|'), B('i'), B('m'), B('_'), B('e'), B('n'), B('d'), B('|'),
           B('>'));
    EXPECT(g_tok, "<tool>", MATTN_TOK_SPECIAL, 3);
    EXPECT(g_tok, "<tool>", 0, B('<'), B('t'), B('o'), B('o'), B('l'), B('>'));
    EXPECT(g_tok, "<<|im_end|>>", MATTN_TOK_SPECIAL, B('<'), 2, B('>'));
    EXPECT(g_tok, "<|im_end|<|im_end|>", MATTN_TOK_SPECIAL, B('<'), B('|'), B('i'), B('m'), B('_'), B('e'), B('n'),
           B('d'), B('|'), 2);
    EXPECT(g_tok, "ab<|endoftext|><|endoftext|>ab", MATTN_TOK_SPECIAL, AB, 0, 0, AB);
    /* the text between special tokens is its own text: no merge across */
    EXPECT(g_tok, "a<tool>b", MATTN_TOK_SPECIAL, B('a'), 3, B('b'));
    EXPECT(g_tok, " <tool> a", MATTN_TOK_SPECIAL, SP, 3, SP_A);
}

static void test_decode(void **state) {
    (void)state;
    const int32_t ids[] = {1, AB, SP_A, 2, 3, B(0), B(0xFE), 0};
    char out[64];
    size_t n;
    assert_int_equal(mattn_tok_decode(g_tok, ids, 8, MATTN_TOK_SPECIAL, out, sizeof out, &n), MATTN_OK);
    const char want_s[] = "<|im_start|>ab a<|im_end|><tool>\0\xfe<|endoftext|>";
    assert_int_equal(n, sizeof want_s - 1);
    assert_memory_equal(out, want_s, n);
    assert_int_equal(out[n], '\0');
    assert_int_equal(mattn_tok_decode(g_tok, ids, 8, 0, out, sizeof out, &n), MATTN_OK);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "ab a<tool>\0\xfe", 12);
    /* counting, a short buffer */
    assert_int_equal(mattn_tok_decode(g_tok, ids, 8, 0, NULL, 0, &n), MATTN_OK);
    assert_int_equal(n, 12);
    memset(out, 'z', sizeof out);
    assert_int_equal(mattn_tok_decode(g_tok, ids, 8, 0, out, 5, &n), MATTN_ERR_INVALID_ARG);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "ab a<z", 6);
    assert_non_null(strstr(mattn_last_error(), "12 bytes needed, room for 5"));
    /* ids out of range */
    const int32_t bad[] = {AB, N_VOCAB};
    assert_int_equal(mattn_tok_decode(g_tok, bad, 2, 0, out, sizeof out, &n), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "ids[1] = 269 is out of range"));
    const int32_t neg[] = {-5};
    assert_int_equal(mattn_tok_decode(g_tok, neg, 1, 0, out, sizeof out, &n), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "ids[0] = -5"));
    assert_int_equal(mattn_tok_decode(g_tok, NULL, 0, 0, out, sizeof out, &n), MATTN_OK);
    assert_int_equal(n, 0);
}

static void test_capacity(void **state) {
    (void)state;
    int32_t ids[8] = {0};
    size_t n = 0;
    assert_int_equal(mattn_tok_encode(g_tok, "abcabcab", 8, 0, NULL, 0, &n), MATTN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(mattn_tok_encode(g_tok, "abcabcab", 8, 0, ids, 2, &n), MATTN_ERR_INVALID_ARG);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], ABC);
    assert_int_equal(ids[1], ABC);
    assert_int_equal(ids[2], 0); /* nothing past cap */
    assert_non_null(strstr(mattn_last_error(), "3 ids needed, room for 2"));
    assert_int_equal(mattn_tok_encode(g_tok, "abcabcab", 8, 0, ids, 3, &n), MATTN_OK);
    assert_int_equal(ids[2], AB);
    assert_int_equal(mattn_tok_encode(g_tok, NULL, 3, 0, ids, 3, &n), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_tok_encode(NULL, "a", 1, 0, ids, 3, &n), MATTN_ERR_INVALID_ARG);
}

/* Random bytes (no '~', no 0xFF: those have no token here) round-trip. */
static void test_random_bytes(void **state) {
    (void)state;
    uint64_t s = 12345;
    unsigned char buf[300];
    int32_t ids[300];
    char back[400];
    for (int it = 0; it < 2000; it++) {
        const size_t len = (size_t)(mattn_splitmix64_next(&s) % 300);
        for (size_t i = 0; i < len; i++) {
            unsigned char c;
            do c = (unsigned char)mattn_splitmix64_next(&s);
            while (c == '~' || c == 0xFF);
            if (it % 3 == 0) c = "ab c1\xc3\xa9\x80 <|>"[c % 13]; /* denser in merges and specials */
            buf[i] = c;
        }
        for (int flags = 0; flags <= MATTN_TOK_SPECIAL; flags++) {
            size_t n, m;
            assert_int_equal(mattn_tok_encode(g_tok, (const char *)buf, len, flags, ids, 300, &n), MATTN_OK);
            assert_int_equal(mattn_tok_decode(g_tok, ids, n, MATTN_TOK_SPECIAL, back, sizeof back, &m), MATTN_OK);
            if (m != len || memcmp(back, buf, len) != 0) fail_msg("iteration %d: %zu bytes came back as %zu", it, len, m);
        }
    }
}

static void expect_refused(const char *path, mattn_status want, const char *fragment) {
    char err[MATTN_ERRMSG_LEN];
    mattn_gguf_file *f = NULL;
    if (mattn_gguf_open(path, &f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    mattn_tok *t = (mattn_tok *)1;
    assert_int_equal(mattn_tok_init_gguf(f, &t), want);
    assert_null(t);
    if (!strstr(mattn_last_error(), fragment)) fail_msg("message '%s' lacks '%s'", mattn_last_error(), fragment);
    mattn_gguf_close(f);
}

static void test_refused(void **state) {
    (void)state;
    expect_refused("tests/fixtures/tok_bad_pre.gguf", MATTN_ERR_UNSUPPORTED,
                   "tokenizer.ggml.pre 'qwen2' is not supported (known: gpt-2, smollm)");
    expect_refused("tests/fixtures/tok_bad_model.gguf", MATTN_ERR_UNSUPPORTED, "tokenizer.ggml.model 'llama' is not supported");
    expect_refused("tests/fixtures/tok_bad_merge.gguf", MATTN_ERR_FORMAT, "merge 13 'abc' is not two tokens");
    expect_refused("tests/fixtures/tok_bad_id.gguf", MATTN_ERR_FORMAT,
                   "tokenizer.ggml.bos_token_id = 269 is not a token id (the vocabulary has 269 tokens)");
    expect_refused("tests/fixtures/gguf_meta.gguf", MATTN_ERR_NOT_FOUND, "tokenizer.ggml.model");
    mattn_tok *t = (mattn_tok *)1;
    assert_int_equal(mattn_tok_init_gguf(NULL, &t), MATTN_ERR_INVALID_ARG);
    assert_null(t);
    mattn_tok_free(NULL);
}

// ----------------------------------------------------------------------------
// every allocation failing in turn (tests/test_faults.c's pattern)

static mattn_status op_init(void *ctx) {
    (void)ctx;
    mattn_tok *t = NULL;
    mattn_alloc_mark();
    mattn_status st = mattn_tok_init_gguf(g_file, &t);
    if (st != MATTN_OK) {
        assert_null(t);
        if (st == MATTN_ERR_NOMEM) assert_non_null(strstr(mattn_last_error(), "out of memory"));
        return st;
    }
    /* the one allocation init can do without is the JIT compiler's: a
     * tokenizer made despite a failed one runs the interpreter and still
     * encodes right (or runs out of memory doing so) */
    if (mattn_alloc_failed()) assert_int_equal(mattn_tok_jit(t), 0);
    const char text[] = "abc xyzxy  12<|im_end|>";
    const int32_t want[] = {ABC, SP, XYZ, B('x'), B('y'), SP2, B('1'), B('2'), 2};
    int32_t ids[32];
    size_t n = 0;
    st = mattn_tok_encode(t, text, sizeof text - 1, MATTN_TOK_SPECIAL, ids, 32, &n);
    mattn_tok_free(t);
    if (st == MATTN_ERR_NOMEM) return st;
    assert_int_equal(st, MATTN_OK);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    return MATTN_OK;
}

/* one piece of 200 letters: the symbol and queue arrays leave the stack */
static mattn_status op_encode(void *ctx) {
    (void)ctx;
    char text[200];
    for (int i = 0; i < 200; i++) text[i] = "abcxyz"[i % 6];
    int32_t ids[200];
    size_t n = 0;
    mattn_status st = mattn_tok_encode(g_tok, text, 200, 0, ids, 200, &n);
    if (st != MATTN_OK) return st;
    assert_int_equal(n, 67);
    for (int i = 0; i < 66; i++) assert_int_equal(ids[i], i % 2 ? XYZ : ABC);
    assert_int_equal(ids[66], AB);
    return MATTN_OK;
}

static void inject(const char *what, mattn_status (*op)(void *), long *nomem_out) {
    const long live0 = mattn_alloc_live();
    mattn_fault_alloc(LONG_MAX, 0); /* count only */
    assert_int_equal(op(NULL), MATTN_OK);
    const long total = mattn_alloc_count();
    mattn_fault_alloc(0, 0);
    assert_int_equal(mattn_alloc_live(), live0);
    long nomem = 0;
    for (int persistent = 0; persistent <= 1; persistent++)
        for (long n = 1; n <= total; n++) {
            mattn_fault_alloc(n, persistent);
            mattn_status st = op(NULL);
            mattn_fault_alloc(0, 0);
            if (st != MATTN_OK && st != MATTN_ERR_NOMEM)
                fail_msg("%s: allocation %ld of %ld failing (%s) gave status %d: %s", what, n, total,
                         persistent ? "from then on" : "once", st, mattn_last_error());
            if (mattn_alloc_live() != live0)
                fail_msg("%s: allocation %ld of %ld failing: %ld allocations leaked", what, n, total,
                         mattn_alloc_live() - live0);
            nomem += st == MATTN_ERR_NOMEM;
        }
    print_message("  %-10s %4ld allocations, %4ld of %4ld failing runs returned MATTN_ERR_NOMEM\n", what, total, nomem,
                  2 * total);
    *nomem_out = nomem;
}

static void test_faults(void **state) {
    (void)state;
    long nomem;
    inject("init", op_init, &nomem);
    assert_true(nomem > 0);
    inject("encode", op_encode, &nomem);
    assert_true(nomem > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab),       cmocka_unit_test(test_merges),   cmocka_unit_test(test_empty_and_missing),
        cmocka_unit_test(test_digits),      cmocka_unit_test(test_whitespace), cmocka_unit_test(test_special),
        cmocka_unit_test(test_decode),      cmocka_unit_test(test_capacity), cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_refused),     cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
