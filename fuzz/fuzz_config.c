/*
 * fuzz_config.c — the JSON config loaders (mattn_config_from_json for a
 * layer, mattn_lm_config_from_json for a model).  An accepted config must be
 * valid and survive a round trip: to_json then from_json gives the same JSON.
 */
#include <string.h>

#include "fuzz_util.h"
#include "metaattn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    mattn_config c;
    if (mattn_config_from_json(s, &c) == MATTN_OK) {
        FUZZ_CHECK(mattn_config_validate(&c) == MATTN_OK);
        char *a = NULL, *b = NULL;
        mattn_config c2;
        FUZZ_CHECK(mattn_config_to_json(&c, &a) == MATTN_OK);
        FUZZ_CHECK(mattn_config_from_json(a, &c2) == MATTN_OK);
        FUZZ_CHECK(mattn_config_to_json(&c2, &b) == MATTN_OK);
        FUZZ_CHECK(strcmp(a, b) == 0);
        mattn_free(a);
        mattn_free(b);
    }
    mattn_lm_config m;
    if (mattn_lm_config_from_json(s, &m) == MATTN_OK) {
        FUZZ_CHECK(mattn_lm_config_validate(&m) == MATTN_OK);
        char *a = NULL, *b = NULL;
        mattn_lm_config m2;
        FUZZ_CHECK(mattn_lm_config_to_json(&m, &a) == MATTN_OK);
        FUZZ_CHECK(mattn_lm_config_from_json(a, &m2) == MATTN_OK);
        FUZZ_CHECK(mattn_lm_config_to_json(&m2, &b) == MATTN_OK);
        FUZZ_CHECK(strcmp(a, b) == 0);
        mattn_free(a);
        mattn_free(b);
    }
    free(s);
    return 0;
}
