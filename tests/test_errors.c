/*
 * test_errors.c — the library rows of docs/errors.md, one test per row (the
 * row's id in the name): each bad input gives the documented status and a
 * message naming the argument and the value, writes nothing partial and
 * leaves existing files and weights as they were.  The CLI rows are in
 * tests/test_cli.sh and tests/test_train.sh.
 */
#include "test_util.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/io.h"


static mattn_config layer_cfg(void) { return test_layer_config(12, 3, 3, 8, 11); }
static mattn_lm_config lm_cfg(void) { return test_lm_config(32, 8, 1, 0); }

/* check a message fragment, and print the message (docs/errors.md quotes them) */
#define assert_msg(msg, frag)                                                                  \
    do {                                                                                       \
        print_message("  %s\n", (msg));                                                       \
        if (!strstr((msg), (frag))) fail_msg("message '%s' lacks '%s'", (msg), (frag));       \
    } while (0)

/* E1: NaN or Inf in the input x */
static void test_E1_nonfinite_input(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    c.causal = 1; /* for the decode step below */
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    float x[2 * 4 * 12], out[2 * 4 * 12];
    fill_normal(x, 2 * 4 * 12, 1, 1.0);
    x[5 * 12 + 7] = INFINITY;
    assert_int_equal(mattn_layer_forward(l, x, 2, 4, NULL, out, NULL, NULL), MATTN_ERR_NUMERIC);
    assert_msg(mattn_layer_errmsg(l), "x holds a non-finite value (inf) at token 5, feature 7");
    x[5 * 12 + 7] = NAN;
    assert_int_equal(mattn_layer_forward(l, x, 2, 4, NULL, out, NULL, NULL), MATTN_ERR_NUMERIC);
    assert_int_equal(mattn_layer_backward(l, x, NULL, out, 1.0f, NULL), MATTN_ERR_MISUSE);
    /* a decode step: refused before it touches the cache */
    mattn_layer_cache *cache;
    assert_int_equal(mattn_layer_set_position_norm(l, 8), MATTN_OK);
    assert_int_equal(mattn_layer_cache_init(l, 2, 8, &cache), MATTN_OK);
    x[12 + 4] = -INFINITY;
    assert_int_equal(mattn_layer_decode(l, cache, x, out, NULL), MATTN_ERR_NUMERIC);
    assert_msg(mattn_layer_errmsg(l), "x holds a non-finite value (-inf) at sequence 1, feature 4");
    assert_int_equal(mattn_layer_cache_length(cache), 0);
    x[12 + 4] = 0.5f;
    assert_int_equal(mattn_layer_decode(l, cache, x, out, NULL), MATTN_OK);
    assert_int_equal(mattn_layer_cache_length(cache), 1);
    mattn_layer_cache_free(cache);
    mattn_layer_free(l);
}

/* E2: NaN or Inf in the weights: in memory (forward says so), in a file
 * (load refuses, weights unchanged), on save (refused, file unchanged) */
static void test_E2_nonfinite_weights(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    const char *good = tmpdir_path("good.safetensors");
    assert_int_equal(mattn_layer_save(l, good), MATTN_OK);
    const uint64_t h = file_hash(good);
    mattn_tensor t;
    assert_int_equal(mattn_layer_param(l, 0, &t), MATTN_OK);
    const float keep = t.data[3];
    t.data[3] = NAN;
    float x[4 * 12], out[4 * 12];
    fill_normal(x, 4 * 12, 2, 1.0);
    assert_int_equal(mattn_layer_forward(l, x, 1, 4, NULL, out, NULL, NULL), MATTN_ERR_NUMERIC);
    assert_msg(mattn_layer_errmsg(l), "weight 'experts.0.qkv.weight' holds a non-finite value (nan) at 3");
    assert_int_equal(mattn_layer_save(l, good), MATTN_ERR_NUMERIC);
    assert_msg(mattn_layer_errmsg(l), "not saved");
    assert_true(file_hash(good) == h);
    /* a file holding the NaN (written below the checks) is refused on load */
    const int64_t shape[2] = {t.shape[0], t.ndim > 1 ? t.shape[1] : 1};
    mattn_st_entry e = {t.name, MATTN_ST_F32, t.ndim, shape, t.data};
    char err[256];
    const char *bad = tmpdir_path("nan.safetensors");
    assert_int_equal(mattn_st_write(bad, &e, 1, NULL, 0, err, sizeof err), MATTN_OK);
    t.data[3] = keep;
    assert_int_equal(mattn_layer_forward(l, x, 1, 4, NULL, out, NULL, NULL), MATTN_OK);
    mattn_layer *l2;
    assert_int_equal(mattn_layer_init(&c, NULL, &l2), MATTN_OK);
    assert_int_equal(mattn_layer_load(l2, good), MATTN_OK);
    assert_int_not_equal(mattn_layer_load(l2, bad), MATTN_OK);
    float out2[4 * 12];
    assert_int_equal(mattn_layer_forward(l2, x, 1, 4, NULL, out2, NULL, NULL), MATTN_OK);
    assert_memory_equal(out, out2, sizeof out);  /* l2 still holds the good weights */
    mattn_layer_free(l);
    mattn_layer_free(l2);

    /* model: a NaN weight in a checkpoint */
    mattn_lm_config mc = lm_cfg();
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    assert_int_equal(mattn_model_param(m, 0, &t), MATTN_OK);
    t.data[1] = -INFINITY;
    assert_int_equal(mattn_model_save(m, tmpdir_path("m.safetensors")), MATTN_ERR_NUMERIC);
    assert_msg(mattn_last_error(), "tok_emb.weight");
    assert_int_equal(access(tmpdir_path("m.safetensors"), F_OK), -1);
    mattn_model_free(m);
}

