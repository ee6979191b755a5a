/*
 * train.c — `metaattn train`: trains a Meta-Attention language model on a
 * byte-level text corpus with AdamW, logs every step to DIR/log.jsonl, shows
 * a progress line, checkpoints (DIR/model.safetensors + DIR/optim.safetensors,
 * each written atomically, both carrying the step) every N steps, at the end
 * and on Ctrl-C, SIGTERM or SIGHUP, and resumes exactly (--resume): the
 * batch, the noise and the schedules are pure functions of (seed, step).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "train.h"


/* mkdir -p */
static int mkdir_p(const char *dir) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* The signal that asked the run to stop (SIGINT, SIGTERM, SIGHUP), or 0. */
static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) { g_stop = sig; }

/* A training run: what it trains on and with, and how far it got. */
typedef struct train_run {
    const train_opts *o;
    char model_path[4096], optim_path[4096], log_path[4096];
    mattn_lm_config cfg;
    mattn_data *data;
    mattn_model *m;
    mattn_adamw *opt;
    int32_t *idx, *tgt;
    mattn_stats *tstats; /* the step's training batch, per layer */
    mattn_route_counts **counts; /* and its routes against tokens and positions */
    FILE *logf;
    long long start, done_steps, n_skipped, skipped_run, nan_step;
    int tty;
    double t0, last_val;
} train_run;

/* Paths, the config, the corpus and the run directory. */
static int train_prepare(train_run *r) {
    const train_opts *o = r->o;
    snprintf(r->model_path, sizeof r->model_path, "%s/model.safetensors", o->out_dir);
    snprintf(r->optim_path, sizeof r->optim_path, "%s/optim.safetensors", o->out_dir);
    snprintf(r->log_path, sizeof r->log_path, "%s/log.jsonl", o->out_dir);
    const int have_ckpt = access(r->model_path, F_OK) == 0;
    if (have_ckpt && !o->resume)
        return cli_fail(1, "--out %s already holds a run (model.safetensors): add --resume to continue it or "
                           "choose another --out", o->out_dir);
    if (o->resume && !have_ckpt) return cli_fail(1, "--resume: no checkpoint in '%s' (no model.safetensors)", o->out_dir);
    int rc = train_config(o, r->model_path, &r->cfg);
    if (rc) return rc;
    if (mattn_data_load(o->data_path, 0.1, &r->data) != MATTN_OK) {
        const int missing = access(o->data_path, F_OK) != 0;
        return cli_fail(1, "--data: %s%s", mattn_last_error(), missing && !strcmp(o->data_path, "data/kjv.txt")
                        ? " (run scripts/get-corpus.sh to fetch the default corpus)" : "");
    }
    if (o->records && mattn_data_set_records(r->data, (int)o->records) != MATTN_OK)
        return cli_fail(1, "--records: %s", mattn_last_error());
    if (mattn_data_size(r->data, 0) < (size_t)o->context + 1 || mattn_data_size(r->data, 1) < (size_t)o->context + 1)
        return cli_fail(1, "--data %s: too small for --context %lld (train %zu, validation %zu bytes)", o->data_path,
                        o->context, mattn_data_size(r->data, 0), mattn_data_size(r->data, 1));
    if (mkdir_p(o->out_dir) != 0) return cli_fail(1, "--out: cannot create '%s': %s", o->out_dir, strerror(errno));
    return 0;
}

/* Keep the log's lines up to and including step `upto` (resume). */
static int truncate_log(const char *path, long long upto) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *g = fopen(tmp, "wb");
    if (!g) { fclose(f); return cli_fail(1, "cannot write '%s'", tmp); }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int werr = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        long long s;
        /* a crash can leave a last line cut short: keep whole records only */
        if (line[len - 1] != '\n' || sscanf(line, "{\"step\": %lld", &s) != 1 || s > upto) continue;
        werr |= fwrite(line, 1, (size_t)len, g) != (size_t)len;
    }
    free(line);
    fclose(f);
    werr |= fflush(g) != 0 || fsync(fileno(g)) != 0;
    if (fclose(g) != 0 || werr || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cli_fail(1, "cannot rewrite '%s': %s", path, strerror(e));
    }
    return 0;
}

