/*
 * fuzz_tokenizer.c — the byte-level BPE tokenizer on hostile text: the input's
 * first byte chooses the tokenizer and the mode, the rest is the text.
 *   bit 0      MATTN_TOK_SPECIAL (chat mode: special tokens' text is their id)
 *   bits 1-2   0: tok_tiny's vocabulary (tests/gguf_build.h: merge order and
 *              ties, a merge result that is no token, two bytes without a
 *              token, special and user-defined tokens) with pre "smollm";
 *              1: the same with pre "gpt-2"; 2 and 3: the real SmolLM2
 *              vocabulary (49 152 tokens, 48 900 merges) when
 *              $METAATTN_GGUF_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf
 *              is there, else tok_tiny again.
 *   bit 3      also the counting and short-buffer checks below (two encodes
 *              and a decode more)
 * The small vocabularies are built once, in memory, from GGUF bytes written
 * here (no file to find); the real one is loaded once.
 *
 * What must hold, beyond no crash and no sanitizer report:
 *  - at most one id per byte, every id in range; encode counts (ids NULL)
 *    what it writes, and a buffer one short gives MATTN_ERR_INVALID_ARG, the
 *    count needed and the same first ids (bit 3: encoding is most of the
 *    time, so these two more encodes run for an eighth of the inputs);
 *  - without chat mode no control token comes out of the text;
 *  - round trip: decode(encode(text)) with special text is the text minus
 *    the bytes that have no token (those are dropped, tokenizer.h), so the
 *    text itself whenever all its bytes have tokens;
 *  - decode agrees with the pieces one by one, counts what it writes, and
 *    a short buffer gives its prefix and MATTN_ERR_INVALID_ARG (bit 3).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "gguf_build.h"
#include "io/io.h"
#include "llama/tokenizer.h"

typedef struct fuzz_tok {
    mattn_tok *t;
    int has_byte[256];  /* the byte has a token of its own (else encode drops it) */
} fuzz_tok;

static fuzz_tok g_tok[3];
static int g_ready;

static mattn_tok *tiny(const char *pre) {
    gb_vocab v;
    gb_vocab_tiny(&v);
    gguf_build g = {0};
    gb_header(&g, 3, 0, 8);
    gb_kv_str(&g, "general.architecture", "llama");
    gb_tokenizer_kv(&g, "gpt2", pre, &v, 1, 2);
    char err[512];
    mattn_gguf_file *f = NULL;
    mattn_tok *t = NULL;
    FUZZ_CHECK(mattn_gguf_open_memory(g.b, g.n, "tiny.gguf", &f, err, sizeof err) == MATTN_OK);
    FUZZ_CHECK(mattn_tok_init_gguf(f, &t) == MATTN_OK);
    mattn_gguf_close(f);   /* the tokenizer keeps no pointer into the file */
    gb_free(&g);
    return t;
}

static mattn_tok *real(void) {
    const char *path = getenv("METAATTN_GGUF_MODEL");
    if (!path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    char err[512];
    mattn_gguf_file *f = NULL;
    mattn_tok *t = NULL;
    if (mattn_gguf_open(path, &f, err, sizeof err) != MATTN_OK) return NULL;
    if (mattn_tok_init_gguf(f, &t) != MATTN_OK) t = NULL;
    mattn_gguf_close(f);
    if (t) fprintf(stderr, "fuzz_tokenizer: the vocabulary of %s too (%d tokens)\n", path, mattn_tok_n_vocab(t));
    return t;
}

static void setup(void) {
    g_tok[0].t = tiny("smollm");
    g_tok[1].t = tiny("gpt-2");
    g_tok[2].t = real();
    for (int k = 0; k < 3; k++) {
        if (!g_tok[k].t) continue;
        for (int b = 0; b < 256; b++) {
            const char c = (char)b;
            int32_t id;
            size_t n = 0;
            FUZZ_CHECK(mattn_tok_encode(g_tok[k].t, &c, 1, 0, &id, 1, &n) == MATTN_OK);
            g_tok[k].has_byte[b] = n == 1;
        }
    }
    g_ready = 1;
}

/* decode(ids) by pieces equals decode in one call; a short buffer. */
static void check_decode(const mattn_tok *t, const int32_t *ids, size_t n, int flags, const char *out, size_t total,
                         int short_buffer) {
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        FUZZ_CHECK(mattn_tok_piece(t, ids[i], flags, &p, &len) == MATTN_OK);
        FUZZ_CHECK(len <= total - at && memcmp(out + at, p, len) == 0);
        at += len;
    }
    FUZZ_CHECK(at == total);
    if (total == 0 || !short_buffer) return;
    char *part = malloc(total);
    FUZZ_CHECK(part != NULL);
    size_t need = 0;
    FUZZ_CHECK(mattn_tok_decode(t, ids, n, flags, part, total / 2, &need) == MATTN_ERR_INVALID_ARG);
    FUZZ_CHECK(need == total && memcmp(part, out, total / 2) == 0);
    free(part);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    if (size < 1) return 0;
    const int flags = data[0] & 1 ? MATTN_TOK_SPECIAL : 0;
    const fuzz_tok *ft = &g_tok[(data[0] >> 1 & 3) >= 2 && g_tok[2].t ? 2 : (data[0] >> 1 & 1)];
    const mattn_tok *t = ft->t;
    const int short_buffer = data[0] & 8;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;

    size_t n = 0, n2 = 0;
    int32_t *ids = malloc(sizeof *ids * (len + 1));
    FUZZ_CHECK(ids != NULL);
    FUZZ_CHECK(mattn_tok_encode(t, text, len, flags, ids, len, &n) == MATTN_OK);
    FUZZ_CHECK(n <= len);
    if (short_buffer) FUZZ_CHECK(mattn_tok_encode(t, text, len, flags, NULL, 0, &n2) == MATTN_OK && n2 == n);
    const int32_t V = mattn_tok_n_vocab(t);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < V);
        if (!flags) FUZZ_CHECK(mattn_tok_token_type(t, ids[i]) != MATTN_TOK_CONTROL);
    }
    if (n > 0 && short_buffer) {   /* one short: the first n - 1 ids, the count, a refusal */
        int32_t *few = malloc(sizeof *few * n);
        FUZZ_CHECK(few != NULL);
        FUZZ_CHECK(mattn_tok_encode(t, text, len, flags, few, n - 1, &n2) == MATTN_ERR_INVALID_ARG && n2 == n);
        FUZZ_CHECK(memcmp(few, ids, sizeof *ids * (n - 1)) == 0);
        free(few);
    }

    size_t total = 0, total2 = 0;
    FUZZ_CHECK(mattn_tok_decode(t, ids, n, MATTN_TOK_SPECIAL, NULL, 0, &total) == MATTN_OK);
    char *out = malloc(total + 1);
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(mattn_tok_decode(t, ids, n, MATTN_TOK_SPECIAL, out, total + 1, &total2) == MATTN_OK && total2 == total);
    FUZZ_CHECK(out[total] == '\0');
    /* the round trip: the text without the bytes that have no token */
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (!ft->has_byte[(unsigned char)text[i]]) continue;
        FUZZ_CHECK(k < total && out[k] == text[i]);
        k++;
    }
    FUZZ_CHECK(k == total);
    check_decode(t, ids, n, MATTN_TOK_SPECIAL, out, total, short_buffer);
    free(out);
    free(ids);
    return 0;
}
