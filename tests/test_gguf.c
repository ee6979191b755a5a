/*
 * test_gguf.c — the GGUF reader (src/io/gguf*.c) on the fixtures that
 * tests/fixtures/gen_gguf_fixtures.py writes with the gguf package:
 * metadata of every type read back exactly (and refused, with the key and
 * the type named, when asked for as another type), the tensor table, the
 * reference dequantisation bit for bit against gguf.quants.dequantize;
 * every truncation of each fixture; every allocation failing in turn.  The
 * malformed files built byte by byte are test_gguf_bad.c.
 */
#include "test_util.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"
#define META "tests/fixtures/gguf_meta.gguf"
#define V2 "tests/fixtures/gguf_v2.gguf"
#define TENSORS "tests/fixtures/gguf_tensors.gguf"
#define EXPECTED "tests/fixtures/gguf_tensors_expected.safetensors"

static char errbuf[MATTN_ERRMSG_LEN];

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    rewind(fp);
    unsigned char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return b;
}

static mattn_gguf_file *open_ok(const char *path) {
    mattn_gguf_file *f = NULL;
    mattn_status st = mattn_gguf_open(path, &f, errbuf, sizeof errbuf);
    if (st != MATTN_OK) print_error("%s: %s\n", path, errbuf);
    assert_int_equal(st, MATTN_OK);
    assert_non_null(f);
    return f;
}

static void expect_msg(const char *fragment) {
    if (!strstr(mattn_last_error(), fragment))
        fail_msg("message '%s' lacks '%s'", mattn_last_error(), fragment);
}

// ----------------------------------------------------------------------------
// the metadata fixture

