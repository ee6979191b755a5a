/*
 * metaattn.c — the command-line tool.
 *
 *   metaattn layer --input x.safetensors --output y.safetensors
 *                  [--config cfg.json] [--weights w.safetensors] [--hard] [--eval]
 *
 * Exit status: 0 success, 2 bad usage, 1 any other error; one line on stderr
 * naming the problem.  `metaattn train` lives in train.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "metaattn.h"
#include "io/io.h"

static const char *usage_main =
    "usage: metaattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  layer     run one Meta-Attention layer on a safetensors input\n"
    "  train     train a byte-level Meta-Attention language model\n"
    "  eval      score a saved model on a text, with per-layer routing and FLOPs\n"
    "  generate  sample text from a saved model (decode cache), with its routing\n"
    "  route     show each byte's expert and routing weights (terminal, TSV, HTML)\n"
    "  plot      draw PNG charts of a training log with gnuplot\n"
    "  bench     measure kernels, layer, decoding and training against sgemm\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (or `metaattn <command> --help`)\n"
    "  --version      print the library version\n";

static const char *usage_layer =
    "usage: metaattn layer --input X --output Y [--config CFG] [--weights W] [--hard] [--eval]\n"
    "\n"
    "Runs one Meta-Attention layer (DESIGN.md §1) and prints its RoutingStats line\n"
    "and the FLOPs it executed.\n"
    "\n"
    "  --input X      safetensors with 'x' (B,T,D) float and optionally\n"
    "                 'key_padding_mask' (B,T), nonzero = real token\n"
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

static int die(int code, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "metaattn: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return code;
}

/* Config stored in a weights file's metadata, if any. */
static int config_from_weights(const char *path, mattn_config *cfg, int *found) {
    char err[512];
    mattn_st_file *f = NULL;
    *found = 0;
    if (mattn_st_open(path, &f, err, sizeof err) != MATTN_OK) return die(1, "%s%s", err, "");
    const char *json = mattn_st_meta(f, "config");
    int rc = 0;
    if (json) {
        *found = 1;
        if (mattn_config_from_json(json, cfg) != MATTN_OK)
            rc = die(1, "%s: config in metadata: %s", path, mattn_last_error());
    }
    mattn_st_close(f);
    return rc;
}

