/*
 * train.c — `metaattn train`: trains a Meta-Attention language model on a
 * byte-level text corpus with AdamW, logs every step to DIR/log.jsonl, shows
 * a progress line, checkpoints (DIR/model.safetensors + DIR/optim.safetensors,
 * each written atomically, both carrying the step) every N steps, at the end
 * and on Ctrl-C, and resumes exactly (--resume): the batch, the noise and the
 * schedules are pure functions of (seed, step).
 */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "metaattn.h"

static const char *usage_train =
    "usage: metaattn train [options]\n"
    "\n"
    "Trains a byte-level Meta-Attention language model (DESIGN.md §1).\n"
    "\n"
    "data and model:\n"
    "  --data FILE        UTF-8 text to train on (default data/kjv.txt, written by\n"
    "                     scripts/get-corpus.sh); the last 10%% is validation\n"
    "  --preset NAME      tiny (default) | small | base: model shape, see docs/cli.md\n"
    "  --config FILE      MetaLMConfig JSON instead of a preset\n"
    "  --layers N         override the number of layers\n"
    "  --controller C     bayesian (default) | prior-free\n"
    "  --out DIR          run directory (default runs/default): model.safetensors,\n"
    "                     optim.safetensors, log.jsonl\n"
    "  --resume           continue the run in --out from its last checkpoint\n"
    "\n"
    "optimisation:\n"
    "  --steps N          optimizer steps (default 1300)\n"
    "  --batch N          sequences per step (default 16)\n"
    "  --context N        tokens per sequence (default 128)\n"
    "  --lr X             peak learning rate (default 2e-3)\n"
    "  --min-lr X         final learning rate of the cosine decay (default lr/10)\n"
    "  --warmup N         linear warmup steps (default 100)\n"
    "  --weight-decay X   AdamW decoupled weight decay (default 0.1)\n"
    "  --clip X           gradient-norm clipping, 0 = off (default 1.0)\n"
    "  --seed N           seed of weights, batches and noise (default 1337)\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "\n"
    "routing (SCHED = VALUE, or START:END:cos|lin:WARMUP:MAX as the Python\n"
    "library's cosine_ramp/linear_ramp over steps):\n"
    "  --cost-lambda SCHED    cost penalty weight (default 0)\n"
    "  --entropy-coeff X      entropy bonus (prior-free, default 0)\n"
    "  --elbo-weight SCHED    ELBO KL weight (Bayesian, default 1)\n"
    "  --beta0 X              prior strength beta_0: prior beta_i = eps + beta_0 (1 - cost_i)\n"
    "                         (Bayesian, default 1)\n"
    "  --epsilon X            prior floor eps (Bayesian, default 0.01)\n"
    "  --temperature SCHED    router softmax temperature (prior-free, default 1)\n"
    "  --hard-from STEP       switch from soft to hard (Gumbel top-k) routing at STEP\n"
    "  --top-k K              experts per token under hard routing (default 1)\n"
    "\n"
    "logging and checkpoints:\n"
    "  --eval-every N     validation loss every N steps (default 100)\n"
    "  --eval-batches N   validation windows per evaluation, of --batch each (default 8)\n"
    "  --ckpt-every N     checkpoint every N steps (default 500; always at the end)\n"
    "  --sample N         bytes to generate from the final model (default 200, 0 = none)\n"
    "  --on-nonfinite A   stop (default): a NaN/Inf loss or gradient ends the run\n"
    "                     with an error, the last checkpoint kept as it was; skip:\n"
    "                     drop that step (no update) and go on, failing after 10\n"
    "                     skipped steps in a row\n"
    "  --quiet            no progress line\n"
    "  -h, --help         show this help\n";

typedef struct sched { double start, end; int kind; long long warmup, max; } sched; /* kind 0 const, 1 cos, 2 lin */

