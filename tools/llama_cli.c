/*
 * llama_cli.c — `metaattn generate` and `metaattn chat` on a pretrained
 * GGUF model (mattn_llama): the prompt prefilled in one call, then one
 * decode step per token, each token's bytes written to standard output as
 * it comes.  chat keeps the whole conversation in the cache and speaks the
 * model's ChatML template.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_generate_llama =
    "usage: metaattn generate --model FILE.gguf [--prompt TEXT] [--tokens N] [options]\n"
    "\n"
    "Continues TEXT (plain text: special tokens' text is not recognised) with a\n"
    "pretrained GGUF model, streaming each token to standard output as it comes;\n"
    "a summary goes to standard error.  Stops after N tokens, at the end-of-text\n"
    "token, or when the cache is full.\n"
    "\n"
    "  --model FILE        a GGUF model (scripts/get-model.sh smollm2)\n"
    "  --prompt TEXT       text to continue (default \"Once upon a time\")\n"
    "  --tokens N          tokens to generate at most (default 128)\n"
    "  --temperature X     sampling temperature, 0 = greedy (default 0.8)\n"
    "  --top-k K           sample among the K most likely tokens, 0 = all (default 40)\n"
    "  --top-p P           nucleus sampling in (0, 1]; 1 = off (default)\n"
    "  --seed N            sampling seed (default 1)\n"
    "  --context N         cache positions (default: the prompt plus N tokens, at\n"
    "                      most the model's context)\n"
    "  --activations A     q8 (default: 8-bit, as llama.cpp) or f32 (slower; with\n"
    "                      --kv f32 the fp32 reference to rounding)\n"
    "  --kv T              the cache's keys and values: f16 (default, as llama.cpp)\n"
    "                      or f32 (twice the memory)\n"
    "  --routing FILE      route each token of each block to full, linear or local\n"
    "                      attention by this routing file (metaattn surgery)\n"
    "  --threads N         OpenMP threads (default: all cores)\n"
    "  --json              print one JSON object at the end instead of streaming\n"
    "  -h, --help          show this help\n";

static const char *usage_chat =
    "usage: metaattn chat --model FILE.gguf [--prompt TEXT] [--system TEXT] [options]\n"
    "\n"
    "Talks with an instruction-tuned GGUF model through its ChatML template\n"
    "(<|im_start|>role\\n...<|im_end|>): each line of standard input is a user\n"
    "turn and the reply streams to standard output; the whole conversation stays\n"
    "in the cache.  End of input ends the chat.  With --prompt: that one turn.\n"
    "\n"
    "  --model FILE        a GGUF model with a ChatML chat template\n"
    "  --prompt TEXT       one user turn, then exit (for scripts)\n"
    "  --system TEXT       the system message (default: the template's own)\n"
    "  --tokens N          tokens per reply at most (default 512)\n"
    "  --context N         cache positions for the whole chat (default: the model's)\n"
    "  --temperature X, --top-k K, --top-p P, --seed N   as for generate\n"
    "  --activations A     q8 (default) or f32\n"
    "  --kv T              f16 (default) or f32 cache\n"
    "  --routing FILE      a routing file (metaattn surgery), as for generate\n"
    "  --threads N         OpenMP threads (default: all cores)\n"
    "  -h, --help          show this help\n";

typedef struct llm_opts {
    const char *model_path, *prompt, *system, *activations, *kv, *routing;
    long long n_tokens, threads, context;
    mattn_sampler_config sc;
    int json;
} llm_opts;

/* A run's state: the model, its cache, the sampler, the logits. */
typedef struct llm {
    mattn_llama *m;
    mattn_llama_cache *c;
    mattn_sampler *s;
    float *logits;
    int V;
    int32_t eos, im_end; /* -1: none */
    double prefill_s, decode_s;
    int n_prefill, n_decoded, n_sampled;
    int keep_last; /* 1: the last token of a reply cut by --tokens goes into the cache too (chat) */
    int info_layers;
} llm;

int cli_model_is_gguf(int argc, char **argv) {
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: no file is touched */
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--model")) {
            FILE *f = fopen(argv[i + 1], "rb");
            char magic[4] = {0};
            const int ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
            if (f) fclose(f);
            return ok;
        }
    return 0;
}

int cli_llama_modes(const char *activations, const char *kv) {
    if (activations && strcmp(activations, "q8") && strcmp(activations, "f32"))
        return cli_fail(EXIT_USAGE, "--activations: expected q8 or f32, got '%s'", activations);
    if (kv && strcmp(kv, "f16") && strcmp(kv, "f32"))
        return cli_fail(EXIT_USAGE, "--kv: expected f16 or f32, got '%s'", kv);
    return 0;
}

