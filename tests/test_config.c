/*
 * test_config.c — defaults and presets equal to the Python library's,
 * validation messages naming the field and value, the JSON round trip and
 * the Python to_json() compatibility rules; the language-model presets and
 * config files.
 */
#include <unistd.h>

#include "test_util.h"

static void test_defaults_and_presets(void **st) {
    (void)st;
    mattn_config c = mattn_config_default();
    assert_int_equal(c.d_model, 512);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.window_size, 64);
    assert_true(c.dropout == 0.1 && c.beta_0 == 1.0 && c.epsilon == 0.01 && c.elbo_weight == 1.0);
    assert_int_equal(c.n_experts, 3);
    assert_true(c.expert_costs[0] == 1.0 && c.expert_costs[1] == 0.15 && c.expert_costs[2] == 0.30);
    assert_true(c.sample_posterior && !c.hard_routing && c.hard_top_k == 1);
    assert_true(c.controller == MATTN_CONTROLLER_BAYESIAN && !c.causal && !c.share_qkv);
    assert_int_equal(mattn_config_validate(&c), MATTN_OK);
    const struct { const char *n; int d, h, w, hc; } p[] = {
        {"small", 128, 4, 32, 64}, {"base", 512, 8, 64, 128}, {"large", 1024, 16, 128, 256},
        {"llama_7b", 4096, 32, 256, 512}, {"gpt2", 768, 12, 64, 192}, {"gpt2_medium", 1024, 16, 128, 256}};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        assert_int_equal(mattn_config_preset(p[i].n, &c), MATTN_OK);
        assert_true(c.d_model == p[i].d && c.n_heads == p[i].h && c.window_size == p[i].w &&
                    c.controller_hidden == p[i].hc);
    }
    assert_int_equal(mattn_config_preset("huge", &c), MATTN_ERR_NOT_FOUND);
    assert_non_null(strstr(mattn_last_error(), "huge"));
}

