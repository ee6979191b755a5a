/*
 * fuzz_safetensors.c — the safetensors reader (header length, JSON, dtypes,
 * shapes, offsets, overlaps, trailing bytes) and, behind it, the model,
 * layer and optimizer loaders that check names, shapes and values.  A file
 * the reader accepts must be internally consistent: every tensor's bytes lie
 * inside the file and convert to float without faults.
 */
#include <string.h>

#include "fuzz_util.h"
#include "io/io.h"

static mattn_model *g_model;
static mattn_layer *g_layer;
static mattn_adamw *g_opt;

/* Small on purpose (libFuzzer's cost grows with the input): the seeds
 * model/optim/layer.safetensors in fuzz/seeds/safetensors/ are this model's,
 * written by running the target with FUZZ_WRITE_SEEDS=DIR. */
static void setup(void) {
    mattn_lm_config c = mattn_lm_config_default();
    c.vocab_size = 16;
    c.n_layers = 1;
    c.max_seq_len = 8;
    c.ffn_multiplier = 1;
    c.position_norm = 1;
    c.attn.d_model = 4;
    c.attn.n_heads = 1;
    c.attn.window_size = 2;
    c.attn.controller_hidden = 2;
    FUZZ_CHECK(mattn_model_init(&c, &g_model) == MATTN_OK);
    mattn_adamw_config oc = mattn_adamw_config_default();
    FUZZ_CHECK(mattn_adamw_init(g_model, &oc, &g_opt) == MATTN_OK);
    FUZZ_CHECK(mattn_layer_init(&c.attn, NULL, &g_layer) == MATTN_OK);
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        FUZZ_CHECK(mattn_model_save(g_model, p) == MATTN_OK);
        snprintf(p, sizeof p, "%s/optim.safetensors", dir);
        FUZZ_CHECK(mattn_adamw_save(g_opt, g_model, p) == MATTN_OK);
        snprintf(p, sizeof p, "%s/layer.safetensors", dir);
        FUZZ_CHECK(mattn_layer_save(g_layer, p) == MATTN_OK);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model) setup();
    char path[64], err[512];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    FUZZ_CHECK((st == MATTN_OK) == (f != NULL));
    if (st != MATTN_OK) FUZZ_CHECK(err[0] != 0 && strlen(err) < sizeof err);
    const uint8_t *lo = NULL, *hi = NULL;
    for (int i = 0; f && i < mattn_st_count(f); i++) {
        const mattn_st_tensor *t = mattn_st_get(f, i);
        FUZZ_CHECK(t && t->name && mattn_st_find(f, t->name) == t);
        FUZZ_CHECK(t->nbytes == (size_t)t->numel * mattn_st_dtype_size(t->dtype));
        FUZZ_CHECK(t->nbytes <= size);
        if (t->nbytes) {
            const uint8_t *b = t->data;
            lo = !lo || b < lo ? b : lo;
            hi = !hi || b + t->nbytes > hi ? b + t->nbytes : hi;
        }
        if (t->numel <= 4096) {
            float buf[4096];
            mattn_st_to_f32(t, buf);
        }
    }
    if (f) {
        (void)mattn_st_meta(f, "config");
        FUZZ_CHECK(!lo || (size_t)(hi - lo) <= size);
        mattn_st_close(f);
    }
    mattn_lm_config cfg;
    (void)mattn_model_file_config(path, &cfg);
    (void)mattn_model_load(g_model, path);
    (void)mattn_layer_load(g_layer, path);
    (void)mattn_adamw_load(g_opt, g_model, path);
    close(fd);
    return 0;
}
