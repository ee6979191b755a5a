/*
 * test_safetensors.c — writer/reader round trip, and the reader's refusal of
 * every kind of malformed file (each with the message that names the fault);
 * the public wrapper (mattn_tensors_*) over both.
 */
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

static char dir[64];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Write raw bytes: 8-byte length, header, data. */
static void write_raw(const char *path, const char *header, uint64_t hlen_override,
                      const void *data, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint64_t hl = hlen_override ? hlen_override : strlen(header);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    if (data_len) fwrite(data, 1, data_len, fp);
    fclose(fp);
}

static void test_round_trip(void **state) {
    (void)state;
    char p[128];
    path_in(p, sizeof p, "rt.safetensors");
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    uint8_t m[3] = {1, 0, 1};
    double d[2] = {0.25, -1e300};
    int64_t sa[2] = {2, 3}, sm[1] = {3}, sd[1] = {2}, sz[2] = {0, 4};
    mattn_st_entry e[4] = {
        {"a", MATTN_ST_F32, 2, sa, a},
        {"mask \"q\"", MATTN_ST_BOOL, 1, sm, m},
        {"d", MATTN_ST_F64, 1, sd, d},
        {"empty", MATTN_ST_F32, 2, sz, NULL},
    };
    const char *meta[] = {"config", "{\"d_model\": 16}\n", "format", "pt"};
    char err[256] = "";
    assert_int_equal(mattn_st_write(p, e, 4, meta, 2, err, sizeof err), MATTN_OK);

    /* data block starts 8-byte aligned */
    FILE *fp = fopen(p, "rb");
    unsigned char lb[8];
    assert_int_equal(fread(lb, 1, 8, fp), 8);
    fclose(fp);
    assert_int_equal(lb[0] % 8, 0);

    mattn_st_file *f = NULL;
    assert_int_equal(mattn_st_open(p, &f, err, sizeof err), MATTN_OK);
    assert_int_equal(mattn_st_count(f), 4);
    assert_string_equal(mattn_st_meta(f, "config"), "{\"d_model\": 16}\n");
    assert_string_equal(mattn_st_meta(f, "format"), "pt");
    assert_null(mattn_st_meta(f, "nope"));
    const mattn_st_tensor *t = mattn_st_find(f, "a");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nbytes, 24);
    float got[6];
    mattn_st_to_f32(t, got);
    assert_memory_equal(got, a, sizeof a);
    t = mattn_st_find(f, "mask \"q\"");
    assert_non_null(t);
    assert_int_equal(t->dtype, MATTN_ST_BOOL);
    mattn_st_to_f32(t, got);
    assert_true(got[0] == 1 && got[1] == 0 && got[2] == 1);
    t = mattn_st_find(f, "d");
    mattn_st_to_f32(t, got);
    assert_true(got[0] == 0.25f && isinf(got[1]) && got[1] < 0);
    t = mattn_st_find(f, "empty");
    assert_int_equal(t->numel, 0);
    assert_null(mattn_st_find(f, "missing"));
    assert_null(mattn_st_get(f, 4));
    mattn_st_close(f);

    /* no temp file left behind */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void test_half_conversions(void **state) {
    (void)state;
    char p[128];
    path_in(p, sizeof p, "half.safetensors");
    /* F16: 1.0, -2.0, 65504, smallest subnormal, inf; BF16: 1.0, -3.0 */
    uint16_t h[5] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00};
    uint16_t bf[2] = {0x3F80, 0xC040};
    int64_t s5[1] = {5}, s2[1] = {2};
    mattn_st_entry e[2] = {{"h", MATTN_ST_F16, 1, s5, h}, {"b", MATTN_ST_BF16, 1, s2, bf}};
    char err[256];
    assert_int_equal(mattn_st_write(p, e, 2, NULL, 0, err, sizeof err), MATTN_OK);
    mattn_st_file *f;
    assert_int_equal(mattn_st_open(p, &f, err, sizeof err), MATTN_OK);
    float v[5];
    mattn_st_to_f32(mattn_st_find(f, "h"), v);
    assert_true(v[0] == 1.0f && v[1] == -2.0f && v[2] == 65504.0f);
    assert_true(v[3] == ldexpf(1.0f, -24));
    assert_true(isinf(v[4]));
    mattn_st_to_f32(mattn_st_find(f, "b"), v);
    assert_true(v[0] == 1.0f && v[1] == -3.0f);
    mattn_st_close(f);
}

