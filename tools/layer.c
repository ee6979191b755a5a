/*
 * layer.c — `metaattn layer`: one Meta-Attention layer on given weights and
 * input (safetensors in, safetensors out), with its RoutingStats line and the
 * FLOPs it executed.
 *
 *   metaattn layer --input x.safetensors --output y.safetensors
 *                  [--config cfg.json] [--weights w.safetensors] [--hard] [--eval]
 */
#include <stdlib.h>

#include "cli.h"

static const char *usage_layer =
    "usage: metaattn layer --input X --output Y [--config CFG] [--weights W] [--hard] [--eval]\n"
    "\n"
    "Runs one Meta-Attention layer (docs/design.md §1) and prints its RoutingStats line\n"
    "and the FLOPs it executed.\n"
    "\n"
    "  --input X      safetensors with 'x' (B,T,D) of a float dtype (F32, F64, F16,\n"
    "                 BF16) and optionally 'key_padding_mask' (B,T) of any dtype,\n"
    "                 nonzero = real token\n"
    "  --output Y     safetensors to write: 'out' (B,T,D), 'alpha' (B,T,K), 'aux_loss' (1),\n"
    "                 'weights' (B,T,K, the merge weights used) and, for the Bayesian\n"
    "                 controller, 'beta_hat' (B,T,K) and 'uncertainty' (B,T)\n"
    "  --config CFG   MetaAttnConfig JSON (the Python library's to_json() loads);\n"
    "                 default: the config stored in --weights, else the defaults\n"
    "  --weights W    layer weights (safetensors, Python state_dict names);\n"
    "                 default: initialised from the config's seed\n"
    "  --hard         hard routing (hard_routing = true)\n"
    "  --eval         eval mode: posterior mean, no dropout or noise; without it the\n"
    "                 layer runs in training mode with the config's seed\n"
    "  -h, --help     show this help\n";

/* The layer's input: x (B,T,D) and, if the file has one, the key padding mask. */
typedef struct layer_input {
    int B, T;
    float *x;
    uint8_t *kp; /* or NULL */
} layer_input;

/* The config: --config, else the one stored in --weights, else the defaults. */
static int layer_config(const char *cfgp, const char *wp, int hard, mattn_config *cfg) {
    *cfg = mattn_config_default();
    if (cfgp) {
        if (mattn_config_load(cfgp, cfg) != MATTN_OK) return cli_fail(1, "--config: %s", mattn_last_error());
    } else if (wp) {
        mattn_tensors *f;
        if (mattn_tensors_open(wp, &f) != MATTN_OK) return cli_fail(1, "%s", mattn_last_error());
        const char *json = mattn_tensors_meta(f, "config");
        int rc = json && mattn_config_from_json(json, cfg) != MATTN_OK
                     ? cli_fail(1, "%s: config in metadata: %s", wp, mattn_last_error()) : 0;
        mattn_tensors_free(f);
        if (rc) return rc;
    }
    if (hard) cfg->hard_routing = 1;
    if (mattn_config_validate(cfg) != MATTN_OK) return cli_fail(1, "config: %s", mattn_last_error());
    return 0;
}

/* The key padding mask (any dtype, nonzero = real token), if the file has one. */
static int read_mask(const mattn_tensors *f, const char *in, layer_input *li) {
    mattn_tensor_info tm;
    if (mattn_tensors_find(f, "key_padding_mask", &tm) != MATTN_OK) return 0;
    if (tm.ndim != 2 || tm.shape[0] != li->B || tm.shape[1] != li->T)
        return cli_fail(1, "--input %s: 'key_padding_mask' must be (B, T) like 'x'", in);
    const size_t N = (size_t)li->B * li->T;
    float *mf = malloc(N * sizeof(float));
    li->kp = malloc(N);
    if (!mf || !li->kp) { free(mf); return cli_fail(1, "out of memory"); }
    if (mattn_tensors_read_f32(f, "key_padding_mask", mf, tm.numel) != MATTN_OK) {
        free(mf);
        return cli_fail(1, "--input %s: %s", in, mattn_last_error());
    }
    for (size_t i = 0; i < N; i++) li->kp[i] = mf[i] != 0.0f;
    free(mf);
    return 0;
}

/* x (B, T, D) of a float dtype as float32, and the mask (any dtype). */
static int read_input(const char *in, int D, layer_input *li) {
    mattn_tensors *f;
    if (mattn_tensors_open(in, &f) != MATTN_OK) return cli_fail(1, "--input: %s", mattn_last_error());
    mattn_tensor_info tx;
    int rc = 0;
    if (mattn_tensors_find(f, "x", &tx) != MATTN_OK) {
        rc = cli_fail(1, "--input %s: no tensor named 'x'", in);
    } else if (!mattn_dtype_is_float(tx.dtype)) { /* an integer or bool x would be converted silently */
        rc = cli_fail(1, "--input %s: tensor 'x' has dtype %s, expected a float dtype (F32, F64, F16 or BF16)", in,
                      mattn_dtype_name(tx.dtype));
    } else if (tx.ndim != 3 || tx.shape[2] != D || tx.shape[0] < 1 || tx.shape[1] < 1 ||
               tx.shape[0] * tx.shape[1] > (1 << 28)) {
        rc = cli_fail(1, "--input %s: 'x' must be (B, T, %d) with B, T >= 1, got %d dims [%lld, %lld, %lld]", in, D,
                      tx.ndim, (long long)(tx.ndim > 0 ? tx.shape[0] : 0), (long long)(tx.ndim > 1 ? tx.shape[1] : 0),
                      (long long)(tx.ndim > 2 ? tx.shape[2] : 0));
    } else {
        li->B = (int)tx.shape[0], li->T = (int)tx.shape[1];
        if (!(li->x = malloc((size_t)tx.numel * sizeof(float)))) rc = cli_fail(1, "out of memory for the input");
        else if (mattn_tensors_read_f32(f, "x", li->x, tx.numel) != MATTN_OK)
            rc = cli_fail(1, "--input %s: %s", in, mattn_last_error());
        if (!rc) rc = read_mask(f, in, li);
    }
    mattn_tensors_free(f);
    return rc;
}

