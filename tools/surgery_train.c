/*
 * surgery_train.c — `metaattn surgery --data`: distil a GGUF model's routing
 * (mattn_distill_*): the text tokenized whole, one sequence of --context
 * tokens per step at an offset drawn from (seed, step), so that a resumed
 * run sees the sequences the uninterrupted one would; the layer-local
 * stage (--stage1 steps: the feature maps imitate each block's softmax
 * attention on the original model's stream), then the end-to-end stage
 * (KL to the original under the --budget on full).  With --recall P a
 * share P of the stage-2 steps (drawn from (seed, step) too) trains on a
 * retrieval prompt of recall_prompt.c instead, its filler from --data and
 * the right answer appended, the answer's positions weighing
 * --recall-weight in the KL: the routers see what the text rarely asks,
 * a question whose answer lies thousands of tokens back.  Every step is a line
 * of OUT.log.jsonl; a progress line on stdout; OUT (the routing file) and
 * OUT.state (the optimiser) are written every --checkpoint steps and at
 * the end; --resume continues from them exactly.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_harness.h"
#include "cli.h"

typedef struct {
    const cli_surgery_opts *o;
    mattn_llama *m;
    mattn_distill *d;
    int32_t *ids, *held, *seq; /* seq, w: a retrieval step's sequence and KL weights */
    float *w;
    size_t n_ids, n_held;
    FILE *log;
    char state[1024], log_path[1024];
} run;

/* The offset of step s's sequence: a SplitMix64 draw from (seed, s). */
static size_t offset_of(const run *r, long long s) {
    uint64_t z = r->o->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)s + 1;
    const uint64_t v = bench_rand(&z);
    return (size_t)(v % (uint64_t)(r->n_ids - (size_t)r->o->context + 1));
}

/* Step s's sequence: --context tokens of the text, or a retrieval prompt
 * (*kind "passkey" or "copy") and its weights; its length into *n. */
static int sequence(run *r, long long s, int stage, const int32_t **tok, const float **w, int *n, const char **kind) {
    const cli_surgery_opts *o = r->o;
    uint64_t z = (o->seed ^ 0x5EC0A11ULL) * 0x9E3779B97F4A7C15ULL + (uint64_t)s + 1;
    const uint64_t u = bench_rand(&z);
    *tok = r->ids + offset_of(r, s), *w = NULL, *n = (int)o->context, *kind = "train";
    if (stage != 2 || (double)(u >> 11) * 0x1.0p-53 >= o->recall) return 0;
    const int copy = (int)(bench_rand(&z) & 1), room = 48; /* the answer's tokens, at most */
    cli_recall_prompt p;
    const int N = (int)o->context - room;
    if (cli_recall_build("--recall", r->m, r->ids, r->n_ids, copy, o->seed ^ 0x7EA1ULL, (int)s, N, r->seq, &p)) return 1;
    size_t k = 0;
    if (mattn_llama_tokenize(r->m, p.answer, strlen(p.answer), 0, r->seq + p.n, (size_t)room, &k) != MATTN_OK)
        return cli_fail(1, "--recall: %s", mattn_llama_errmsg(r->m));
    for (int t = 0; t < p.n + (int)k; t++) /* position t predicts token t + 1: the answer's from p.n - 1 */
        r->w[t] = t >= p.n - 1 && t < p.n + (int)k - 1 ? (float)o->recall_weight : 1.0f;
    *tok = r->seq, *w = r->w, *n = p.n + (int)k, *kind = copy ? "copy" : "passkey";
    return 0;
}

static mattn_distill_config stage_config(const cli_surgery_opts *o, int stage) {
    mattn_distill_config c = mattn_distill_default();
    c.full_share = o->budget, c.lr = o->lr, c.map_lr = o->map_lr, c.map_weight = o->map_weight;
    c.dual_lr = o->dual_lr, c.calibrate = o->calibrate, c.st_temperature = o->st_temperature;
    c.route_weight = o->route_weight;
    if (stage == 1) c.kl_weight = 0.0, c.map_weight = 1.0; /* the layer-local stage is the attention transfer */
    return c;
}

static int checkpoint(run *r) {
    if (mattn_llama_routing_save(r->m, r->o->out) != MATTN_OK) return cli_fail(1, "--out: %s", mattn_llama_errmsg(r->m));
    if (mattn_distill_save_state(r->d, r->state) != MATTN_OK)
        return cli_fail(1, "--out: %s", mattn_distill_errmsg(r->d));
    return 0;
}

static void log_step(run *r, long long s, int stage, const mattn_distill_stats *st, double secs, const char *kind) {
    fprintf(r->log, "{\"step\": %lld, \"kind\": \"%s\", \"stage\": %d, \"loss\": %.6g, \"kl\": %.6g, \"map_mse\": %.6g, "
                    "\"share_full\": %.6g, \"share_linear\": %.6g, \"share_local\": %.6g, \"dual\": %.6g, "
                    "\"route\": %.6g, \"grad_norm\": %.6g, \"seconds\": %.4g}\n",
            s, kind, stage, st->loss, st->kl, st->map_mse, st->share[0], st->share[1], st->share[2], st->dual,
            st->route, st->grad_norm, secs);
    fflush(r->log);
}