mattn_llama_kv cli_llama_kv(const char *kv) {
    return kv && !strcmp(kv, "f32") ? MATTN_LLAMA_KV_F32 : MATTN_LLAMA_KV_F16;
}

int cli_llama_routing(mattn_llama *m, const char *path) {
    if (path && mattn_llama_routing_load(m, path) != MATTN_OK)
        return cli_fail(1, "--routing: %s", mattn_llama_errmsg(m));
    return 0;
}

int cli_llama_read_tokens(mattn_llama *m, const char *path, const char *flag, int32_t **ids, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_fail(1, "%s: cannot open '%s': %s", flag, path, strerror(errno));
    size_t cap = 1 << 20, len = 0;
    char *b = malloc(cap);
    while (b && (len += fread(b + len, 1, cap - len, f)) == cap) {
        char *nb = cap >= (size_t)1 << 30 ? NULL : realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    const int err = ferror(f);
    fclose(f);
    if (err) {
        free(b);
        return cli_fail(1, "%s: cannot read '%s'", flag, path);
    }
    if (!b) return cli_fail(1, "%s '%s': larger than 1 GiB or out of memory", flag, path);
    int rc = 0;
    if (mattn_llama_tokenize(m, b, len, 0, NULL, 0, n) != MATTN_OK) rc = cli_fail(1, "%s: %s", flag, mattn_llama_errmsg(m));
    if (!rc && !(*ids = malloc(sizeof **ids * (*n ? *n : 1)))) rc = cli_fail(1, "%s: out of memory", flag);
    if (!rc && mattn_llama_tokenize(m, b, len, 0, *ids, *n, n) != MATTN_OK)
        rc = cli_fail(1, "%s: %s", flag, mattn_llama_errmsg(m));
    free(b);
    return rc;
}

void cli_llama_shares(const mattn_llama *m, const int64_t *counts, double *share) {
    mattn_llama_info info;
    mattn_llama_get_info(m, &info);
    double n[MATTN_ROUTE_EXPERTS] = {0}, tot = 0.0;
    for (int l = 0; l < info.n_layers; l++)
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) n[e] += (double)counts[l * MATTN_ROUTE_EXPERTS + e];
    for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) tot += n[e];
    for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) share[e] = tot > 0 ? n[e] / tot : 0.0;
}

static int parse_args(const char *cmd, const char *usage, int argc, char **argv, llm_opts *o) {
    const cli_opt opts[] = {
        OPT_STRING("--model", &o->model_path),
        OPT_STRING("--prompt", &o->prompt),
        OPT_STRING("--system", &o->system),
        OPT_STRING("--activations", &o->activations),
        OPT_STRING("--kv", &o->kv),
        OPT_STRING("--routing", &o->routing),
        OPT_INT("--tokens", &o->n_tokens, 1, 1 << 20),
        OPT_INT("--context", &o->context, 1, 1 << 20),
        OPT_CUSTOM("--top-k", &o->sc.top_k, cli_parse_top_k),
        OPT_CUSTOM("--top-p", &o->sc.top_p, cli_parse_top_p),
        OPT_CUSTOM("--seed", &o->sc.seed, cli_parse_seed),
        OPT_INT("--threads", &o->threads, 1, 1024),
        OPT_DOUBLE("--temperature", &o->sc.temperature, 0, 100),
        OPT_FLAG("--json", &o->json),
        OPT_END};
    /* generate has no --system; chat no --json: refused as unknown options */
    cli_opt mine[sizeof opts / sizeof opts[0]];
    int n = 0;
    for (const cli_opt *p = opts; p->name; p++)
        if (!(!strcmp(cmd, "generate") && !strcmp(p->name, "--system")) &&
            !(!strcmp(cmd, "chat") && !strcmp(p->name, "--json")))
            mine[n++] = *p;
    mine[n] = (cli_opt)OPT_END;
    int rc = cli_parse(cmd, usage, mine, argc, argv);
    if (rc) return rc;
    if ((rc = cli_llama_modes(o->activations, o->kv))) return rc;
    if (cli_dry_run) return CLI_DONE;
    if (!o->model_path) return cli_fail(EXIT_USAGE, "%s: --model is required (see metaattn %s --help)", cmd, cmd);
    return 0;
}

static void llm_free(llm *r) {
    mattn_sampler_free(r->s);
    mattn_llama_cache_free(r->c);
    mattn_llama_free(r->m);
    free(r->logits);
}

/* Open the model (activations set), the sampler and the logits; the cache
 * comes later (its size may depend on the prompt). */
