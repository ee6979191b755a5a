/*
 * eval.c — `metaattn eval`: the cross-entropy of a saved model on a text
 * (validation split or whole file, consecutive non-overlapping windows of
 * T+1 bytes), in soft or hard routing (eval mode), with each layer's routing
 * statistics and the FLOPs its experts executed.  --json prints one object
 * (docs/cli.md); otherwise a table.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_eval =
    "usage: metaattn eval --model FILE --data FILE [--context N] [--split val|all] [--hard] [--json]\n"
    "\n"
    "Scores a saved model on a text: mean cross-entropy in nats/byte and bits/byte,\n"
    "and per layer the routing statistics and the FLOPs each expert executed.\n"
    "\n"
    "  --model FILE     model.safetensors written by metaattn train (or PyTorch)\n"
    "  --data FILE      the text (default data/kjv.txt)\n"
    "  --context N      window length T (default: 256, the default training context,\n"
    "                   or the model's max_seq_len when smaller; at most max_seq_len)\n"
    "  --split S        val (default): the last 10% of the file, as in training;\n"
    "                   all: the whole file.  Cut into consecutive windows of T+1\n"
    "                   bytes (a shorter tail is dropped); each predicts its last T\n"
    "  --hard           eval-mode hard routing (top-k, uncertainty-gated for the\n"
    "                   Bayesian controller), executed sparsely; default: soft\n"
    "  --uncertainty-threshold X\n"
    "                   Bayesian gate: tokens with uncertainty < X route hard, the\n"
    "                   rest soft (default: the model's, 1.0); 'inf' = every token\n"
    "                   hard (plain top-k)\n"
    "  --force LIST     with --hard: every token runs the expert named instead of\n"
    "                   the controller's choice — one name for every layer (e.g.\n"
    "                   full: the all-full cost a routed model is compared with)\n"
    "                   or one per layer (e.g. full,local: a fixed hybrid trained\n"
    "                   with train --force)\n"
    "  --records L      the file is records of L bytes (bench/experiments/recall.py):\n"
    "                   the split falls on a record boundary; with --context L-1\n"
    "                   every window is one record\n"
    "  --task recall    score the recall task instead: decode each window with the\n"
    "                   cache, count the queries whose 4 value bytes are all\n"
    "                   predicted (greedy), and how often their positions ran full\n"
    "  --batch N        windows per forward (default 16)\n"
    "  --max-windows N  score at most N windows, evenly spread (default: all)\n"
    "  --threads N      OpenMP threads (default: all cores)\n"
    "  --json           print one JSON object instead of the table\n"
    "  --compare        score the windows three times — soft, hard, and hard with\n"
    "                   every token forced to full — and print one summary: loss,\n"
    "                   attention FLOPs and seconds against all-full, and per layer\n"
    "                   the hard routes, MI(route; byte), MI(route; position)\n"
    "  --gate-share S   Bayesian controller: calibrate the uncertainty gate so that\n"
    "                   a share S of the (layer, token) decisions merge softly\n"
    "                   (the threshold: that quantile of the top-1 pass's\n"
    "                   uncertainties) and report whether it is informative: the\n"
    "                   top-1 vs soft loss gap of the tokens it keeps soft against\n"
    "                   the rest's and an oracle's; three passes (top-1, soft,\n"
    "                   gated)\n"
    "  -h, --help       show this help\n";

typedef struct eval_opts {
    const char *model_path, *data_path, *split, *force, *task;
    long long context, batch, threads, max_windows, records;
    int hard, json, compare;
    double eta;              /* --uncertainty-threshold, NAN: the model's */
    double gate_share;       /* --gate-share, < 0: not asked */
} eval_opts;

static int parse_threshold(const char *flag, const char *v, void *dst) {
    if (!strcmp(v, "inf")) {
        *(double *)dst = INFINITY;
        return 0;
    }
    return cli_double(flag, v, -1e30, 1e30, dst);
}