static int train_loop(run *r, long long start) {
    const cli_surgery_opts *o = r->o;
    const int tty = isatty(STDOUT_FILENO) && !o->quiet;
    int stage = 0;
    for (long long s = start; s < o->steps; s++) {
        const int want = s < o->stage1 ? 1 : 2;
        if (want != stage) {
            const mattn_distill_config c = stage_config(o, want);
            if (mattn_distill_set_config(r->d, &c) != MATTN_OK) return cli_fail(1, "%s", mattn_distill_errmsg(r->d));
            stage = want;
        }
        const double t0 = cli_now();
        mattn_distill_stats st;
        const int32_t *tok;
        const float *w;
        const char *kind;
        int n;
        if (sequence(r, s, stage, &tok, &w, &n, &kind)) return 1;
        if (mattn_distill_step(r->d, tok, w, n, &st) != MATTN_OK)
            return cli_fail(1, "step %lld: %s", s + 1, mattn_distill_errmsg(r->d));
        const double secs = cli_now() - t0;
        log_step(r, s + 1, stage, &st, secs, kind);
        const int last = s + 1 == o->steps, ck = last || (o->every && (s + 1) % o->every == 0);
        if (!o->quiet && (tty || ck || s == start))
            printf("%sstep %lld/%lld | stage %d | loss %.4f | KL %.4f | map %.3f | route %.3f | full %.1f%% linear "
                   "%.1f%% local %.1f%% | dual %.3f | %.1f s/step%s%s%s", tty ? "\r\033[K" : "", s + 1, o->steps,
                   stage, st.loss, st.kl, st.map_mse, st.route, 100 * st.share[0], 100 * st.share[1],
                   100 * st.share[2], st.dual, secs, w ? " | " : "", w ? kind : "", tty && !ck ? "" : "\n");
        fflush(stdout);
        if (ck && r->held && stage == 2) {
            mattn_distill_stats ev;
            const double t1 = cli_now();
            if (mattn_distill_eval(r->d, r->held, NULL, (int)o->context, &ev) != MATTN_OK)
                return cli_fail(1, "--held-out: %s", mattn_distill_errmsg(r->d));
            log_step(r, s + 1, stage, &ev, cli_now() - t1, "held_out");
            if (!o->quiet)
                printf("  held out: KL %.4f, full %.1f%% linear %.1f%% local %.1f%%\n", ev.kl, 100 * ev.share[0],
                       100 * ev.share[1], 100 * ev.share[2]);
        }
        if (ck && checkpoint(r)) return 1;
    }
    return 0;
}

int cli_surgery_train(const cli_surgery_opts *o, const mattn_llama_routing_config *rcfg) {
    run r = {.o = o};
    snprintf(r.state, sizeof r.state, "%s.state", o->out);
    snprintf(r.log_path, sizeof r.log_path, "%s.log.jsonl", o->out);
    struct stat sb;
    if (!o->resume && stat(o->out, &sb) == 0)
        return cli_fail(1, "--out '%s' exists: --resume continues it; remove it to start over", o->out);
    if (o->resume && (stat(o->out, &sb) != 0 || stat(r.state, &sb) != 0))
        return cli_fail(1, "--resume: '%s' and '%s' are needed (a checkpoint of this run)", o->out, r.state);
    if (mattn_llama_open(o->model, &r.m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    int rc = cli_llama_read_tokens(r.m, o->data, "--data", &r.ids, &r.n_ids);
    if (!rc && o->held_out) rc = cli_llama_read_tokens(r.m, o->held_out, "--held-out", &r.held, &r.n_held);
    mattn_llama_info info;
    mattn_llama_get_info(r.m, &info);
    if (!rc && o->context > info.context_length)
        rc = cli_fail(EXIT_USAGE, "--context %lld exceeds the model's context %d", o->context, info.context_length);
    if (!rc && r.n_ids < (size_t)o->context)
        rc = cli_fail(1, "--data '%s': %zu tokens, fewer than --context %lld", o->data, r.n_ids, o->context);
    if (!rc && r.held && r.n_held < (size_t)o->context)
        rc = cli_fail(1, "--held-out '%s': %zu tokens, fewer than --context %lld", o->held_out, r.n_held, o->context);
    if (!rc && o->recall > 0.0 && (!(r.seq = malloc(sizeof *r.seq * (size_t)o->context)) ||
                                   !(r.w = malloc(sizeof *r.w * (size_t)o->context))))
        rc = cli_fail(1, "--recall: out of memory");
    const char *from = o->resume ? o->out : o->init;
    if (!rc && (from ? mattn_llama_routing_load(r.m, from) : mattn_llama_routing_new(r.m, rcfg)) != MATTN_OK)
        rc = cli_fail(1, "%s: %s", o->resume ? "--resume" : o->init ? "--init" : "surgery", mattn_llama_errmsg(r.m));
    const mattn_distill_config c = stage_config(o, o->stage1 > 0 ? 1 : 2);
    if (!rc && mattn_distill_new(r.m, &c, (int)o->context, &r.d) != MATTN_OK)
        rc = cli_fail(1, "surgery: %s", mattn_llama_errmsg(r.m));
    if (!rc && o->resume && mattn_distill_load_state(r.d, r.state) != MATTN_OK)
        rc = cli_fail(1, "--resume: %s", mattn_distill_errmsg(r.d));
    if (!rc && !(r.log = fopen(r.log_path, o->resume ? "a" : "w")))
        rc = cli_fail(1, "--out: cannot write '%s': %s", r.log_path, strerror(errno));
    const long long start = r.d ? mattn_distill_steps(r.d) : 0;
    if (!rc && !o->quiet)
        printf("surgery: %s, %zu training tokens (%s), sequences of %lld, steps %lld..%lld (stage 1 until %lld), "
               "budget %s\n", o->model, r.n_ids, o->data, o->context, start + 1, o->steps, o->stage1,
               o->budget >= 0 ? "on" : "off");
    if (!rc) rc = train_loop(&r, start);
    if (r.log) fclose(r.log);
    mattn_distill_free(r.d);
    mattn_llama_free(r.m);
    free(r.ids);
    free(r.held);
    free(r.seq);
    free(r.w);
    return rc;
}
