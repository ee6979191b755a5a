/*
 * schedule.c — the learning-rate schedule (linear warmup, cosine decay) and
 * the Python library's cosine_ramp / linear_ramp for routing knobs.
 */
#include <math.h>

#include "train/train.h"

double mattn_schedule_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr) {
    if (warmup > 0 && step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (step >= total) return min_lr;
    const double p = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.14159265358979323846 * p));
}

double mattn_schedule_cosine_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end) {
    if (step < warmup) return start;
    if (step >= max_steps) return end;
    const double p = (double)(step - warmup) / (double)(max_steps - warmup > 1 ? max_steps - warmup : 1);
    return start + (end - start) * (1.0 - cos(3.14159265358979323846 * p)) / 2.0;
}

double mattn_schedule_linear_ramp(int64_t step, int64_t warmup, int64_t max_steps, double start, double end) {
    if (step < warmup) return start;
    if (step >= max_steps) return end;
    const double p = (double)(step - warmup) / (double)(max_steps - warmup > 1 ? max_steps - warmup : 1);
    return start + (end - start) * p;
}
