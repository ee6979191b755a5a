/*
 * test_gguf_bad.c — the GGUF reader's refusal of malformed files, each
 * built here byte by byte and opened twice (from an exact-size heap buffer,
 * where AddressSanitizer sees any overread, and from a file): bad magic,
 * version, byte order, absurd counts (without allocating for them), hostile
 * string and array lengths, bad value types and bools, nesting too deep,
 * duplicate keys, bad alignment, unsupported tensor types, bad shapes,
 * misaligned offsets, data past the end, overlaps, duplicate names — each
 * MATTN_ERR_FORMAT with a message naming the path and the fault — and the
 * valid oddities (no tensors, empty arrays and keys, scalars, empty tensors).
 */
#include "test_util.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

#define META "tests/fixtures/gguf_meta.gguf"

// ----------------------------------------------------------------------------
// a GGUF file built byte by byte

typedef struct { unsigned char b[4096]; size_t n; } gbuf;

static void put(gbuf *g, const void *p, size_t n) {
    assert_true(g->n + n <= sizeof g->b);
    memcpy(g->b + g->n, p, n);
    g->n += n;
}
static void put32(gbuf *g, uint32_t v) { unsigned char b[4] = {v, v >> 8, v >> 16, v >> 24}; put(g, b, 4); }
static void put64(gbuf *g, uint64_t v) { put32(g, (uint32_t)v); put32(g, (uint32_t)(v >> 32)); }
static void putstr(gbuf *g, const char *s) { put64(g, strlen(s)); put(g, s, strlen(s)); }
static void header(gbuf *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    g->n = 0;
    put(g, "GGUF", 4);
    put32(g, version);
    put64(g, n_tensors);
    put64(g, n_kv);
}
static void kv_u32(gbuf *g, const char *key, uint32_t v) { putstr(g, key); put32(g, MATTN_GGUF_UINT32); put32(g, v); }
/* A tensor info with n_dims dims. */
static void tinfo(gbuf *g, const char *name, int nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    putstr(g, name);
    put32(g, (uint32_t)nd);
    for (int d = 0; d < nd; d++) put64(g, ne[d]);
    put32(g, type);
    put64(g, off);
}
static void pad_zeros(gbuf *g, size_t align, size_t extra) {
    while (g->n % align) g->b[g->n++] = 0;
    assert_true(g->n + extra <= sizeof g->b);
    memset(g->b + g->n, 0, extra);
    g->n += extra;
}

/* Open g from memory (an exact-size heap copy: ASan sees any overread) and
 * from a file; both must give st and a message holding fragment. */
static mattn_gguf_file *open_built(const gbuf *g, mattn_status want, const char *fragment) {
    unsigned char *copy = malloc(g->n ? g->n : 1);
    memcpy(copy, g->b, g->n);
    mattn_gguf_file *f = (mattn_gguf_file *)(uintptr_t)1;
    char err[MATTN_ERRMSG_LEN] = "";
    mattn_status st = mattn_gguf_open_memory(copy, g->n, "built.gguf", &f, err, sizeof err);
    if (st != want || (fragment && !strstr(err, fragment)))
        fail_msg("status %d (wanted %d), message '%s', wanted '%s'", st, want, err, fragment ? fragment : "");
    if (st == MATTN_OK) {
        mattn_gguf_close(f);
    } else {
        assert_null(f);
        assert_non_null(strstr(err, "built.gguf: "));
        print_message("  %s\n", err);   /* docs/errors.md quotes them */
    }
    free(copy);
    const char *path = tmpdir_path("built.gguf");
    FILE *fp = fopen(path, "wb");
    fwrite(g->b, 1, g->n, fp);
    fclose(fp);
    assert_int_equal(mattn_gguf_open(path, &f, err, sizeof err), want);
    if (fragment) assert_non_null(strstr(err, fragment));
    if (st == MATTN_OK) return f;   /* the caller closes it */
    assert_null(f);
    return NULL;
}

static void good_file(gbuf *g, uint32_t version) {
    header(g, version, 1, 1);
    kv_u32(g, "k", 1);
    const uint64_t ne[1] = {4};
    tinfo(g, "x", 1, ne, MATTN_GGML_F32, 0);
    pad_zeros(g, 32, 16);
}