/* E2, model: NaN in any weight, at the first or the last index.  A forward
 * (no targets) and a decode cache refuse it naming the weight; a weight
 * poisoned between decode steps either makes the step fail (the cache then
 * refuses steps until reset) or was not used by it: never finite but wrong
 * logits.  Soft and hard routing. */
static void test_E2_nonfinite_model_weights(void **st) {
    (void)st;
    for (int hard = 0; hard <= 1; hard++) {
        mattn_lm_config mc = lm_cfg();
        mc.attn.hard_routing = hard;
        mattn_model *m;
        assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
        mattn_model_set_training(m, 0);
        mattn_model_set_grad(m, 0);
        const int32_t seq[3] = {3, 7, 1};
        const int V = mc.vocab_size;
        float ref[3][32], lg[32];
        mattn_model_cache *c;
        assert_int_equal(mattn_model_cache_init(m, 1, &c), MATTN_OK);
        for (int s = 0; s < 3; s++) assert_int_equal(mattn_model_decode(m, c, &seq[s], ref[s]), MATTN_OK);
        int failed = 0, unused = 0;
        for (int i = 0; i < mattn_model_n_params(m); i++) {
            mattn_tensor t;
            assert_int_equal(mattn_model_param(m, i, &t), MATTN_OK);
            const size_t n = (size_t)t.shape[0] * (t.ndim > 1 ? (size_t)t.shape[1] : 1);
            const char *leaf = strncmp(t.name, "blocks.", 7) == 0 && strstr(t.name, ".attn.") ?
                               strstr(t.name, ".attn.") + 6 : t.name;
            for (int end = 0; end <= 1; end++) {
                float *w = t.data + (end ? n - 1 : 0);
                const float keep = *w;
                *w = NAN;
                assert_int_equal(mattn_model_forward(m, seq, NULL, 1, 3, NULL, NULL), MATTN_ERR_NUMERIC);
                const int show = !hard && !end && !strcmp(t.name, "blocks.0.attn.controller.net.0.weight");
                if (show) print_message("  %s\n", mattn_model_errmsg(m));
                if (!strstr(mattn_model_errmsg(m), leaf)) fail_msg("'%s' lacks '%s'", mattn_model_errmsg(m), leaf);
                mattn_model_cache *c2 = NULL;
                assert_int_equal(mattn_model_cache_init(m, 1, &c2), MATTN_ERR_NUMERIC);
                assert_null(c2);
                /* poisoned between steps 1 and 2 */
                *w = keep;
                mattn_model_cache_reset(c);
                for (int s = 0; s < 2; s++) assert_int_equal(mattn_model_decode(m, c, &seq[s], lg), MATTN_OK);
                *w = NAN;
                const mattn_status ds = mattn_model_decode(m, c, &seq[2], lg);
                *w = keep;
                if (ds == MATTN_OK) {
                    if (memcmp(lg, ref[2], (size_t)V * sizeof(float)))
                        fail_msg("hard=%d: NaN at %s[%zu] gave finite, wrong logits", hard, t.name, end ? n - 1 : 0);
                    assert_memory_equal(lg, ref[2], (size_t)V * sizeof(float));
                    unused++;
                } else {
                    assert_int_equal(ds, MATTN_ERR_NUMERIC);
                    if (show) print_message("  %s\n", mattn_model_errmsg(m));
                    /* re-raised through layer and model: the message survives */
                    if (!strstr(mattn_model_errmsg(m), "not finite") && !strstr(mattn_model_errmsg(m), "non-finite"))
                        fail_msg("%s: decode message '%s'", t.name, mattn_model_errmsg(m));
                    assert_int_equal(mattn_model_decode(m, c, &seq[2], lg), MATTN_ERR_MISUSE);
                    if (show) print_message("  %s\n", mattn_model_errmsg(m));
                    failed++;
                }
            }
        }
        mattn_model_cache_reset(c); /* usable again, same logits */
        for (int s = 0; s < 3; s++) {
            assert_int_equal(mattn_model_decode(m, c, &seq[s], lg), MATTN_OK);
            assert_memory_equal(lg, ref[s], (size_t)V * sizeof(float));
        }
        print_message("  hard=%d: %d poisoned weights failed the decode step, %d were not used by it\n", hard,
                      failed, unused);
        assert_true(failed > 0);
        mattn_model_cache_free(c);
        mattn_model_free(m);
    }
}