/* Model, optimizer (both from the checkpoint with --resume), log, buffers. */
static int train_setup(train_run *r) {
    const train_opts *o = r->o;
    if (mattn_model_init(&r->cfg, &r->m) != MATTN_OK) return cli_fail(1, "model: %s", mattn_last_error());
    mattn_adamw_config oc = mattn_adamw_config_default();
    oc.lr = o->lr;
    oc.weight_decay = o->wd;
    oc.grad_clip = o->clip;
    if (mattn_adamw_init(r->m, &oc, &r->opt) != MATTN_OK) return cli_fail(1, "optimizer: %s", mattn_last_error());
    if (o->resume) {
        if (mattn_model_load(r->m, r->model_path) != MATTN_OK) return cli_fail(1, "--resume: %s", mattn_last_error());
        if (mattn_adamw_load(r->opt, r->m, r->optim_path) != MATTN_OK) return cli_fail(1, "--resume: %s", mattn_last_error());
        r->start = (long long)mattn_model_step(r->m);
        if (mattn_adamw_model_step(r->opt) != r->start)
            return cli_fail(1, "--resume: checkpoint in '%s' is inconsistent (model at step %lld, optimizer at %lld): "
                               "a save was interrupted", o->out_dir, r->start, (long long)mattn_adamw_model_step(r->opt));
        if (truncate_log(r->log_path, r->start)) return 1;
    }
    const int frc = o->force ? cli_force_routes(r->m, "--force", o->force) : 0;
    if (frc) return frc;
    if (!(r->logf = fopen(r->log_path, o->resume ? "ab" : "wb")))
        return cli_fail(1, "cannot write '%s': %s", r->log_path, strerror(errno));
    r->tstats = calloc((size_t)r->cfg.n_layers, sizeof *r->tstats);
    if (!(r->counts = cli_route_counts(&r->cfg))) return 1;
    r->idx = malloc(sizeof(int32_t) * (size_t)(o->batch * o->context));
    r->tgt = malloc(sizeof(int32_t) * (size_t)(o->batch * o->context));
    if (!r->idx || !r->tgt || !r->tstats || !r->counts) return cli_fail(1, "out of memory");
    return 0;
}

/* Mean validation cross-entropy over n windows of the validation split (eval mode, soft). */
static int val_loss(mattn_model *m, const mattn_data *d, int B, int T, int n_batches, double *out) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)B * T), *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    if (!idx || !tgt) { free(idx); free(tgt); return cli_fail(1, "out of memory"); }
    mattn_model_set_training(m, 0);
    double sum = 0.0;
    int rc = 0;
    const int64_t n = (int64_t)B * n_batches;
    for (int k = 0; k < n_batches && !rc; k++) {
        for (int b = 0; b < B && !rc; b++)
            if (mattn_data_window(d, 1, (int64_t)k * B + b, n, T, idx + (size_t)b * T, tgt + (size_t)b * T) != MATTN_OK)
                rc = cli_fail(1, "validation: %s", mattn_last_error());
        float ce = 0.0f;
        if (!rc && mattn_model_forward(m, idx, tgt, B, T, NULL, &ce) != MATTN_OK)
            rc = cli_fail(1, "validation forward: %s", mattn_model_errmsg(m));
        sum += ce;
    }
    mattn_model_set_training(m, 1);
    free(idx);
    free(tgt);
    *out = sum / n_batches;
    return rc;
}

static int save_ckpt(const train_run *r) {
    /* optimizer first, model second: each file carries the step, and resume
     * refuses a pair whose steps differ (a save interrupted in between) */
    if (mattn_adamw_save(r->opt, r->m, r->optim_path) != MATTN_OK) return cli_fail(1, "checkpoint: %s", mattn_last_error());
    if (mattn_model_save(r->m, r->model_path) != MATTN_OK) return cli_fail(1, "checkpoint: %s", mattn_last_error());
    return 0;
}

static float *first_weight(mattn_model *m) {
    mattn_tensor t;
    return mattn_model_param(m, 0, &t) == MATTN_OK ? t.data : NULL;
}

/* One step's numbers, for the log and the progress line. */
typedef struct step_result {
    mattn_config knobs; /* the schedules' values */
    double lr, gnorm, seconds;
    float loss, ce;
} step_result;

/* Forward, backward and update of step `step`: 0, STEP_SKIPPED
 * (--on-nonfinite skip), else an exit code after printing. */
