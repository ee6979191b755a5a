/*
 * test_llama_bad.c — mattn_llama_open on hostile model files, each written
 * here byte by byte (tests/gguf_build.h): a one-block LLaMA of F32 tensors
 * (d 32, 2 query heads on one K/V head of 16, SwiGLU 32, context 16) with
 * tok_tiny's tokenizer (269 tokens, the embedding's rows), and that model
 * with one thing wrong:
 *  - refused by name, the status and message checked and printed
 *    (docs/errors.md quotes them): no or another architecture, a missing or
 *    mistyped hyper-parameter, hyper-parameters out of range or that do not
 *    fit together, a missing tensor, a tensor whose shape disagrees with
 *    the hyper-parameters, more blocks claimed than present, a vocabulary
 *    of another size than the embedding, a NaN norm weight;
 *  - truncated at every length: refused (MATTN_ERR_FORMAT) with a message,
 *    never a crash;
 *  - every allocation of open + cache + a forward + a decode step + the
 *    tokenizer's build and use failing in turn, once and from then on:
 *    MATTN_ERR_NOMEM, nothing leaked — or, when the one allocation refused
 *    was the regex JIT compiler's, success with the same ids (the tokenizer
 *    then runs PCRE2's interpreter).
 */
#include "test_util.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include "gguf_build.h"
#include "llama/llama.h"
#include "llama/tokenizer.h"

// ----------------------------------------------------------------------------
// the model, written byte by byte

typedef struct model_spec {
    const char *arch;          /* NULL: no general.architecture */
    int d, heads, kv_heads, ffn, layers, ctx;
    int td;                    /* the width the tensors have (0: d) */
    int tensor_layers;         /* blocks whose tensors are written */
    int rows;                  /* token_embd's rows */
    int tokens;                /* tokens in tokenizer.ggml.tokens: the first of tok_tiny's (0: none, no tokenizer) */
    float eps, norm;           /* RMSNorm epsilon, the value of every norm weight */
    const char *drop;          /* a tensor left out */
    const char *reshape;       /* a tensor of shape (ne0, ne1) instead */
    int64_t ne0, ne1;
    void (*extra)(gguf_build *g);  /* one more pair */
    const char *replace;       /* a hyper-parameter key (after "llama.") written by extra instead */
} model_spec;

static model_spec spec_ok(void) {
    return (model_spec){.arch = "llama", .d = 32, .heads = 2, .kv_heads = 1, .ffn = 32, .layers = 1, .ctx = 16,
                        .tensor_layers = 1, .rows = 269, .tokens = 269, .eps = 1e-5f, .norm = 1.0f};
}

typedef struct tinfo { char name[64]; int64_t ne0, ne1; } tinfo;

/* The tensor table of s (ggml order: ne0 the row length), n of them. */
static int tensor_table(const model_spec *s, tinfo *t) {
    const int d = s->td ? s->td : s->d, dh = s->heads ? d / s->heads : 0, dkv = s->kv_heads * dh, f = s->ffn;
    int n = 0;
#define T(NAME, A, B) (snprintf(t[n].name, sizeof t[n].name, "%s", NAME), t[n].ne0 = (A), t[n].ne1 = (B), n++)
    T("token_embd.weight", d, s->rows);
    for (int l = 0; l < s->tensor_layers; l++) {
        static const char *const suf[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                                           "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t ne[9][2] = {{d, 0}, {d, d}, {d, dkv}, {d, dkv}, {d, d}, {d, 0}, {d, f}, {d, f}, {f, d}};
        for (int i = 0; i < 9; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, suf[i]);
            T(name, ne[i][0], ne[i][1]);
        }
    }
    T("output_norm.weight", d, 0);
#undef T
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (s->drop && strcmp(t[i].name, s->drop) == 0) continue;
        t[k] = t[i];
        if (s->reshape && strcmp(t[k].name, s->reshape) == 0) t[k].ne0 = s->ne0, t[k].ne1 = s->ne1;
        k++;
    }
    return k;
}