static int llm_open(const llm_opts *o, llm *r) {
    *r = (llm){.eos = -1, .im_end = -1};
    cli_set_threads(o->threads);
    if (mattn_llama_open(o->model_path, &r->m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    mattn_llama_info info;
    mattn_llama_get_info(r->m, &info);
    r->V = info.vocab_size;
    r->info_layers = info.n_layers;
    if (o->context > info.context_length)
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's context %d", o->context, info.context_length);
    if (o->activations && !strcmp(o->activations, "f32")) mattn_llama_set_activations(r->m, MATTN_LLAMA_ACT_F32);
    if (cli_llama_routing(r->m, o->routing)) return 1;
    if (mattn_llama_special_tokens(r->m, NULL, &r->eos) != MATTN_OK ||
        mattn_llama_find_token(r->m, "<|im_end|>", &r->im_end) != MATTN_OK)
        return cli_fail(1, "--model %s: %s", o->model_path, mattn_llama_errmsg(r->m));
    if (mattn_sampler_init(&o->sc, &r->s) != MATTN_OK) return cli_fail(1, "sampler: %s", mattn_last_error());
    if (!(r->logits = malloc(sizeof(float) * (size_t)r->V))) return cli_fail(1, "out of memory");
    return 0;
}

static int llm_cache(llm *r, const llm_opts *o, long long want) {
    mattn_llama_info info;
    mattn_llama_get_info(r->m, &info);
    long long n = o->context ? o->context : want < info.context_length ? want : info.context_length;
    if (mattn_llama_cache_init_kv(r->m, (int)n, cli_llama_kv(o->kv), &r->c) != MATTN_OK)
        return cli_fail(1, "--context %lld: %s", n, mattn_llama_errmsg(r->m));
    return 0;
}

/* Tokens of text[0..len) (special: chat mode) appended to *ids (n, cap). */
static int tokens_of(llm *r, const char *text, int special, int32_t **ids, size_t *n, size_t *cap) {
    size_t k;
    if (mattn_llama_tokenize(r->m, text, strlen(text), special, NULL, 0, &k) != MATTN_OK)
        return cli_fail(1, "tokenize: %s", mattn_llama_errmsg(r->m));
    if (*n + k > *cap) {
        const size_t nc = (*n + k) * 2 + 16;
        int32_t *p = realloc(*ids, sizeof(int32_t) * nc);
        if (!p) return cli_fail(1, "out of memory");
        *ids = p, *cap = nc;
    }
    if (mattn_llama_tokenize(r->m, text, strlen(text), special, *ids + *n, k, &k) != MATTN_OK)
        return cli_fail(1, "tokenize: %s", mattn_llama_errmsg(r->m));
    *n += k;
    return 0;
}

/* Prefill ids[0..n) and leave the next token's logits in r->logits. */
static int llm_prefill(llm *r, const int32_t *ids, size_t n) {
    if (n == 0) return cli_fail(1, "--prompt: no tokens (its bytes have none in the vocabulary)");
    if (n > (size_t)(mattn_llama_cache_context(r->c) - mattn_llama_cache_length(r->c)))
        return cli_fail(1, "%zu tokens do not fit in the cache: %d of %d positions are left (--context)", n,
                        mattn_llama_cache_context(r->c) - mattn_llama_cache_length(r->c),
                        mattn_llama_cache_context(r->c));
    const double t0 = cli_now();
    mattn_status st = MATTN_OK;
    if (n > 1) st = mattn_llama_forward(r->m, r->c, ids, (int)n - 1, NULL);
    if (st == MATTN_OK) st = mattn_llama_decode(r->m, r->c, ids[n - 1], r->logits);
    if (st != MATTN_OK) return cli_fail(1, "%s", mattn_llama_errmsg(r->m));
    r->prefill_s += cli_now() - t0;
    r->n_prefill += (int)n;
    return 0;
}

/* Sample up to max tokens after the logits in r->logits, writing each
 * token's bytes to out as it comes (NULL: none) and appending them to
 * *text (when text != NULL).  Stops at EOS or <|im_end|> (not written, and
 * left out of the cache: *stop says which token it was, else -1) or a full
 * cache (*full = 1).  Returns 0 or an exit code. */
static int llm_sample(llm *r, long long max, FILE *out, char **text, size_t *tlen, int32_t *stop, int *full) {
    *stop = -1, *full = 0;
    size_t cap = 0;
    for (long long k = 0; k < max; k++) {
        int32_t t;
        if (mattn_sampler_sample(r->s, r->logits, r->V, &t) != MATTN_OK) return cli_fail(1, "sampler: %s", mattn_last_error());
        if (t == r->eos || t == r->im_end) {
            *stop = t;
            break;
        }
        const char *p;
        size_t pl;
        if (mattn_llama_token_piece(r->m, t, 0, &p, &pl) != MATTN_OK) return cli_fail(1, "%s", mattn_llama_errmsg(r->m));
        if (out) {
            fwrite(p, 1, pl, out);
            fflush(out);
        }
        if (text) {
            if (*tlen + pl + 1 > cap) {
                cap = (*tlen + pl + 1) * 2;
                char *nt = realloc(*text, cap);
                if (!nt) return cli_fail(1, "out of memory");
                *text = nt;
            }
            memcpy(*text + *tlen, p, pl);
            *tlen += pl;
            (*text)[*tlen] = 0;
        }
        r->n_sampled++;
        if (k + 1 == max && !r->keep_last) break;
        if (mattn_llama_cache_length(r->c) == mattn_llama_cache_context(r->c)) {
            *full = 1;
            break;
        }
        const double t0 = cli_now();
        if (mattn_llama_decode(r->m, r->c, t, r->logits) != MATTN_OK) return cli_fail(1, "%s", mattn_llama_errmsg(r->m));
        r->decode_s += cli_now() - t0;
        r->n_decoded++;
    }
    return 0;
}

static void json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c); /* UTF-8 as it is (a token may end inside a character: then not valid UTF-8) */
    }
    putchar('"');
}