static void check_scalars(const mattn_gguf_file *f) {
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    int b;
    mattn_gguf_str s;
    assert_int_equal(mattn_gguf_find_kv(f, "test.u8")->type, MATTN_GGUF_UINT8);
    assert_int_equal(mattn_gguf_get_u32(f, "test.u8", &u32), MATTN_OK);
    assert_int_equal(u32, 200);
    assert_int_equal(mattn_gguf_get_i32(f, "test.i8", &i32), MATTN_OK);
    assert_int_equal(i32, -100);
    assert_int_equal(mattn_gguf_find_kv(f, "test.i8")->type, MATTN_GGUF_INT8);
    assert_int_equal(mattn_gguf_get_u32(f, "test.i8", &u32), MATTN_ERR_FORMAT);
    expect_msg("gguf_meta.gguf: metadata 'test.i8' = -100 (INT8) does not fit in u32");
    assert_int_equal(mattn_gguf_get_u32(f, "test.u16", &u32), MATTN_OK);
    assert_int_equal(u32, 60000);
    assert_int_equal(mattn_gguf_find_kv(f, "test.u16")->type, MATTN_GGUF_UINT16);
    assert_int_equal(mattn_gguf_get_i32(f, "test.i16", &i32), MATTN_OK);
    assert_int_equal(i32, -30000);
    assert_int_equal(mattn_gguf_find_kv(f, "test.i16")->type, MATTN_GGUF_INT16);
    assert_int_equal(mattn_gguf_get_u32(f, "test.u32", &u32), MATTN_OK);
    assert_true(u32 == 4000000000u);
    assert_int_equal(mattn_gguf_get_i32(f, "test.u32", &i32), MATTN_ERR_FORMAT);
    expect_msg("metadata 'test.u32' = 4000000000 (UINT32) does not fit in i32");
    assert_int_equal(mattn_gguf_get_i64(f, "test.u32", &i64), MATTN_OK);   /* widening */
    assert_true(i64 == 4000000000LL);
    assert_int_equal(mattn_gguf_get_i32(f, "test.i32", &i32), MATTN_OK);
    assert_int_equal(i32, -2000000000);
    assert_int_equal(mattn_gguf_get_f32(f, "test.f32", &f32), MATTN_OK);
    assert_true(f32 == 3.14159f);
    assert_int_equal(mattn_gguf_get_f64(f, "test.f32", &f64), MATTN_OK);
    assert_true(f64 == (double)3.14159f);
    assert_int_equal(mattn_gguf_get_bool(f, "test.bool", &b), MATTN_OK);
    assert_int_equal(b, 1);
    assert_int_equal(mattn_gguf_get_bool(f, "test.bool_false", &b), MATTN_OK);
    assert_int_equal(b, 0);
    assert_int_equal(mattn_gguf_get_str(f, "test.str", &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "h\xc3\xa9llo w\xc3\xb6rld"));
    assert_int_equal(mattn_gguf_get_u64(f, "test.u64", &u64), MATTN_OK);
    assert_true(u64 == (UINT64_C(1) << 63) + 5);
    assert_int_equal(mattn_gguf_get_i64(f, "test.u64", &i64), MATTN_ERR_FORMAT);
    assert_int_equal(mattn_gguf_get_i64(f, "test.i64", &i64), MATTN_OK);
    assert_true(i64 == -(INT64_C(1) << 62) - 3);
    assert_int_equal(mattn_gguf_get_u64(f, "test.i64", &u64), MATTN_ERR_FORMAT);
    assert_int_equal(mattn_gguf_get_f64(f, "test.f64", &f64), MATTN_OK);
    assert_true(f64 == 2.718281828459045);
    assert_int_equal(mattn_gguf_get_f32(f, "test.f64", &f32), MATTN_ERR_FORMAT);   /* not exactly a float */
    expect_msg("metadata 'test.f64' = 2.718281828459045 (FLOAT64) is not exactly a float");
    assert_int_equal(mattn_gguf_get_str(f, "test.str_empty", &s), MATTN_OK);
    assert_int_equal(s.len, 0);
    assert_int_equal(mattn_gguf_get_u32(f, "test.u64_small", &u32), MATTN_OK);   /* any integer type that fits */
    assert_int_equal(u32, 7);
    assert_int_equal(mattn_gguf_get_i32(f, "test.i32_neg", &i32), MATTN_OK);
    assert_int_equal(i32, -5);
    assert_int_equal(mattn_gguf_get_u64(f, "test.i32_neg", &u64), MATTN_ERR_FORMAT);
    /* wrong types and absent keys: the key, its type, what was wanted */
    assert_int_equal(mattn_gguf_get_u32(f, "test.str", &u32), MATTN_ERR_FORMAT);
    expect_msg("gguf_meta.gguf: metadata 'test.str' is STRING, expected an integer (u32)");
    assert_int_equal(mattn_gguf_get_str(f, "test.u32", &s), MATTN_ERR_FORMAT);
    expect_msg("metadata 'test.u32' is UINT32, expected STRING");
    assert_int_equal(mattn_gguf_get_bool(f, "test.u8", &b), MATTN_ERR_FORMAT);
    expect_msg("'test.u8' is UINT8, expected BOOL");
    assert_int_equal(mattn_gguf_get_f32(f, "test.i32", &f32), MATTN_ERR_FORMAT);
    expect_msg("'test.i32' is INT32, expected FLOAT32");
    assert_int_equal(mattn_gguf_get_u32(f, "test.arr.u32", &u32), MATTN_ERR_FORMAT);
    expect_msg("'test.arr.u32' is ARRAY, expected an integer (u32)");
    u32 = 99;
    assert_int_equal(mattn_gguf_get_u32(f, "no.such.key", &u32), MATTN_ERR_NOT_FOUND);
    expect_msg("gguf_meta.gguf: no metadata key 'no.such.key'");
    assert_int_equal(u32, 99);   /* unchanged */
    assert_int_equal(mattn_gguf_get_str(f, "general.architecture", &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "testarch"));
}