static int parse_sched(const char *flag, const char *s, sched *out) {
    char kind[8];
    double a, b;
    long long w, m;
    int n = 0;
    if (sscanf(s, "%lf:%lf:%7[a-z]:%lld:%lld%n", &a, &b, kind, &w, &m, &n) == 5 && s[n] == 0) {
        if (strcmp(kind, "cos") && strcmp(kind, "lin"))
            return cli_fail(EXIT_USAGE, "%s: ramp kind must be cos or lin, got '%s'", flag, kind);
        if (w < 0 || m < w) return cli_fail(EXIT_USAGE, "%s: need 0 <= WARMUP <= MAX, got %lld:%lld", flag, w, m);
        *out = (sched){a, b, kind[0] == 'c' ? 1 : 2, w, m};
        return 0;
    }
    double v = 0.0;
    if (cli_double(flag, s, -1e9, 1e9, &v)) return EXIT_USAGE;
    *out = (sched){v, v, 0, 0, 0};
    return 0;
}

static double sched_at(const sched *s, long long step) {
    if (s->kind == 1) return mattn_cosine_ramp(step, s->warmup, s->max, s->start, s->end);
    if (s->kind == 2) return mattn_linear_ramp(step, s->warmup, s->max, s->start, s->end);
    return s->start;
}

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

