/*
 * cli.h — helpers shared by the CLI's subcommands (cli.c): the error exit,
 * strict number parsing that names the flag and the value, the one option
 * parser every subcommand declares its options to, the exit codes, and a few
 * steps several commands take (threads, loading a model, next-token logits).
 * The CLI uses the public API only (metaattn.h).
 */
#ifndef MATTN_CLI_H
#define MATTN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "metaattn.h"

#define EXIT_USAGE 2

/* The program name messages start with: "metaattn" (bench/bench_kernels.c
 * sets its own). */
extern const char *cli_prog;

/* Print "<prog>: <message>" on stderr and return code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse an integer in [lo, hi]; 0 on success, else prints and returns EXIT_USAGE. */
int cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out);
/* Parse a number in [lo, hi]; as cli_int. */
int cli_double(const char *flag, const char *s, double lo, double hi, double *out);
/* Index of s among the n names, or -1 after printing
 * "<flag>: expected a, b or c, got '<s>'". */
int cli_choice(const char *flag, const char *s, const char *const *names, int n);

// ----------------------------------------------------------------------------
// the option parser

typedef enum cli_kind {
    CLI_FLAG,   /* no value: *(int *)dst = 1, or parse(name, NULL, dst) if parse is set */
    CLI_INT,    /* *(long long *)dst, in [lo, hi] */
    CLI_DOUBLE, /* *(double *)dst, in [lo, hi] */
    CLI_STRING, /* *(const char **)dst = the value (argv's) */
    CLI_CUSTOM  /* parse(name, value, dst): 0, or the exit code after printing */
} cli_kind;

typedef struct cli_opt {
    const char *name; /* "--steps" */
    cli_kind kind;
    void *dst;
    double lo, hi;    /* CLI_INT, CLI_DOUBLE: the accepted range (integers up to 2^53 are exact) */
    int (*parse)(const char *flag, const char *value, void *dst);
} cli_opt;

/* Table rows, e.g. OPT_INT("--steps", &steps, 1, 100000000); OPT_END ends a table. */
#define OPT_FLAG(name, p) {name, CLI_FLAG, p, 0, 0, NULL}
#define OPT_FLAG_FN(name, p, fn) {name, CLI_FLAG, p, 0, 0, fn}
#define OPT_INT(name, p, lo, hi) {name, CLI_INT, p, lo, hi, NULL}
#define OPT_DOUBLE(name, p, lo, hi) {name, CLI_DOUBLE, p, lo, hi, NULL}
#define OPT_STRING(name, p) {name, CLI_STRING, p, 0, 0, NULL}
#define OPT_CUSTOM(name, p, fn) {name, CLI_CUSTOM, p, 0, 0, fn}
#define OPT_END {NULL, CLI_FLAG, NULL, 0, 0, NULL}

/* Parse argv (the arguments after the subcommand's name) in order against
 * opts, a list ended by {NULL}.  -h/--help prints usage on stdout and returns
 * CLI_DONE (the command is done: exit 0).  An option not in the list prints
 * "<cmd>: unknown option '<arg>' (see <prog> <cmd> --help)", one without its
 * value "<cmd>: option '<arg>' needs a value" (cmd NULL: a program without
 * subcommands, the same without "<cmd>: "), a bad number the message of
 * cli_int / cli_double; each returns EXIT_USAGE.  0: every option parsed. */
#define CLI_DONE (-1)
int cli_parse(const char *cmd, const char *usage, const cli_opt *opts, int argc, char **argv);

// ----------------------------------------------------------------------------
// the commands

/* The CLI without main(): tools/main.c, and the fuzz target.  With
 * cli_dry_run set, each command returns 0 after checking its arguments,
 * before touching any file. */
int cli_main(int argc, char **argv);
extern int cli_dry_run;