/* Each invalid config is rejected with a message naming the field and value. */
static void test_validation(void **st) {
    (void)st;
    static const struct { const char *field, *value; } cases[] = {
        {"n_heads", "7"}, {"window_size", "0"}, {"dropout", "1"}, {"dropout", "-0.1"},
        {"beta_0", "0"}, {"epsilon", "-1"}, {"hard_top_k", "4"}, {"hard_top_k", "0"},
        {"temperature", "0"}, {"gumbel_temp", "-1"}, {"expert_costs[1]", "1.5"},
        {"controller_hidden", "0"}, {"elbo_weight", "-2"}, {"d_model", "0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mattn_config c = mattn_config_default();
        switch (i) {
        case 0: c.n_heads = 7; break;
        case 1: c.window_size = 0; break;
        case 2: c.dropout = 1.0; break;
        case 3: c.dropout = -0.1; break;
        case 4: c.beta_0 = 0.0; break;
        case 5: c.epsilon = -1; break;
        case 6: c.hard_top_k = 4; break;
        case 7: c.hard_top_k = 0; break;
        case 8: c.temperature = 0; break;
        case 9: c.gumbel_temp = -1; break;
        case 10: c.expert_costs[1] = 1.5; break;
        case 11: c.controller_hidden = 0; break;
        case 12: c.elbo_weight = -2; break;
        case 13: c.d_model = 0; break;
        }
        assert_int_equal(mattn_config_validate(&c), MATTN_ERR_INVALID_ARG);
        const char *m = mattn_last_error();
        if (!strstr(m, cases[i].field) || !strstr(m, cases[i].value)) {
            print_error("message '%s' should name %s and %s\n", m, cases[i].field, cases[i].value);
            fail();
        }
    }
}

static void test_json_round_trip(void **st) {
    (void)st;
    mattn_config c;
    mattn_config_preset("gpt2", &c);
    c.controller = MATTN_CONTROLLER_PRIOR_FREE;
    c.causal = 1;
    c.share_qkv = 1;
    c.seed = 123456789;
    c.n_experts = 2;
    c.hard_top_k = 2;
    c.expert_costs[1] = 0.123456789;
    c.uncertainty_threshold = -2.5;
    char *json = NULL;
    assert_int_equal(mattn_config_to_json(&c, &json), MATTN_OK);
    mattn_config d;
    assert_int_equal(mattn_config_from_json(json, &d), MATTN_OK);
    mattn_free(json);
    assert_memory_equal(&c, &d, offsetof(mattn_config, expert_costs));
    assert_true(d.expert_costs[1] == c.expert_costs[1] && d.seed == c.seed && d.share_qkv && d.causal &&
                d.controller == c.controller && d.uncertainty_threshold == -2.5 && d.hard_top_k == 2);
}

/* What MetaAttnConfig(d_model=256, n_heads=8).to_json() prints. */
static const char *python_json =
    "{\n  \"d_model\": 256,\n  \"n_heads\": 8,\n  \"window_size\": 64,\n  \"dropout\": 0.1,\n"
    "  \"controller_hidden\": 128,\n  \"expert_costs\": [\n    1.0,\n    0.15,\n    0.3\n  ],\n"
    "  \"beta_0\": 1.0,\n  \"epsilon\": 0.01,\n  \"elbo_weight\": 1.0,\n  \"sample_posterior\": true,\n"
    "  \"use_flash\": true,\n  \"hard_routing\": false,\n  \"hard_top_k\": 1,\n  \"gumbel_temp\": 1.0,\n"
    "  \"uncertainty_threshold\": 1.0,\n  \"backend\": \"torch_sdpa\",\n  \"cost_lambda\": 0.0,\n"
    "  \"entropy_coeff\": 0.0,\n  \"temperature\": 1.0\n}";

static void test_json_python_compat(void **st) {
    (void)st;
    mattn_config c;
    assert_int_equal(mattn_config_from_json(python_json, &c), MATTN_OK);
    assert_int_equal(c.d_model, 256);
    assert_int_equal(c.n_heads, 8);
    assert_true(c.controller == MATTN_CONTROLLER_BAYESIAN && !c.share_qkv);
    assert_int_equal(mattn_config_from_json("{\"d_model\": 64, \"n_heads\": 4}", &c), MATTN_OK);
    assert_int_equal(c.window_size, 64); /* missing keys take defaults */
    assert_int_equal(mattn_config_from_json("{\"d_modle\": 64}", &c), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "d_modle"));
    assert_int_equal(mattn_config_from_json("{\"n_heads\": 7}", &c), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "n_heads"));
    assert_int_equal(mattn_config_from_json("{\"n_heads\": 4.5}", &c), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_config_from_json("{\"causal\": 1}", &c), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_config_from_json("{\"controller\": \"softmax\"}", &c), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "softmax"));
    assert_int_equal(mattn_config_from_json("{\"expert_costs\": [1.0, 0.15], \"hard_top_k\": 3}", &c),
                     MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "hard_top_k"));
    assert_int_equal(mattn_config_from_json("{\"expert_costs\": []}", &c), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_config_from_json("{\"expert_costs\": [1.0, 0.15]}", &c), MATTN_OK);
    assert_int_equal(c.n_experts, 2);
    assert_int_equal(mattn_config_from_json("[1, 2]", &c), MATTN_ERR_FORMAT);
    assert_int_equal(mattn_config_from_json("{\"d_model\": ", &c), MATTN_ERR_FORMAT);
    assert_int_equal(mattn_config_from_json("{\"d_model\": 64, \"d_model\": 32}", &c), MATTN_ERR_FORMAT);
    assert_int_equal(mattn_config_from_json(NULL, &c), MATTN_ERR_INVALID_ARG);
}

static void test_config_files(void **st) {
    (void)st;
    char dir[] = "/tmp/mattn_cfg_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/c.json", dir);
    mattn_config c = mattn_config_default(), d;
    c.window_size = 17;
    assert_int_equal(mattn_config_save(&c, path), MATTN_OK);
    assert_int_equal(mattn_config_load(path, &d), MATTN_OK);
    assert_int_equal(d.window_size, 17);
    assert_int_equal(mattn_config_load("/nonexistent/x.json", &d), MATTN_ERR_IO);
    assert_non_null(strstr(mattn_last_error(), "/nonexistent/x.json"));
    remove(path);
    rmdir(dir);
}