static void check_arrays(const mattn_gguf_file *f) {
    const mattn_gguf_value *a;
    int64_t i64;
    double d;
    mattn_gguf_str s;
    mattn_gguf_value e;
    static const struct { const char *key; mattn_gguf_vtype elem; int n; int64_t v[4]; } INTS[] = {
        {"test.arr.u8", MATTN_GGUF_UINT8, 3, {1, 2, 255}},
        {"test.arr.i8", MATTN_GGUF_INT8, 3, {-128, 0, 127}},
        {"test.arr.u16", MATTN_GGUF_UINT16, 2, {0, 65535}},
        {"test.arr.i16", MATTN_GGUF_INT16, 3, {-32768, 32767, 1}},
        {"test.arr.u32", MATTN_GGUF_UINT32, 2, {0, 4294967295LL}},
        {"test.arr.i32", MATTN_GGUF_INT32, 4, {INT32_MIN, INT32_MAX, 0, 5}},
        {"test.arr.bool", MATTN_GGUF_BOOL, 3, {1, 0, 1}},
        {"test.arr.i64", MATTN_GGUF_INT64, 2, {INT64_MIN, INT64_MAX}},
    };
    for (size_t k = 0; k < sizeof INTS / sizeof INTS[0]; k++) {
        assert_int_equal(mattn_gguf_get_arr(f, INTS[k].key, (int)INTS[k].elem, &a), MATTN_OK);
        assert_int_equal(a->n, INTS[k].n);
        assert_null(a->index);   /* fixed-size elements need none */
        for (int i = 0; i < INTS[k].n; i++) {
            if (INTS[k].elem == MATTN_GGUF_BOOL) {
                int b;
                assert_int_equal(mattn_gguf_arr_elem(f, a, (uint64_t)i, &e), MATTN_OK);
                assert_int_equal(mattn_gguf_val_bool(f, &e, &b), MATTN_OK);
                assert_int_equal(b, INTS[k].v[i]);
                continue;
            }
            assert_int_equal(mattn_gguf_arr_i64(f, a, (uint64_t)i, &i64), MATTN_OK);
            assert_true(i64 == INTS[k].v[i]);
        }
    }
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.u64", MATTN_GGUF_UINT64, &a), MATTN_OK);
    assert_int_equal(mattn_gguf_arr_i64(f, a, 0, &i64), MATTN_ERR_FORMAT);   /* 2^64 - 1 */
    expect_msg("metadata 'test.arr.u64'[0] = 18446744073709551615 (UINT64) does not fit in i64");
    assert_int_equal(mattn_gguf_arr_elem(f, a, 0, &e), MATTN_OK);
    uint64_t u64;
    assert_int_equal(mattn_gguf_val_u64(f, &e, &u64), MATTN_OK);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(mattn_gguf_arr_f64(f, a, 1, &d), MATTN_OK);
    assert_true(d == 1.0);
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.f32", MATTN_GGUF_FLOAT32, &a), MATTN_OK);
    const float want32[3] = {0.5f, -1.25f, 1e-30f};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mattn_gguf_arr_f64(f, a, (uint64_t)i, &d), MATTN_OK);
        assert_true(d == (double)want32[i]);
    }
    assert_int_equal(mattn_gguf_arr_f64(f, a, 3, &d), MATTN_ERR_INVALID_ARG);
    expect_msg("metadata 'test.arr.f32': index 3 out of range (3 elements)");
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.f64", MATTN_GGUF_FLOAT64, &a), MATTN_OK);
    assert_int_equal(mattn_gguf_arr_f64(f, a, 0, &d), MATTN_OK);
    assert_true(d == 1.0 / 3.0);
    assert_int_equal(mattn_gguf_arr_f64(f, a, 1, &d), MATTN_OK);
    assert_true(d == -2.5e300);
    /* strings: views, indexed */
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.str", MATTN_GGUF_STRING, &a), MATTN_OK);
    assert_non_null(a->index);
    const char *strs[4] = {"a", "", "tokens \xe2\x9c\x93", "x y"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mattn_gguf_arr_str(f, a, (uint64_t)i, &s), MATTN_OK);
        assert_true(mattn_gguf_str_eq(s, strs[i]));
    }
    assert_int_equal(mattn_gguf_arr_i64(f, a, 0, &i64), MATTN_ERR_FORMAT);
    expect_msg("metadata 'test.arr.str'[0] is STRING, expected an integer (i64)");
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.str", MATTN_GGUF_INT32, &a), MATTN_ERR_FORMAT);
    expect_msg("metadata 'test.arr.str' is an array of STRING, expected an array of INT32");
    assert_int_equal(mattn_gguf_get_arr(f, "test.u8", MATTN_GGUF_ANY, &a), MATTN_ERR_FORMAT);
    expect_msg("'test.u8' is UINT8, expected an array of anything");
    assert_int_equal(mattn_gguf_arr_elem(f, mattn_gguf_find_kv(f, "test.u8"), 0, &e), MATTN_ERR_INVALID_ARG);
}