static int cmd_layer(int argc, char **argv) {
    const char *in = NULL, *outp = NULL, *cfgp = NULL, *wp = NULL;
    int hard = 0, eval = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_layer, stdout);
            return 0;
        }
        if (!strcmp(a, "--hard")) { hard = 1; continue; }
        if (!strcmp(a, "--eval")) { eval = 1; continue; }
        const char **dst = !strcmp(a, "--input") ? &in : !strcmp(a, "--output") ? &outp
                         : !strcmp(a, "--config") ? &cfgp : !strcmp(a, "--weights") ? &wp : NULL;
        if (!dst) {
            fprintf(stderr, "metaattn layer: unknown option '%s'\n%s", a, usage_layer);
            return EXIT_USAGE;
        }
        if (i + 1 >= argc) return die(EXIT_USAGE, "layer: option '%s' needs a value%s", a, "");
        *dst = argv[++i];
    }
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!in || !outp) {
        fprintf(stderr, "metaattn layer: --input and --output are required\n%s", usage_layer);
        return EXIT_USAGE;
    }

    mattn_config cfg = mattn_config_default();
    if (cfgp) {
        if (mattn_config_load(cfgp, &cfg) != MATTN_OK) return die(1, "--config: %s%s", mattn_last_error(), "");
    } else if (wp) {
        int found, rc = config_from_weights(wp, &cfg, &found);
        if (rc) return rc;
    }
    if (hard) cfg.hard_routing = 1;
    if (mattn_config_validate(&cfg) != MATTN_OK) return die(1, "config: %s%s", mattn_last_error(), "");

    /* weights first: a weights/config mismatch is the more basic error */
    char err[512];
    mattn_st_file *f = NULL;
    float *x = NULL, *out = NULL, *mf = NULL;
    uint8_t *kp = NULL;
    mattn_layer *layer = NULL;
    int rc = 0;
    if (mattn_layer_init(&cfg, NULL, &layer) != MATTN_OK) { rc = die(1, "layer: %s%s", mattn_last_error(), ""); goto done; }
    if (wp && mattn_layer_load(layer, wp) != MATTN_OK) { rc = die(1, "--weights: %s%s", mattn_layer_errmsg(layer), ""); goto done; }
    if (mattn_st_open(in, &f, err, sizeof err) != MATTN_OK) { rc = die(1, "--input: %s%s", err, ""); goto done; }
    const mattn_st_tensor *tx = mattn_st_find(f, "x"), *tm = mattn_st_find(f, "key_padding_mask");
    if (!tx) {
        rc = die(1, "--input %s: no tensor named 'x'%s", in, "");
        goto done;
    }
    if (tx->ndim != 3 || tx->shape[2] != cfg.d_model || tx->shape[0] < 1 || tx->shape[1] < 1 ||
        tx->shape[0] * tx->shape[1] > (1 << 28)) {
        char msg[160];
        snprintf(msg, sizeof msg, "'x' must be (B, T, %d) with B, T >= 1, got %d dims [%lld, %lld, %lld]",
                 cfg.d_model, tx->ndim, (long long)(tx->ndim > 0 ? tx->shape[0] : 0),
                 (long long)(tx->ndim > 1 ? tx->shape[1] : 0), (long long)(tx->ndim > 2 ? tx->shape[2] : 0));
        rc = die(1, "--input %s: %s", in, msg);
        goto done;
    }
    const int B = (int)tx->shape[0], T = (int)tx->shape[1], D = cfg.d_model, K = cfg.n_experts;
    const size_t N = (size_t)B * T;
    x = malloc(N * D * sizeof(float));
    out = malloc(N * D * sizeof(float));
    if (!x || !out) { rc = die(1, "out of memory for the input%s%s", "", ""); goto done; }
    mattn_st_to_f32(tx, x);
    mattn_masks masks = {0};
    if (tm) {
        if (tm->ndim != 2 || tm->shape[0] != B || tm->shape[1] != T) {
            rc = die(1, "--input %s: 'key_padding_mask' must be (B, T) like 'x'%s", in, "");
            goto done;
        }
        mf = malloc(N * sizeof(float));
        kp = malloc(N);
        if (!mf || !kp) { rc = die(1, "out of memory%s%s", "", ""); goto done; }
        mattn_st_to_f32(tm, mf);
        for (size_t i = 0; i < N; i++) kp[i] = mf[i] != 0.0f;
        masks.key_padding = kp;
    }

    mattn_layer_set_training(layer, !eval);
    float aux = 0.0f;
    mattn_stats stats;
    if (mattn_layer_forward(layer, x, B, T, tm ? &masks : NULL, out, &aux, &stats) != MATTN_OK) {
        rc = die(1, "forward: %s%s", mattn_layer_errmsg(layer), "");
        goto done;
    }

    int64_t s3[3] = {B, T, D}, sk[3] = {B, T, K}, s2[2] = {B, T}, s1[1] = {1};
    const int bayes = cfg.controller == MATTN_CONTROLLER_BAYESIAN;
    mattn_st_entry ent[6] = {
        {"out", MATTN_ST_F32, 3, s3, out},
        {"alpha", MATTN_ST_F32, 3, sk, mattn_layer_alpha(layer)},
        {"weights", MATTN_ST_F32, 3, sk, mattn_layer_weights(layer)},
        {"aux_loss", MATTN_ST_F32, 1, s1, &aux},
        {"beta_hat", MATTN_ST_F32, 3, sk, mattn_layer_beta_hat(layer)},
        {"uncertainty", MATTN_ST_F32, 2, s2, mattn_layer_uncertainty(layer)},
    };
    char line[512];
    mattn_stats_format(&stats, line, sizeof line);
    const char *meta[] = {"routing_stats", line};
    if (mattn_st_write(outp, ent, bayes ? 6 : 4, meta, 1, err, sizeof err) != MATTN_OK) {
        rc = die(1, "--output: %s%s", err, "");
        goto done;
    }
    printf("%s\n", line);
    printf("executed tokens:");
    for (int k = 0; k < K; k++) printf(" E%d=%.1f%%", k + 1, 100.0 * stats.exec_frac[k]);
    printf("  FLOPs: total=%.4g (", stats.flops_total);
    for (int k = 0; k < K; k++) printf("E%d=%.4g ", k + 1, stats.flops[k]);
    printf("shared=%.4g controller=%.4g)  aux_loss=%.6f\n", stats.flops_shared, stats.flops_controller, aux);
done:
    mattn_layer_free(layer);
    mattn_st_close(f);
    free(x);
    free(out);
    free(mf);
    free(kp);
    return rc;
}

int cli_dry_run = 0;

int cli_main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("metaattn %s\n", mattn_libversion());
        return 0;
    }
    if (!strcmp(cmd, "layer")) return cmd_layer(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "route")) return cmd_route(argc - 2, argv + 2);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "metaattn: unknown command '%s'\n%s", cmd, usage_main);
    return EXIT_USAGE;
}

#ifndef METAATTN_NO_MAIN
int main(int argc, char **argv) { return cli_main(argc, argv); }
#endif
