/*
 * eval.c — `metaattn eval`: the cross-entropy of a saved model on a text
 * (validation split or whole file, consecutive non-overlapping windows of
 * T+1 bytes), in soft or hard routing (eval mode), with each layer's routing
 * statistics and the FLOPs its experts executed.  --json prints one object
 * (docs/cli.md); otherwise a table.
 */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "metaattn.h"

static const char *usage_eval =
    "usage: metaattn eval --model FILE --data FILE [--context N] [--split val|all] [--hard] [--json]\n"
    "\n"
    "Scores a saved model on a text: mean cross-entropy in nats/byte and bits/byte,\n"
    "and per layer the routing statistics and the FLOPs each expert executed.\n"
    "\n"
    "  --model FILE     model.safetensors written by metaattn train (or PyTorch)\n"
    "  --data FILE      the text (default data/kjv.txt)\n"
    "  --context N      window length T (default: 128, at most max_seq_len)\n"
    "  --split S        val (default): the last 10%% of the file, as in training;\n"
    "                   all: the whole file.  Cut into consecutive windows of T+1\n"
    "                   bytes (a shorter tail is dropped); each predicts its last T\n"
    "  --hard           eval-mode hard routing (top-k, uncertainty-gated for the\n"
    "                   Bayesian controller), executed sparsely; default: soft\n"
    "  --uncertainty-threshold X\n"
    "                   Bayesian gate: tokens with uncertainty < X route hard, the\n"
    "                   rest soft (default: the model's, 1.0); 'inf' = every token\n"
    "                   hard (plain top-k)\n"
    "  --force E        with --hard: every token runs expert E (full, linear or\n"
    "                   local) instead of the controller's choice, e.g. the\n"
    "                   all-full cost a routed model is compared with\n"
    "  --batch N        windows per forward (default 16)\n"
    "  --max-windows N  score at most N windows, evenly spread (default: all)\n"
    "  --threads N      OpenMP threads (default: all cores)\n"
    "  --json           print one JSON object instead of the table\n"
    "  -h, --help       show this help\n";