static void check_nested(const mattn_gguf_file *f) {
    const mattn_gguf_value *a;
    mattn_gguf_value e, e2, e3;
    int64_t v;
    mattn_gguf_str s;
    /* [[1, 2, 3], [4, 5]] (inner INT32) */
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.nested", MATTN_GGUF_ARRAY, &a), MATTN_OK);
    assert_int_equal(a->n, 2);
    assert_non_null(a->index);
    const int64_t want[2][3] = {{1, 2, 3}, {4, 5, 0}};
    for (uint64_t i = 0; i < 2; i++) {
        assert_int_equal(mattn_gguf_arr_elem(f, a, i, &e), MATTN_OK);
        assert_int_equal(e.type, MATTN_GGUF_ARRAY);
        assert_int_equal(e.elem, MATTN_GGUF_INT32);
        assert_int_equal(e.n, 3 - i);
        for (uint64_t j = 0; j < e.n; j++) {
            assert_int_equal(mattn_gguf_arr_i64(f, &e, j, &v), MATTN_OK);
            assert_true(v == want[i][j]);
        }
    }
    /* [["a", "bc"], ["def"], ["", "g"]] */
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.nested_str", MATTN_GGUF_ARRAY, &a), MATTN_OK);
    const char *ws[3][2] = {{"a", "bc"}, {"def", NULL}, {"", "g"}};
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(mattn_gguf_arr_elem(f, a, i, &e), MATTN_OK);
        assert_int_equal(e.elem, MATTN_GGUF_STRING);
        assert_int_equal(e.n, ws[i][1] ? 2 : 1);
        for (uint64_t j = 0; j < e.n; j++) {
            assert_int_equal(mattn_gguf_arr_str(f, &e, j, &s), MATTN_OK);   /* a walk: no index inside */
            assert_true(mattn_gguf_str_eq(s, ws[i][j]));
        }
    }
    /* [[[1], [2, 3]], [[4]]]: element [0][1][1] = 3 and [1][0][0] = 4 */
    assert_int_equal(mattn_gguf_get_arr(f, "test.arr.deep", MATTN_GGUF_ARRAY, &a), MATTN_OK);
    assert_int_equal(mattn_gguf_arr_elem(f, a, 0, &e), MATTN_OK);
    assert_int_equal(e.elem, MATTN_GGUF_ARRAY);
    assert_null(e.index);
    assert_int_equal(mattn_gguf_arr_elem(f, &e, 1, &e2), MATTN_OK);
    assert_int_equal(e2.n, 2);
    assert_int_equal(mattn_gguf_arr_i64(f, &e2, 1, &v), MATTN_OK);
    assert_int_equal(v, 3);
    assert_int_equal(mattn_gguf_arr_elem(f, a, 1, &e), MATTN_OK);
    assert_int_equal(mattn_gguf_arr_elem(f, &e, 0, &e3), MATTN_OK);
    assert_int_equal(mattn_gguf_arr_i64(f, &e3, 0, &v), MATTN_OK);
    assert_int_equal(v, 4);
    assert_int_equal(mattn_gguf_arr_elem(f, &e, 1, &e3), MATTN_ERR_INVALID_ARG);
    expect_msg("metadata 'test.arr.deep'[1]: index 1 out of range (1 elements)");
}