/* E3: shapes that disagree (a layer file of another width) */
static void test_E3_wrong_shapes(void **st) {
    (void)st;
    mattn_config c = layer_cfg(), w = layer_cfg();
    w.d_model = 16;
    w.n_heads = 4;
    mattn_layer *a, *b;
    assert_int_equal(mattn_layer_init(&w, NULL, &a), MATTN_OK);
    assert_int_equal(mattn_layer_init(&c, NULL, &b), MATTN_OK);
    assert_int_equal(mattn_layer_save(a, tmpdir_path("w16.safetensors")), MATTN_OK);
    mattn_status s = mattn_layer_load(b, tmpdir_path("w16.safetensors"));
    assert_true(s == MATTN_ERR_SHAPE || s == MATTN_ERR_INVALID_ARG);
    assert_msg(mattn_layer_errmsg(b), "w16.safetensors");
    mattn_layer_free(a);
    mattn_layer_free(b);
}

/* E4: T = 0 is refused, T = 1 works (layer and model) */
static void test_E4_T0_T1(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    float x[12], out[12];
    fill_normal(x, 12, 3, 1.0);
    assert_int_equal(mattn_layer_forward(l, x, 1, 0, NULL, out, NULL, NULL), MATTN_ERR_INVALID_ARG);
    assert_msg(mattn_layer_errmsg(l), "T=0");
    assert_int_equal(mattn_layer_forward(l, x, 1, 1, NULL, out, NULL, NULL), MATTN_OK);
    mattn_layer_free(l);
    mattn_lm_config mc = lm_cfg();
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    int32_t idx[1] = {3}, tgt[1] = {4};
    float loss;
    assert_int_equal(mattn_model_forward(m, idx, tgt, 1, 0, &loss, NULL), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_model_forward(m, idx, tgt, 1, 1, &loss, NULL), MATTN_OK);
    assert_true(isfinite(loss));
    mattn_model_free(m);
}

/* E5: T beyond the model's context */
static void test_E5_T_beyond_context(void **st) {
    (void)st;
    mattn_lm_config mc = lm_cfg();
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    int32_t idx[9] = {0};
    assert_int_equal(mattn_model_forward(m, idx, NULL, 1, 9, NULL, NULL), MATTN_ERR_INVALID_ARG);
    assert_msg(mattn_model_errmsg(m), "max_seq_len 8");
    mattn_model_free(m);
}

/* E6: d_model not divisible by n_heads */
static void test_E6_D_mod_H(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    c.n_heads = 5;
    mattn_layer *l = (mattn_layer *)1;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_ERR_INVALID_ARG);
    assert_null(l);
    assert_msg(mattn_last_error(), "d_model");
    assert_msg(mattn_last_error(), "12");
}