static void test_header(void **state) {
    (void)state;
    gbuf g;
    good_file(&g, 3);
    mattn_gguf_close(open_built(&g, MATTN_OK, NULL));
    good_file(&g, 2);
    mattn_gguf_close(open_built(&g, MATTN_OK, NULL));
    good_file(&g, 3);
    memcpy(g.b, "GGML", 4);
    open_built(&g, MATTN_ERR_FORMAT, "not a GGUF file: magic 'GGML'");
    g.b[0] = 0;
    open_built(&g, MATTN_ERR_FORMAT, "magic '?GML' (bytes 00 47 4d 4c), expected 'GGUF'");
    const uint32_t bad_versions[3] = {0, 4, 0x7fff};
    for (int i = 0; i < 3; i++) {
        good_file(&g, bad_versions[i]);
        char want[64];
        snprintf(want, sizeof want, "GGUF version %u is not supported (versions 2 and 3 are)", bad_versions[i]);
        open_built(&g, MATTN_ERR_FORMAT, want);
    }
    good_file(&g, 1);
    open_built(&g, MATTN_ERR_FORMAT, "GGUF version 1 is not supported");
    /* a big-endian file: the version field byte-swapped */
    good_file(&g, 3);
    const unsigned char be3[4] = {0, 0, 0, 3};
    memcpy(g.b + 4, be3, 4);
    open_built(&g, MATTN_ERR_FORMAT, "byte-swapped version field (0x03000000: version 3 written big-endian): only "
                                     "little-endian GGUF files are supported");
    g.n = 23;
    open_built(&g, MATTN_ERR_FORMAT, "23 bytes, too short for a GGUF file");
    g.n = 0;
    open_built(&g, MATTN_ERR_FORMAT, "0 bytes, too short");
    /* absurd counts: refused before any allocation for them */
    const uint64_t huge = UINT64_C(1) << 62;
    header(&g, 3, huge, 0);
    mattn_fault_alloc(LONG_MAX, 0);   /* count allocations */
    open_built(&g, MATTN_ERR_FORMAT, "tensor count 4611686018427387904 cannot fit in the 0 bytes left");
    assert_true(mattn_alloc_count() <= 8);   /* handle, path, empty tables: twice (memory and file) */
    mattn_fault_alloc(0, 0);
    header(&g, 3, 0, huge);
    open_built(&g, MATTN_ERR_FORMAT, "metadata count 4611686018427387904 cannot fit");
    header(&g, 3, UINT64_MAX, UINT64_MAX);
    open_built(&g, MATTN_ERR_FORMAT, "metadata count 18446744073709551615 cannot fit");
    /* no tensors and no data section: fine */
    header(&g, 3, 0, 1);
    kv_u32(&g, "k", 1);
    mattn_gguf_file *f = open_built(&g, MATTN_OK, NULL);
    assert_int_equal(mattn_gguf_n_tensors(f), 0);
    assert_null(mattn_gguf_find_tensor(f, "x"));
    mattn_gguf_close(f);
    /* missing file, a directory */
    char err[MATTN_ERRMSG_LEN];
    f = (mattn_gguf_file *)(uintptr_t)1;
    assert_int_equal(mattn_gguf_open("/nonexistent/m.gguf", &f, err, sizeof err), MATTN_ERR_IO);
    assert_null(f);
    assert_non_null(strstr(err, "/nonexistent/m.gguf: cannot open: No such file or directory"));
    assert_int_equal(mattn_gguf_open(g_tmpdir, &f, err, sizeof err), MATTN_ERR_IO);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(mattn_gguf_open(NULL, &f, err, sizeof err), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_gguf_open(META, NULL, err, sizeof err), MATTN_ERR_INVALID_ARG);
}

