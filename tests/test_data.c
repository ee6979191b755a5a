/*
 * test_data.c — the byte corpus: record mode (windows start at record
 * starts, the split falls on a record boundary, bad lengths are refused
 * naming the value) and that leaving it restores the byte split.
 */
#include "test_util.h"

static void write_records(const char *path, int R, int L) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int r = 0; r < R; r++)
        for (int i = 0; i < L; i++) fputc(i == 0 ? 'A' + r : '0' + i % 10, f);
    fclose(f);
}

static void test_records(void **st) {
    (void)st;
    const char *path = tmpdir_path("records.txt");
    write_records(path, 10, 12);
    mattn_data *d;
    assert_int_equal(mattn_data_load(path, 0.2, &d), MATTN_OK);
    assert_int_equal(mattn_data_set_records(d, 12), MATTN_OK);
    assert_int_equal(mattn_data_size(d, MATTN_SPLIT_TRAIN), 8 * 12);
    assert_int_equal(mattn_data_size(d, MATTN_SPLIT_VAL), 2 * 12);
    int32_t idx[4 * 11], tgt[4 * 11];
    for (uint64_t step = 0; step < 20; step++) {
        assert_int_equal(mattn_data_batch(d, MATTN_SPLIT_TRAIN, 3, step, 4, 11, idx, tgt), MATTN_OK);
        for (int b = 0; b < 4; b++) {
            assert_true(idx[b * 11] >= 'A' && idx[b * 11] < 'A' + 8); /* a training record's first byte */
            assert_int_equal(tgt[b * 11 + 10], '0' + 11 % 10);        /* ... and its last */
        }
    }
    assert_int_equal(mattn_data_window(d, MATTN_SPLIT_VAL, 0, 2, 11, idx, tgt), MATTN_OK);
    assert_int_equal(idx[0], 'A' + 8);
    assert_int_equal(mattn_data_window(d, MATTN_SPLIT_VAL, 1, 2, 11, idx, tgt), MATTN_OK);
    assert_int_equal(idx[0], 'A' + 9);
    /* context + 1 beyond a record */
    assert_int_equal(mattn_data_batch(d, MATTN_SPLIT_TRAIN, 3, 0, 1, 12, idx, tgt), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "record length 12"));
    /* a size that is not a multiple, a length that leaves no validation */
    assert_int_equal(mattn_data_set_records(d, 7), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "not a multiple of 7"));
    assert_int_equal(mattn_data_set_records(d, 120), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_data_set_records(d, -1), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "-1"));
    /* back to windows anywhere: the byte split of mattn_data_load */
    assert_int_equal(mattn_data_set_records(d, 0), MATTN_OK);
    assert_int_equal(mattn_data_size(d, MATTN_SPLIT_VAL), (size_t)(120 * 0.2));
    mattn_data_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_records)};
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