/* E7: a window longer than the sequence is allowed: local == full */
static void test_E7_window_beyond_T(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    c.window_size = 1000;
    c.hard_routing = 1;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    mattn_layer_set_training(l, 0);
    enum { T = 6 };
    float x[T * 12], full[T * 12], local[T * 12];
    fill_normal(x, T * 12, 4, 1.0);
    uint8_t route[T];
    /* the full and local experts share the projections (share_qkv) only
     * when configured so: compare each forced route with itself instead */
    memset(route, 0, sizeof route);
    assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_OK);
    assert_int_equal(mattn_layer_forward(l, x, 1, T, NULL, full, NULL, NULL), MATTN_OK);
    memset(route, 2, sizeof route);
    assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_OK);
    assert_int_equal(mattn_layer_forward(l, x, 1, T, NULL, local, NULL, NULL), MATTN_OK);
    for (int i = 0; i < T * 12; i++) assert_true(isfinite(local[i]));
    mattn_layer_free(l);
    /* with shared projections the two experts differ only by the window */
    c.share_qkv = 1;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    mattn_layer_set_training(l, 0);
    memset(route, 0, sizeof route);
    assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_OK);
    assert_int_equal(mattn_layer_forward(l, x, 1, T, NULL, full, NULL, NULL), MATTN_OK);
    memset(route, 2, sizeof route);
    assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_OK);
    assert_int_equal(mattn_layer_forward(l, x, 1, T, NULL, local, NULL, NULL), MATTN_OK);
    assert_close(full, local, T * 12, 1e-6, "local (window 1000) vs full at T = 6");
    mattn_layer_free(l);
}

/* E8: top-k larger than the number of experts */
static void test_E8_topk_beyond_K(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    c.hard_top_k = 4;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_ERR_INVALID_ARG);
    assert_msg(mattn_last_error(), "hard_top_k");
}

/* E9: an unknown expert name */
static void test_E9_unknown_expert(void **st) {
    (void)st;
    mattn_config c = layer_cfg();
    mattn_expert *e = (mattn_expert *)1;
    assert_int_equal(mattn_expert_build("flash", &c, &e), MATTN_ERR_NOT_FOUND);
    assert_null(e);
    assert_msg(mattn_last_error(), "unknown expert 'flash'");
}

/* E10: truncated, corrupt, oversized and wrong-dtype safetensors (every
 * truncation and malformed header: tests/test_safetensors.c; here the model
 * loader on top) */