/* metaattn's own keys: absent from a default config's JSON (the Python
 * library can load it), round-tripped when set, refused by name when bad. */
static void test_own_keys(void **st) {
    (void)st;
    mattn_config c = mattn_config_default(), d;
    char *j;
    assert_int_equal(mattn_config_to_json(&c, &j), MATTN_OK);
    assert_null(strstr(j, "cost_target"));
    assert_null(strstr(j, "hard_train"));
    assert_null(strstr(j, "experts\""));
    mattn_free(j);
    c.n_experts = 2;
    strcpy(c.experts[0], "local");
    strcpy(c.experts[1], "full");
    c.cost_target = 0.25, c.full_share = 0.05, c.usage_floor = 0.02, c.dual_lr = 0.3, c.free_bits = 0.1;
    c.hard_train = MATTN_HARD_STRAIGHT_THROUGH, c.kl_mode = MATTN_KL_BATCH;
    c.uncertainty = MATTN_UNCERTAINTY_MUTUAL_INFO;
    assert_int_equal(mattn_config_to_json(&c, &j), MATTN_OK);
    assert_int_equal(mattn_config_from_json(j, &d), MATTN_OK);
    mattn_free(j);
    assert_string_equal(d.experts[0], "local");
    assert_string_equal(d.experts[1], "full");
    assert_true(d.cost_target == 0.25 && d.full_share == 0.05 && d.usage_floor == 0.02 && d.dual_lr == 0.3);
    assert_true(d.free_bits == 0.1 && d.hard_train == MATTN_HARD_STRAIGHT_THROUGH && d.kl_mode == MATTN_KL_BATCH);
    assert_int_equal(d.uncertainty, MATTN_UNCERTAINTY_MUTUAL_INFO);
    static const struct { const char *json, *frag; } bad[] = {
        {"{\"hard_train\": \"sometimes\"}", "hard_train"},
        {"{\"kl_mode\": 3}", "kl_mode"},
        {"{\"cost_target\": 1.5}", "cost_target"},
        {"{\"usage_floor\": 0.5}", "usage_floor"},
        {"{\"experts\": [\"full\", \"local\"]}", "experts"},  /* 2 names, 3 costs */
        {"{\"uncertainty\": \"vibes\"}", "uncertainty"},
        {"{\"dual_lr\": 0}", "dual_lr"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mattn_config_from_json(bad[i].json, &d), MATTN_ERR_INVALID_ARG);
        if (!strstr(mattn_last_error(), bad[i].frag)) fail_msg("'%s': message '%s'", bad[i].json, mattn_last_error());
    }
    /* an all-local layer: one expert, by name */
    assert_int_equal(mattn_config_from_json("{\"d_model\": 8, \"n_heads\": 2, \"expert_costs\": [0.3], "
                                            "\"experts\": [\"local\"]}", &d), MATTN_OK);
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&d, NULL, &l), MATTN_OK);
    mattn_tensor t;
    assert_int_equal(mattn_layer_param(l, 0, &t), MATTN_OK);
    assert_string_equal(t.name, "experts.0.qkv.weight");
    mattn_layer_free(l);
    d.full_share = 0.1; /* needs an expert named "full" */
    assert_int_equal(mattn_layer_init(&d, NULL, &l), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "full_share"));
}

