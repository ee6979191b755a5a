/*
 * test_faults.c — allocation-failure injection, SQLite style: run an
 * operation once to count its allocations (cJSON's included: its hooks are
 * pointed at the library's allocator), then again for every n, failing the
 * n-th allocation (once, and from n on).  Every run must return MATTN_OK or
 * MATTN_ERR_NOMEM — never another status, never a crash — free everything it
 * allocated, and leave what it was given (a model's weights, a file on disk)
 * as it was.  An operation that succeeds despite a failed allocation (an
 * optional one, such as the directory fsync after a rename) must still give
 * the right result: each op checks its own.
 */
#include "test_util.h"

#include <cJSON.h>
#include <limits.h>
#include <unistd.h>

static mattn_adamw_config ocfg;

static mattn_lm_config tiny_lm(int controller) {
    mattn_lm_config c = test_lm_config(13, 8, 1, 5); /* causal positions: the decode cache needs them */
    c.attn.controller = controller;
    return c;
}

static mattn_config tiny_layer(int controller, int share_qkv, int hard) {
    mattn_config c = test_layer_config(8, 2, 2, 4, 9);
    c.controller = controller;
    c.share_qkv = share_qkv;
    c.hard_routing = hard;
    return c;
}

static uint64_t bytes_hash(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t model_hash(mattn_model *m) {
    uint64_t h = 0;
    for (int i = 0; i < mattn_model_n_params(m); i++) {
        mattn_tensor t;
        mattn_model_param(m, i, &t);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        h = h * 31 + bytes_hash(t.data, n * sizeof(float));
    }
    return h;
}

typedef mattn_status (*op_fn)(void *ctx);

/* Run op with the n-th allocation failing, for every n up to its count, in
 * both modes.  Returns how many runs ended in MATTN_ERR_NOMEM. */
static int inject(const char *what, op_fn op, void *ctx) {
    const long live0 = mattn_alloc_live();
    const int files0 = tmpdir_entries();
    mattn_fault_alloc(LONG_MAX, 0); /* count only */
    assert_int_equal(op(ctx), MATTN_OK);
    const long total = mattn_alloc_count();
    mattn_fault_alloc(0, 0);
    assert_int_equal(mattn_alloc_live(), live0);
    int nomem = 0;
    for (int persistent = 0; persistent <= 1; persistent++)
        for (long n = 1; n <= total; n++) {
            mattn_fault_alloc(n, persistent);
            mattn_status st = op(ctx);
            mattn_fault_alloc(0, 0);
            if (st != MATTN_OK && st != MATTN_ERR_NOMEM)
                fail_msg("%s: allocation %ld of %ld failing (%s) gave status %d: %s", what, n, total,
                         persistent ? "from then on" : "once", st, mattn_last_error());
            if (mattn_alloc_live() != live0)
                fail_msg("%s: allocation %ld of %ld failing (%s): %ld allocations leaked", what, n, total,
                         persistent ? "from then on" : "once", mattn_alloc_live() - live0);
            if (tmpdir_entries() != files0)
                fail_msg("%s: allocation %ld failing left a file behind in %s", what, n, g_tmpdir);
            nomem += st == MATTN_ERR_NOMEM;
        }
    print_message("  %-34s %4ld allocations, %4d of %4ld failing runs returned MATTN_ERR_NOMEM\n", what, total,
                  nomem, 2 * total);
    assert_true(nomem > 0);
    return nomem;
}

// ----------------------------------------------------------------------------
// operations

typedef struct { int controller, share_qkv, hard; } layer_case;

/* init, forward (training: backward too; eval hard: sparse path), free */
static mattn_status op_layer(void *p) {
    const layer_case *lc = p;
    mattn_config cfg = tiny_layer(lc->controller, lc->share_qkv, lc->hard);
    mattn_layer *l = NULL;
    mattn_status st = mattn_layer_init(&cfg, NULL, &l);
    if (st != MATTN_OK) return st;
    enum { B = 2, T = 5, D = 8 };
    float x[B * T * D], out[B * T * D], g[B * T * D], gx[B * T * D], aux;
    fill_normal(x, B * T * D, 1, 1.0);
    fill_normal(g, B * T * D, 2, 1.0);
    mattn_layer_set_training(l, !lc->hard);
    st = mattn_layer_forward(l, x, B, T, NULL, out, &aux, NULL);
    if (st == MATTN_OK && !lc->hard) st = mattn_layer_backward(l, x, NULL, g, 1.0f, gx);
    for (int i = 0; st == MATTN_OK && i < B * T * D; i++)
        if (!isfinite(out[i])) st = MATTN_ERR_NUMERIC;
    mattn_layer_free(l);
    return st;
}

static mattn_status op_model_train(void *p) {
    mattn_lm_config cfg = tiny_lm(*(int *)p);
    mattn_model *m = NULL;
    mattn_adamw *o = NULL;
    mattn_status st = mattn_model_init(&cfg, &m);
    if (st == MATTN_OK) st = mattn_adamw_init(m, &ocfg, &o);
    int32_t idx[12], tgt[12];
    for (int i = 0; i < 12; i++) idx[i] = (i * 5 + 1) % 13, tgt[i] = (i * 7 + 2) % 13;
    float loss;
    if (st == MATTN_OK) st = mattn_model_forward(m, idx, tgt, 2, 6, &loss, NULL);
    if (st == MATTN_OK) st = mattn_model_zero_grad(m);
    if (st == MATTN_OK) st = mattn_model_backward(m);
    if (st == MATTN_OK) st = mattn_adamw_step(o, m, 1e-3, NULL);
    mattn_adamw_free(o);
    mattn_model_free(m);
    return st;
}

typedef struct { mattn_model *m; uint64_t weights; const char *ckpt; float *other; } load_ctx;

/* Copy every parameter of m to (to_model = 0) or from (1) a flat buffer. */
static size_t copy_weights(mattn_model *m, float *buf, int to_model) {
    size_t off = 0;
    for (int i = 0; i < mattn_model_n_params(m); i++) {
        mattn_tensor t;
        mattn_model_param(m, i, &t);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        if (buf) memcpy(to_model ? t.data : buf + off, to_model ? buf + off : t.data, n * sizeof(float));
        off += n;
    }
    return off;
}

/* load a checkpoint of different weights; on failure the model is unchanged */
static mattn_status op_model_load(void *p) {
    load_ctx *c = p;
    const uint64_t before = model_hash(c->m);
    mattn_status st = mattn_model_load(c->m, c->ckpt);
    if (st == MATTN_OK) {
        assert_true(model_hash(c->m) == c->weights);
        copy_weights(c->m, c->other, 1); /* back to the other weights (no allocation) */
    } else if (model_hash(c->m) != before) {
        fail_msg("model load failed (%s) but changed the weights", mattn_last_error());
    }
    return st;
}

/* save over an existing file: on failure the old file is intact */
static mattn_status op_model_save(void *p) {
    load_ctx *c = p;
    const char *path = tmpdir_path("save.safetensors");
    const uint64_t before = file_hash(path);
    mattn_status st = mattn_model_save(c->m, path);
    if (st != MATTN_OK && file_hash(path) != before)
        fail_msg("model save failed (%s) but changed %s", mattn_last_error(), path);
    if (st == MATTN_OK) assert_true(file_hash(path) == file_hash(c->ckpt));
    return st;
}

static mattn_status op_config_load(void *p) {
    mattn_lm_config cfg;
    mattn_status st = mattn_model_file_config((const char *)p, &cfg);
    if (st == MATTN_OK) assert_int_equal(cfg.attn.d_model, 8);
    return st;
}

static mattn_status op_config_json(void *p) {
    (void)p;
    mattn_lm_config cfg = tiny_lm(MATTN_CONTROLLER_BAYESIAN), back;
    char *json = NULL;
    mattn_status st = mattn_lm_config_to_json(&cfg, &json);
    if (st == MATTN_OK) st = mattn_lm_config_from_json(json, &back);
    if (st == MATTN_OK) assert_int_equal(back.attn.window_size, 2);
    mattn_free(json);
    return st;
}

typedef struct { mattn_model *m; mattn_adamw *o; const char *path; } optim_ctx;

static mattn_status op_adamw_load(void *p) {
    optim_ctx *c = p;
    return mattn_adamw_load(c->o, c->m, c->path);
}

static mattn_status op_layer_io(void *p) {
    (void)p;
    mattn_config cfg = tiny_layer(MATTN_CONTROLLER_BAYESIAN, 0, 0);
    mattn_layer *a = NULL, *b = NULL;
    mattn_status st = mattn_layer_init(&cfg, NULL, &a);
    cfg.seed = 10;
    if (st == MATTN_OK) st = mattn_layer_init(&cfg, NULL, &b);
    if (st == MATTN_OK) st = mattn_layer_save(a, tmpdir_path("layer.safetensors"));
    if (st == MATTN_OK) st = mattn_layer_load(b, tmpdir_path("layer.safetensors"));
    unlink(tmpdir_path("layer.safetensors"));
    mattn_layer_free(a);
    mattn_layer_free(b);
    return st;
}

static mattn_status op_decode(void *p) {
    mattn_lm_config cfg = tiny_lm(*(int *)p);
    mattn_model *m = NULL;
    mattn_model_cache *c = NULL;
    mattn_status st = mattn_model_init(&cfg, &m);
    if (st == MATTN_OK) mattn_model_set_training(m, 0);
    if (st == MATTN_OK) st = mattn_model_cache_init(m, 1, &c);
    float logits[13];
    for (int t = 0; st == MATTN_OK && t < 4; t++) {
        int32_t tok = t + 1;
        st = mattn_model_decode(m, c, &tok, logits);
    }
    mattn_model_cache_free(c);
    mattn_model_free(m);
    return st;
}

static mattn_status op_data(void *p) {
    mattn_data *d = NULL;
    mattn_status st = mattn_data_load((const char *)p, 0.25, &d);
    if (st == MATTN_OK) assert_int_equal(mattn_data_size(d, 0) + mattn_data_size(d, 1), 400);
    mattn_data_free(d);
    return st;
}

// ----------------------------------------------------------------------------

static void test_layer(void **state) {
    (void)state;
    for (int ctl = 0; ctl <= 1; ctl++)
        for (int share = 0; share <= 1; share++)
            for (int hard = 0; hard <= 1; hard++) {
                layer_case lc = {ctl ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN, share, hard};
                char what[64];
                snprintf(what, sizeof what, "layer %s%s %s", ctl ? "prior-free" : "bayesian",
                         share ? " share_qkv" : "", hard ? "eval hard" : "train fwd+bwd");
                inject(what, op_layer, &lc);
            }
}

static void test_model(void **state) {
    (void)state;
    int ctl = MATTN_CONTROLLER_BAYESIAN;
    inject("model init+step+adamw", op_model_train, &ctl);
    inject("model decode cache", op_decode, &ctl);
    inject("config json round trip", op_config_json, NULL);
}

static void test_checkpoints(void **state) {
    (void)state;
    mattn_lm_config cfg = tiny_lm(MATTN_CONTROLLER_BAYESIAN);
    mattn_model *src = NULL, *m = NULL;
    mattn_adamw *o = NULL;
    assert_int_equal(mattn_model_init(&cfg, &src), MATTN_OK);
    cfg.attn.seed = 6;
    assert_int_equal(mattn_model_init(&cfg, &m), MATTN_OK);
    assert_int_equal(mattn_adamw_init(m, &ocfg, &o), MATTN_OK);
    char *ckpt = strdup(tmpdir_path("ckpt.safetensors")), *opt = strdup(tmpdir_path("optim.safetensors"));
    assert_int_equal(mattn_model_save(src, ckpt), MATTN_OK);
    assert_int_equal(mattn_adamw_save(o, m, opt), MATTN_OK);
    /* an existing, different file for the save test */
    float *other = malloc(copy_weights(m, NULL, 0) * sizeof(float));
    copy_weights(m, other, 0);
    assert_int_equal(mattn_model_save(m, tmpdir_path("save.safetensors")), MATTN_OK);
    load_ctx lc = {m, model_hash(src), ckpt, other};
    load_ctx sc = {src, 0, ckpt, NULL};
    inject("model save over a file", op_model_save, &sc);
    inject("model load", op_model_load, &lc);
    inject("model config load", op_config_load, (void *)ckpt);
    optim_ctx oc = {m, o, opt};
    inject("optimizer load", op_adamw_load, &oc);
    inject("layer save+load", op_layer_io, NULL);
    char data[400];
    for (int i = 0; i < 400; i++) data[i] = (char)('a' + i % 26);
    FILE *f = fopen(tmpdir_path("corpus.txt"), "wb");
    assert_non_null(f);
    fwrite(data, 1, sizeof data, f);
    fclose(f);
    inject("corpus load", op_data, (void *)tmpdir_path("corpus.txt"));
    mattn_adamw_free(o);
    mattn_model_free(m);
    mattn_model_free(src);
    free(ckpt);
    free(other);
    free(opt);
}

static int setup(void **state) {
    ocfg = mattn_adamw_config_default();
    cJSON_Hooks h = {mattn_malloc, mattn_free};
    cJSON_InitHooks(&h);
    return tmpdir_setup(state);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_checkpoints),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
