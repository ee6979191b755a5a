/*
 * fuzz_gguf.c — the GGUF reader (header, metadata of every type, nested
 * arrays, tensor infos, alignment, ranges, overlaps, duplicates), on the
 * input as a buffer of its exact size (mattn_gguf_open_memory: ASan sees a
 * read one byte past the end) and as a file (a memfd: the real open/fstat/
 * mmap path).  A file the reader accepts must be consistent: both ways give
 * the same answer; every metadata value and array element reads through
 * the accessors; every tensor's bytes lie inside the input, are findable by
 * name, do not overlap, and dequantise.  Seeds: the fixtures of
 * tests/fixtures/gen_gguf_fixtures.py (fuzz/seeds/gguf/).
 */
#include <string.h>

#include "fuzz_util.h"
#include "io/io.h"

static volatile unsigned char g_sink;   /* bytes touched here are really read */

/* Read every element of v, recursing into nested arrays; at most *budget
 * elements in all (a valid input may hold millions). */
static void walk(const mattn_gguf_file *f, const mattn_gguf_value *v, long *budget) {
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    int b;
    mattn_gguf_str s;
    /* every getter on every value: each either converts or refuses cleanly */
    (void)mattn_gguf_val_u32(f, v, &u32);
    (void)mattn_gguf_val_i32(f, v, &i32);
    (void)mattn_gguf_val_u64(f, v, &u64);
    (void)mattn_gguf_val_i64(f, v, &i64);
    (void)mattn_gguf_val_f32(f, v, &f32);
    (void)mattn_gguf_val_f64(f, v, &f64);
    (void)mattn_gguf_val_bool(f, v, &b);
    if (mattn_gguf_val_str(f, v, &s) == MATTN_OK && s.len) g_sink ^= (unsigned char)(s.ptr[0] ^ s.ptr[s.len - 1]);
    if (v->type != MATTN_GGUF_ARRAY) return;
    for (uint64_t i = 0; i < v->n && (*budget)-- > 0; i++) {
        mattn_gguf_value e;
        FUZZ_CHECK(mattn_gguf_arr_elem(f, v, i, &e) == MATTN_OK);
        FUZZ_CHECK(e.type == v->elem && e.at == (int64_t)i);
        walk(f, &e, budget);
    }
    mattn_gguf_value e;
    FUZZ_CHECK(mattn_gguf_arr_elem(f, v, v->n, &e) == MATTN_ERR_INVALID_ARG);
}

static void check(const mattn_gguf_file *f, const uint8_t *data, size_t size) {
    long budget = 100000;
    for (int64_t i = 0; i < mattn_gguf_n_kv(f); i++) {
        const mattn_gguf_value *v = mattn_gguf_kv_at(f, i);
        FUZZ_CHECK(v && v->at == -1);
        walk(f, v, &budget);
    }
    for (int64_t i = 0; i < mattn_gguf_n_tensors(f); i++) {
        const mattn_gguf_tensor *t = mattn_gguf_tensor_at(f, i);
        FUZZ_CHECK(t && t->n_dims >= 0 && t->n_dims <= MATTN_GGUF_MAX_DIMS);
        FUZZ_CHECK(mattn_gguf_type_supported(t->type));
        FUZZ_CHECK(t->nbytes == mattn_gguf_nbytes(t->type, t->n_elements));
        FUZZ_CHECK(t->offset % mattn_gguf_alignment(f) == 0);
        if (data) {   /* the bytes lie inside the input */
            const uint8_t *p = t->data;
            FUZZ_CHECK(p >= data && t->nbytes <= size && (size_t)(p - data) <= size - t->nbytes);
        }
        if (t->nbytes) g_sink ^= ((const unsigned char *)t->data)[0] ^ ((const unsigned char *)t->data)[t->nbytes - 1];
        if (t->name.len < 256 && !memchr(t->name.ptr, 0, t->name.len)) {
            char name[256];
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = 0;
            FUZZ_CHECK(mattn_gguf_find_tensor(f, name) == t);
        }
        for (int64_t j = 0; j < i && j < 64; j++) {   /* no overlap with the earlier ones */
            const mattn_gguf_tensor *u = mattn_gguf_tensor_at(f, j);
            if (t->nbytes && u->nbytes)
                FUZZ_CHECK(t->offset >= u->offset + u->nbytes || u->offset >= t->offset + t->nbytes);
        }
        if (t->n_elements <= 4096) {
            float buf[4096];
            FUZZ_CHECK(mattn_gguf_dequant_ref(t->type, t->data, buf, t->n_elements) == MATTN_OK);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512], err2[512], path[64];
    mattn_gguf_file *f = NULL, *g = NULL;
    mattn_status st = mattn_gguf_open_memory(data, size, "fuzz.gguf", &f, err, sizeof err);
    FUZZ_CHECK((st == MATTN_OK) == (f != NULL));
    if (st != MATTN_OK) FUZZ_CHECK(err[0] != 0 && strlen(err) < sizeof err);
    if (f) check(f, data, size);
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd >= 0) {
        mattn_status st2 = mattn_gguf_open(path, &g, err2, sizeof err2);
        FUZZ_CHECK(st2 == st);   /* the same verdict from a mapped file */
        if (g) {
            FUZZ_CHECK(mattn_gguf_n_tensors(g) == mattn_gguf_n_tensors(f) && mattn_gguf_n_kv(g) == mattn_gguf_n_kv(f));
            check(g, NULL, 0);
        }
        mattn_gguf_close(g);
        close(fd);
    }
    mattn_gguf_close(f);
    return 0;
}