/* The options, checked; CLI_DONE after --help or in a dry run. */
static int eval_args(int argc, char **argv, eval_opts *o) {
    *o = (eval_opts){.data_path = "data/kjv.txt", .split = "val", .batch = 16, .eta = NAN, .gate_share = -1}; /* context 0: the default */
    const cli_opt opts[] = {
        OPT_STRING("--model", &o->model_path),
        OPT_STRING("--data", &o->data_path),
        OPT_STRING("--split", &o->split),
        OPT_STRING("--force", &o->force),
        OPT_STRING("--task", &o->task),
        OPT_INT("--records", &o->records, 2, 1 << 24),
        OPT_INT("--context", &o->context, 1, 1 << 20),
        OPT_INT("--batch", &o->batch, 1, 4096),
        OPT_INT("--threads", &o->threads, 1, 1024),
        OPT_INT("--max-windows", &o->max_windows, 1, 1LL << 40),
        OPT_CUSTOM("--uncertainty-threshold", &o->eta, parse_threshold),
        OPT_DOUBLE("--gate-share", &o->gate_share, 0, 1),
        OPT_FLAG("--hard", &o->hard),
        OPT_FLAG("--json", &o->json),
        OPT_FLAG("--compare", &o->compare),
        OPT_END};
    int rc = cli_parse("eval", usage_eval, opts, argc, argv);
    if (rc) return rc;
    if (cli_dry_run) return CLI_DONE; /* fuzz/fuzz_cli.c: arguments only */
    if (!o->model_path) return cli_fail(EXIT_USAGE, "eval: --model is required (see metaattn eval --help)");
    static const char *const splits[] = {"val", "all"};
    if (cli_choice("--split", o->split, splits, 2) < 0) return EXIT_USAGE;
    static const char *const tasks[] = {"recall"};
    if (o->task && cli_choice("--task", o->task, tasks, 1) < 0) return EXIT_USAGE;
    if (o->gate_share >= 0 && (o->compare || o->hard || o->force || o->task || !isnan(o->eta)))
        return cli_fail(EXIT_USAGE, "--gate-share runs its own top-1, soft and gated passes: drop --compare, --hard, "
                                    "--force, --task and --uncertainty-threshold");
    if (o->compare && (o->hard || o->force || o->task || o->json))
        return cli_fail(EXIT_USAGE, "--compare runs its own soft, hard and all-full passes: drop --hard, --force, "
                                    "--task and --json");
    if (o->force && !o->hard)
        return cli_fail(EXIT_USAGE, "--force %s needs --hard (forced routes are hard routes)", o->force);
    return 0;
}

/* Routing knobs and forced routes of every layer. */
static int eval_routing(mattn_model *m, const eval_opts *o) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    mattn_config knobs = cfg->attn;
    knobs.hard_routing = o->hard;
    if (!isnan(o->eta)) knobs.uncertainty_threshold = o->eta;
    if (mattn_model_set_routing(m, &knobs) != MATTN_OK)
        return cli_fail(1, "--uncertainty-threshold: %s", mattn_model_errmsg(m));
    if (!o->force) { /* clear earlier passes' routes (--compare) */
        for (int l = 0; l < cfg->n_layers; l++) mattn_layer_force_routes(mattn_model_layer(m, l), NULL, 0);
        return 0;
    }
    return cli_force_routes(m, "--force", o->force);
}

/* Add a forward's statistics of one layer: token-weighted means, summed FLOPs. */
static void accumulate(mattn_stats *a, const mattn_stats *s, int K) {
    const double w = (double)s->n_tokens;
    for (int k = 0; k < K; k++) {
        a->weight[k] += w * s->weight[k];
        a->exec_frac[k] += w * s->exec_frac[k];
        a->flops[k] += s->flops[k];
    }
    a->entropy += w * s->entropy;
    a->expected_cost += w * s->expected_cost;
    a->hard_cost += w * s->hard_cost;
    a->collapsed += w * s->collapsed;
    a->uncertainty += w * s->uncertainty;
    a->flops_shared += s->flops_shared;
    a->flops_controller += s->flops_controller;
    a->flops_total += s->flops_total;
    a->seconds += s->seconds;
    a->n_tokens += s->n_tokens;
    a->n_experts = K;
    a->has_uncertainty = s->has_uncertainty;
}