#define STEP_SKIPPED (-1)
static int train_step(train_run *r, long long step, step_result *s) {
    const train_opts *o = r->o;
    mattn_model *m = r->m;
    /* schedules: a pure function of the step */
    s->knobs = r->cfg.attn;
    s->knobs.cost_lambda = sched_at(&o->cost, step);
    s->knobs.elbo_weight = sched_at(&o->elbo, step);
    s->knobs.temperature = sched_at(&o->temp, step);
    s->knobs.hard_routing = o->hard_from >= 0 && step >= o->hard_from;
    if (mattn_model_set_routing(m, &s->knobs) != MATTN_OK)
        return cli_fail(1, "schedule at step %lld: %s", step, mattn_model_errmsg(m));
    s->lr = mattn_schedule_lr(step, o->warmup, o->steps, o->lr, o->min_lr);
    if (mattn_data_batch(r->data, 0, (uint64_t)o->seed, (uint64_t)step, (int)o->batch, (int)o->context, r->idx, r->tgt)
        != MATTN_OK)
        return cli_fail(1, "data: %s", mattn_last_error());
    mattn_model_set_training(m, 1);
    mattn_model_set_step(m, (uint64_t)step);
    s->gnorm = 0.0;
    const double ts = cli_now();
    /* tests only: METAATTN_TEST_NAN_STEP=S poisons one weight during step S */
    float *poison = step == r->nan_step ? first_weight(m) : NULL, saved = poison ? *poison : 0.0f;
    if (poison) *poison = NAN;
    mattn_status st = mattn_model_forward(m, r->idx, r->tgt, (int)o->batch, (int)o->context, &s->loss, &s->ce);
    if (st == MATTN_OK) st = mattn_model_zero_grad(m);
    if (st == MATTN_OK) st = mattn_model_backward(m);
    if (poison) *poison = saved;
    const char *why = st != MATTN_OK ? mattn_model_errmsg(m) : NULL;
    if (st == MATTN_OK && (st = mattn_adamw_step(r->opt, m, s->lr, &s->gnorm)) != MATTN_OK) why = mattn_last_error();
    if (st == MATTN_OK && (st = mattn_model_update_duals(m)) != MATTN_OK) why = mattn_model_errmsg(m);
    if (st == MATTN_ERR_NUMERIC && o->skip_nonfinite && ++r->skipped_run <= 10) {
        fprintf(stderr, "%smetaattn: step %lld skipped (--on-nonfinite skip): %s\n", r->tty ? "\n" : "", step + 1, why);
        r->n_skipped++;
        return STEP_SKIPPED;
    }
    if (st != MATTN_OK)
        return cli_fail(1, "step %lld: %s; weights not updated, %s", step + 1, why,
                        st != MATTN_ERR_NUMERIC ? "stopping"
                        : o->skip_nonfinite ? "10 steps in a row skipped, stopping (the last checkpoint is intact)"
                                            : "stopping (the last checkpoint is intact; --on-nonfinite skip drops such steps)");
    r->skipped_run = 0;
    s->seconds = cli_now() - ts;
    r->done_steps++;
    return 0;
}

/* The step's JSONL record (every metric); the layers' summary for the
 * progress line in lbuf. */
