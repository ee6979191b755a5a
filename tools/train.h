/*
 * train.h — what `metaattn train`'s two files share: the options
 * (train_args.c parses them and makes the model's config) and the schedules.
 */
#ifndef MATTN_TOOLS_TRAIN_H
#define MATTN_TOOLS_TRAIN_H

#include "cli.h"

/* A routing knob over steps: a constant (kind 0) or the Python library's
 * cosine_ramp (1) / linear_ramp (2). */
typedef struct sched { double start, end; int kind; long long warmup, max; } sched;

typedef struct train_opts {
    const char *data_path, *preset, *config_path, *controller, *out_dir;
    const char *hard_train, *kl_mode, *uncertainty, *experts, *force;
    long long steps, batch, context, warmup, seed, threads, layers, records;
    long long eval_every, eval_batches, ckpt_every, sample_n, report, hard_from, top_k;
    double lr, min_lr, wd, clip, entropy_coeff, beta0, epsilon;
    double cost_target, full_share, usage_floor, dual_lr, free_bits;
    int resume, quiet, skip_nonfinite, share_qkv, no_share_qkv;
    sched cost, elbo, temp;
} train_opts;

/* The options; CLI_DONE after --help or in a dry run. */
int train_args(int argc, char **argv, train_opts *o);
double sched_at(const sched *s, long long step);
/* The model's config: the checkpoint's (--resume), --config or the preset,
 * with the flags that shape a new model. */
int train_config(const train_opts *o, const char *model_path, mattn_lm_config *cfg);

#endif