static void write_model(gguf_build *out, const model_spec *s) {
    gguf_build g = {0};
    int nkv = 0;
    if (s->arch) gb_kv_str(&g, "general.architecture", s->arch), nkv++;
    const struct { const char *key; int v; } hp[6] = {
        {"context_length", s->ctx},          {"embedding_length", s->d},       {"block_count", s->layers},
        {"feed_forward_length", s->ffn},     {"attention.head_count", s->heads}, {"attention.head_count_kv", s->kv_heads}};
    for (int i = 0; i < 6; i++) {
        if (s->replace && strcmp(s->replace, hp[i].key) == 0) continue;
        char key[96];
        snprintf(key, sizeof key, "llama.%s", hp[i].key);
        gb_kv_u32(&g, key, (uint32_t)hp[i].v), nkv++;
    }
    if (!s->replace || strcmp(s->replace, "attention.layer_norm_rms_epsilon") != 0)
        gb_kv_f32(&g, "llama.attention.layer_norm_rms_epsilon", s->eps), nkv++;
    if (s->tokens) {
        gb_vocab v;
        gb_vocab_tiny(&v);
        v.n = (size_t)s->tokens < v.n ? (size_t)s->tokens : v.n;
        gb_tokenizer_kv(&g, "gpt2", "smollm", &v, 1, 2);
        nkv += 7;
    }
    if (s->extra) s->extra(&g), nkv++;
    tinfo t[64];
    const int nt = tensor_table(s, t);
    gb_header(out, 3, (uint64_t)nt, (uint64_t)nkv);
    gb_put(out, g.b, g.n);
    gb_free(&g);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        const int64_t ne[2] = {t[i].ne0, t[i].ne1};
        gb_tensor(out, t[i].name, t[i].ne1 ? 2 : 1, ne, 0 /* F32 */, off);
        off += ((uint64_t)(t[i].ne0 * (t[i].ne1 ? t[i].ne1 : 1)) * 4 + 31) / 32 * 32;
    }
    gb_align(out, 32);
    uint64_t r = 7;
    for (int i = 0; i < nt; i++) {
        const int64_t n = t[i].ne0 * (t[i].ne1 ? t[i].ne1 : 1);
        for (int64_t j = 0; j < n; j++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            gb_f32(out, t[i].ne1 ? (float)((double)(r >> 40) / (1 << 24) - 0.5) * 0.2f : s->norm);
        }
        if (i + 1 < nt) gb_align(out, 32);
    }
}

/* s as a file in the scratch directory; its path. */
static const char *model_file(const model_spec *s, const char *name) {
    gguf_build g = {0};
    write_model(&g, s);
    const char *path = tmpdir_path(name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(g.b, 1, g.n, fp), g.n);
    fclose(fp);
    gb_free(&g);
    return path;
}

// ----------------------------------------------------------------------------
// the model itself: opens, runs, tokenizes

static void test_model_ok(void **state) {
    (void)state;
    const model_spec s = spec_ok();
    mattn_llama *m = NULL;
    if (mattn_llama_open(model_file(&s, "ok.gguf"), &m) != MATTN_OK) fail_msg("%s", mattn_last_error());
    mattn_llama_info info;
    assert_int_equal(mattn_llama_get_info(m, &info), MATTN_OK);
    assert_int_equal(info.vocab_size, 269);
    assert_int_equal(info.head_dim, 16);
    mattn_llama_cache *c = NULL;
    assert_int_equal(mattn_llama_cache_init(m, 0, &c), MATTN_OK);
    int32_t ids[8];
    size_t n = 0;
    assert_int_equal(mattn_llama_tokenize(m, "abc xyz", 7, 0, ids, 8, &n), MATTN_OK);
    assert_int_equal(n, 3);   /* abc, " ", xyz */
    float lg[3 * 269];
    assert_int_equal(mattn_llama_forward(m, c, ids, 2, lg), MATTN_OK);
    assert_int_equal(mattn_llama_decode(m, c, ids[2], lg), MATTN_OK);
    assert_int_equal(mattn_llama_cache_length(c), 3);
    mattn_llama_cache_free(c);
    mattn_llama_free(m);
}

// ----------------------------------------------------------------------------
// refused by name

static void eps_str(gguf_build *g) { gb_kv_str(g, "llama.attention.layer_norm_rms_epsilon", "1e-5"); }
static void blocks_str(gguf_build *g) { gb_kv_str(g, "llama.block_count", "1"); }
static void vocab_key(gguf_build *g) { gb_kv_u32(g, "llama.vocab_size", 270); }
static void heads_i32(gguf_build *g) { gb_kv_i32(g, "llama.attention.head_count", -2); }

