/*
 * test_gguf_model.c — the GGUF reader on a real model: SmolLM2-135M-Instruct
 * quantised to Q4_1 (98 MB, not in the repository).  The file is
 * $METAATTN_GGUF_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf under
 * the working directory (ctest runs in the source directory; models/ is
 * gitignored).  Absent: the test is skipped (exit 77, ctest SKIP_RETURN_CODE).
 *
 * Every expected number was read with the gguf package (gguf.GGUFReader;
 * dequantised values with gguf.quants.dequantize).
 */
#include "test_util.h"

#include <unistd.h>

#include "io/io.h"

static const char *g_path;

static int64_t count_type(const mattn_gguf_file *f, mattn_ggml_type type) {
    int64_t n = 0;
    for (int64_t i = 0; i < mattn_gguf_n_tensors(f); i++) n += mattn_gguf_tensor_at(f, i)->type == type;
    return n;
}

static void expect_u32(const mattn_gguf_file *f, const char *key, uint32_t want) {
    uint32_t v = 0;
    assert_int_equal(mattn_gguf_get_u32(f, key, &v), MATTN_OK);
    if (v != want) fail_msg("%s = %u, expected %u", key, v, want);
}

static void expect_str(const mattn_gguf_file *f, const char *key, const char *want) {
    mattn_gguf_str s;
    assert_int_equal(mattn_gguf_get_str(f, key, &s), MATTN_OK);
    if (!mattn_gguf_str_eq(s, want)) fail_msg("%s = '%.*s', expected '%s'", key, (int)s.len, s.ptr, want);
}

/* Row 1 of a tensor, dequantised: its first values and its sum. */
static void expect_row1(const mattn_gguf_file *f, const char *name, mattn_ggml_type type, int64_t ne0, int64_t ne1,
                        const float *first, int nfirst, double sum) {
    const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, name);
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    const size_t row_bytes = mattn_gguf_nbytes(type, ne0);
    assert_int_equal(t->nbytes, row_bytes * (size_t)ne1);
    float *x = falloc((size_t)ne0);
    const unsigned char *row = (const unsigned char *)t->data + (ne1 > 1 ? row_bytes : 0);
    assert_int_equal(mattn_gguf_dequant_ref(type, row, x, ne0), MATTN_OK);
    for (int i = 0; i < nfirst; i++)
        if (x[i] != first[i])
            fail_msg("%s row 1 [%d] = %a, the gguf package gives %a", name, i, (double)x[i], (double)first[i]);
    double s = 0;
    for (int64_t i = 0; i < ne0; i++) s += x[i];
    assert_true(fabs(s - sum) <= 1e-9 * fmax(1.0, fabs(sum)));
    free(x);
}