static void test_bad_metadata(void **state) {
    (void)state;
    gbuf g;
    /* duplicate keys */
    header(&g, 3, 0, 3);
    kv_u32(&g, "a", 1);
    kv_u32(&g, "dup", 1);
    kv_u32(&g, "dup", 2);
    open_built(&g, MATTN_ERR_FORMAT, "duplicate metadata key 'dup'");
    /* unknown value type; an array of an unknown element type */
    header(&g, 3, 0, 1);
    putstr(&g, "k");
    put32(&g, 13);
    put32(&g, 0);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'k': unknown value type 13");
    header(&g, 3, 0, 1);
    putstr(&g, "k");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, 99);
    put64(&g, 1);
    put32(&g, 0);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'k': array of unknown element type 99");
    /* a bool of value 2, as a scalar and in an array */
    header(&g, 3, 0, 1);
    putstr(&g, "b");
    put32(&g, MATTN_GGUF_BOOL);
    put(&g, "\x02", 1);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'b' is a BOOL of value 2 (0 or 1)");
    header(&g, 3, 0, 1);
    putstr(&g, "b");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, MATTN_GGUF_BOOL);
    put64(&g, 3);
    put(&g, "\x01\x00\x05", 3);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'b': element 2 is a BOOL of value 5");
    /* arrays nested 17 deep: refused (the parser recurses once per level); 16: fine */
    for (int depth = 16; depth <= 17; depth++) {
        header(&g, 3, 0, 1);
        putstr(&g, "deep");
        put32(&g, MATTN_GGUF_ARRAY);
        for (int i = 1; i < depth; i++) { put32(&g, MATTN_GGUF_ARRAY); put64(&g, 1); }
        put32(&g, MATTN_GGUF_UINT8);
        put64(&g, 1);
        put(&g, "\x2a", 1);
        mattn_gguf_file *f = open_built(&g, depth <= 16 ? MATTN_OK : MATTN_ERR_FORMAT,
                                        depth <= 16 ? NULL : "metadata 'deep': arrays nested deeper than 16");
        if (f) {   /* walk down to the 42 */
            mattn_gguf_value v = *mattn_gguf_find_kv(f, "deep");
            for (int i = 1; i < depth; i++) assert_int_equal(mattn_gguf_arr_elem(f, &v, 0, &v), MATTN_OK);
            int64_t x;
            assert_int_equal(mattn_gguf_arr_i64(f, &v, 0, &x), MATTN_OK);
            assert_int_equal(x, 42);
            mattn_gguf_close(f);
        }
    }
    /* empty arrays and strings are fine */
    header(&g, 3, 0, 2);
    putstr(&g, "e");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, MATTN_GGUF_STRING);
    put64(&g, 0);
    putstr(&g, "");
    put32(&g, MATTN_GGUF_STRING);
    putstr(&g, "");
    mattn_gguf_file *f = open_built(&g, MATTN_OK, NULL);
    const mattn_gguf_value *a;
    assert_int_equal(mattn_gguf_get_arr(f, "e", MATTN_GGUF_STRING, &a), MATTN_OK);
    assert_int_equal(a->n, 0);
    mattn_gguf_str s;
    assert_int_equal(mattn_gguf_get_str(f, "", &s), MATTN_OK);   /* the empty key */
    assert_int_equal(s.len, 0);
    mattn_gguf_close(f);
}

/* Hostile lengths: a key, a string value, an array, an array of strings,
 * an element; refused before anything is allocated for them. */
static void test_bad_lengths(void **state) {
    (void)state;
    gbuf g;
    header(&g, 3, 0, 1);
    put64(&g, UINT64_C(1) << 63);
    put64(&g, 0);   /* 16 bytes: room for one pair, as far as the count goes */
    open_built(&g, MATTN_ERR_FORMAT,
               "the key of metadata pair 0 at byte 24: string length 9223372036854775808 exceeds the 8 bytes left");
    header(&g, 3, 0, 1);
    putstr(&g, "s");
    put32(&g, MATTN_GGUF_STRING);
    put64(&g, 100);
    put(&g, "abc", 3);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 's' at byte 37: string length 100 exceeds the 3 bytes left");
    header(&g, 3, 0, 1);
    putstr(&g, "a");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, MATTN_GGUF_UINT32);
    put64(&g, UINT64_C(1) << 61);
    put32(&g, 7);
    mattn_fault_alloc(LONG_MAX, 0);
    open_built(&g, MATTN_ERR_FORMAT,
               "metadata 'a': 2305843009213693952 elements of type UINT32 cannot fit in the 4 bytes left");
    header(&g, 3, 0, 1);
    putstr(&g, "a");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, MATTN_GGUF_STRING);
    put64(&g, UINT64_C(1) << 60);
    putstr(&g, "x");
    open_built(&g, MATTN_ERR_FORMAT,
               "metadata 'a': 1152921504606846976 elements of type STRING cannot fit in the 9 bytes left");
    assert_true(mattn_alloc_count() <= 16);   /* no index of 2^60 entries was asked for */
    mattn_fault_alloc(0, 0);
    header(&g, 3, 0, 1);
    putstr(&g, "a");
    put32(&g, MATTN_GGUF_ARRAY);
    put32(&g, MATTN_GGUF_STRING);
    put64(&g, 2);
    putstr(&g, "x");
    put64(&g, 50);
    put(&g, "yy", 2);
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'a' element 1 at byte 58: string length 50 exceeds the 2 bytes left");
}