static void finish_means(mattn_stats *a, int K) {
    const double inv = 1.0 / (double)a->n_tokens;
    for (int k = 0; k < K; k++) a->weight[k] *= inv, a->exec_frac[k] *= inv;
    a->entropy *= inv, a->expected_cost *= inv, a->hard_cost *= inv, a->collapsed *= inv, a->uncertainty *= inv;
}

/* The result of a scoring run. */
typedef struct eval_result {
    double loss;    /* mean cross-entropy, nats per byte */
    int64_t tokens; /* predicted bytes */
    int64_t n_win;  /* windows scored */
    mattn_stats *acc; /* per layer */
    mattn_route_counts **counts; /* per layer: routes against tokens and positions */
} eval_result;

/* Score n_win of the split's n_all windows of T+1 bytes starting at bytes. */
static int score(mattn_model *m, const uint8_t *bytes, int64_t n_all, const eval_opts *o, eval_result *r) {
    const int L = mattn_model_config(m)->n_layers, K = mattn_model_config(m)->attn.n_experts, T = (int)o->context;
    const int64_t n_win = r->n_win;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)o->batch * T), *tgt = malloc(sizeof(int32_t) * (size_t)o->batch * T);
    int rc = !idx || !tgt ? cli_fail(1, "out of memory") : 0;
    double ce_sum = 0.0;
    for (int64_t w0 = 0; w0 < n_win && !rc; w0 += o->batch) {
        const int B = (int)(n_win - w0 < o->batch ? n_win - w0 : o->batch);
        for (int b = 0; b < B; b++) {
            const int64_t w = n_win == n_all ? w0 + b : (w0 + b) * n_all / n_win; /* evenly spread */
            const uint8_t *p = bytes + (size_t)w * (size_t)(T + 1);
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
        r->tokens += (int64_t)B * T;
        for (int l = 0; l < L; l++) {
            mattn_stats s;
            mattn_model_layer_stats(m, l, &s);
            accumulate(&r->acc[l], &s, K);
            mattn_route_counts_add(r->counts[l], mattn_model_layer(m, l), idx);
        }
    }
    free(idx);
    free(tgt);
    if (rc) return rc;
    r->loss = ce_sum / (double)r->tokens;
    for (int l = 0; l < L; l++) finish_means(&r->acc[l], K);
    return 0;
}

static void print_json(const eval_opts *o, const eval_result *r, int L, int K) {
    printf("{\"val_loss\": %.6f, \"bits_per_byte\": %.6f, \"tokens\": %lld, \"split\": \"%s\", \"routing\": \"%s\", ",
           r->loss, r->loss / log(2.0), (long long)r->tokens, o->split, o->hard ? "hard" : "soft");
    if (o->force) printf("\"forced\": \"%s\", ", o->force);
    printf("\"layers\": [");
    for (int l = 0; l < L; l++) {
        const mattn_stats *a = &r->acc[l];
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
               "\"seconds\": %.6f, \"mi_token\": %.6f, \"mi_position\": %.6f}", a->flops_shared, a->flops_controller,
               a->flops_total, a->seconds, mattn_route_counts_mi_token(r->counts[l]),
               mattn_route_counts_mi_position(r->counts[l]));
    }
    printf("]}\n");
}

