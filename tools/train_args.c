/*
 * train_args.c — `metaattn train`'s options (one table for the parser) and
 * the config of the model a run trains: the preset or --config, and the
 * flags that shape a new model (controller, routing, budget, experts).
 */
#include <stdio.h>
#include <string.h>

#include "train.h"

static const char *usage_train =
    "usage: metaattn train [options]\n"
    "\n"
    "Trains a byte-level Meta-Attention language model (docs/design.md §1).\n"
    "\n"
    "data and model:\n"
    "  --data FILE        UTF-8 text to train on (default data/kjv.txt, written by\n"
    "                     scripts/get-corpus.sh); the last 10% is validation\n"
    "  --records L        the file is records of L bytes (bench/experiments/recall.py):\n"
    "                     windows start at record starts, the split at a record\n"
    "                     boundary (--context < L)\n"
    "  --preset NAME      tiny (default) | small | base: model shape, see docs/cli.md;\n"
    "                     tiny also sets the routing defaults marked (tiny) below\n"
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
    "  --context N        tokens per sequence (default 256)\n"
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
    "  --elbo-weight SCHED    ELBO KL weight (Bayesian, default 0.01; the paper: 1)\n"
    "  --beta0 X              prior strength beta_0: prior beta_i = eps + beta_0 (1 - cost_i)\n"
    "                         (Bayesian, default 1)\n"
    "  --epsilon X            prior floor eps (Bayesian, default 0.01; tiny 1)\n"
    "  --temperature SCHED    router softmax temperature (prior-free, default 1)\n"
    "  --hard-from STEP       switch from soft to hard routing at STEP (default 100;\n"
    "                         -1 = never: soft training)\n"
    "  --hard-train H         gumbel (the Python library's top-k Gumbel-softmax) |\n"
    "                         straight-through (trained as deployed: the top-k experts\n"
    "                         run, the router learns through alpha); default gumbel,\n"
    "                         tiny straight-through\n"
    "  --top-k K              experts per token under hard routing (default 1)\n"
    "  --cost-target C        budget: each layer's mean routed cost <= C (Lagrange\n"
    "                         multiplier, dual ascent); < 0 = off (default; tiny 0.35)\n"
    "  --full-share S         each layer sends a share S of its merge weight to full;\n"
    "                         < 0 = off (default; tiny 0.1)\n"
    "  --usage-floor U        every expert keeps a share >= U of the merge weight\n"
    "                         (default 0; tiny 0.05)\n"
    "  --dual-lr X            step of the multipliers' dual ascent (default 0.05)\n"
    "  --kl-mode M            token (the paper: KL per token) | batch (KL of the batch's\n"
    "                         mean posterior); Bayesian, default token, tiny batch\n"
    "  --free-bits X          token mode: per-token KL below X nats is free (default 0)\n"
    "  --uncertainty U        entropy (the Python library's) | mutual_info (epistemic,\n"
    "                         nats in [0, ln K]): what the Bayesian gate compares;\n"
    "                         default entropy, tiny mutual_info\n"
    "  --share-qkv            one W_qkv / W_o for all experts (K/V computed once; tiny)\n"
    "  --no-share-qkv         per-expert W_qkv / W_o (the Python library's default)\n"
    "  --experts LIST         the layer's experts by name, e.g. local or full,local\n"
    "                         (their costs: the registry's); default full,linear,local\n"    "  --force LIST           a fixed hybrid: every token of layer l runs the expert\n"
    "                         named, one name for every layer or one per layer (e.g.\n"
    "                         full,local); hard routing from step 0, the controller\n"
    "                         plays no part; score it with eval --hard --force LIST\n"
    "\n"
    "logging and checkpoints:\n"
    "  --eval-every N     validation loss every N steps (default 100)\n"
    "  --eval-batches N   validation windows per evaluation, of --batch each (default 8)\n"
    "  --ckpt-every N     checkpoint every N steps (default 500; always at the end)\n"
    "  --sample N         bytes to generate from the final model (default 200, 0 = none)\n"
    "  --report N         validation windows of the closing summary — loss soft, hard\n"
    "                     and forced to all-full, attention FLOPs and time, routes and\n"
    "                     MI per layer (eval --compare; default 1024, 0 = none)\n"
    "  --on-nonfinite A   stop (default): a NaN/Inf loss or gradient ends the run\n"
    "                     with an error, the last checkpoint kept as it was; skip:\n"
    "                     drop that step (no update) and go on, failing after 10\n"
    "                     skipped steps in a row\n"
    "  --quiet            no progress line\n"
    "  -h, --help         show this help\n";