static int log_step(train_run *r, long long s1, const step_result *s, int evald, char *lbuf, size_t lsize) {
    const train_opts *o = r->o;
    const int L = r->cfg.n_layers, K = r->cfg.attn.n_experts;
    FILE *logf = r->logf;
    fprintf(logf, "{\"step\": %lld, \"loss\": %.6f, \"lm_loss\": %.6f, \"aux_loss\": %.6f, \"lr\": %.6g, "
                  "\"grad_norm\": %.6g, \"tokens_per_s\": %.1f, \"elapsed\": %.3f, \"cost_lambda\": %.6g, "
                  "\"elbo_weight\": %.6g, \"temperature\": %.6g, \"hard\": %d",
            s1, s->loss, s->ce, s->loss - s->ce, s->lr, s->gnorm, o->batch * o->context / s->seconds, cli_now() - r->t0,
            s->knobs.cost_lambda, s->knobs.elbo_weight, s->knobs.temperature, s->knobs.hard_routing);
    if (evald) fprintf(logf, ", \"val_loss\": %.6f", r->last_val);
    fprintf(logf, ", \"layers\": [");
    size_t lo = 0;
    lbuf[0] = 0;
    for (int l = 0; l < L; l++) {
        const mattn_stats st = r->tstats[l];
        fprintf(logf, "%s{\"weights\": [", l ? ", " : "");
        for (int k = 0; k < K; k++) fprintf(logf, "%s%.5f", k ? ", " : "", st.weight[k]);
        fprintf(logf, "], \"entropy\": %.5f, \"norm_entropy\": %.5f, \"expected_cost\": %.5f, \"projected_cost\": %.5f, "
                      "\"collapsed\": %.5f, \"uncertainty\": %.5f, \"mi_token\": %.5f, \"mi_position\": %.5f",
                st.entropy, K > 1 ? st.entropy / log(K) : 0.0, st.expected_cost, st.hard_cost, st.collapsed, st.uncertainty,
                mattn_route_counts_mi_token(r->counts[l]), mattn_route_counts_mi_position(r->counts[l]));
        mattn_layer *ly = mattn_model_layer(r->m, l);
        for (int d = 0; d < mattn_layer_n_duals(ly); d++)
            fprintf(logf, "%s%.6g", d ? ", " : ", \"duals\": [", mattn_layer_duals(ly)[d]);
        fprintf(logf, "%s}", mattn_layer_n_duals(ly) ? "]" : "");
        if (lo < lsize - 40 && l < 4)
            lo += (size_t)snprintf(lbuf + lo, lsize - lo, " L%d %.2f/%.2f/%.2f H%.2f", l, st.weight[0],
                                   K > 1 ? st.weight[1] : 0.0, K > 2 ? st.weight[2] : 0.0, st.entropy);
    }
    fprintf(logf, "]}\n");
    if (fflush(logf) != 0 || ferror(logf))
        return cli_fail(1, "cannot write '%s': %s (stopping; the last checkpoint is intact)", r->log_path, strerror(errno));
    return 0;
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "--");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void progress(const train_run *r, long long s1, const step_result *s, int evald, const char *lbuf) {
    const train_opts *o = r->o;
    if (o->quiet || !(r->tty || evald || s1 == o->steps || s1 == r->start + 1)) return;
    const double el = cli_now() - r->t0, eta = el / r->done_steps * (o->steps - s1);
    char etab[32], valb[32];
    fmt_eta(eta, etab, sizeof etab);
    if (isnan(r->last_val)) snprintf(valb, sizeof valb, "  -   ");
    else snprintf(valb, sizeof valb, "%.4f", r->last_val);
    printf("%sstep %lld/%lld | loss %.4f (+aux %.3f) | val %s | %.0f tok/s | ETA %s |%s%s", r->tty ? "\r\033[K" : "",
           s1, o->steps, s->ce, s->loss - s->ce, valb, o->batch * o->context / s->seconds, etab, lbuf,
           r->tty && !evald ? "" : "\n");
    fflush(stdout);
}

/* Steps from the start (0, or the checkpoint's) to --steps, or until a
 * signal asks to stop. */
static int train_loop(train_run *r) {
    const train_opts *o = r->o;
    const char *nan_env = getenv("METAATTN_TEST_NAN_STEP");
    r->nan_step = nan_env ? atoll(nan_env) - 1 : -1;
    r->t0 = cli_now();
    r->last_val = NAN;
    int rc = 0;
    for (long long step = r->start; step < o->steps && !g_stop; step++) {
        step_result s;
        if ((rc = train_step(r, step, &s)) == STEP_SKIPPED) { rc = 0; continue; }
        if (rc) break;
        for (int l = 0; l < r->cfg.n_layers; l++) { /* before validation overwrites them */
            mattn_model_layer_stats(r->m, l, &r->tstats[l]);
            mattn_route_counts_reset(r->counts[l]);
            mattn_route_counts_add(r->counts[l], mattn_model_layer(r->m, l), r->idx);
        }
        const long long s1 = step + 1;
        const int evald = s1 % o->eval_every == 0 || s1 == o->steps;
        if (evald && (rc = val_loss(r->m, r->data, (int)o->batch, (int)o->context, (int)o->eval_batches, &r->last_val)))
            break;
        char lbuf[256];
        if ((rc = log_step(r, s1, &s, evald, lbuf, sizeof lbuf))) break;
        progress(r, s1, &s, evald, lbuf);
        if (s1 % o->ckpt_every == 0 && s1 != o->steps && (rc = save_ckpt(r))) break;
    }
    return rc;
}

/* Sample n bytes after the prompt (eval mode) with the public sampler:
 * through the decode cache while the text fits the context the model was
 * trained on (positions past it never saw a gradient), then, and for a model
 * with length-normalised positions throughout, re-running the model on the
 * last ctx bytes. */