static void print_table(const eval_opts *o, const eval_result *r, int L, int K) {
    printf("%s: %s split of %s, %lld windows of %lld bytes, %s routing%s%s\n", o->model_path, o->split, o->data_path,
           (long long)r->n_win, o->context, o->hard ? "hard" : "soft", o->force ? ", every token forced to " : "",
           o->force ? o->force : "");
    double secs = 0.0, fl = 0.0;
    for (int l = 0; l < L; l++) secs += r->acc[l].seconds, fl += r->acc[l].flops_total;
    printf("loss %.4f nats/byte  %.4f bits/byte  (%lld predicted bytes)\n", r->loss, r->loss / log(2.0),
           (long long)r->tokens);
    printf("attention sub-layers: %.3f s, %.3g GFLOP executed\n", secs, 1e-9 * fl);
    for (int l = 0; l < L; l++) {
        char line[512];
        mattn_stats_format(&r->acc[l], line, sizeof line);
        printf("layer %d %s\n        MI(route; byte)=%.3f  MI(route; position)=%.3f nats  projected hard cost=%.4f  "
               "executed:", l, line, mattn_route_counts_mi_token(r->counts[l]),
               mattn_route_counts_mi_position(r->counts[l]), r->acc[l].hard_cost);
        for (int k = 0; k < K; k++)
            printf(" E%d %.1f%% %.3g GFLOP", k + 1, 100 * r->acc[l].exec_frac[k], 1e-9 * r->acc[l].flops[k]);
        printf("\n");
    }
}

static double attn_seconds(const eval_result *r, int L) {
    double s = 0.0;
    for (int l = 0; l < L; l++) s += r->acc[l].seconds;
    return s;
}

static double attn_flops(const eval_result *r, int L) {
    double f = 0.0;
    for (int l = 0; l < L; l++) f += r->acc[l].flops_total;
    return f;
}

/* --compare: r[0] soft, r[1] hard, r[2] hard with every token on full. */
static void print_compare(const eval_opts *o, const eval_result *r, const mattn_lm_config *cfg, int fk) {
    const int L = cfg->n_layers, K = cfg->attn.n_experts;
    static const char *const what[] = {"soft", "hard", "all-full"};
    printf("%s on the %s split of %s, %lld windows of %lld bytes:\n", o->model_path, o->split, o->data_path,
           (long long)r[0].n_win, o->context);
    const int nr = fk >= 0 ? 3 : 2;
    const double f_full = fk >= 0 ? attn_flops(&r[2], L) : 0, s_full = fk >= 0 ? attn_seconds(&r[2], L) : 0;
    for (int i = 0; i < nr; i++) {
        const double f = attn_flops(&r[i], L), sec = attn_seconds(&r[i], L);
        printf("  %-8s loss %.4f nats/byte | attention %.3g GFLOP, %.3f s", what[i], r[i].loss, 1e-9 * f, sec);
        if (i == 1 && fk >= 0) printf("  (%.2fx the FLOPs and %.2fx the time of all-full)", f / f_full, sec / s_full);
        printf("\n");
    }
    printf("  hard - soft: %+.4f nats/byte\n", r[1].loss - r[0].loss);
    for (int l = 0; l < L; l++) {
        const mattn_stats *a = &r[1].acc[l];
        printf("  layer %d hard routes:", l);
        for (int k = 0; k < K; k++) printf(" %s %.1f%%", cli_expert_label(&cfg->attn, k), 100 * a->exec_frac[k]);
        printf(" | MI(route; byte) %.3f, MI(route; position) %.3f nats", mattn_route_counts_mi_token(r[1].counts[l]),
               mattn_route_counts_mi_position(r[1].counts[l]));
        if (a->has_uncertainty) printf(" | uncertainty %.3f", a->uncertainty);
        printf("\n");
    }
}

static int eval_compare(mattn_model *m, const uint8_t *bytes, int64_t n_all, int64_t n_win, const eval_opts *o) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int fk = cli_expert_index(&cfg->attn, "full");
    eval_result r[3] = {{0}};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (i == 2 && fk < 0) break; /* no full expert: no all-full pass */
        eval_opts oi = *o;
        oi.hard = i > 0;
        oi.force = i == 2 ? "full" : NULL;
        r[i] = (eval_result){.n_win = n_win, .acc = calloc((size_t)cfg->n_layers, sizeof(mattn_stats))};
        if (!r[i].acc) rc = cli_fail(1, "out of memory");
        if (!rc && !(r[i].counts = cli_route_counts(cfg))) rc = 1;
        if (!rc) rc = eval_routing(m, &oi);
        if (!rc) rc = score(m, bytes, n_all, &oi, &r[i]);
    }
    if (!rc) print_compare(o, r, cfg, fk);
    for (int i = 0; i < 3; i++) {
        cli_route_counts_free(r[i].counts, cfg->n_layers);
        free(r[i].acc);
    }
    return rc;
}