/* Load a model saved by mattn_model_save (config from its metadata). */
int cli_load_model(const char *path, mattn_model **out) {
    mattn_lm_config cfg;
    *out = NULL;
    if (mattn_model_config_load(path, &cfg) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    if (mattn_model_init(&cfg, out) != MATTN_OK) return cli_fail(1, "--model %s: %s", path, mattn_last_error());
    if (mattn_model_load(*out, path) != MATTN_OK) {
        mattn_model_free(*out);
        *out = NULL;
        return cli_fail(1, "--model: %s", mattn_last_error());
    }
    mattn_model_set_training(*out, 0);
    mattn_model_set_grad(*out, 0); /* inference only */
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data_path = "data/kjv.txt", *split = "val";
    long long context = 128, batch = 16, threads = 0, max_windows = 0;
    int hard = 0, json = 0;
    double eta = NAN;
    const char *force = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_eval, stdout); return 0; }
        if (!strcmp(a, "--hard")) { hard = 1; continue; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strncmp(a, "--", 2) && strstr(usage_eval, a) && i + 1 >= argc)
            return cli_fail(EXIT_USAGE, "eval: option '%s' needs a value", a);
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--data")) data_path = v;
        else if (!strcmp(a, "--split")) split = v;
        else if (!strcmp(a, "--force")) force = v;
        else if (!strcmp(a, "--context")) rc = cli_int(a, v, 1, 1 << 20, &context);
        else if (!strcmp(a, "--batch")) rc = cli_int(a, v, 1, 4096, &batch);
        else if (!strcmp(a, "--threads")) rc = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--max-windows")) rc = cli_int(a, v, 1, 1LL << 40, &max_windows);
        else if (!strcmp(a, "--uncertainty-threshold")) {
            if (v && !strcmp(v, "inf")) eta = INFINITY;
            else rc = cli_double(a, v, -1e30, 1e30, &eta);
        }
        else return cli_fail(EXIT_USAGE, "eval: unknown option '%s' (see metaattn eval --help)", a);
        if (rc) return rc;
        i++;
    }
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!model_path) return cli_fail(EXIT_USAGE, "eval: --model is required (see metaattn eval --help)");
    if (strcmp(split, "val") && strcmp(split, "all"))
        return cli_fail(EXIT_USAGE, "--split: expected val or all, got '%s'", split);
    int force_k = -1;
    if (force) {
        static const char *names[] = {"full", "linear", "local"};
        for (int k = 0; k < 3; k++)
            if (!strcmp(force, names[k])) force_k = k;
        if (force_k < 0) return cli_fail(EXIT_USAGE, "--force: expected full, linear or local, got '%s'", force);
        if (!hard) return cli_fail(EXIT_USAGE, "--force %s needs --hard (forced routes are hard routes)", force);
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    mattn_model *m;
    if (cli_load_model(model_path, &m)) return 1;
    const mattn_lm_config *cfg = mattn_model_config(m);
    if (context > cfg->max_seq_len) {
        const int tmax = cfg->max_seq_len; /* cfg lives in m */
        mattn_model_free(m);
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's max_seq_len %d", context, tmax);
    }
    mattn_data *d;
    if (mattn_data_load(data_path, 0.1, &d) != MATTN_OK) {
        mattn_model_free(m);
        return cli_fail(1, "--data: %s", mattn_last_error());
    }
    const uint8_t *bytes = mattn_data_bytes(d);
    const size_t lo = !strcmp(split, "val") ? mattn_data_size(d, 0) : 0;
    const size_t len = !strcmp(split, "val") ? mattn_data_size(d, 1) : mattn_data_size(d, 0) + mattn_data_size(d, 1);
    const int64_t n_all = (int64_t)(len / (size_t)(context + 1));
    int rc = 0;
    if (n_all < 1) {
        rc = cli_fail(1, "--data %s: the %s split (%zu bytes) is shorter than one window of %lld bytes", data_path,
                      split, len, context + 1);
        goto done;
    }
    const int64_t n_win = max_windows && max_windows < n_all ? max_windows : n_all;
    mattn_config knobs = cfg->attn;
    knobs.hard_routing = hard;
    if (!isnan(eta)) knobs.uncertainty_threshold = eta;
    if (mattn_model_set_routing(m, &knobs) != MATTN_OK) {
        rc = cli_fail(1, "--uncertainty-threshold: %s", mattn_model_errmsg(m));
        goto done;
    }

    const int L = cfg->n_layers, K = cfg->attn.n_experts, T = (int)context;
    if (force_k >= 0) {
        uint8_t *r = malloc((size_t)T);
        if (!r) { rc = cli_fail(1, "out of memory"); goto done; }
        memset(r, force_k, (size_t)T);
        for (int l = 0; l < L && !rc; l++)
            if (mattn_layer_force_routes(mattn_model_layer(m, l), r, T) != MATTN_OK)
                rc = cli_fail(1, "--force: %s", mattn_last_error());
        free(r);
        if (rc) goto done;
    }
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)batch * T), *tgt = malloc(sizeof(int32_t) * (size_t)batch * T);
    mattn_stats *acc = calloc((size_t)L, sizeof *acc);
    if (!idx || !tgt || !acc) { free(idx); free(tgt); free(acc); rc = cli_fail(1, "out of memory"); goto done; }
    double ce_sum = 0.0;
    int64_t tokens = 0;
    for (int64_t w0 = 0; w0 < n_win && !rc; w0 += batch) {
        const int B = (int)(n_win - w0 < batch ? n_win - w0 : batch);
        for (int b = 0; b < B; b++) {
            const int64_t w = n_win == n_all ? w0 + b : (w0 + b) * n_all / n_win; /* evenly spread */
            const uint8_t *p = bytes + lo + (size_t)w * (size_t)(context + 1);
            for (int t = 0; t < T; t++) {
                idx[(size_t)b * T + t] = p[t];
                tgt[(size_t)b * T + t] = p[t + 1];
            }
        }
        float ce;
        if (mattn_model_forward(m, idx, tgt, B, T, NULL, &ce) != MATTN_OK) {
            rc = cli_fail(1, "forward: %s", mattn_model_errmsg(m));
            break;
        }
        ce_sum += (double)ce * B * T;
        tokens += (int64_t)B * T;
        for (int l = 0; l < L; l++) {
            mattn_stats s;
            mattn_model_layer_stats(m, l, &s);
            mattn_stats *a = &acc[l];
            const double w = (double)s.n_tokens;
            for (int k = 0; k < K; k++) {
                a->weight[k] += w * s.weight[k];
                a->exec_frac[k] += w * s.exec_frac[k];
                a->flops[k] += s.flops[k];
            }
            a->entropy += w * s.entropy;
            a->expected_cost += w * s.expected_cost;
            a->hard_cost += w * s.hard_cost;
            a->collapsed += w * s.collapsed;
            a->uncertainty += w * s.uncertainty;
            a->flops_shared += s.flops_shared;
            a->flops_controller += s.flops_controller;
            a->flops_total += s.flops_total;
            a->seconds += s.seconds;
            a->n_tokens += s.n_tokens;
            a->n_experts = K;
            a->has_uncertainty = s.has_uncertainty;
        }
    }
    if (!rc) {
        const double loss = ce_sum / (double)tokens;
        for (int l = 0; l < L; l++) {
            mattn_stats *a = &acc[l];
            const double inv = 1.0 / (double)a->n_tokens;
            for (int k = 0; k < K; k++) a->weight[k] *= inv, a->exec_frac[k] *= inv;
            a->entropy *= inv, a->expected_cost *= inv, a->hard_cost *= inv, a->collapsed *= inv, a->uncertainty *= inv;
        }
        if (json) {
            printf("{\"val_loss\": %.6f, \"bits_per_byte\": %.6f, \"tokens\": %lld, \"split\": \"%s\", \"routing\": \"%s\", ",
                   loss, loss / log(2.0), (long long)tokens, split, hard ? "hard" : "soft");
            if (force) printf("\"forced\": \"%s\", ", force);
            printf("\"layers\": [");
            for (int l = 0; l < L; l++) {
                const mattn_stats *a = &acc[l];
                printf("%s{\"weights\": [", l ? ", " : "");
                for (int k = 0; k < K; k++) printf("%s%.6f", k ? ", " : "", a->weight[k]);
                printf("], \"entropy\": %.6f, \"norm_entropy\": %.6f, \"expected_cost\": %.6f, \"projected_cost\": %.6f, "
                       "\"collapsed\": %.6f, \"uncertainty\": %.6f, \"executed_fraction\": [",
                       a->entropy, K > 1 ? a->entropy / log(K) : 0.0, a->expected_cost, a->hard_cost, a->collapsed,
                       a->uncertainty);
                for (int k = 0; k < K; k++) printf("%s%.6f", k ? ", " : "", a->exec_frac[k]);
                printf("], \"executed_flops\": [");
                for (int k = 0; k < K; k++) printf("%s%.6g", k ? ", " : "", a->flops[k]);
                printf("], \"flops_shared\": %.6g, \"flops_controller\": %.6g, \"flops_total\": %.6g, "
                       "\"seconds\": %.6f}", a->flops_shared, a->flops_controller, a->flops_total, a->seconds);
            }
            printf("]}\n");
        } else {
            printf("%s: %s split of %s, %lld windows of %d bytes, %s routing%s%s\n", model_path, split, data_path,
                   (long long)n_win, T, hard ? "hard" : "soft", force ? ", every token forced to " : "",
                   force ? force : "");
            double secs = 0.0, fl = 0.0;
            for (int l = 0; l < L; l++) secs += acc[l].seconds, fl += acc[l].flops_total;
            printf("loss %.4f nats/byte  %.4f bits/byte  (%lld predicted bytes)\n", loss, loss / log(2.0), (long long)tokens);
            printf("attention sub-layers: %.3f s, %.3g GFLOP executed\n", secs, 1e-9 * fl);
            for (int l = 0; l < L; l++) {
                char line[512];
                mattn_stats_format(&acc[l], line, sizeof line);
                printf("layer %d %s\n        projected hard cost=%.4f  executed:", l, line, acc[l].hard_cost);
                for (int k = 0; k < K; k++) printf(" E%d %.1f%% %.3g GFLOP", k + 1, 100 * acc[l].exec_frac[k], 1e-9 * acc[l].flops[k]);
                printf("\n");
            }
        }
    }
    free(idx);
    free(tgt);
    free(acc);
done:
    mattn_data_free(d);
    mattn_model_free(m);
    return rc;
}