static void test_writer_errors(void **state) {
    (void)state;
    char p[128], err[256];
    path_in(p, sizeof p, "dup.safetensors");
    float a[1] = {0};
    int64_t s[1] = {1};
    mattn_st_entry e[2] = {{"x", MATTN_ST_F32, 1, s, a}, {"x", MATTN_ST_F32, 1, s, a}};
    assert_int_equal(mattn_st_write(p, e, 2, NULL, 0, err, sizeof err), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "duplicate tensor name 'x'"));
    assert_int_not_equal(access(p, F_OK), 0);
    /* unwritable directory: error, nothing created */
    assert_int_equal(mattn_st_write("/nonexistent-dir/x.safetensors", e, 1, NULL, 0, err, sizeof err),
                     MATTN_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.safetensors"));
    /* a failed write leaves an existing file intact */
    path_in(p, sizeof p, "keep.safetensors");
    assert_int_equal(mattn_st_write(p, e, 1, NULL, 0, err, sizeof err), MATTN_OK);
    struct stat before, after;
    assert_int_equal(stat(p, &before), 0);
    assert_int_equal(mattn_st_write(p, e, 2, NULL, 0, err, sizeof err), MATTN_ERR_INVALID_ARG);
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(before.st_size, after.st_size);
}

/* Each malformed file is rejected with MATTN_ERR_FORMAT and a message
 * containing the given fragment. */
static void expect_bad(const char *header, uint64_t hlen, size_t data_len, const char *fragment) {
    char p[128], err[256] = "";
    path_in(p, sizeof p, "bad.safetensors");
    unsigned char data[64] = {0};
    write_raw(p, header, hlen, data, data_len);
    mattn_st_file *f = (mattn_st_file *)(uintptr_t)1;
    mattn_status st = mattn_st_open(p, &f, err, sizeof err);
    if (st != MATTN_ERR_FORMAT || !strstr(err, fragment))
        print_error("header %s: status %d, message '%s', wanted '%s'\n", header, st, err, fragment);
    assert_int_equal(st, MATTN_ERR_FORMAT);
    assert_null(f);
    assert_non_null(strstr(err, fragment));
}

static void test_malformed(void **state) {
    (void)state;
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    /* sanity: the good one opens */
    {
        char p[128], err[256];
        path_in(p, sizeof p, "good.safetensors");
        unsigned char data[8] = {0};
        write_raw(p, ok, 0, data, 8);
        mattn_st_file *f;
        assert_int_equal(mattn_st_open(p, &f, err, sizeof err), MATTN_OK);
        mattn_st_close(f);
    }
    expect_bad(ok, 1000, 8, "header length 1000");
    expect_bad(ok, (uint64_t)1 << 62, 8, "header length");
    expect_bad(ok, 0, 4, "file truncated?");
    expect_bad(ok, 0, 12, "4 trailing bytes");
    expect_bad("[1,2]", 0, 0, "does not start with '{'");
    expect_bad("{\"a\":", 0, 0, "not valid JSON");
    expect_bad("{\"a\":1}", 0, 0, "not a JSON object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 8, "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "unsupported dtype 'Q4'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, 4,
               "9 dimensions");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8,
               "overflows");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8, "need 12");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8, "begin <= end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "leave a hole");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 16, "duplicate key 'a'");
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__['k'] is not a string");
    expect_bad("{\"__metadata__\":[]}", 0, 0, "__metadata__ is not an object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[9,9]}}", 0, 0, "beyond the data block");
    expect_bad("{}xx", 0, 0, "junk after");

    /* too short, missing file, directory */
    char p[128], err[256];
    path_in(p, sizeof p, "short.safetensors");
    FILE *fp = fopen(p, "wb");
    fwrite("abc", 1, 3, fp);
    fclose(fp);
    mattn_st_file *f;
    assert_int_equal(mattn_st_open(p, &f, err, sizeof err), MATTN_ERR_FORMAT);
    assert_non_null(strstr(err, "too short"));
    assert_int_equal(mattn_st_open("/nonexistent/x.safetensors", &f, err, sizeof err), MATTN_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/x.safetensors"));
    assert_int_equal(mattn_st_open(dir, &f, err, sizeof err), MATTN_ERR_IO);
    assert_non_null(strstr(err, "not a regular file"));
}