static void test_metadata(void **state) {
    (void)state;
    mattn_gguf_file *f = open_ok(META);
    assert_int_equal(mattn_gguf_version(f), 3);
    assert_int_equal(mattn_gguf_alignment(f), 64);
    assert_int_equal(mattn_gguf_data_offset(f) % 64, 0);
    assert_string_equal(mattn_gguf_path(f), META);
    /* general.architecture, 16 scalars, 12 arrays, 3 nested, general.name, general.alignment */
    assert_int_equal(mattn_gguf_n_kv(f), 34);
    assert_true(mattn_gguf_str_eq(mattn_gguf_kv_at(f, 0)->key, "general.architecture"));
    for (int64_t i = 0; i < mattn_gguf_n_kv(f); i++) {
        const mattn_gguf_value *v = mattn_gguf_kv_at(f, i);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)v->key.len, v->key.ptr);
        assert_ptr_equal(mattn_gguf_find_kv(f, key), v);
        assert_int_equal(v->at, -1);
    }
    assert_null(mattn_gguf_kv_at(f, 34));
    assert_null(mattn_gguf_find_kv(f, "test"));
    check_scalars(f);
    check_arrays(f);
    check_nested(f);
    /* two F32 tensors, the second at the next 64-byte boundary */
    assert_int_equal(mattn_gguf_n_tensors(f), 2);
    const mattn_gguf_tensor *a = mattn_gguf_tensor_at(f, 0), *b = mattn_gguf_tensor_at(f, 1);
    assert_true(mattn_gguf_str_eq(a->name, "a") && mattn_gguf_str_eq(b->name, "b"));
    assert_true(a->n_dims == 1 && a->ne[0] == 5 && a->ne[1] == 1 && a->n_elements == 5 && a->nbytes == 20);
    assert_true(b->n_dims == 2 && b->ne[0] == 3 && b->ne[1] == 2 && b->n_elements == 6 && b->offset == 64);
    float x[6];
    assert_int_equal(mattn_gguf_dequant_ref(b->type, b->data, x, 6), MATTN_OK);
    for (int i = 0; i < 6; i++) assert_true(x[i] == (float)i - 2.5f);
    mattn_gguf_close(f);
    mattn_gguf_close(NULL);
}

static void test_v2(void **state) {
    (void)state;
    mattn_gguf_file *f = open_ok(V2);
    assert_int_equal(mattn_gguf_version(f), 2);
    assert_int_equal(mattn_gguf_alignment(f), 32);
    uint32_t u;
    mattn_gguf_str s;
    assert_int_equal(mattn_gguf_get_u32(f, "test.u32", &u), MATTN_OK);
    assert_int_equal(u, 42);
    assert_int_equal(mattn_gguf_get_str(f, "test.str", &s), MATTN_OK);
    assert_true(mattn_gguf_str_eq(s, "version two"));
    const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, "h");
    assert_non_null(t);
    assert_int_equal(t->type, MATTN_GGML_F16);
    float x[3];
    assert_int_equal(mattn_gguf_dequant_ref(t->type, t->data, x, 3), MATTN_OK);
    assert_true(x[0] == 1.0f && x[1] == -2.0f && x[2] == 0.5f);
    mattn_gguf_close(f);
}

// ----------------------------------------------------------------------------
// the tensor fixture

