/*
 * bench_harness.h — the measuring harness of `metaattn bench` (bench.c) and
 * of the kernel benchmarks (bench/bench_kernels.c), public API only: best-of
 * timing, pairs measured alternately, the table and JSON rows, random inputs,
 * the soft-layer case both programs report, and the driver (options, groups,
 * header, JSON).  docs/performance.md has the method.
 */
#ifndef MATTN_BENCH_HARNESS_H
#define MATTN_BENCH_HARNESS_H

#include <stdint.h>
#include <stdio.h>

#include "metaattn.h"

typedef int (*bench_fn)(void *ctx); /* one repetition of a case: 0, or 1 after printing */

typedef struct bench {
    double min_time;
    int quick;
    FILE *tab;            /* where the table goes */
    FILE *js;             /* JSON results or NULL */
    int n_js;
    double sgemm;         /* GFLOP/s of the baseline for the row being reported; 0: no "% sgemm" */
    /* A baseline measured alternately with each timed case (bench_kernels:
     * sgemm 2048^3), or NULL; base_flops: its FLOPs. */
    bench_fn base_fn;
    void *base_ctx;
    double base_flops;
} bench;

/* Best time of fn(ctx): one warm-up, then >= 3 runs and >= min_time; < 0 on failure. */
double bench_best_time(const bench *b, bench_fn fn, void *ctx);
/* Best times of two alternatives measured alternately (A, B, A, B, ...), so
 * that a slow spell of a shared machine hits both: the ratio is what counts.
 * 0, or 1 on failure. */
int bench_best_time2(const bench *b, bench_fn fa, void *ca, bench_fn fb, void *cb, double *ta, double *tb);
/* Best time of fn, alternately with the baseline if there is one (b->sgemm
 * becomes the baseline's GFLOP/s of this pairing); < 0 on failure. */
double bench_timed(bench *b, bench_fn fn, void *ctx);
/* One result row: time, executed FLOPs (0: not a FLOP figure), an extra named value. */
void bench_report(bench *b, const char *group, const char *name, double sec, double flops, const char *xname,
                  double xval);
/* n floats, 64-byte aligned, uninitialised; free with free(); NULL: no memory. */
float *bench_floats(size_t n);
/* n floats of mean 0 and standard deviation std (uniform: timing does not
 * care which distribution), as bench_floats. */
float *bench_randn(size_t n, uint64_t seed, double std);
/* A pseudo-random 64-bit number from *state (SplitMix64). */
uint64_t bench_rand(uint64_t *state);

// ----------------------------------------------------------------------------
// the layer cases: D = 512, H = 8, w = 64, causal, eval mode, no gradients

typedef struct bench_layer {
    mattn_layer *l;
    float *x, *out;
    int T;
    const uint8_t *routes; /* forced before each run, or NULL */
    mattn_stats s;
} bench_layer;

mattn_config bench_layer_cfg(int share, int hard);
/* An eval-mode, gradient-free layer (as torch.no_grad() on the PyTorch
 * side) with a random input of T tokens and an output buffer; 0 or 1. */
int bench_layer_setup(bench_layer *x, int T, int share, int hard, uint64_t seed);
int bench_layer_run(void *ctx); /* one forward; a bench_fn */
void bench_layer_teardown(bench_layer *x);
/* The "layer" group: the soft layer forward (P1), T = 1024 (--quick 256). */
int bench_layer_soft(bench *b);

// ----------------------------------------------------------------------------
// the driver

typedef struct bench_group {
    const char *name;
    int (*run)(bench *b);
    int by_default;
} bench_group;

typedef struct bench_program {
    const char *cmd;            /* the subcommand for messages ("bench"), or NULL */
    const char *title;          /* the table's first words: "metaattn bench" */
    const char *usage;
    const bench_group *groups;
    int n_groups;
    const char *groups_note;    /* appended to the list in "unknown group" messages, or NULL */
    /* Before the groups (measure a baseline) and after them, or NULL; setup
     * returns 0 or 1. */
    int (*setup)(bench *b);
    void (*teardown)(bench *b);
} bench_program;

/* Options (--only, --quick, --min-time, --threads, --json), the header, the
 * groups asked for in table order, the JSON ("sgemm_gflops" when the
 * program has a baseline); an exit code. */
int bench_main(const bench_program *p, int argc, char **argv);

#endif