/* The split's windows, routing, scoring and the report. */
static int eval_model(mattn_model *m, const mattn_data *d, const eval_opts *o) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int val = !strcmp(o->split, "val");
    const size_t lo = val ? mattn_data_size(d, 0) : 0;
    const size_t len = val ? mattn_data_size(d, 1) : mattn_data_size(d, 0) + mattn_data_size(d, 1);
    const int64_t n_all = (int64_t)(len / (size_t)(o->context + 1));
    if (n_all < 1)
        return cli_fail(1, "--data %s: the %s split (%zu bytes) is shorter than one window of %lld bytes", o->data_path,
                        o->split, len, o->context + 1);
    const int64_t n_win = o->max_windows && o->max_windows < n_all ? o->max_windows : n_all;
    if (o->compare) return eval_compare(m, mattn_data_bytes(d) + lo, n_all, n_win, o);
    if (o->gate_share >= 0)
        return eval_gate(m, mattn_data_bytes(d) + lo, n_all, n_win, (int)o->context, (int)o->batch, o->gate_share,
                         o->json);
    int rc = eval_routing(m, o);
    if (rc) return rc;
    if (o->task) return eval_recall(m, mattn_data_bytes(d) + lo, n_win, n_all, (int)o->context, o->json);
    eval_result r = {.n_win = n_win, .acc = calloc((size_t)cfg->n_layers, sizeof(mattn_stats))};
    if (!r.acc) rc = cli_fail(1, "out of memory");
    if (!rc && !(r.counts = cli_route_counts(cfg))) rc = 1;
    if (!rc) rc = score(m, mattn_data_bytes(d) + lo, n_all, o, &r);
    if (!rc && o->json) print_json(o, &r, cfg->n_layers, cfg->attn.n_experts);
    else if (!rc) print_table(o, &r, cfg->n_layers, cfg->attn.n_experts);
    cli_route_counts_free(r.counts, cfg->n_layers);
    free(r.acc);
    return rc;
}

int cli_compare(mattn_model *m, const mattn_data *d, int context, int64_t max_windows, const char *model_path,
                const char *data_path) {
    const eval_opts o = {.model_path = model_path, .data_path = data_path, .split = "val", .context = context,
                         .batch = 16, .max_windows = max_windows, .compare = 1, .eta = NAN};
    return eval_model(m, d, &o);
}

int cmd_eval(int argc, char **argv) {
    if (cli_model_is_gguf(argc, argv)) return cmd_eval_llama(argc, argv);
    eval_opts o;
    int rc = eval_args(argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    cli_set_threads(o.threads);
    mattn_model *m;
    if (cli_load_model(o.model_path, &m)) return 1;
    if (!o.context) o.context = mattn_model_config(m)->max_seq_len < 256 ? mattn_model_config(m)->max_seq_len : 256;
    if (o.context > mattn_model_config(m)->max_seq_len) {
        const int tmax = mattn_model_config(m)->max_seq_len; /* the config lives in m */
        mattn_model_free(m);
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's max_seq_len %d", o.context, tmax);
    }
    mattn_data *d;
    if (mattn_data_load(o.data_path, 0.1, &d) != MATTN_OK) {
        mattn_model_free(m);
        return cli_fail(1, "--data: %s", mattn_last_error());
    }
    if (o.records && mattn_data_set_records(d, (int)o.records) != MATTN_OK) {
        mattn_model_free(m);
        mattn_data_free(d);
        return cli_fail(1, "--records: %s", mattn_last_error());
    }
    rc = eval_model(m, d, &o);
    mattn_data_free(d);
    mattn_model_free(m);
    return rc;
}