static void test_bad_alignment(void **state) {
    (void)state;
    gbuf g;
    const uint32_t bad[3] = {0, 48, 0x80000001u};
    for (int i = 0; i < 3; i++) {
        header(&g, 3, 0, 1);
        kv_u32(&g, "general.alignment", bad[i]);
        char want[96];
        snprintf(want, sizeof want, "general.alignment = %u is not a nonzero power of two", bad[i]);
        open_built(&g, MATTN_ERR_FORMAT, want);
    }
    header(&g, 3, 0, 1);
    putstr(&g, "general.alignment");
    put32(&g, MATTN_GGUF_STRING);
    putstr(&g, "32");
    open_built(&g, MATTN_ERR_FORMAT, "metadata 'general.alignment' is STRING, expected an integer (u32)");
    /* alignment 16 read from a UINT8: the tensor at offset 16 is then aligned */
    header(&g, 3, 2, 1);
    putstr(&g, "general.alignment");
    put32(&g, MATTN_GGUF_UINT8);
    put(&g, "\x10", 1);
    const uint64_t ne[1] = {4};
    tinfo(&g, "a", 1, ne, MATTN_GGML_F32, 0);
    tinfo(&g, "b", 1, ne, MATTN_GGML_F32, 16);
    pad_zeros(&g, 16, 32);
    mattn_gguf_file *f = open_built(&g, MATTN_OK, NULL);
    assert_int_equal(mattn_gguf_alignment(f), 16);
    assert_int_equal(mattn_gguf_data_offset(f) % 16, 0);
    mattn_gguf_close(f);
}