/* Truncating a valid file at every length gives a clean error, never a crash. */
static void test_every_truncation(void **state) {
    (void)state;
    char p[128], q[128], err[256];
    path_in(p, sizeof p, "full.safetensors");
    path_in(q, sizeof q, "trunc.safetensors");
    float a[4] = {1, 2, 3, 4};
    int64_t s[1] = {4};
    mattn_st_entry e[2] = {{"a", MATTN_ST_F32, 1, s, a}, {"b", MATTN_ST_F32, 1, s, a}};
    const char *meta[] = {"k", "v"};
    assert_int_equal(mattn_st_write(p, e, 2, meta, 1, err, sizeof err), MATTN_OK);
    FILE *fp = fopen(p, "rb");
    unsigned char buf[512];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    for (size_t len = 0; len < n; len++) {
        fp = fopen(q, "wb");
        fwrite(buf, 1, len, fp);
        fclose(fp);
        mattn_st_file *f;
        assert_int_equal(mattn_st_open(q, &f, err, sizeof err), MATTN_ERR_FORMAT);
        assert_null(f);
    }
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mattn_st_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The public API: write float tensors with metadata, read them back with
 * their shapes and dtypes, refuse what is absent or of another size. */
static void test_public_tensors(void **state) {
    (void)state;
    char p[128];
    path_in(p, sizeof p, "pub.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6}, b[1] = {-0.5f};
    int64_t sa[2] = {2, 3}, sb[1] = {1};
    const mattn_tensors_entry e[2] = {{"a", 2, sa, a}, {"b", 1, sb, b}};
    const char *meta[] = {"k", "v \"quoted\""};
    assert_int_equal(mattn_tensors_write(p, e, 2, meta, 1), MATTN_OK);
    mattn_tensors *f = NULL;
    assert_int_equal(mattn_tensors_open(p, &f), MATTN_OK);
    assert_int_equal(mattn_tensors_count(f), 2);
    assert_string_equal(mattn_tensors_meta(f, "k"), "v \"quoted\"");
    assert_null(mattn_tensors_meta(f, "nope"));
    mattn_tensor_info info;
    assert_int_equal(mattn_tensors_find(f, "a", &info), MATTN_OK);
    assert_true(info.dtype == MATTN_DTYPE_F32 && info.ndim == 2 && info.shape[0] == 2 && info.shape[1] == 3 &&
                info.numel == 6 && !strcmp(info.name, "a"));
    assert_string_equal(mattn_dtype_name(info.dtype), "F32");
    assert_true(mattn_dtype_is_float(info.dtype) && !mattn_dtype_is_float(MATTN_DTYPE_BOOL));
    assert_int_equal(mattn_tensors_info(f, 1, &info), MATTN_OK);
    assert_string_equal(info.name, "b");
    assert_int_equal(mattn_tensors_info(f, 2, &info), MATTN_ERR_INVALID_ARG);
    float back[6];
    assert_int_equal(mattn_tensors_read_f32(f, "a", back, 6), MATTN_OK);
    assert_memory_equal(back, a, sizeof a);
    assert_int_equal(mattn_tensors_read_f32(f, "a", back, 5), MATTN_ERR_SHAPE);
    assert_non_null(strstr(mattn_last_error(), "tensor 'a' has 6 elements, the buffer 5"));
    assert_int_equal(mattn_tensors_find(f, "x", NULL), MATTN_ERR_NOT_FOUND);
    assert_non_null(strstr(mattn_last_error(), "pub.safetensors: no tensor named 'x'"));
    mattn_tensors_free(f);
    mattn_tensors_free(NULL);
    /* an integer tensor shows its dtype (a caller expecting floats refuses it) and converts */
    path_in(p, sizeof p, "int.safetensors");
    int32_t iv[2] = {0, 7};
    int64_t s2[1] = {2};
    mattn_st_entry ie = {"m", MATTN_ST_I32, 1, s2, iv};
    assert_int_equal(mattn_st_write(p, &ie, 1, NULL, 0, NULL, 0), MATTN_OK);
    assert_int_equal(mattn_tensors_open(p, &f), MATTN_OK);
    assert_int_equal(mattn_tensors_find(f, "m", &info), MATTN_OK);
    assert_true(info.dtype == MATTN_DTYPE_I32 && !mattn_dtype_is_float(info.dtype));
    assert_int_equal(mattn_tensors_read_f32(f, "m", back, 2), MATTN_OK);
    assert_true(back[0] == 0.0f && back[1] == 7.0f);
    mattn_tensors_free(f);
    /* errors name the path */
    assert_int_equal(mattn_tensors_open("/nonexistent-dir/x.safetensors", &f), MATTN_ERR_IO);
    assert_null(f);
    assert_non_null(strstr(mattn_last_error(), "/nonexistent-dir/x.safetensors"));
    const mattn_tensors_entry dup[2] = {{"a", 2, sa, a}, {"a", 1, sb, b}};
    assert_int_equal(mattn_tensors_write(p, dup, 2, NULL, 0), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "duplicate tensor name 'a'"));
    assert_int_equal(mattn_tensors_write("/nonexistent-dir/y.safetensors", e, 2, NULL, 0), MATTN_ERR_IO);
    assert_non_null(strstr(mattn_last_error(), "/nonexistent-dir/y.safetensors"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_public_tensors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