static void test_smollm2(void **state) {
    (void)state;
    if (!g_path) skip();
    char err[MATTN_ERRMSG_LEN];
    mattn_gguf_file *f = NULL;
    const double t0 = mattn_now();
    mattn_status st = mattn_gguf_open(g_path, &f, err, sizeof err);
    const double dt = mattn_now() - t0;
    if (st != MATTN_OK) fail_msg("%s", err);
    print_message("  %s: opened and checked in %.1f ms, %lld tensors, %lld metadata pairs\n", g_path, dt * 1e3,
                  (long long)mattn_gguf_n_tensors(f), (long long)mattn_gguf_n_kv(f));
    assert_int_equal(mattn_gguf_version(f), 3);
    assert_int_equal(mattn_gguf_alignment(f), 32);
    assert_int_equal(mattn_gguf_n_kv(f), 33);
    expect_str(f, "general.architecture", "llama");
    expect_u32(f, "llama.block_count", 30);
    expect_u32(f, "llama.context_length", 8192);
    expect_u32(f, "llama.embedding_length", 576);
    expect_u32(f, "llama.attention.head_count", 9);
    expect_u32(f, "llama.attention.head_count_kv", 3);
    expect_u32(f, "llama.feed_forward_length", 1536);
    expect_u32(f, "llama.rope.dimension_count", 64);
    expect_u32(f, "llama.vocab_size", 49152);
    float v;
    assert_int_equal(mattn_gguf_get_f32(f, "llama.rope.freq_base", &v), MATTN_OK);
    assert_true(v == 100000.0f);
    assert_int_equal(mattn_gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &v), MATTN_OK);
    assert_true(v == 1e-5f);
    expect_str(f, "tokenizer.ggml.model", "gpt2");
    expect_str(f, "tokenizer.ggml.pre", "smollm");
    expect_u32(f, "tokenizer.ggml.bos_token_id", 1);
    expect_u32(f, "tokenizer.ggml.eos_token_id", 2);
    int b;
    assert_int_equal(mattn_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b), MATTN_OK);
    assert_int_equal(b, 0);
    /* the vocabulary and merges: views into the mapping, O(1) each */
    const mattn_gguf_value *tok, *merges, *types;
    assert_int_equal(mattn_gguf_get_arr(f, "tokenizer.ggml.tokens", MATTN_GGUF_STRING, &tok), MATTN_OK);
    assert_int_equal(tok->n, 49152);
    assert_int_equal(mattn_gguf_get_arr(f, "tokenizer.ggml.merges", MATTN_GGUF_STRING, &merges), MATTN_OK);
    assert_int_equal(merges->n, 48900);
    assert_int_equal(mattn_gguf_get_arr(f, "tokenizer.ggml.token_type", MATTN_GGUF_INT32, &types), MATTN_OK);
    assert_int_equal(types->n, 49152);
    mattn_gguf_str s;
    assert_int_equal(mattn_gguf_arr_str(f, tok, 0, &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "<|endoftext|>"));
    assert_int_equal(mattn_gguf_arr_str(f, tok, 2, &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "<|im_end|>"));
    assert_int_equal(mattn_gguf_arr_str(f, tok, 49151, &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "ectable"));
    assert_int_equal(mattn_gguf_arr_str(f, merges, 0, &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "\xc4\xa0 t"));   /* "Ġ t" */
    int64_t tt;
    assert_int_equal(mattn_gguf_arr_i64(f, types, 0, &tt), MATTN_OK);
    assert_int_equal(tt, 3);   /* control */
    assert_int_equal(mattn_gguf_arr_i64(f, types, 100, &tt), MATTN_OK);
    assert_int_equal(tt, 1);   /* normal */
    /* the tensors: 210 Q4_1, 61 F32, the Q8_0 embedding */
    assert_int_equal(mattn_gguf_n_tensors(f), 272);
    assert_int_equal(count_type(f, MATTN_GGML_Q4_1), 210);
    assert_int_equal(count_type(f, MATTN_GGML_F32), 61);
    assert_int_equal(count_type(f, MATTN_GGML_Q8_0), 1);
    assert_int_equal(mattn_gguf_find_tensor(f, "token_embd.weight")->type, MATTN_GGML_Q8_0);
    for (int l = 0; l < 30; l++) {
        static const char *const W[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        char name[64];
        for (int k = 0; k < 7; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, W[k]);
            const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, name);
            if (!t || t->type != MATTN_GGML_Q4_1) fail_msg("%s: missing or not Q4_1", name);
        }
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        assert_non_null(mattn_gguf_find_tensor(f, name));
    }
    const float emb[6] = {-0x1.86p-6f, -0x1.04p-6f, -0x1.45p-5f, 0x1.04p-6f, -0x1.c7p-4f, -0x1.04p-7f};
    expect_row1(f, "token_embd.weight", MATTN_GGML_Q8_0, 576, 49152, emb, 6, 0.35922718048095703);
    const float q[6] = {-0x1.e08p-4f, -0x1.e08p-4f, -0x1.8aep-3f, 0x1.0a7p-2f, -0x1.fabp-2f, 0x1.7a4p-3f};
    expect_row1(f, "blk.0.attn_q.weight", MATTN_GGML_Q4_1, 576, 576, q, 6, -0.71209716796875);
    const float down[6] = {-0x1.54dp-2f, -0x1.824p-4f, 0x1.276p-3f, 0x1.276p-3f, 0x1.87fp-2f, 0x1.99p-6f};
    expect_row1(f, "blk.29.ffn_down.weight", MATTN_GGML_Q4_1, 1536, 576, down, 6, -3.201263427734375);
    const float norm[6] = {0x1.c2p+0f, 0x1.d2p+0f, 0x1.c8p+0f, 0x1.9ap+0f, 0x1.bep+0f, 0x1.b8p+0f};
    expect_row1(f, "output_norm.weight", MATTN_GGML_F32, 576, 1, norm, 6, 1038.33203125);
    mattn_gguf_close(f);
}

int main(void) {
    const char *env = getenv("METAATTN_GGUF_MODEL");
    g_path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(g_path, R_OK) != 0) {
        printf("test_gguf_model: %s not found (set METAATTN_GGUF_MODEL): skipped\n", g_path);
        g_path = NULL;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_smollm2)};
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed ? failed : g_path ? 0 : 77;   /* 77: ctest's SKIP_RETURN_CODE */
}