static void test_bad_tensors(void **state) {
    (void)state;
    gbuf g;
    const uint64_t ne4[1] = {4}, ne16[1] = {16};
    /* unsupported types: named and numbered */
    const uint64_t ne256[2] = {256, 2};
    header(&g, 3, 1, 0);
    tinfo(&g, "blk.0.ffn_down.weight", 2, ne256, 12, 0);
    pad_zeros(&g, 32, 288);
    open_built(&g, MATTN_ERR_FORMAT,
               "built.gguf: tensor 'blk.0.ffn_down.weight': ggml type 12 (Q4_K) is not supported "
               "(F32, F16, Q4_0, Q4_1, Q8_0 and BF16 are)");
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 1, ne4, 99, 0);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 't': ggml type 99 (?) is not supported");
    /* misaligned offset */
    header(&g, 3, 2, 0);
    tinfo(&g, "a", 1, ne4, MATTN_GGML_F32, 0);
    tinfo(&g, "b", 1, ne4, MATTN_GGML_F32, 16);
    pad_zeros(&g, 32, 64);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 'b': offset 16 is not a multiple of the alignment 32");
    /* overlapping data: [0, 64) and [32, 96) */
    header(&g, 3, 2, 0);
    tinfo(&g, "a", 1, ne16, MATTN_GGML_F32, 0);
    tinfo(&g, "b", 1, ne16, MATTN_GGML_F32, 32);
    pad_zeros(&g, 32, 96);
    open_built(&g, MATTN_ERR_FORMAT, "tensors 'a' [0, 64) and 'b' [32, 96) overlap");
    /* the same, listed the other way round, and one inside another */
    header(&g, 3, 3, 0);
    tinfo(&g, "c", 1, ne4, MATTN_GGML_F32, 128);
    tinfo(&g, "big", 1, ne16, MATTN_GGML_F32, 96);
    tinfo(&g, "inner", 1, ne4, MATTN_GGML_F32, 64);
    pad_zeros(&g, 32, 192);
    open_built(&g, MATTN_ERR_FORMAT, "tensors 'big' [96, 160) and 'c' [128, 144) overlap");
    /* duplicate names */
    header(&g, 3, 2, 0);
    tinfo(&g, "x", 1, ne4, MATTN_GGML_F32, 0);
    tinfo(&g, "x", 1, ne4, MATTN_GGML_F32, 32);
    pad_zeros(&g, 32, 64);
    open_built(&g, MATTN_ERR_FORMAT, "duplicate tensor name 'x'");
    /* data past the end of the file */
    header(&g, 3, 1, 0);
    tinfo(&g, "blk.3.attn_q.weight", 1, ne16, MATTN_GGML_F32, 0);
    pad_zeros(&g, 32, 60);
    open_built(&g, MATTN_ERR_FORMAT,
               "tensor 'blk.3.attn_q.weight': data [0, 64) exceeds the file (156 bytes; data section at byte 96, "
               "60 bytes)");
    header(&g, 3, 1, 0);
    tinfo(&g, "far", 1, ne4, MATTN_GGML_F32, UINT64_C(1) << 63);
    pad_zeros(&g, 32, 16);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 'far': data [9223372036854775808, 9223372036854775824) exceeds the file");
    header(&g, 3, 1, 0);
    tinfo(&g, "huge", 1, ne4, MATTN_GGML_F32, UINT64_MAX - 31);
    pad_zeros(&g, 32, 16);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 'huge': data [18446744073709551584, 18446744073709551600) exceeds");
    /* the data section itself beyond the end */
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 1, ne4, MATTN_GGML_F32, 0);
    open_built(&g, MATTN_ERR_FORMAT, "file truncated: the data section would start at byte 64, the file has 57");
    /* shapes: too many dims, a dim beyond int64, a product that overflows, a tensor larger than the file */
    const uint64_t ne5[5] = {1, 1, 1, 1, 1};
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 5, ne5, MATTN_GGML_F32, 0);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 't': 5 dimensions (GGUF allows at most 4)");
    const uint64_t nebig[2] = {1, UINT64_C(1) << 63};
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 2, nebig, MATTN_GGML_F32, 0);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 't': ne[1] = 9223372036854775808 is out of range");
    const uint64_t neover[3] = {UINT64_C(1) << 32, UINT64_C(1) << 31, 2};
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 3, neover, MATTN_GGML_F32, 0);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 't': the element count of its shape overflows");
    const uint64_t nelarge[2] = {UINT64_C(1) << 31, UINT64_C(1) << 31};
    header(&g, 3, 1, 0);
    tinfo(&g, "t", 2, nelarge, MATTN_GGML_Q8_0, 0);
    open_built(&g, MATTN_ERR_FORMAT,
               "tensor 't': 4611686018427387904 elements of Q8_0 are more bytes than the whole file");
    /* quantised rows: a whole number of blocks */
    const uint64_t ne48[2] = {48, 2};
    header(&g, 3, 1, 0);
    tinfo(&g, "q", 2, ne48, MATTN_GGML_Q4_0, 0);
    pad_zeros(&g, 32, 54);
    open_built(&g, MATTN_ERR_FORMAT, "tensor 'q': row length ne[0] = 48 is not a multiple of Q4_0's block size 32");
    /* truncated in a tensor info */
    header(&g, 3, 1, 0);
    putstr(&g, "t");
    put32(&g, 2);
    put64(&g, 4);
    put(&g, "\0\0\0", 3);   /* 24 bytes: room for one info, as far as the count goes */
    open_built(&g, MATTN_ERR_FORMAT, "file truncated: tensor 0's info at byte 45 needs 8 bytes, 3 left");
    /* valid oddities: a scalar (n_dims 0), an empty tensor, an empty name, a hole and trailing bytes */
    const uint64_t ne0[2] = {0, 3};
    header(&g, 3, 3, 0);
    tinfo(&g, "scalar", 0, NULL, MATTN_GGML_F32, 64);
    tinfo(&g, "empty", 2, ne0, MATTN_GGML_Q4_1, 32);
    tinfo(&g, "", 1, ne4, MATTN_GGML_BF16, 0);
    pad_zeros(&g, 32, 100);
    mattn_gguf_file *f = open_built(&g, MATTN_OK, NULL);
    const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, "scalar");
    assert_true(t && t->n_dims == 0 && t->n_elements == 1 && t->nbytes == 4 && t->ne[0] == 1);
    t = mattn_gguf_find_tensor(f, "empty");
    assert_true(t && t->n_elements == 0 && t->nbytes == 0);
    t = mattn_gguf_find_tensor(f, "");
    assert_true(t && t->type == MATTN_GGML_BF16 && t->nbytes == 8);
    mattn_gguf_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_bad_tensors),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