static void expect_refused(const char *what, const model_spec *s, mattn_status want, const char *fragment) {
    mattn_llama *m = (mattn_llama *)&m;
    const mattn_status st = mattn_llama_open(model_file(s, "bad.gguf"), &m);
    assert_null(m);
    if (st != want || !strstr(mattn_last_error(), fragment))
        fail_msg("%s: status %d (%s), message '%s'; wanted status %d and '%s'", what, st, mattn_status_str(st),
                 mattn_last_error(), want, fragment);
    const char *msg = strstr(mattn_last_error(), "bad.gguf: ");
    print_message("  %-36s %-20s %s\n", what, mattn_status_str(st), msg ? msg : mattn_last_error());
}

static void test_refused(void **state) {
    (void)state;
    model_spec s = spec_ok();
    s.arch = NULL;
    expect_refused("no architecture", &s, MATTN_ERR_FORMAT, "bad.gguf: general.architecture is missing");
    s = spec_ok(), s.arch = "gpt2";
    expect_refused("architecture 'gpt2'", &s, MATTN_ERR_UNSUPPORTED,
                   "bad.gguf: general.architecture is 'gpt2': only 'llama' is supported");
    s = spec_ok(), s.replace = "block_count";
    expect_refused("no block_count", &s, MATTN_ERR_FORMAT, "bad.gguf: the key llama.block_count is missing");
    s.extra = blocks_str;
    expect_refused("block_count a string", &s, MATTN_ERR_FORMAT,
                   "metadata 'llama.block_count' is STRING, expected an integer (u32)");
    s = spec_ok(), s.replace = "attention.head_count", s.extra = heads_i32;
    expect_refused("head_count -2", &s, MATTN_ERR_FORMAT,
                   "metadata 'llama.attention.head_count' = -2 (INT32) does not fit in u32");
    s = spec_ok(), s.replace = "attention.layer_norm_rms_epsilon", s.extra = eps_str;
    expect_refused("epsilon a string", &s, MATTN_ERR_FORMAT, "'llama.attention.layer_norm_rms_epsilon' is STRING");
    s = spec_ok(), s.eps = -1.0f;
    expect_refused("epsilon -1", &s, MATTN_ERR_FORMAT,
                   "bad.gguf: llama.attention.layer_norm_rms_epsilon = -1 must be positive and finite");
    s = spec_ok(), s.eps = NAN;
    expect_refused("epsilon NaN", &s, MATTN_ERR_FORMAT, "layer_norm_rms_epsilon = nan must be positive and finite");
    s = spec_ok(), s.layers = 1 << 20;
    expect_refused("block_count 2^20", &s, MATTN_ERR_FORMAT, "bad.gguf: llama.block_count = 1048576 is outside [1, 4096]");
    s = spec_ok(), s.layers = 0;
    expect_refused("block_count 0", &s, MATTN_ERR_FORMAT, "llama.block_count = 0 is outside [1, 4096]");
    s = spec_ok(), s.ctx = 0;
    expect_refused("context_length 0", &s, MATTN_ERR_FORMAT, "llama.context_length = 0 is outside [1, 16777216]");
    s = spec_ok(), s.d = 1 << 30, s.td = 32;
    expect_refused("embedding_length 2^30", &s, MATTN_ERR_FORMAT, "llama.embedding_length = 1073741824 is outside");
    s = spec_ok(), s.heads = 3;
    expect_refused("embedding_length % head_count", &s, MATTN_ERR_FORMAT,
                   "bad.gguf: llama.embedding_length 32 is not a multiple of attention.head_count 3");
    s = spec_ok(), s.d = 30, s.heads = 2;
    expect_refused("odd head dimension", &s, MATTN_ERR_UNSUPPORTED,
                   "bad.gguf: head dimension 15 (embedding_length / head_count): must be even");
    s = spec_ok(), s.kv_heads = 3;
    expect_refused("head_count_kv 3 of 2", &s, MATTN_ERR_FORMAT,
                   "llama.attention.head_count_kv 3 does not divide head_count 2");
    s = spec_ok(), s.drop = "blk.0.ffn_up.weight";
    expect_refused("missing tensor", &s, MATTN_ERR_FORMAT, "bad.gguf: tensor 'blk.0.ffn_up.weight' is missing");
    s = spec_ok(), s.drop = "token_embd.weight";
    expect_refused("missing embedding", &s, MATTN_ERR_FORMAT, "tensor 'token_embd.weight' is missing");
    s = spec_ok(), s.layers = 2;
    expect_refused("block_count 2, one block", &s, MATTN_ERR_FORMAT, "tensor 'blk.1.attn_q.weight' is missing");
    s = spec_ok(), s.reshape = "blk.0.attn_q.weight", s.ne0 = 32, s.ne1 = 16;
    expect_refused("attn_q of another shape", &s, MATTN_ERR_FORMAT,
                   "bad.gguf: tensor 'blk.0.attn_q.weight' has shape [32, 16] (ggml order), expected [32, 32]");
    s = spec_ok(), s.reshape = "blk.0.ffn_down.weight", s.ne0 = 64, s.ne1 = 32;
    expect_refused("ffn_down of another width", &s, MATTN_ERR_FORMAT,
                   "tensor 'blk.0.ffn_down.weight' has shape [64, 32] (ggml order), expected [32, 32]");
    s = spec_ok(), s.reshape = "token_embd.weight", s.ne0 = 16, s.ne1 = 269;
    expect_refused("embedding of another width", &s, MATTN_ERR_FORMAT,
                   "tensor 'token_embd.weight' has shape [16, 269] (ggml order), expected [32, 269]");
    s = spec_ok(), s.reshape = "blk.0.attn_norm.weight", s.ne0 = 32, s.ne1 = 2;
    expect_refused("a norm of two rows", &s, MATTN_ERR_FORMAT,
                   "tensor 'blk.0.attn_norm.weight' has shape [32, 2] (ggml order), expected [32]");
    s = spec_ok(), s.extra = vocab_key;
    expect_refused("vocab_size 270, 269 rows", &s, MATTN_ERR_FORMAT,
                   "bad.gguf: llama.vocab_size = 270 but token_embd.weight has 269 rows");
    s = spec_ok(), s.tokens = 268;
    expect_refused("268 tokens, 269 rows", &s, MATTN_ERR_FORMAT,
                   "bad.gguf: tokenizer.ggml.tokens has 268 tokens but token_embd.weight has 269 rows (one per token)");
    s = spec_ok(), s.rows = 300;
    expect_refused("269 tokens, 300 rows", &s, MATTN_ERR_FORMAT, "has 269 tokens but token_embd.weight has 300 rows");
    s = spec_ok(), s.norm = NAN;
    expect_refused("NaN norm weight", &s, MATTN_ERR_NUMERIC, "bad.gguf: a norm weight is not finite");
}