static int parse_sched(const char *flag, const char *s, void *dst) {
    sched *out = dst;
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

double sched_at(const sched *s, long long step) {
    if (s->kind == 1) return mattn_schedule_cosine_ramp(step, s->warmup, s->max, s->start, s->end);
    if (s->kind == 2) return mattn_schedule_linear_ramp(step, s->warmup, s->max, s->start, s->end);
    return s->start;
}

static int parse_nonfinite(const char *flag, const char *v, void *dst) {
    static const char *const actions[] = {"stop", "skip"};
    const int a = cli_choice(flag, v, actions, 2);
    if (a < 0) return EXIT_USAGE;
    *(int *)dst = a;
    return 0;
}


int train_args(int argc, char **argv, train_opts *o) {
    *o = (train_opts){.data_path = "data/kjv.txt", .preset = "tiny", .out_dir = "runs/default", .steps = 1300,
                      .batch = 16, .context = 256, .warmup = 100, .seed = 1337, .eval_every = 100, .eval_batches = 8,
                      .ckpt_every = 500, .sample_n = 200, .report = 1024, .hard_from = -2, .top_k = 1, .lr = 2e-3, .min_lr = -1,
                      .wd = 0.1, .clip = 1.0, .beta0 = -1, .epsilon = -1, .cost = {0, 0, 0, 0, 0},
                      .cost_target = -2, .full_share = -2, .usage_floor = -1, .dual_lr = -1, .free_bits = -1,
                      .elbo = {0.01, 0.01, 0, 0, 0}, .temp = {1, 1, 0, 0, 0}};
    const cli_opt opts[] = {
        OPT_STRING("--data", &o->data_path),
        OPT_STRING("--preset", &o->preset),
        OPT_STRING("--config", &o->config_path),
        OPT_STRING("--controller", &o->controller),
        OPT_STRING("--out", &o->out_dir),
        OPT_INT("--layers", &o->layers, 1, 64),
        OPT_INT("--steps", &o->steps, 1, 100000000),
        OPT_INT("--batch", &o->batch, 1, 4096),
        OPT_INT("--context", &o->context, 1, 1 << 20),
        OPT_INT("--warmup", &o->warmup, 0, 100000000),
        OPT_INT("--seed", &o->seed, 0, (double)(1LL << 53)),
        OPT_INT("--threads", &o->threads, 1, 1024),
        OPT_INT("--eval-every", &o->eval_every, 1, 100000000),
        OPT_INT("--eval-batches", &o->eval_batches, 1, 100000),
        OPT_INT("--ckpt-every", &o->ckpt_every, 1, 100000000),
        OPT_INT("--sample", &o->sample_n, 0, 100000),
        OPT_INT("--report", &o->report, 0, 1LL << 40),
        OPT_INT("--hard-from", &o->hard_from, -1, 100000000),
        OPT_INT("--top-k", &o->top_k, 1, 8),
        OPT_DOUBLE("--lr", &o->lr, 0, 10),
        OPT_DOUBLE("--min-lr", &o->min_lr, 0, 10),
        OPT_DOUBLE("--weight-decay", &o->wd, 0, 10),
        OPT_DOUBLE("--clip", &o->clip, 0, 1e6),
        OPT_DOUBLE("--entropy-coeff", &o->entropy_coeff, -1e6, 1e6),
        OPT_DOUBLE("--beta0", &o->beta0, 0, 1e6),
        OPT_DOUBLE("--epsilon", &o->epsilon, 1e-12, 1e6),
        OPT_CUSTOM("--cost-lambda", &o->cost, parse_sched),
        OPT_CUSTOM("--elbo-weight", &o->elbo, parse_sched),
        OPT_CUSTOM("--temperature", &o->temp, parse_sched),
        OPT_CUSTOM("--on-nonfinite", &o->skip_nonfinite, parse_nonfinite),
        OPT_STRING("--hard-train", &o->hard_train),
        OPT_STRING("--kl-mode", &o->kl_mode),
        OPT_STRING("--uncertainty", &o->uncertainty),
        OPT_STRING("--experts", &o->experts),
        OPT_STRING("--force", &o->force),
        OPT_INT("--records", &o->records, 2, 1 << 24),
        OPT_DOUBLE("--cost-target", &o->cost_target, -1, 1),
        OPT_DOUBLE("--full-share", &o->full_share, -1, 1),
        OPT_DOUBLE("--usage-floor", &o->usage_floor, 0, 1),
        OPT_DOUBLE("--dual-lr", &o->dual_lr, 1e-9, 1e6),
        OPT_DOUBLE("--free-bits", &o->free_bits, 0, 1e6),
        OPT_FLAG("--share-qkv", &o->share_qkv),
        OPT_FLAG("--no-share-qkv", &o->no_share_qkv),
        OPT_FLAG("--resume", &o->resume),
        OPT_FLAG("--quiet", &o->quiet),
        OPT_END};
    int rc = cli_parse("train", usage_train, opts, argc, argv);
    if (rc) return rc;
    if (cli_dry_run) return CLI_DONE; /* fuzz/fuzz_cli.c: arguments only */
    if (o->min_lr < 0) o->min_lr = o->lr / 10;
    if (o->force && o->hard_from != -2 && o->hard_from != 0)
        return cli_fail(EXIT_USAGE, "--force %s routes hard from step 0: drop --hard-from %lld", o->force, o->hard_from);
    if (o->hard_from == -2) o->hard_from = o->force ? 0 : 100;
    return 0;
}

/* --experts a,b,c: names and the registry's costs. */
static int experts_config(const char *list, mattn_config *a) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    memset(a->experts, 0, sizeof a->experts);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MATTN_MAX_EXPERTS) return cli_fail(EXIT_USAGE, "--experts: at most %d experts", MATTN_MAX_EXPERTS);
        if (strlen(tok) >= MATTN_EXPERT_NAME_LEN) return cli_fail(EXIT_USAGE, "--experts: name '%s' is too long", tok);
        mattn_expert *e;
        if (mattn_expert_build(tok, a, &e) != MATTN_OK) return cli_fail(EXIT_USAGE, "--experts: %s", mattn_last_error());
        a->expert_costs[n] = mattn_expert_cost(e);
        mattn_expert_free(e);
        snprintf(a->experts[n++], MATTN_EXPERT_NAME_LEN, "%s", tok);
    }
    if (!n) return cli_fail(EXIT_USAGE, "--experts: expected a comma-separated list of names, got '%s'", list);
    a->n_experts = n;
    if (a->hard_top_k > n) a->hard_top_k = n;
    return 0;
}