static void test_tensors(void **state) {
    (void)state;
    mattn_gguf_file *f = open_ok(TENSORS);
    mattn_st_file *ex = NULL;
    assert_int_equal(mattn_st_open(EXPECTED, &ex, errbuf, sizeof errbuf), MATTN_OK);
    static const struct { const char *name; mattn_ggml_type type; int nd; int64_t ne[4]; } TABLE[] = {
        {"f32.vec", MATTN_GGML_F32, 1, {7, 1, 1, 1}},     {"f16.mat", MATTN_GGML_F16, 2, {5, 3, 1, 1}},
        {"q4_0.mat", MATTN_GGML_Q4_0, 2, {64, 3, 1, 1}},  {"q4_1.mat", MATTN_GGML_Q4_1, 2, {64, 3, 1, 1}},
        {"q8_0.mat", MATTN_GGML_Q8_0, 2, {64, 3, 1, 1}},  {"bf16.t3", MATTN_GGML_BF16, 3, {3, 2, 4, 1}},
        {"f32.t4", MATTN_GGML_F32, 4, {2, 1, 3, 2}},
    };
    const int n = (int)(sizeof TABLE / sizeof TABLE[0]);
    assert_int_equal(mattn_gguf_n_tensors(f), n);
    assert_int_equal(mattn_st_count(ex), n);
    const mattn_gguf_tensor *t0 = mattn_gguf_tensor_at(f, 0);
    const unsigned char *base = (const unsigned char *)t0->data - t0->offset;   /* the data section */
    uint64_t prev_end = 0;
    for (int i = 0; i < n; i++) {
        const mattn_gguf_tensor *t = mattn_gguf_tensor_at(f, i);
        assert_true(mattn_gguf_str_eq(t->name, TABLE[i].name));
        assert_ptr_equal(mattn_gguf_find_tensor(f, TABLE[i].name), t);
        assert_int_equal(t->type, TABLE[i].type);
        assert_int_equal(t->n_dims, TABLE[i].nd);
        int64_t ne = 1;
        for (int d = 0; d < 4; d++) {
            assert_int_equal(t->ne[d], TABLE[i].ne[d]);
            ne *= t->ne[d];
        }
        assert_int_equal(t->n_elements, ne);
        assert_int_equal(t->nbytes, (size_t)(ne / mattn_gguf_block_size(t->type)) * mattn_gguf_block_bytes(t->type));
        assert_int_equal(t->nbytes, mattn_gguf_nbytes(t->type, ne));
        assert_int_equal(t->offset % 32, 0);
        assert_true(t->offset >= prev_end);
        prev_end = t->offset + t->nbytes;
        assert_ptr_equal(t->data, base + t->offset);
        assert_int_equal(((uintptr_t)t->data) % 32, 0);   /* mapped: page-aligned + aligned offsets */
        /* the expected values: same name, numpy's shape (ne reversed) */
        const mattn_st_tensor *et = mattn_st_find(ex, TABLE[i].name);
        assert_non_null(et);
        assert_int_equal(et->numel, ne);
        assert_int_equal(et->ndim, t->n_dims);
        for (int d = 0; d < t->n_dims; d++) assert_int_equal(et->shape[d], t->ne[t->n_dims - 1 - d]);
        float *want = falloc((size_t)ne), *got = falloc((size_t)ne);
        mattn_st_to_f32(et, want);
        assert_int_equal(mattn_gguf_dequant_ref(t->type, t->data, got, ne), MATTN_OK);
        /* bit for bit, NaNs and signed zeros included */
        for (int64_t k = 0; k < ne; k++)
            if (memcmp(&got[k], &want[k], 4) != 0)
                fail_msg("%s[%lld]: %.9g (0x%08x) vs the gguf package's %.9g", TABLE[i].name, (long long)k,
                         (double)got[k], ((const uint32_t *)got)[k], (double)want[k]);
        free(want);
        free(got);
    }
    assert_null(mattn_gguf_tensor_at(f, n));
    assert_null(mattn_gguf_tensor_at(f, -1));
    assert_null(mattn_gguf_find_tensor(f, "f32"));
    assert_null(mattn_gguf_find_tensor(f, "f32.vec2"));
    /* the F16 specials as values: 1, -2, 65504, 2^-24, -0, +inf, -inf, NaN */
    const mattn_gguf_tensor *h = mattn_gguf_find_tensor(f, "f16.mat");
    float x[15];
    assert_int_equal(mattn_gguf_dequant_ref(h->type, h->data, x, 15), MATTN_OK);
    assert_true(x[0] == 1.0f && x[1] == -2.0f && x[2] == 65504.0f && x[3] == ldexpf(1.0f, -24));
    assert_true(x[4] == 0.0f && signbit(x[4]) && isinf(x[5]) && x[5] > 0 && isinf(x[6]) && x[6] < 0 && isnan(x[7]));
    mattn_st_close(ex);
    mattn_gguf_close(f);
}