// ----------------------------------------------------------------------------
// truncated at every length

static void test_truncated(void **state) {
    (void)state;
    const model_spec s = spec_ok();
    gguf_build g = {0};
    write_model(&g, &s);
    const char *path = tmpdir_path("cut.gguf");
    const int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, g.b, g.n), (ssize_t)g.n);
    mattn_llama *m = NULL;
    assert_int_equal(mattn_llama_open(path, &m), MATTN_OK);
    mattn_llama_free(m);
    int seen_magic = 0, seen_meta = 0, seen_data = 0;
    for (size_t len = g.n; len-- > 0;) {   /* cut the file shorter and shorter */
        assert_int_equal(ftruncate(fd, (off_t)len), 0);
        m = (mattn_llama *)&m;
        const mattn_status st = mattn_llama_open(path, &m);
        assert_null(m);
        if (st != MATTN_ERR_FORMAT || !strstr(mattn_last_error(), "cut.gguf"))
            fail_msg("cut at %zu of %zu bytes: status %d, message '%s'", len, g.n, st, mattn_last_error());
        const char *e = mattn_last_error();
        seen_magic |= strstr(e, "too short for a GGUF file") != NULL;
        seen_meta |= strstr(e, "file truncated") != NULL || strstr(e, "exceeds the") != NULL;
        seen_data |= strstr(e, "exceeds the file") != NULL;
        if (len == g.n - 1 || len == 4000 || len == 23)
            print_message("  cut at %5zu of %zu: %s\n", len, g.n, strstr(e, "cut.gguf"));
    }
    close(fd);
    assert_true(seen_magic && seen_meta && seen_data);
    print_message("  %zu truncations of a %zu-byte model, every one MATTN_ERR_FORMAT\n", g.n, g.n);
    gb_free(&g);
}