/* The routing flags of a new run. */
static int routing_config(const train_opts *o, mattn_config *a) {
    static const char *const hard[] = {"gumbel", "straight-through"}, *const kl[] = {"token", "batch"},
                             *const unc[] = {"entropy", "mutual_info"};
    int k;
    if (o->hard_train) {
        if ((k = cli_choice("--hard-train", o->hard_train, hard, 2)) < 0) return EXIT_USAGE;
        a->hard_train = (mattn_hard_train)k;
    }
    if (o->kl_mode) {
        if ((k = cli_choice("--kl-mode", o->kl_mode, kl, 2)) < 0) return EXIT_USAGE;
        a->kl_mode = (mattn_kl_mode)k;
    }
    if (o->uncertainty) {
        if ((k = cli_choice("--uncertainty", o->uncertainty, unc, 2)) < 0) return EXIT_USAGE;
        a->uncertainty = (mattn_uncertainty_kind)k;
    }
    if (o->cost_target > -2) a->cost_target = o->cost_target;
    if (o->full_share > -2) a->full_share = o->full_share;
    if (o->usage_floor >= 0) a->usage_floor = o->usage_floor;
    if (o->dual_lr > 0) a->dual_lr = o->dual_lr;
    if (o->free_bits >= 0) a->free_bits = o->free_bits;
    if (o->share_qkv) a->share_qkv = 1;
    if (o->no_share_qkv) a->share_qkv = 0;
    return o->experts ? experts_config(o->experts, a) : 0;
}

int train_config(const train_opts *o, const char *model_path, mattn_lm_config *cfg) {
    if (o->resume) {
        if (mattn_model_file_config(model_path, cfg) != MATTN_OK) return cli_fail(1, "--resume: %s", mattn_last_error());
    } else if (o->config_path) {
        if (mattn_lm_config_load(o->config_path, cfg) != MATTN_OK) return cli_fail(1, "--config: %s", mattn_last_error());
    } else if (mattn_lm_config_preset(o->preset, cfg) != MATTN_OK) {
        return cli_fail(EXIT_USAGE, "--preset: %s", mattn_last_error());
    }
    if (!o->resume) {
        if (o->controller) {
            static const char *const kinds[] = {"bayesian", "prior-free"};
            const int k = cli_choice("--controller", o->controller, kinds, 2);
            if (k < 0) return EXIT_USAGE;
            cfg->attn.controller = k ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
        }
        if (o->layers) cfg->n_layers = (int)o->layers;
        cfg->attn.seed = (uint64_t)o->seed;
        cfg->attn.entropy_coeff = o->entropy_coeff;
        if (o->beta0 >= 0) cfg->attn.beta_0 = o->beta0;
        if (o->epsilon > 0) cfg->attn.epsilon = o->epsilon;
        cfg->attn.hard_top_k = (int)o->top_k;
        int rc = routing_config(o, &cfg->attn);
        if (rc) return rc;
        if (!o->config_path && cfg->max_seq_len < o->context) cfg->max_seq_len = (int)o->context; /* presets stretch */
    }
    if (o->context > cfg->max_seq_len)
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's max_seq_len %d", o->context, cfg->max_seq_len);
    if (mattn_lm_config_validate(cfg) != MATTN_OK) return cli_fail(1, "config: %s", mattn_last_error());
    return 0;
}
