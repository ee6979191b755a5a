/*
 * data.c — byte-level text corpus: the whole file in memory, a deterministic
 * split (the last val_fraction of the bytes is validation, as nanoGPT does),
 * random contiguous training windows from a seeded stream per step, and
 * evenly spaced validation windows.  Tokens are bytes (vocab 256).  In record
 * mode (mattn_data_set_records) the file is fixed-length records and windows
 * start at record boundaries.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "train/train.h"

struct mattn_data {
    uint8_t *bytes;
    size_t n, n_train;   /* train = [0, n_train), val = [n_train, n) */
    double val_fraction;
    size_t record;       /* record mode: bytes per record; 0 = off */
};

mattn_status mattn_data_load(const char *path, double val_fraction, mattn_data **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_data_load: out is NULL");
    *out = NULL;
    if (!path) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_data_load: path is NULL");
    if (!(val_fraction > 0.0 && val_fraction < 1.0))
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "validation fraction must be in (0, 1), got %g", val_fraction);
    FILE *f = fopen(path, "rb");
    if (!f) return mattn_set_error(MATTN_ERR_IO, "cannot open data file '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return mattn_set_error(MATTN_ERR_IO, "data file '%s' is not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    if (n == 0) {
        fclose(f);
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "data file '%s' is empty", path);
    }
    mattn_data *d = mattn_calloc(1, sizeof *d);
    uint8_t *b = mattn_malloc(n);
    if (!d || !b) {
        fclose(f);
        mattn_free(d);
        mattn_free(b);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory reading '%s' (%zu bytes)", path, n);
    }
    size_t got = fread(b, 1, n, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != n || rerr) {
        mattn_free(d);
        mattn_free(b);
        return mattn_set_error(MATTN_ERR_IO, "cannot read data file '%s' (%zu of %zu bytes)", path, got, n);
    }
    d->bytes = b;
    d->n = n;
    d->n_train = n - (size_t)((double)n * val_fraction);
    d->val_fraction = val_fraction;
    *out = d;
    return MATTN_OK;
}

void mattn_data_free(mattn_data *d) {
    if (!d) return;
    mattn_free(d->bytes);
    mattn_free(d);
}

size_t mattn_data_size(const mattn_data *d, mattn_split split) { return !d ? 0 : split ? d->n - d->n_train : d->n_train; }
const uint8_t *mattn_data_bytes(const mattn_data *d) { return d ? d->bytes : NULL; }

mattn_status mattn_data_set_records(mattn_data *d, int length) {
    if (!d) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_data_set_records: data is NULL");
    if (length < 0) return mattn_set_error(MATTN_ERR_INVALID_ARG, "record length must be >= 0, got %d", length);
    if (length == 0) {
        d->record = 0;
        d->n_train = d->n - (size_t)((double)d->n * d->val_fraction);
        return MATTN_OK;
    }
    const size_t L = (size_t)length, R = d->n / L;
    if (d->n % L)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "records of %d bytes: the data has %zu bytes, not a multiple "
                               "of %d", length, d->n, length);
    size_t r_val = (size_t)((double)R * d->val_fraction + 0.999999);
    if (r_val < 1 || r_val >= R)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "records of %d bytes: %zu records cannot be split into "
                               "training and validation", length, R);
    d->record = L;
    d->n_train = (R - r_val) * L;
    return MATTN_OK;
}

/* First byte of window `which` (a draw or an index) of a split of len bytes:
 * anywhere, or at a record start. */
static size_t window_start(const mattn_data *d, size_t len, int T, uint64_t draw) {
    if (d->record) return (size_t)(draw % (len / d->record)) * d->record;
    return (size_t)(draw % (len - (size_t)T));
}

static mattn_status check_split(const mattn_data *d, mattn_split split, size_t len, int T) {
    if (d->record && (size_t)T + 1 > d->record)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "context + 1 = %d exceeds the record length %zu", T + 1,
                               d->record);
    if (len < (size_t)T + 1)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "the %s split has %zu bytes, fewer than context + 1 = %d",
                               split ? "validation" : "training", len, T + 1);
    return MATTN_OK;
}

/* B windows of T+1 bytes: idx = w[0..T), targets = w[1..T]. */
mattn_status mattn_data_batch(const mattn_data *d, mattn_split split, uint64_t seed, uint64_t step, int B, int T,
                              int32_t *idx, int32_t *targets) {
    if (!d || !idx || !targets || B < 1 || T < 1)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_data_batch: bad arguments");
    const size_t lo = split ? d->n_train : 0, len = mattn_data_size(d, split);
    mattn_status st = check_split(d, split, len, T);
    if (st != MATTN_OK) return st;
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed(seed, step, (uint64_t)split, MATTN_PURPOSE_DATA));
    for (int b = 0; b < B; b++) {
        size_t start = window_start(d, len, T, mattn_rng_next(&r));
        const uint8_t *w = d->bytes + lo + start;
        for (int t = 0; t < T; t++) {
            idx[(size_t)b * T + t] = w[t];
            targets[(size_t)b * T + t] = w[t + 1];
        }
    }
    return MATTN_OK;
}

/* Window i of n evenly spaced windows over the split (deterministic). */
mattn_status mattn_data_window(const mattn_data *d, mattn_split split, int64_t i, int64_t n, int T, int32_t *idx,
                               int32_t *targets) {
    if (!d || !idx || !targets) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_data_window: NULL argument");
    const size_t lo = split ? d->n_train : 0, len = mattn_data_size(d, split);
    mattn_status st = check_split(d, split, len, T);
    if (st != MATTN_OK) return st;
    if (n < 1 || i < 0 || i >= n)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "window %lld of %lld does not exist", (long long)i, (long long)n);
    const size_t span = d->record ? len / d->record : len - (size_t)T; /* records, or start positions */
    size_t start = n > 1 ? (size_t)((double)(span - 1) * (double)i / (double)(n - 1)) : 0;
    if (d->record) start *= d->record;
    const uint8_t *w = d->bytes + lo + start;
    for (int t = 0; t < T; t++) {
        idx[t] = w[t];
        targets[t] = w[t + 1];
    }
    return MATTN_OK;
}