/* The 0.1.0 names still work for one release (CHANGELOG.md). */
static void test_deprecated_names(void **st) {
    (void)st;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    mattn_lm_config c = mattn_lm_config_default();
    c.causal_positions = 1;
    assert_int_equal(c.position_norm, MATTN_POSITION_NORM_MAX_SEQ_LEN);
    assert_true(mattn_lr_schedule(5, 10, 100, 1.0, 0.1) == mattn_schedule_lr(5, 10, 100, 1.0, 0.1));
    assert_true(mattn_cosine_ramp(50, 10, 100, 1.0, 0.0) == mattn_schedule_cosine_ramp(50, 10, 100, 1.0, 0.0));
    assert_true(mattn_linear_ramp(50, 10, 100, 1.0, 0.0) == mattn_schedule_linear_ramp(50, 10, 100, 1.0, 0.0));
    assert_int_equal(mattn_model_config_load("/nonexistent/m.safetensors", &c), MATTN_ERR_IO);
    mattn_config lc = mattn_config_default();
    lc.d_model = 8, lc.n_heads = 2, lc.controller_hidden = 4, lc.causal = 1;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&lc, NULL, &l), MATTN_OK);
    assert_int_equal(mattn_layer_set_position_length(l, 4), MATTN_OK);
    assert_null(mattn_layer_weights(l)); /* no forward yet */
    mattn_layer_free(l);
#pragma GCC diagnostic pop
}

static void test_lm_presets_and_files(void **st) {
    (void)st;
    mattn_lm_config c, d;
    assert_int_equal(mattn_lm_config_preset("tiny", &c), MATTN_OK);
    assert_true(c.vocab_size == 256 && c.position_norm && c.n_layers == 4 && c.max_seq_len == 256);
    assert_true(c.attn.d_model == 128 && c.attn.n_heads == 4 && c.attn.window_size == 32 &&
                c.attn.controller_hidden == 64 && c.attn.dropout == 0.0);
    assert_int_equal(mattn_lm_config_validate(&c), MATTN_OK);
    assert_int_equal(mattn_lm_config_preset("base", &c), MATTN_OK);
    assert_true(c.n_layers == 8 && c.max_seq_len == 1024 && c.attn.d_model == 512 && c.attn.dropout == 0.1);
    assert_int_equal(mattn_lm_config_preset("small", &c), MATTN_OK);
    assert_true(c.n_layers == 6 && c.attn.d_model == 128);
    assert_int_equal(mattn_lm_config_preset("huge", &c), MATTN_ERR_NOT_FOUND);
    assert_string_equal(mattn_last_error(), "unknown preset 'huge' (tiny, small, base)");
    assert_true(c.n_layers == 6); /* untouched */
    assert_int_equal(mattn_lm_config_preset(NULL, &c), MATTN_ERR_INVALID_ARG);

    char dir[] = "/tmp/mattn_lmcfg_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.json", dir);
    char *json;
    c.n_layers = 3;
    assert_int_equal(mattn_lm_config_to_json(&c, &json), MATTN_OK);
    FILE *f = fopen(path, "wb");
    fputs(json, f);
    fclose(f);
    mattn_free(json);
    assert_int_equal(mattn_lm_config_load(path, &d), MATTN_OK);
    assert_true(d.n_layers == 3 && d.vocab_size == 256 && d.position_norm && d.attn.d_model == 128);
    f = fopen(path, "wb");
    fputs("{\"n_layers\": 0}", f);
    fclose(f);
    assert_int_equal(mattn_lm_config_load(path, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), path));
    assert_non_null(strstr(mattn_last_error(), "n_layers must be in [1, 1024], got 0"));
    f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(mattn_lm_config_load(path, &d), MATTN_ERR_FORMAT);
    assert_true(d.n_layers == 3);
    assert_int_equal(mattn_lm_config_load(dir, &d), MATTN_ERR_IO);
    assert_non_null(strstr(mattn_last_error(), "is not a regular file"));
    assert_int_equal(mattn_lm_config_load("/nonexistent/m.json", &d), MATTN_ERR_IO);
    assert_string_equal(mattn_last_error(), "cannot open model config '/nonexistent/m.json': No such file or directory");
    remove(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deprecated_names),
        cmocka_unit_test(test_own_keys),
        cmocka_unit_test(test_defaults_and_presets), cmocka_unit_test(test_validation),
        cmocka_unit_test(test_json_round_trip),      cmocka_unit_test(test_json_python_compat),
        cmocka_unit_test(test_config_files),         cmocka_unit_test(test_lm_presets_and_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