static void test_E10_bad_safetensors(void **st) {
    (void)st;
    mattn_lm_config mc = lm_cfg();
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    const char *good = tmpdir_path("model.safetensors");
    assert_int_equal(mattn_model_save(m, good), MATTN_OK);
    FILE *f = fopen(good, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    rewind(f);
    unsigned char *buf = malloc((size_t)n + 16);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    const char *p = tmpdir_path("bad.safetensors");
    struct { long len; int flip; uint64_t hlen; const char *frag; } cases[] = {
        {40, -1, 0, "header length"},                      /* truncated in the header */
        {n - 4, -1, 0, "file truncated?"},                /* truncated in the data */
        {n, 0, 0, "header does not start with"},          /* corrupt JSON */
        {n, -1, (uint64_t)1 << 40, "header length"},      /* oversized header length */
        {n + 8, -1, 0, "trailing bytes"},                 /* oversized file */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *b = malloc((size_t)n + 16);
        memcpy(b, buf, (size_t)n);
        memset(b + n, 0, 16);
        if (cases[i].flip >= 0) b[8 + cases[i].flip] = '#';
        if (cases[i].hlen) for (int k = 0; k < 8; k++) b[k] = (unsigned char)(cases[i].hlen >> (8 * k));
        FILE *g = fopen(p, "wb");
        fwrite(b, 1, (size_t)cases[i].len, g);
        fclose(g);
        free(b);
        mattn_status s = mattn_model_load(m, p);
        if (s != MATTN_ERR_FORMAT) fail_msg("case %zu: status %d (%s)", i, s, mattn_last_error());
        assert_msg(mattn_last_error(), cases[i].frag);
        assert_msg(mattn_last_error(), "bad.safetensors");
    }
    /* wrong dtype: every weight stored as I32 */
    int np = mattn_model_n_params(m);
    mattn_st_entry *e = calloc((size_t)np, sizeof *e);
    int64_t (*shapes)[2] = calloc((size_t)np, sizeof *shapes);
    int32_t *zeros = calloc(1 << 16, sizeof(int32_t));
    for (int i = 0; i < np; i++) {
        mattn_tensor t;
        mattn_model_param(m, i, &t);
        shapes[i][0] = t.shape[0];
        shapes[i][1] = t.ndim > 1 ? t.shape[1] : 1;
        e[i] = (mattn_st_entry){t.name, MATTN_ST_I32, t.ndim, shapes[i], zeros};
    }
    char err[256];
    assert_int_equal(mattn_st_write(p, e, np, NULL, 0, err, sizeof err), MATTN_OK);
    assert_int_equal(mattn_model_load(m, p), MATTN_ERR_FORMAT);
    assert_msg(mattn_last_error(), "has dtype I32, expected a float type");
    free(e);
    free(shapes);
    free(zeros);
    free(buf);
    mattn_model_free(m);
}

/* E11: a checkpoint of another config */
static void test_E11_other_config(void **st) {
    (void)st;
    mattn_lm_config a = lm_cfg(), b = lm_cfg();
    b.n_layers = 3;
    mattn_model *ma, *mb;
    assert_int_equal(mattn_model_init(&a, &ma), MATTN_OK);
    assert_int_equal(mattn_model_init(&b, &mb), MATTN_OK);
    assert_int_equal(mattn_model_save(mb, tmpdir_path("three.safetensors")), MATTN_OK);
    assert_int_not_equal(mattn_model_load(ma, tmpdir_path("three.safetensors")), MATTN_OK);
    assert_msg(mattn_last_error(), "blocks.2");
    b = lm_cfg();
    b.attn.d_model = 12;
    b.attn.n_heads = 3;
    mattn_model_free(mb);
    assert_int_equal(mattn_model_init(&b, &mb), MATTN_OK);
    assert_int_equal(mattn_model_save(mb, tmpdir_path("wide.safetensors")), MATTN_OK);
    assert_int_equal(mattn_model_load(ma, tmpdir_path("wide.safetensors")), MATTN_ERR_SHAPE);
    assert_msg(mattn_last_error(), "the model needs [32, 8]");
    mattn_model_free(ma);
    mattn_model_free(mb);
}

/* E12: a missing or empty corpus */
static void test_E12_corpus(void **st) {
    (void)st;
    mattn_data *d = (mattn_data *)1;
    assert_int_equal(mattn_data_load(tmpdir_path("nope.txt"), 0.1, &d), MATTN_ERR_IO);
    assert_null(d);
    assert_msg(mattn_last_error(), "nope.txt");
    fclose(fopen(tmpdir_path("empty.txt"), "wb"));
    assert_int_equal(mattn_data_load(tmpdir_path("empty.txt"), 0.1, &d), MATTN_ERR_INVALID_ARG);
    assert_msg(mattn_last_error(), "is empty");
    assert_int_equal(mattn_data_load(g_tmpdir, 0.1, &d), MATTN_ERR_IO);
    assert_msg(mattn_last_error(), "not a regular file");
}

/* E13: an unwritable output path */
static void test_E13_unwritable(void **st) {
    (void)st;
    mattn_lm_config mc = lm_cfg();
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    assert_int_equal(mattn_model_save(m, "/nonexistent/dir/m.safetensors"), MATTN_ERR_IO);
    assert_msg(mattn_last_error(), "/nonexistent/dir/m.safetensors");
    mattn_model_free(m);
}

/* E14: the disk fills while saving (a file-size limit makes writes fail
 * with EFBIG): clear error, the old file intact, no temporary left */
static void test_E14_disk_full(void **st) {
    (void)st;
    mattn_lm_config mc = lm_cfg();
    mc.vocab_size = 256;
    mattn_model *m;
    assert_int_equal(mattn_model_init(&mc, &m), MATTN_OK);
    const char *p = tmpdir_path("full.safetensors");
    FILE *f = fopen(p, "wb");
    fputs("the previous checkpoint", f);
    fclose(f);
    const uint64_t h = file_hash(p);
    const int files = tmpdir_entries();
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    mattn_status s = mattn_model_save(m, p);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(s, MATTN_ERR_IO);
    assert_msg(mattn_last_error(), "File too large");
    assert_true(file_hash(p) == h);
    assert_int_equal(tmpdir_entries(), files);
    mattn_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_E1_nonfinite_input),   cmocka_unit_test(test_E2_nonfinite_weights),
        cmocka_unit_test(test_E2_nonfinite_model_weights),
        cmocka_unit_test(test_E3_wrong_shapes),      cmocka_unit_test(test_E4_T0_T1),
        cmocka_unit_test(test_E5_T_beyond_context),  cmocka_unit_test(test_E6_D_mod_H),
        cmocka_unit_test(test_E7_window_beyond_T),   cmocka_unit_test(test_E8_topk_beyond_K),
        cmocka_unit_test(test_E9_unknown_expert),    cmocka_unit_test(test_E10_bad_safetensors),
        cmocka_unit_test(test_E11_other_config),     cmocka_unit_test(test_E12_corpus),
        cmocka_unit_test(test_E13_unwritable),       cmocka_unit_test(test_E14_disk_full),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
