/*
 * fuzz_gguf.c — the GGUF reader (header, metadata of every type, nested
 * arrays, tensor infos, alignment, ranges, overlaps, duplicates), on the
 * input as a buffer of its exact size (mattn_gguf_open_memory: ASan sees a
 * read one byte past the end) and as a file (a memfd: the real open/fstat/
 * mmap path).  A file the reader accepts must be consistent: both ways give
 * the same answer; every metadata value and array element reads through
 * the accessors; every tensor's bytes lie inside the input, are findable by
 * name, do not overlap, and dequantise.  Then what a model file goes on
 * to: a file with a tokenizer builds one (mattn_tok_init_gguf) or is refused
 * with a message, and a built one encodes and decodes a fixed text into ids
 * in range; a "llama" file opens as a model (mattn_llama_open) or is refused
 * with a message, and an opened one runs a forward of two tokens and a
 * decode step (finite logits or MATTN_ERR_NUMERIC) and tokenizes.  Seeds:
 * the fixtures of tests/fixtures/gen_gguf_fixtures.py, tok_tiny.gguf, two
 * llama_bad_*.gguf, and whole small models with a tokenizer
 * (tests/fixtures/gen_llama_tok_fixture.py), in fuzz/seeds/gguf/.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "io/io.h"
#include "llama/tokenizer.h"

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
    if (v->at < 8) {
        /* every getter on every scalar and the first elements of an array:
         * each either converts or refuses cleanly (a refusal formats a
         * message, which is most of the time; the later elements of an array
         * are of the same type and go through their own type's getter) */
        (void)mattn_gguf_val_u32(f, v, &u32);
        (void)mattn_gguf_val_i32(f, v, &i32);
        (void)mattn_gguf_val_u64(f, v, &u64);
        (void)mattn_gguf_val_i64(f, v, &i64);
        (void)mattn_gguf_val_f32(f, v, &f32);
        (void)mattn_gguf_val_f64(f, v, &f64);
        (void)mattn_gguf_val_bool(f, v, &b);
        (void)mattn_gguf_val_str(f, v, &s);
    } else {
        switch (v->type) {
        case MATTN_GGUF_UINT8: case MATTN_GGUF_UINT16: case MATTN_GGUF_UINT32: case MATTN_GGUF_UINT64:
            FUZZ_CHECK(mattn_gguf_val_u64(f, v, &u64) == MATTN_OK);
            break;
        case MATTN_GGUF_INT8: case MATTN_GGUF_INT16: case MATTN_GGUF_INT32: case MATTN_GGUF_INT64:
            FUZZ_CHECK(mattn_gguf_val_i64(f, v, &i64) == MATTN_OK);
            break;
        case MATTN_GGUF_FLOAT32: case MATTN_GGUF_FLOAT64:
            FUZZ_CHECK(mattn_gguf_val_f64(f, v, &f64) == MATTN_OK);
            break;
        case MATTN_GGUF_BOOL:
            FUZZ_CHECK(mattn_gguf_val_bool(f, v, &b) == MATTN_OK);
            break;
        case MATTN_GGUF_STRING:
            FUZZ_CHECK(mattn_gguf_val_str(f, v, &s) == MATTN_OK);
            break;
        default:
            break;
        }
    }
    if (v->type == MATTN_GGUF_STRING && mattn_gguf_val_str(f, v, &s) == MATTN_OK && s.len) g_sink ^= (unsigned char)(s.ptr[0] ^ s.ptr[s.len - 1]);
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

/* A tokenizer from f's metadata, when it has one: built or refused cleanly;
 * a built one encodes a fixed text into ids in range that decode. */
static void tokenizer(const mattn_gguf_file *f) {
    if (!mattn_gguf_find_kv(f, "tokenizer.ggml.model")) return;
    mattn_tok *t = (mattn_tok *)&t;
    const mattn_status st = mattn_tok_init_gguf(f, &t);
    FUZZ_CHECK((st == MATTN_OK) == (t != NULL));
    if (st != MATTN_OK) {
        FUZZ_CHECK(mattn_last_error()[0] != 0);
        return;
    }
    static const char text[] = "<|im_start|>abc xyz  12\n\xc3\xa9\xff~<tool>";
    const int32_t V = mattn_tok_n_vocab(t);
    FUZZ_CHECK(V > 0);
    for (int flags = 0; flags <= MATTN_TOK_SPECIAL; flags++) {
        int32_t ids[sizeof text];
        size_t n = 0, len = 0;
        FUZZ_CHECK(mattn_tok_encode(t, text, sizeof text - 1, flags, ids, sizeof text, &n) == MATTN_OK);
        FUZZ_CHECK(n <= sizeof text - 1);
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < V);
        FUZZ_CHECK(mattn_tok_decode(t, ids, n, flags, NULL, 0, &len) == MATTN_OK);
    }
    for (int32_t id = 0; id < V && id < 4096; id++) {
        const char *p;
        size_t len;
        FUZZ_CHECK(mattn_tok_piece(t, id, MATTN_TOK_SPECIAL, &p, &len) == MATTN_OK);
        if (len) g_sink ^= (unsigned char)(p[0] ^ p[len - 1]);
    }
    mattn_tok_free(t);
}

/* A "llama" file as a model: opened or refused cleanly; an opened one runs
 * a forward of two tokens, a decode step and the tokenizer. */
static void model(const mattn_gguf_file *f, const char *path) {
    mattn_gguf_str arch;
    if (mattn_gguf_get_str(f, "general.architecture", &arch) != MATTN_OK || !mattn_gguf_str_eq(arch, "llama")) return;
    mattn_llama *m = (mattn_llama *)&m;
    mattn_status st = mattn_llama_open(path, &m);
    FUZZ_CHECK((st == MATTN_OK) == (m != NULL));
    if (st != MATTN_OK) {
        FUZZ_CHECK(mattn_last_error()[0] != 0);
        return;
    }
    mattn_llama_info info;
    FUZZ_CHECK(mattn_llama_get_info(m, &info) == MATTN_OK);
    FUZZ_CHECK(info.vocab_size > 0 && info.context_length > 0 && info.d_model > 0);
    mattn_llama_cache *c = NULL;
    st = mattn_llama_cache_init(m, info.context_length < 3 ? info.context_length : 3, &c);
    float *lg = malloc(sizeof(float) * 2 * (size_t)info.vocab_size);
    if (st == MATTN_OK && lg) {
        const int32_t tok[2] = {0, info.vocab_size - 1};
        const int n = mattn_llama_cache_context(c) < 2 ? 1 : 2;
        st = mattn_llama_forward(m, c, tok, n, lg);
        FUZZ_CHECK(st == MATTN_OK || st == MATTN_ERR_NUMERIC);
        if (st == MATTN_OK && mattn_llama_cache_length(c) < mattn_llama_cache_context(c)) {
            st = mattn_llama_decode(m, c, info.vocab_size / 2, lg);
            FUZZ_CHECK(st == MATTN_OK || st == MATTN_ERR_NUMERIC);
        }
    }
    free(lg);
    mattn_llama_cache_free(c);
    size_t n = 0;
    st = mattn_llama_tokenize(m, "ab c", 4, 1, NULL, 0, &n);
    FUZZ_CHECK(st == MATTN_OK || mattn_llama_errmsg(m)[0] != 0);
    mattn_llama_free(m);
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
            tokenizer(g);
            model(g, path);
        }
        mattn_gguf_close(g);
        close(fd);
    }
    mattn_gguf_close(f);
    return 0;
}