int cmd_layer(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_route(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* bench --model FILE.gguf (bench_model.c), which cmd_bench hands over to;
 * the help text both print (bench.c). */
int cmd_bench_model(int argc, char **argv);
extern const char cli_bench_usage[];
int cmd_tokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_surgery(int argc, char **argv);
/* metaattn surgery --data (surgery_train.c): its options, parsed by surgery.c. */
typedef struct cli_surgery_opts {
    const char *model, *out, *data, *held_out, *init;
    long long context, steps, stage1, every;
    double budget, lr, map_lr, map_weight, dual_lr, recall, recall_weight, st_temperature,
        route_weight;
    uint64_t seed;
    int resume, quiet, calibrate;
} cli_surgery_opts;
int cli_surgery_train(const cli_surgery_opts *o, const mattn_llama_routing_config *rcfg);
/* metaattn eval --task (llama_recall.c): retrieval prompts from a filler text. */
typedef struct cli_recall_opts {
    const char *task, *routes;
    long long context, prompts;
    uint64_t seed;
    mattn_llama_kv kv;
    int json, verbose;
} cli_recall_opts;
int cli_llama_recall(mattn_llama *m, const cli_recall_opts *o, const int32_t *filler, size_t n_filler);
/* The retrieval prompts (recall_prompt.c): prompt i of the passkey (copy 0)
 * or copy task of seed, N tokens of it into ids; p its number or words, the
 * needle's and the question's spans [a, b) and the right answer's text;
 * errors name flag. */
#define CLI_RECALL_RUN 16
#define CLI_RECALL_GIVEN 4
typedef struct cli_recall_prompt {
    int copy, key, idx[CLI_RECALL_RUN];
    int needle[2], tail[2], n;
    char answer[256];
} cli_recall_prompt;
int cli_recall_build(const char *flag, mattn_llama *m, const int32_t *filler, size_t n_filler, int copy,
                     uint64_t seed, int i, int N, int32_t *ids, cli_recall_prompt *p);
const char *cli_recall_word(int k);
/* generate and eval on a GGUF model (llama_cli.c, llama_eval.c): the
 * commands above hand over when --model names one. */
int cmd_generate_llama(int argc, char **argv);
int cmd_eval_llama(int argc, char **argv);
/* --activations (NULL, q8 or f32) and --kv (NULL, f16 or f32) of the GGUF
 * commands: 0, or a usage error naming the flag and the value. */
int cli_llama_modes(const char *activations, const char *kv);
/* The cache type --kv names (NULL: f16, the default). */
mattn_llama_kv cli_llama_kv(const char *kv);
/* --routing FILE (NULL: none) loaded beside the model: 0, or 1 after an
 * error naming the flag and the file. */
int cli_llama_routing(mattn_llama *m, const char *path);
/* The file at path (at most 1 GiB) tokenized whole by m into *ids (malloc'd,
 * *n of them); errors name flag and the file. */
int cli_llama_read_tokens(mattn_llama *m, const char *path, const char *flag, int32_t **ids, size_t *n);
/* The shares of the experts a cache executed, over every block (counts of
 * mattn_llama_cache_routing, summed into share[MATTN_ROUTE_EXPERTS]). */
void cli_llama_shares(const mattn_llama *m, const int64_t *counts, double *share);
/* 1 when argv has --model FILE and FILE starts with the GGUF magic. */
int cli_model_is_gguf(int argc, char **argv);
/* The sampling flags' parsers (OPT_CUSTOM): --top-k into an int, --top-p
 * into a double in (0, 1], --seed into a uint64_t. */
int cli_parse_top_k(const char *flag, const char *v, void *dst);
int cli_parse_top_p(const char *flag, const char *v, void *dst);
int cli_parse_seed(const char *flag, const char *v, void *dst);

// ----------------------------------------------------------------------------
// steps several commands take

/* OpenMP threads: n > 0 sets them; returns the number calls will use. */
int cli_set_threads(long long n);
/* Monotonic wall-clock seconds. */
double cli_now(void);
/* Load a saved model (config from its metadata), eval mode, no gradients;
 * prints errors (naming --model) and returns 1, else 0. */
int cli_load_model(const char *path, mattn_model **out);

/* Next-token logits (V) after seq[0, len).  With a cache (causal positions):
 * decode the tokens the cache has not seen yet, seq[cache_length, len), which
 * must fit in max_seq_len.  Without: run the model over the last `window`
 * tokens.  Prints the model's error and returns 1 on failure. */
int cli_next_logits(mattn_model *m, mattn_model_cache *cache, const int32_t *seq, int len, int window, float *logits);
/* One mattn_route_counts per layer of a model (8 position buckets), or NULL
 * after printing why; freed with cli_route_counts_free. */
mattn_route_counts **cli_route_counts(const mattn_lm_config *cfg);

/* The index of the expert called name in a layer's config (no expert list:
 * the built-ins full, linear, local), or -1; and the name of expert k. */
int cli_expert_index(const mattn_config *a, const char *name);
const char *cli_expert_label(const mattn_config *a, int k);
/* flag LIST (eval/train --force): every layer's routes forced, for all of
 * max_seq_len positions, to one expert named in the comma-separated LIST —
 * one name for every layer, or one per layer.  0, or an exit code after
 * printing. */
int cli_force_routes(mattn_model *m, const char *flag, const char *list);
void cli_route_counts_free(mattn_route_counts **c, int n_layers);
/* eval --compare (eval.c) on at most max_windows (0: all) of the validation
 * windows of context+1 bytes of d: the soft, hard and all-full summary.
 * Leaves the model hard-routed (and forced to full when it has that expert). */
int cli_compare(mattn_model *m, const mattn_data *d, int context, int64_t max_windows, const char *model_path,
                const char *data_path);

/* eval --task recall (eval_recall.c): n_win of the n_all windows of T+1
 * bytes at bytes, decoded with the cache; prints the report. */
int eval_recall(mattn_model *m, const uint8_t *bytes, int64_t n_win, int64_t n_all, int T, int json);

/* eval --gate-share S (eval_gate.c): the uncertainty gate calibrated on
 * n_win of the n_all windows of T+1 bytes at bytes; prints the report. */
int eval_gate(mattn_model *m, const uint8_t *bytes, int64_t n_all, int64_t n_win, int T, int batch, double share,
              int json);

#endif
