/*
 * fuzz_corpus.c — the corpus loader and its batch/window samplers.  The
 * first 8 input bytes pick the validation fraction, batch, context, seed and
 * step; the rest is the text file.  Accepted windows must be in range and
 * targets must be the inputs shifted by one.
 */
#include <string.h>

#include "fuzz_util.h"
#include "metaattn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    const double val = (data[0] % 101) / 100.0;  /* 0 and 1 are rejected */
    const int B = 1 + data[1] % 4, T = 1 + (data[2] | data[3] << 8) % 300;
    const uint64_t seed = data[4], step = data[5] | (uint64_t)data[6] << 8;
    const int split = data[7] & 1;
    char path[64];
    int fd = fuzz_memfile(data + 8, size - 8, path, sizeof path);
    if (fd < 0) return 0;
    mattn_data *d = NULL;
    mattn_status st = mattn_data_load(path, val, &d);
    FUZZ_CHECK((st == MATTN_OK) == (d != NULL));
    if (d) {
        FUZZ_CHECK(mattn_data_size(d, 0) + mattn_data_size(d, 1) == size - 8);
        int32_t idx[4 * 300], tgt[4 * 300];
        if (mattn_data_batch(d, split, seed, step, B, T, idx, tgt) == MATTN_OK)
            for (int i = 0; i < B * T; i++) {
                FUZZ_CHECK(idx[i] >= 0 && idx[i] < 256 && tgt[i] >= 0 && tgt[i] < 256);
                if (i % T < T - 1) FUZZ_CHECK(tgt[i] == idx[i + 1]);
            }
        const int64_t n = 1 + data[6] % 9;
        if (mattn_data_window(d, split, (int64_t)(data[5] % 10), n, T, idx, tgt) == MATTN_OK)
            for (int i = 0; i < T - 1; i++) FUZZ_CHECK(tgt[i] == idx[i + 1]);
        mattn_data_free(d);
    }
    close(fd);
    return 0;
}