// ----------------------------------------------------------------------------
// every allocation failing in turn

/* open, a cache, a forward of two tokens, a decode step, the tokenizer
 * (built on first use) encoding and a piece */
static mattn_status op_all(const char *path, int *jit_off) {
    mattn_llama *m = NULL;
    mattn_llama_cache *c = NULL;
    mattn_status st = mattn_llama_open(path, &m);
    if (st == MATTN_OK) st = mattn_llama_cache_init(m, 8, &c);
    float lg[2 * 269];
    const int32_t tok[2] = {260, 5};
    if (st == MATTN_OK) st = mattn_llama_forward(m, c, tok, 2, lg);
    if (st == MATTN_OK) st = mattn_llama_decode(m, c, 262, lg);
    int32_t ids[8];
    size_t n = 0;
    if (st == MATTN_OK) st = mattn_llama_tokenize(m, "abc <|im_end|>", 14, 1, ids, 8, &n);
    if (st == MATTN_OK) {
        const int32_t want[3] = {260, 36, 2};
        assert_int_equal(n, 3);
        assert_memory_equal(ids, want, sizeof want);
        const char *p;
        size_t len;
        st = mattn_llama_token_piece(m, 262, 0, &p, &len);
        if (st == MATTN_OK) assert_true(len == 3 && memcmp(p, "xyz", 3) == 0);
    }
    if (m && m->tok) *jit_off = !mattn_tok_jit(m->tok);
    if (st != MATTN_OK && m) assert_true(mattn_llama_errmsg(m)[0] != 0 || mattn_last_error()[0] != 0);
    mattn_llama_cache_free(c);
    mattn_llama_free(m);
    return st;
}

static void test_faults(void **state) {
    (void)state;
    const model_spec s = spec_ok();
    const char *path = model_file(&s, "faults.gguf");
    const long live0 = mattn_alloc_live();
    int jit_off = 0;
    mattn_fault_alloc(LONG_MAX, 0);   /* count only */
    assert_int_equal(op_all(path, &jit_off), MATTN_OK);
    const long total = mattn_alloc_count();
    mattn_fault_alloc(0, 0);
    assert_int_equal(mattn_alloc_live(), live0);
    long nomem = 0, interpreted = 0;
    for (int persistent = 0; persistent <= 1; persistent++)
        for (long n = 1; n <= total; n++) {
            jit_off = 0;
            mattn_fault_alloc(n, persistent);
            mattn_alloc_mark();
            const mattn_status st = op_all(path, &jit_off);
            const int failed = mattn_alloc_failed();
            mattn_fault_alloc(0, 0);
            if (mattn_alloc_live() != live0)
                fail_msg("allocation %ld of %ld failing: %ld allocations leaked", n, total, mattn_alloc_live() - live0);
            if (st == MATTN_ERR_NOMEM) {
                if (!strstr(mattn_last_error(), "out of memory"))
                    fail_msg("allocation %ld failing: MATTN_ERR_NOMEM with the message '%s'", n, mattn_last_error());
                if (!persistent && (n == 1 || n == total || n == total - 20))
                    print_message("  allocation %2ld of %ld failing: %s\n", n, total, mattn_last_error());
                nomem++;
                continue;
            }
            /* the one allocation the model can do without: the regex JIT's (interpreted then, same ids) */
            if (st != MATTN_OK || !failed || !jit_off || persistent)
                fail_msg("allocation %ld of %ld failing (%s): status %d (%s): %s", n, total,
                         persistent ? "from then on" : "once", st, mattn_status_str(st), mattn_last_error());
            interpreted++;
        }
    print_message("  open + cache + forward + decode + tokenizer: %ld allocations, %ld of %ld failing runs returned "
                  "MATTN_ERR_NOMEM, %ld ran with the regexes interpreted\n", total, nomem, 2 * total, interpreted);
    assert_true(nomem + interpreted == 2 * total && nomem > total);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_ok),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