static void test_types(void **state) {
    (void)state;
    assert_string_equal(mattn_gguf_type_name(MATTN_GGML_Q4_1), "Q4_1");
    assert_string_equal(mattn_gguf_type_name(12), "Q4_K");
    assert_string_equal(mattn_gguf_type_name(4), "?");   /* Q4_2, removed from ggml */
    assert_string_equal(mattn_gguf_type_name(1000), "?");
    static const struct { uint32_t t; int64_t bs; size_t bb; } SIZES[] = {
        {MATTN_GGML_F32, 1, 4}, {MATTN_GGML_F16, 1, 2}, {MATTN_GGML_Q4_0, 32, 18},
        {MATTN_GGML_Q4_1, 32, 20}, {MATTN_GGML_Q8_0, 32, 34}, {MATTN_GGML_BF16, 1, 2},
    };
    for (int i = 0; i < 6; i++) {
        assert_true(mattn_gguf_type_supported(SIZES[i].t));
        assert_int_equal(mattn_gguf_block_size(SIZES[i].t), SIZES[i].bs);
        assert_int_equal(mattn_gguf_block_bytes(SIZES[i].t), SIZES[i].bb);
        assert_int_equal(mattn_gguf_nbytes(SIZES[i].t, 64), 64 / SIZES[i].bs * SIZES[i].bb);
    }
    assert_false(mattn_gguf_type_supported(12));
    assert_int_equal(mattn_gguf_block_size(12), 0);
    assert_int_equal(mattn_gguf_nbytes(12, 256), 0);
    assert_string_equal(mattn_gguf_vtype_name(MATTN_GGUF_FLOAT64), "FLOAT64");
    assert_string_equal(mattn_gguf_vtype_name(13), "?");
    unsigned char blk[34] = {0};
    float y[32];
    assert_int_equal(mattn_gguf_dequant_ref((mattn_ggml_type)12, blk, y, 32), MATTN_ERR_INVALID_ARG);
    expect_msg("unsupported type 12 (Q4_K)");
    assert_int_equal(mattn_gguf_dequant_ref(MATTN_GGML_Q8_0, blk, y, 31), MATTN_ERR_INVALID_ARG);
    expect_msg("31 elements of Q8_0 (a multiple of 32)");
    assert_int_equal(mattn_gguf_dequant_ref(MATTN_GGML_Q8_0, NULL, NULL, 0), MATTN_OK);
    /* one Q4_0 block by hand: d = 0.5, byte j = (j << 4) | (15 - j) */
    blk[0] = 0x00, blk[1] = 0x38;   /* f16 0.5 */
    for (int j = 0; j < 16; j++) blk[2 + j] = (unsigned char)(j << 4 | (15 - j));
    assert_int_equal(mattn_gguf_dequant_ref(MATTN_GGML_Q4_0, blk, y, 32), MATTN_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 0.5f * (float)(15 - j - 8));   /* low nibbles: elements 0..15 */
        assert_true(y[j + 16] == 0.5f * (float)(j - 8));   /* high nibbles: 16..31 */
    }
}

// ----------------------------------------------------------------------------
// malformed files

/* Every prefix of a fixture: MATTN_ERR_FORMAT, unless it still holds every
 * tensor's bytes (only the last tensor's alignment padding is cut), which
 * opens.  From memory (exact-size heap copies) and from files. */
static void truncations(const char *fixture) {
    size_t n;
    unsigned char *all = read_all(fixture, &n);
    mattn_gguf_file *f = open_ok(fixture);
    size_t need = mattn_gguf_data_offset(f);
    for (int64_t i = 0; i < mattn_gguf_n_tensors(f); i++) {
        const mattn_gguf_tensor *t = mattn_gguf_tensor_at(f, i);
        const size_t end = mattn_gguf_data_offset(f) + t->offset + t->nbytes;
        if (end > need) need = end;
    }
    const int64_t nt = mattn_gguf_n_tensors(f);
    mattn_gguf_close(f);
    int ok = 0;
    for (size_t len = 0; len < n; len++) {
        unsigned char *copy = malloc(len ? len : 1);
        memcpy(copy, all, len);
        char err[MATTN_ERRMSG_LEN] = "";
        mattn_gguf_file *g = (mattn_gguf_file *)(uintptr_t)1;
        mattn_status st = mattn_gguf_open_memory(copy, len, fixture, &g, err, sizeof err);
        const mattn_status want = len >= need ? MATTN_OK : MATTN_ERR_FORMAT;
        if (st != want)
            fail_msg("%s cut at %zu of %zu bytes: status %d (%s), wanted %d", fixture, len, n, st, err, want);
        if (st == MATTN_OK) {
            assert_int_equal(mattn_gguf_n_tensors(g), nt);
            mattn_gguf_close(g);
            ok++;
        } else {
            assert_null(g);
            assert_true(err[0] != 0);
        }
        if (len % 7 == 0 || st == MATTN_OK) {   /* and through a file, a subset (the slow path) */
            const char *p = tmpdir_path("trunc.gguf");
            FILE *fp = fopen(p, "wb");
            fwrite(all, 1, len, fp);
            fclose(fp);
            assert_int_equal(mattn_gguf_open(p, &g, err, sizeof err), want);
            mattn_gguf_close(g);
        }
        free(copy);
    }
    free(all);
    print_message("  %s: %zu truncations, %d of them (in the last tensor's padding) open\n", fixture, n, ok);
}