/* Write out, alpha, weights, aux_loss (and beta_hat, uncertainty) with the
 * stats line in the metadata. */
static int write_output(const char *outp, const mattn_layer *layer, const layer_input *li, const float *out, float aux,
                        const char *line) {
    const mattn_config *cfg = mattn_layer_config(layer);
    int64_t s3[3] = {li->B, li->T, cfg->d_model}, sk[3] = {li->B, li->T, cfg->n_experts}, s2[2] = {li->B, li->T};
    int64_t s1[1] = {1};
    const int bayes = cfg->controller == MATTN_CONTROLLER_BAYESIAN;
    const mattn_tensors_entry ent[6] = {
        {"out", 3, s3, out},
        {"alpha", 3, sk, mattn_layer_alpha(layer)},
        {"weights", 3, sk, mattn_layer_merge_weights(layer)},
        {"aux_loss", 1, s1, &aux},
        {"beta_hat", 3, sk, mattn_layer_beta_hat(layer)},
        {"uncertainty", 2, s2, mattn_layer_uncertainty(layer)},
    };
    const char *meta[] = {"routing_stats", line};
    if (mattn_tensors_write(outp, ent, bayes ? 6 : 4, meta, 1) != MATTN_OK)
        return cli_fail(1, "--output: %s", mattn_last_error());
    return 0;
}

static void print_stats(const mattn_stats *stats, const char *line, int K, float aux) {
    printf("%s\n", line);
    printf("executed tokens:");
    for (int k = 0; k < K; k++) printf(" E%d=%.1f%%", k + 1, 100.0 * stats->exec_frac[k]);
    printf("  FLOPs: total=%.4g (", stats->flops_total);
    for (int k = 0; k < K; k++) printf("E%d=%.4g ", k + 1, stats->flops[k]);
    printf("shared=%.4g controller=%.4g)  aux_loss=%.6f\n", stats->flops_shared, stats->flops_controller, aux);
}

int cmd_layer(int argc, char **argv) {
    const char *in = NULL, *outp = NULL, *cfgp = NULL, *wp = NULL;
    int hard = 0, eval = 0;
    const cli_opt opts[] = {
        OPT_STRING("--input", &in),    OPT_STRING("--output", &outp), OPT_STRING("--config", &cfgp),
        OPT_STRING("--weights", &wp),  OPT_FLAG("--hard", &hard),     OPT_FLAG("--eval", &eval),
        OPT_END};
    int rc = cli_parse("layer", usage_layer, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!in || !outp) {
        fprintf(stderr, "metaattn layer: --input and --output are required\n%s", usage_layer);
        return EXIT_USAGE;
    }
    mattn_config cfg;
    if ((rc = layer_config(cfgp, wp, hard, &cfg))) return rc;

    /* weights first: a weights/config mismatch is the more basic error */
    layer_input li = {0};
    float *out = NULL;
    mattn_layer *layer = NULL;
    if (mattn_layer_init(&cfg, NULL, &layer) != MATTN_OK) { rc = cli_fail(1, "layer: %s", mattn_last_error()); goto done; }
    if (wp && mattn_layer_load(layer, wp) != MATTN_OK) { rc = cli_fail(1, "--weights: %s", mattn_layer_errmsg(layer)); goto done; }
    if ((rc = read_input(in, cfg.d_model, &li))) goto done;
    if (!(out = malloc((size_t)li.B * li.T * cfg.d_model * sizeof(float)))) { rc = cli_fail(1, "out of memory for the output"); goto done; }
    mattn_layer_set_training(layer, !eval);
    float aux = 0.0f;
    mattn_stats stats;
    const mattn_masks masks = {.key_padding = li.kp};
    if (mattn_layer_forward(layer, li.x, li.B, li.T, li.kp ? &masks : NULL, out, &aux, &stats) != MATTN_OK) {
        rc = cli_fail(1, "forward: %s", mattn_layer_errmsg(layer));
        goto done;
    }
    char line[512];
    mattn_stats_format(&stats, line, sizeof line);
    if ((rc = write_output(outp, layer, &li, out, aux, line))) goto done;
    print_stats(&stats, line, cfg.n_experts, aux);
done:
    mattn_layer_free(layer);
    free(li.x);
    free(li.kp);
    free(out);
    return rc;
}