static volatile sig_atomic_t g_stop = 0;
static void on_sigint(int sig) { (void)sig; g_stop = 1; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int cli_model_preset(const char *name, mattn_lm_config *c) {
    *c = mattn_lm_config_default();
    c->vocab_size = 256;
    c->causal_positions = 1; /* routing must not see the sequence's length: decode cache */
    c->attn.dropout = 0.0;
    if (!strcmp(name, "tiny")) {
        c->attn.d_model = 128;
        c->attn.n_heads = 4;
        c->attn.window_size = 32;
        c->attn.controller_hidden = 64;
        c->n_layers = 4;
        c->max_seq_len = 256;
        return 0;
    }
    if (!strcmp(name, "small") || !strcmp(name, "base")) {
        mattn_config_preset(name, &c->attn);
        c->attn.dropout = 0.1;
        c->n_layers = !strcmp(name, "small") ? 6 : 8;
        c->max_seq_len = 1024;
        return 0;
    }
    return cli_fail(EXIT_USAGE, "--preset: unknown preset '%s' (tiny, small, base)", name);
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

static int save_ckpt(mattn_model *m, mattn_adamw *o, const char *dir) {
    char p[4096];
    /* optimizer first, model second: each file carries the step, and resume
     * refuses a pair whose steps differ (a save interrupted in between) */
    snprintf(p, sizeof p, "%s/optim.safetensors", dir);
    if (mattn_adamw_save(o, m, p) != MATTN_OK) return cli_fail(1, "checkpoint: %s", mattn_last_error());
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (mattn_model_save(m, p) != MATTN_OK) return cli_fail(1, "checkpoint: %s", mattn_last_error());
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

static float *first_weight(mattn_model *m) {
    mattn_tensor t;
    return mattn_model_param(m, 0, &t) == MATTN_OK ? t.data : NULL;
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "--");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

/* Sample n bytes after the prompt by re-running the model on the last ctx
 * bytes, the context it was trained on (positions past it never saw a
 * gradient) — temperature 0.8, top-k 40, eval mode. */
static void sample_text(mattn_model *m, const char *prompt, int n, uint64_t seed, int ctx) {
    const int Tmax = ctx < mattn_model_config(m)->max_seq_len ? ctx : mattn_model_config(m)->max_seq_len;
    const int V = mattn_model_config(m)->vocab_size;
    int len = (int)strlen(prompt);
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)(len + n + 1));
    if (!buf) return;
    for (int i = 0; i < len; i++) buf[i] = (uint8_t)prompt[i];
    mattn_model_set_training(m, 0);
    fputs(prompt, stdout);
    uint64_t s = seed;
    for (int k = 0; k < n; k++) {
        int start = len > Tmax ? len - Tmax : 0, T = len - start;
        if (mattn_model_forward(m, buf + start, NULL, 1, T, NULL, NULL) != MATTN_OK) break;
        const float *lg = mattn_model_logits(m) + (size_t)(T - 1) * V;
        /* top-40 at temperature 0.8 */
        float kth = -INFINITY, tmp[512];
        int K = V < 40 ? V : 40;
        for (int v = 0; v < V && v < 512; v++) tmp[v] = lg[v];
        for (int j = 0; j < K; j++) {
            int bi = -1;
            for (int v = 0; v < V && v < 512; v++)
                if (tmp[v] > -INFINITY && (bi < 0 || tmp[v] > tmp[bi])) bi = v;
            kth = tmp[bi];
            tmp[bi] = -INFINITY;
        }
        double Z = 0.0, mx = -INFINITY;
        for (int v = 0; v < V; v++) if (lg[v] >= kth && lg[v] > mx) mx = lg[v];
        for (int v = 0; v < V; v++) if (lg[v] >= kth) Z += exp((lg[v] - mx) / 0.8);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(s >> 11) / 9007199254740992.0 * Z, acc = 0.0;
        int pick = 0;
        for (int v = 0; v < V; v++) {
            if (lg[v] < kth) continue;
            acc += exp((lg[v] - mx) / 0.8);
            pick = v;
            if (acc >= u) break;
        }
        buf[len++] = pick;
        putchar(pick);
    }
    putchar('\n');
    free(buf);
}

int cmd_train(int argc, char **argv) {
    const char *data_path = "data/kjv.txt", *preset = "tiny", *config_path = NULL, *controller = NULL;
    const char *out_dir = "runs/default";
    long long steps = 1300, batch = 16, context = 128, warmup = 100, seed = 1337, threads = 0, layers = 0;
    long long eval_every = 100, eval_batches = 8, ckpt_every = 500, sample_n = 200, hard_from = -1, top_k = 1;
    double lr = 2e-3, min_lr = -1, wd = 0.1, clip = 1.0, entropy_coeff = 0.0, beta0 = -1, epsilon = -1;
    int resume = 0, quiet = 0, skip_nonfinite = 0;
    sched cost = {0, 0, 0, 0, 0}, elbo = {1, 1, 0, 0, 0}, temp = {1, 1, 0, 0, 0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_train, stdout); return 0; }
        if (!strcmp(a, "--resume")) { resume = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (i + 1 >= argc) {
            int known = !strncmp(a, "--", 2) && strstr(usage_train, a);
            return cli_fail(EXIT_USAGE, known ? "train: option '%s' needs a value" : "train: unknown option '%s' (see metaattn train --help)", a);
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--data")) data_path = v;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--controller")) controller = v;
        else if (!strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--layers")) rc = cli_int(a, v, 1, 64, &layers);
        else if (!strcmp(a, "--steps")) rc = cli_int(a, v, 1, 100000000, &steps);
        else if (!strcmp(a, "--batch")) rc = cli_int(a, v, 1, 4096, &batch);
        else if (!strcmp(a, "--context")) rc = cli_int(a, v, 1, 1 << 20, &context);
        else if (!strcmp(a, "--warmup")) rc = cli_int(a, v, 0, 100000000, &warmup);
        else if (!strcmp(a, "--seed")) rc = cli_int(a, v, 0, (1LL << 53), &seed);
        else if (!strcmp(a, "--threads")) rc = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--eval-every")) rc = cli_int(a, v, 1, 100000000, &eval_every);
        else if (!strcmp(a, "--eval-batches")) rc = cli_int(a, v, 1, 100000, &eval_batches);
        else if (!strcmp(a, "--ckpt-every")) rc = cli_int(a, v, 1, 100000000, &ckpt_every);
        else if (!strcmp(a, "--sample")) rc = cli_int(a, v, 0, 100000, &sample_n);
        else if (!strcmp(a, "--hard-from")) rc = cli_int(a, v, 0, 100000000, &hard_from);
        else if (!strcmp(a, "--top-k")) rc = cli_int(a, v, 1, 8, &top_k);
        else if (!strcmp(a, "--lr")) rc = cli_double(a, v, 0, 10, &lr);
        else if (!strcmp(a, "--min-lr")) rc = cli_double(a, v, 0, 10, &min_lr);
        else if (!strcmp(a, "--weight-decay")) rc = cli_double(a, v, 0, 10, &wd);
        else if (!strcmp(a, "--clip")) rc = cli_double(a, v, 0, 1e6, &clip);
        else if (!strcmp(a, "--entropy-coeff")) rc = cli_double(a, v, -1e6, 1e6, &entropy_coeff);
        else if (!strcmp(a, "--beta0")) rc = cli_double(a, v, 0, 1e6, &beta0);
        else if (!strcmp(a, "--epsilon")) rc = cli_double(a, v, 1e-12, 1e6, &epsilon);
        else if (!strcmp(a, "--cost-lambda")) rc = parse_sched(a, v, &cost);
        else if (!strcmp(a, "--elbo-weight")) rc = parse_sched(a, v, &elbo);
        else if (!strcmp(a, "--temperature")) rc = parse_sched(a, v, &temp);
        else if (!strcmp(a, "--on-nonfinite")) {
            if (!strcmp(v, "stop") || !strcmp(v, "skip")) skip_nonfinite = v[1] == 'k';
            else rc = cli_fail(EXIT_USAGE, "--on-nonfinite: expected stop or skip, got '%s'", v);
        }
        else return cli_fail(EXIT_USAGE, "train: unknown option '%s' (see metaattn train --help)", a);
        if (rc) return rc;
    }
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (min_lr < 0) min_lr = lr / 10;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
    const int n_threads = omp_get_max_threads();
#else
    const int n_threads = 1;
#endif

    char model_path[4096], log_path[4096], optim_path[4096];
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", out_dir);
    snprintf(optim_path, sizeof optim_path, "%s/optim.safetensors", out_dir);
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", out_dir);
    int have_ckpt = access(model_path, F_OK) == 0;
    if (have_ckpt && !resume)
        return cli_fail(1, "--out %s already holds a run (model.safetensors): add --resume to continue it or "
                           "choose another --out", out_dir);
    if (resume && !have_ckpt)
        return cli_fail(1, "--resume: no checkpoint in '%s' (no model.safetensors)", out_dir);

    mattn_lm_config cfg;
    if (resume) {
        if (mattn_model_config_load(model_path, &cfg) != MATTN_OK) return cli_fail(1, "--resume: %s", mattn_last_error());
    } else if (config_path) {
        FILE *f = fopen(config_path, "rb");
        if (!f) return cli_fail(1, "--config: cannot open '%s': %s", config_path, strerror(errno));
        char *json = calloc(1, 1 << 20);
        size_t n = json ? fread(json, 1, (1 << 20) - 1, f) : 0;
        fclose(f);
        mattn_status st = json ? mattn_lm_config_from_json(json, &cfg) : MATTN_ERR_NOMEM;
        free(json);
        if (st != MATTN_OK || n == 0) return cli_fail(1, "--config %s: %s", config_path, n ? mattn_last_error() : "empty file");
    } else if (cli_model_preset(preset, &cfg)) {
        return EXIT_USAGE;
    }
    if (!resume) {
        if (controller) {
            if (!strcmp(controller, "bayesian")) cfg.attn.controller = MATTN_CONTROLLER_BAYESIAN;
            else if (!strcmp(controller, "prior-free")) cfg.attn.controller = MATTN_CONTROLLER_PRIOR_FREE;
            else return cli_fail(EXIT_USAGE, "--controller: expected bayesian or prior-free, got '%s'", controller);
        }
        if (layers) cfg.n_layers = (int)layers;
        cfg.attn.seed = (uint64_t)seed;
        cfg.attn.entropy_coeff = entropy_coeff;
        if (beta0 >= 0) cfg.attn.beta_0 = beta0;
        if (epsilon > 0) cfg.attn.epsilon = epsilon;
        cfg.attn.hard_top_k = (int)top_k;
        if (!config_path && cfg.max_seq_len < context) cfg.max_seq_len = (int)context; /* presets stretch */
    }
    if (context > cfg.max_seq_len)
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's max_seq_len %d", context, cfg.max_seq_len);
    if (mattn_lm_config_validate(&cfg) != MATTN_OK) return cli_fail(1, "config: %s", mattn_last_error());

    mattn_data *data;
    if (mattn_data_load(data_path, 0.1, &data) != MATTN_OK) {
        int missing = access(data_path, F_OK) != 0;
        return cli_fail(1, "--data: %s%s", mattn_last_error(),
                        missing && !strcmp(data_path, "data/kjv.txt") ? " (run scripts/get-corpus.sh to fetch the default corpus)" : "");
    }
    if (mattn_data_size(data, 0) < (size_t)context + 1 || mattn_data_size(data, 1) < (size_t)context + 1) {
        mattn_data_free(data);
        return cli_fail(1, "--data %s: too small for --context %lld (train %zu, validation %zu bytes)", data_path,
                        context, mattn_data_size(data, 0), mattn_data_size(data, 1));
    }
    if (mkdir_p(out_dir) != 0) {
        mattn_data_free(data);
        return cli_fail(1, "--out: cannot create '%s': %s", out_dir, strerror(errno));
    }

    mattn_model *m = NULL;
    mattn_adamw *opt = NULL;
    int32_t *idx = NULL, *tgt = NULL;
    mattn_stats *tstats = NULL;
    FILE *logf = NULL;
    int rc = 0;
    if (mattn_model_init(&cfg, &m) != MATTN_OK) { rc = cli_fail(1, "model: %s", mattn_last_error()); goto done; }
    mattn_adamw_config oc = mattn_adamw_config_default();
    oc.lr = lr;
    oc.weight_decay = wd;
    oc.grad_clip = clip;
    if (mattn_adamw_init(m, &oc, &opt) != MATTN_OK) { rc = cli_fail(1, "optimizer: %s", mattn_last_error()); goto done; }
    long long start = 0;
    if (resume) {
        if (mattn_model_load(m, model_path) != MATTN_OK) { rc = cli_fail(1, "--resume: %s", mattn_last_error()); goto done; }
        if (mattn_adamw_load(opt, m, optim_path) != MATTN_OK) { rc = cli_fail(1, "--resume: %s", mattn_last_error()); goto done; }
        start = (long long)mattn_model_step(m);
        if (mattn_adamw_model_step(opt) != start) {
            rc = cli_fail(1, "--resume: checkpoint in '%s' is inconsistent (model at step %lld, optimizer at %lld): "
                             "a save was interrupted", out_dir, start, (long long)mattn_adamw_model_step(opt));
            goto done;
        }
        if (truncate_log(log_path, start)) { rc = 1; goto done; }
    }
    logf = fopen(log_path, resume ? "ab" : "wb");
    if (!logf) { rc = cli_fail(1, "cannot write '%s': %s", log_path, strerror(errno)); goto done; }
    tstats = calloc((size_t)cfg.n_layers, sizeof *tstats);
    idx = malloc(sizeof(int32_t) * (size_t)(batch * context));
    tgt = malloc(sizeof(int32_t) * (size_t)(batch * context));
    if (!idx || !tgt || !tstats) { rc = cli_fail(1, "out of memory"); goto done; }

    const int L = cfg.n_layers, K = cfg.attn.n_experts;
    printf("metaattn train: %s controller, %d layers, d_model %d, %lld params | data %s (%zu train / %zu val bytes) | "
           "batch %lld x context %lld | %d threads%s\n",
           cfg.attn.controller == MATTN_CONTROLLER_BAYESIAN ? "bayesian" : "prior-free", L, cfg.attn.d_model,
           (long long)mattn_model_n_weights(m), data_path, mattn_data_size(data, 0), mattn_data_size(data, 1), batch,
           context, n_threads, resume ? " | resumed" : "");
    fflush(stdout);
    signal(SIGINT, on_sigint);
    const int tty = isatty(STDOUT_FILENO) && !quiet;
    double t0 = now_s(), last_val = NAN;
    long long done_steps = 0, n_skipped = 0, skipped_run = 0;
    const char *nan_env = getenv("METAATTN_TEST_NAN_STEP");
    const long long nan_step = nan_env ? atoll(nan_env) - 1 : -1;
    for (long long step = start; step < steps && !g_stop; step++) {
        /* schedules: a pure function of the step */
        mattn_config knobs = cfg.attn;
        knobs.cost_lambda = sched_at(&cost, step);
        knobs.elbo_weight = sched_at(&elbo, step);
        knobs.temperature = sched_at(&temp, step);
        knobs.hard_routing = hard_from >= 0 && step >= hard_from;
        if (mattn_model_set_routing(m, &knobs) != MATTN_OK) { rc = cli_fail(1, "schedule at step %lld: %s", step, mattn_model_errmsg(m)); break; }
        const double lr_now = mattn_lr_schedule(step, warmup, steps, lr, min_lr);
        if (mattn_data_batch(data, 0, (uint64_t)seed, (uint64_t)step, (int)batch, (int)context, idx, tgt) != MATTN_OK) {
            rc = cli_fail(1, "data: %s", mattn_last_error());
            break;
        }
        mattn_model_set_training(m, 1);
        mattn_model_set_step(m, (uint64_t)step);
        float loss, ce;
        double gnorm = 0.0, ts = now_s();
        /* tests only: METAATTN_TEST_NAN_STEP=S poisons one weight during step S */
        float *poison = step == nan_step ? first_weight(m) : NULL, saved = poison ? *poison : 0.0f;
        if (poison) *poison = NAN;
        mattn_status st = mattn_model_forward(m, idx, tgt, (int)batch, (int)context, &loss, &ce);
        if (st == MATTN_OK) st = mattn_model_zero_grad(m);
        if (st == MATTN_OK) st = mattn_model_backward(m);
        if (poison) *poison = saved;
        const char *why = st != MATTN_OK ? mattn_model_errmsg(m) : NULL;
        if (st == MATTN_OK && (st = mattn_adamw_step(opt, m, lr_now, &gnorm)) != MATTN_OK) why = mattn_last_error();
        if (st == MATTN_ERR_NUMERIC && skip_nonfinite && ++skipped_run <= 10) {
            fprintf(stderr, "%smetaattn: step %lld skipped (--on-nonfinite skip): %s\n", tty ? "\n" : "", step + 1, why);
            n_skipped++;
            continue;
        }
        if (st != MATTN_OK) {
            rc = cli_fail(1, "step %lld: %s; weights not updated, %s", step + 1, why,
                          st != MATTN_ERR_NUMERIC ? "stopping"
                          : skip_nonfinite ? "10 steps in a row skipped, stopping (the last checkpoint is intact)"
                                           : "stopping (the last checkpoint is intact; --on-nonfinite skip drops such steps)");
            break;
        }
        skipped_run = 0;
        const double dt = now_s() - ts;
        done_steps++;
        for (int l = 0; l < L; l++) mattn_model_layer_stats(m, l, &tstats[l]); /* before validation overwrites them */
        const long long s1 = step + 1;
        int evald = 0;
        if (s1 % eval_every == 0 || s1 == steps) {
            if ((rc = val_loss(m, data, (int)batch, (int)context, (int)eval_batches, &last_val))) break;
            evald = 1;
        }
        /* JSONL: every metric of the step */
        fprintf(logf, "{\"step\": %lld, \"loss\": %.6f, \"lm_loss\": %.6f, \"aux_loss\": %.6f, \"lr\": %.6g, "
                      "\"grad_norm\": %.6g, \"tokens_per_s\": %.1f, \"elapsed\": %.3f, \"cost_lambda\": %.6g, "
                      "\"elbo_weight\": %.6g, \"temperature\": %.6g, \"hard\": %d",
                s1, loss, ce, loss - ce, lr_now, gnorm, batch * context / dt, now_s() - t0, knobs.cost_lambda,
                knobs.elbo_weight, knobs.temperature, knobs.hard_routing);
        if (evald) fprintf(logf, ", \"val_loss\": %.6f", last_val);
        fprintf(logf, ", \"layers\": [");
        char lbuf[256] = "";
        size_t lo = 0;
        for (int l = 0; l < L; l++) {
            const mattn_stats st = tstats[l];
            fprintf(logf, "%s{\"weights\": [", l ? ", " : "");
            for (int k = 0; k < K; k++) fprintf(logf, "%s%.5f", k ? ", " : "", st.weight[k]);
            fprintf(logf, "], \"entropy\": %.5f, \"norm_entropy\": %.5f, \"expected_cost\": %.5f, \"projected_cost\": %.5f, "
                          "\"collapsed\": %.5f, \"uncertainty\": %.5f}",
                    st.entropy, K > 1 ? st.entropy / log(K) : 0.0, st.expected_cost, st.hard_cost, st.collapsed, st.uncertainty);
            if (lo < sizeof lbuf - 40 && l < 4)
                lo += (size_t)snprintf(lbuf + lo, sizeof lbuf - lo, " L%d %.2f/%.2f/%.2f H%.2f", l, st.weight[0],
                                       K > 1 ? st.weight[1] : 0.0, K > 2 ? st.weight[2] : 0.0, st.entropy);
        }
        fprintf(logf, "]}\n");
        if (fflush(logf) != 0 || ferror(logf)) {
            rc = cli_fail(1, "cannot write '%s': %s (stopping; the last checkpoint is intact)", log_path, strerror(errno));
            break;
        }
        const double el = now_s() - t0, eta = el / done_steps * (steps - s1);
        char etab[32], valb[32];
        fmt_eta(eta, etab, sizeof etab);
        if (isnan(last_val)) snprintf(valb, sizeof valb, "  -   ");
        else snprintf(valb, sizeof valb, "%.4f", last_val);
        if (!quiet && (tty || evald || s1 == steps || s1 == start + 1)) {
            printf("%sstep %lld/%lld | loss %.4f (+aux %.3f) | val %s | %.0f tok/s | ETA %s |%s%s", tty ? "\r\033[K" : "",
                   s1, steps, ce, loss - ce, valb, batch * context / dt, etab, lbuf, tty && !evald ? "" : "\n");
            fflush(stdout);
        }
        if (s1 % ckpt_every == 0 && s1 != steps && (rc = save_ckpt(m, opt, out_dir))) break;
    }
    if (n_skipped) fprintf(stderr, "metaattn: %lld steps skipped for a non-finite loss or gradient\n", n_skipped);
    if (!rc) {
        rc = save_ckpt(m, opt, out_dir);
        if (!rc) printf("%scheckpoint: %s (step %llu)\n", tty ? "\n" : "", model_path, (unsigned long long)mattn_model_step(m));
        if (g_stop) {
            printf("interrupted: resume with the same command plus --resume\n");
            rc = 130;
        }
    }
    if (!rc && sample_n > 0) {
        printf("\nsample (eval mode, soft routing, temperature 0.8, top-k 40):\n");
        mattn_config k = cfg.attn;
        mattn_model_set_routing(m, &k);
        sample_text(m, "And God said", (int)sample_n, (uint64_t)seed, (int)context);
        printf("\nrouting on the validation split (eval mode, soft):\n");
        double v;
        if (!val_loss(m, data, (int)batch, (int)context, (int)eval_batches, &v)) {
            printf("  val_loss %.4f nats/byte (%.4f bits/byte)\n", v, v / log(2.0));
            for (int l = 0; l < L; l++) {
                mattn_stats st;
                char line[512];
                mattn_model_layer_stats(m, l, &st);
                mattn_stats_format(&st, line, sizeof line);
                printf("  layer %d %s  projected hard cost=%.4f\n", l, line, st.hard_cost);
            }
        }
    }
done:
    if (logf) fclose(logf);
    free(tstats);
    free(idx);
    free(tgt);
    mattn_adamw_free(opt);
    mattn_model_free(m);
    mattn_data_free(data);
    return rc;
}