static void test_truncation(void **state) {
    (void)state;
    truncations(META);
    truncations(V2);
    truncations(TENSORS);
}

/* One F32 tensor of 4 elements after one metadata pair: opens. */
// ----------------------------------------------------------------------------
// every allocation failing in turn (tests/test_faults.c's pattern)

/* open, read everything the API offers, close */
static mattn_status op_open(void *ctx) {
    const char *path = ctx;
    mattn_gguf_file *f = NULL;
    char err[MATTN_ERRMSG_LEN];
    mattn_status st = mattn_gguf_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) {
        assert_null(f);
        if (st == MATTN_ERR_NOMEM) assert_non_null(strstr(err, "out of memory"));
        return st;
    }
    for (int64_t i = 0; i < mattn_gguf_n_kv(f); i++) {
        const mattn_gguf_value *v = mattn_gguf_kv_at(f, i);
        if (v->type != MATTN_GGUF_ARRAY) continue;
        for (uint64_t j = 0; j < v->n; j++) {
            mattn_gguf_value e;
            assert_int_equal(mattn_gguf_arr_elem(f, v, j, &e), MATTN_OK);
        }
    }
    for (int64_t i = 0; i < mattn_gguf_n_tensors(f); i++) {
        const mattn_gguf_tensor *t = mattn_gguf_tensor_at(f, i);
        float *x = falloc((size_t)t->n_elements);
        assert_int_equal(mattn_gguf_dequant_ref(t->type, t->data, x, t->n_elements), MATTN_OK);
        free(x);
    }
    mattn_gguf_close(f);
    return MATTN_OK;
}

static void inject(const char *what, mattn_status (*op)(void *), void *ctx) {
    const long live0 = mattn_alloc_live();
    mattn_fault_alloc(LONG_MAX, 0); /* count only */
    assert_int_equal(op(ctx), MATTN_OK);
    const long total = mattn_alloc_count();
    mattn_fault_alloc(0, 0);
    assert_int_equal(mattn_alloc_live(), live0);
    int nomem = 0;
    for (int persistent = 0; persistent <= 1; persistent++)
        for (long n = 1; n <= total; n++) {
            mattn_fault_alloc(n, persistent);
            mattn_status st = op(ctx);
            mattn_fault_alloc(0, 0);
            if (st != MATTN_OK && st != MATTN_ERR_NOMEM)
                fail_msg("%s: allocation %ld of %ld failing (%s) gave status %d", what, n, total,
                         persistent ? "from then on" : "once", st);
            if (mattn_alloc_live() != live0)
                fail_msg("%s: allocation %ld of %ld failing: %ld allocations leaked", what, n, total,
                         mattn_alloc_live() - live0);
            nomem += st == MATTN_ERR_NOMEM;
        }
    print_message("  %-34s %4ld allocations, %4d of %4ld failing runs returned MATTN_ERR_NOMEM\n", what, total, nomem,
                  2 * total);
    assert_int_equal(nomem, 2 * total);   /* the reader needs every allocation it makes */
}

static void test_faults(void **state) {
    (void)state;
    inject("open " META, op_open, (void *)META);
    inject("open " TENSORS, op_open, (void *)TENSORS);
    inject("open " V2, op_open, (void *)V2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_tensors),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