int cmd_generate_llama(int argc, char **argv) {
    llm_opts o = {.prompt = "Once upon a time", .n_tokens = 128, .sc = mattn_sampler_config_default()};
    int rc = parse_args("generate", usage_generate_llama, argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (!o.prompt[0]) return cli_fail(EXIT_USAGE, "--prompt: must not be empty");
    llm r;
    int32_t *ids = NULL, stop = -1;
    size_t n = 0, cap = 0, tlen = 0;
    char *text = NULL;
    int full = 0;
    if (!(rc = llm_open(&o, &r)) && !(rc = tokens_of(&r, o.prompt, 0, &ids, &n, &cap)) &&
        !(rc = llm_cache(&r, &o, (long long)n + o.n_tokens)) && !(rc = llm_prefill(&r, ids, n)))
        rc = llm_sample(&r, o.n_tokens, o.json ? NULL : stdout, &text, &tlen, &stop, &full);
    if (!rc) {
        const int gen = r.n_sampled;
        double share[MATTN_ROUTE_EXPERTS] = {0};
        int64_t *counts = o.routing ? calloc((size_t)r.info_layers * MATTN_ROUTE_EXPERTS, sizeof *counts) : NULL;
        if (counts) {
            mattn_llama_cache_routing(r.c, counts, NULL, NULL, NULL);
            cli_llama_shares(r.m, counts, share);
            free(counts);
        }
        const char *why = stop >= 0 ? "end-of-text" : full ? "cache full" : "--tokens";
        if (o.json) {
            printf("{\"prompt\": ");
            json_string(o.prompt, strlen(o.prompt));
            printf(", \"text\": ");
            json_string(text ? text : "", tlen);
            printf(", \"prompt_tokens\": %d, \"tokens\": %d, \"stop\": \"%s\", \"prefill_tok_s\": %.1f, "
                   "\"decode_tok_s\": %.1f", r.n_prefill, gen, why, r.n_prefill / r.prefill_s,
                   r.n_decoded ? r.n_decoded / r.decode_s : 0.0);
            if (o.routing) printf(", \"routing\": \"%s\", \"share_full\": %.4f, \"share_linear\": %.4f, "
                                  "\"share_local\": %.4f", o.routing, share[0], share[1], share[2]);
            printf("}\n");
        } else {
            putchar('\n');
            fprintf(stderr, "metaattn: %d tokens (stop: %s); prompt %d tokens at %.0f tokens/s, decode %.1f tokens/s\n",
                    gen, why, r.n_prefill, r.n_prefill / r.prefill_s, r.n_decoded ? r.n_decoded / r.decode_s : 0.0);
            if (o.routing)
                fprintf(stderr, "metaattn: routed (%s): full %.1f %%, linear %.1f %%, local %.1f %% of the blocks' "
                        "tokens\n", o.routing, 100 * share[0], 100 * share[1], 100 * share[2]);
        }
        if (fflush(stdout) != 0) rc = cli_fail(1, "generate: cannot write standard output");
    }
    free(ids);
    free(text);
    llm_free(&r);
    return rc;
}

// ----------------------------------------------------------------------------
// chat

/* The template's own system message: the text between
 * "<|im_start|>system\n" and "<|im_end|>" in it (SmolLM2's template writes
 * one when the conversation has none), or "" when it has none.  NULL when
 * the template is not ChatML. */
static char *template_system(const char *tpl, size_t len) {
    char *t = malloc(len + 1);
    if (!t) return NULL;
    memcpy(t, tpl, len);
    t[len] = 0;
    if (!strstr(t, "<|im_start|>") || !strstr(t, "<|im_end|>")) {
        free(t);
        return NULL;
    }
    const char *key = "<|im_start|>system\n", *a = strstr(t, key), *b = a ? strstr(a, "<|im_end|>") : NULL;
    const size_t n = a && b ? (size_t)(b - a) - strlen(key) : 0;
    if (n) memmove(t, a + strlen(key), n);
    t[n] = 0;
    return t;
}

/* One turn: the user's text in the template, prefilled; the reply sampled
 * and streamed.  The previous reply's closing <|im_end|>\n (not fed when
 * it was sampled) comes first. */
static int chat_turn(llm *r, const llm_opts *o, const char *sys, const char *user, int first) {
    int32_t *ids = NULL, stop = -1;
    size_t n = 0, cap = 0, tlen = 0;
    int full = 0, rc = 0;
    if (!first) rc = tokens_of(r, "<|im_end|>\n", 1, &ids, &n, &cap); /* closes the previous reply */
    if (!rc && first && sys[0]) {
        rc = tokens_of(r, "<|im_start|>system\n", 1, &ids, &n, &cap);
        if (!rc) rc = tokens_of(r, sys, 0, &ids, &n, &cap);
        if (!rc) rc = tokens_of(r, "<|im_end|>\n", 1, &ids, &n, &cap);
    }
    if (!rc) rc = tokens_of(r, "<|im_start|>user\n", 1, &ids, &n, &cap);
    if (!rc) rc = tokens_of(r, user, 0, &ids, &n, &cap);
    if (!rc) rc = tokens_of(r, "<|im_end|>\n<|im_start|>assistant\n", 1, &ids, &n, &cap);
    if (!rc) rc = llm_prefill(r, ids, n);
    if (!rc) rc = llm_sample(r, o->n_tokens, stdout, NULL, &tlen, &stop, &full);
    if (!rc) {
        putchar('\n');
        fflush(stdout);
        if (full) rc = cli_fail(1, "chat: the conversation fills the cache's %d positions (--context up to the "
                                "model's)", mattn_llama_cache_context(r->c));
        else if (stop < 0) fprintf(stderr, "metaattn: reply cut at --tokens %lld\n", o->n_tokens);
    }
    free(ids);
    return rc;
}

int cmd_chat(int argc, char **argv) {
    llm_opts o = {.n_tokens = 512, .sc = mattn_sampler_config_default()};
    int rc = parse_args("chat", usage_chat, argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    llm r;
    if (!(rc = llm_open(&o, &r))) r.keep_last = 1;
    if (rc) {
        llm_free(&r);
        return rc;
    }
    const char *tpl;
    size_t tl;
    char *sys = NULL, *line = NULL;
    if (mattn_llama_chat_template(r.m, &tpl, &tl) != MATTN_OK) rc = cli_fail(1, "--model: %s", mattn_llama_errmsg(r.m));
    else if (!(sys = template_system(tpl, tl)))
        rc = cli_fail(1, "--model %s: the chat template is not ChatML (no <|im_start|> / <|im_end|>): chat "
                      "speaks only ChatML", o.model_path);
    else if (r.im_end < 0) rc = cli_fail(1, "--model %s: no <|im_end|> token", o.model_path);
    if (!rc) rc = llm_cache(&r, &o, 1 << 30);
    const char *system = o.system ? o.system : sys ? sys : "";
    if (!rc && o.prompt) {
        rc = chat_turn(&r, &o, system, o.prompt, 1);
    } else if (!rc) {
        const int tty = isatty(STDIN_FILENO);
        size_t lcap = 0;
        ssize_t len;
        for (int turns = 0;;) {
            if (tty) fputs("> ", stderr);
            if ((len = getline(&line, &lcap, stdin)) < 0) break;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            if (!len) continue; /* an empty line is no turn */
            if ((rc = chat_turn(&r, &o, system, line, turns++ == 0))) break;
        }
    }
    if (!rc && r.n_decoded)
        fprintf(stderr, "metaattn: %d positions used of %d; decode %.1f tokens/s\n", mattn_llama_cache_length(r.c),
                mattn_llama_cache_context(r.c), r.n_decoded / r.decode_s);
    free(line);
    free(sys);
    llm_free(&r);
    return rc;
}