static void sample_text(mattn_model *m, const char *prompt, int n, uint64_t seed, int ctx) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int Tmax = ctx < cfg->max_seq_len ? ctx : cfg->max_seq_len, V = cfg->vocab_size;
    int len = (int)strlen(prompt);
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)(len + n + 1));
    float *logits = malloc(sizeof(float) * V);
    mattn_sampler_config sc = mattn_sampler_config_default(); /* temperature 0.8, top-k 40 */
    sc.seed = seed;
    mattn_sampler *s = NULL;
    mattn_model_cache *cache = NULL;
    mattn_model_set_training(m, 0);
    if (!buf || !logits) cli_fail(1, "sample: out of memory");
    else if (mattn_sampler_init(&sc, &s) != MATTN_OK) cli_fail(1, "sample: %s", mattn_last_error());
    else if (cfg->position_norm && mattn_model_cache_init(m, 1, &cache) != MATTN_OK)
        cli_fail(1, "sample: %s", mattn_model_errmsg(m));
    else {
        for (int i = 0; i < len; i++) buf[i] = (uint8_t)prompt[i];
        fputs(prompt, stdout);
        for (int k = 0; k < n; k++) {
            if (cache && len > Tmax) { /* past the trained context: windows */
                mattn_model_cache_free(cache);
                cache = NULL;
            }
            int32_t tok;
            if (cli_next_logits(m, cache, buf, len, Tmax, logits)) break;
            if (mattn_sampler_sample(s, logits, V, &tok) != MATTN_OK) { cli_fail(1, "sample: %s", mattn_last_error()); break; }
            buf[len++] = tok;
            putchar(tok);
        }
        putchar('\n');
    }
    mattn_model_cache_free(cache);
    mattn_sampler_free(s);
    free(logits);
    free(buf);
}

/* After the run: the final model's sample, and its validation loss and
 * routes soft, hard and forced to all-full (eval --compare). */
static int final_report(const train_run *r) {
    const train_opts *o = r->o;
    if (o->sample_n > 0) {
        printf("\nsample (eval mode, %s, temperature 0.8, top-k 40):\n", o->force ? "forced routes" : "soft routing");
        mattn_config k = r->cfg.attn;
        k.hard_routing = o->force != NULL;
        mattn_model_set_routing(r->m, &k);
        sample_text(r->m, "And God said", (int)o->sample_n, (uint64_t)o->seed, (int)o->context);
    }
    if (o->report <= 0) return 0;
    printf("\n");
    if (o->force) { /* the soft and routed passes would run the unused controller */
        printf("closing summary: not for forced routes; score the model with metaattn eval --model %s --hard "
               "--force %s\n", r->model_path, o->force);
        return 0;
    }
    return cli_compare(r->m, r->data, (int)o->context, o->report, r->model_path, o->data_path);
}

static void train_free(train_run *r) {
    if (r->logf) fclose(r->logf);
    free(r->tstats);
    cli_route_counts_free(r->counts, r->cfg.n_layers);
    free(r->idx);
    free(r->tgt);
    mattn_adamw_free(r->opt);
    mattn_model_free(r->m);
    mattn_data_free(r->data);
}

int cmd_train(int argc, char **argv) {
    train_opts o;
    int rc = train_args(argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    const int n_threads = cli_set_threads(o.threads);
    train_run r = {.o = &o};
    if (!(rc = train_prepare(&r)) && !(rc = train_setup(&r))) {
        const mattn_lm_config *c = &r.cfg;
        printf("metaattn train: %s controller, %d layers, d_model %d, %lld params | data %s (%zu train / %zu val bytes) | "
               "batch %lld x context %lld | %d threads%s\n",
               c->attn.controller == MATTN_CONTROLLER_BAYESIAN ? "bayesian" : "prior-free", c->n_layers, c->attn.d_model,
               (long long)mattn_model_numel(r.m), o.data_path, mattn_data_size(r.data, 0),
               mattn_data_size(r.data, 1), o.batch, o.context, n_threads, o.resume ? " | resumed" : "");
        fflush(stdout);
        /* Ctrl-C, SIGTERM (kill, a scheduler's stop) and SIGHUP (the terminal
         * went away): finish the step, write a checkpoint, exit 128 + signal */
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
        r.tty = isatty(STDOUT_FILENO) && !o.quiet;
        rc = train_loop(&r);
        if (r.n_skipped) fprintf(stderr, "metaattn: %lld steps skipped for a non-finite loss or gradient\n", r.n_skipped);
    }
    if (!rc && r.m) {
        rc = save_ckpt(&r);
        if (!rc) printf("%scheckpoint: %s (step %llu)\n", r.tty ? "\n" : "", r.model_path, (unsigned long long)mattn_model_step(r.m));
        if (g_stop) {
            printf("interrupted: resume with the same command plus --resume\n");
            rc = 128 + g_stop;
        }
    }
    if (!rc) rc = final_report(&r);
    train_free(&r);
    return rc;
}
