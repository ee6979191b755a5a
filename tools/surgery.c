/*
 * surgery.c — `metaattn surgery`: make a routing file for a pretrained GGUF
 * model (mattn_llama_routing_*): its blocks become Meta-Attention layers
 * over the pretrained projections, routed token by token to full, linear
 * or local attention.  --data distils the routers and feature maps
 * (surgery_train.c); --fixed makes token-independent routing, the
 * baselines: StreamingLLM (every token local), a static per-block hybrid,
 * random routing at given shares.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_surgery =
    "usage: metaattn surgery --model FILE.gguf --data FILE --out FILE [options]   (distil)\n"
    "       metaattn surgery --model FILE.gguf --fixed SPEC --out FILE [options]  (baselines)\n"
    "\n"
    "Writes a routing file for a GGUF model: each block's attention becomes a\n"
    "Meta-Attention layer whose experts share the pretrained projections and cache\n"
    "- full (the original attention), linear (a learned feature map of the\n"
    "queries and keys) and local (a window plus attention sinks) - and each token\n"
    "of each block takes one of them.  Load it with --routing FILE on eval,\n"
    "generate, chat and bench; the GGUF file is not touched.\n"
    "\n"
    "With --data the routers and feature maps are distilled from the original model\n"
    "(its weights frozen): stage 1 fits each block's feature maps to its softmax\n"
    "attention, stage 2 minimises the KL of the next-token distributions under the\n"
    "budget on full, hard routes with straight-through gradients.  One sequence of\n"
    "--context tokens per step; OUT.log.jsonl logs every step, OUT and OUT.state\n"
    "are the checkpoint (--resume continues it exactly).\n"
    "\n"
    "  --model FILE        the GGUF model\n"
    "  --out FILE          the routing file to write (safetensors)\n"
    "  --data FILE         training text (tokenized whole; at most 1 GiB)\n"
    "  --held-out FILE     text no step trains on: its first --context tokens are\n"
    "                      scored at each checkpoint of stage 2\n"
    "  --context T         tokens per step (default 1024)\n"
    "  --steps N           steps in all (default 200)\n"
    "  --stage1 N          of them the layer-local stage (default 50)\n"
    "  --budget S          the share of full over blocks and tokens, in [0, 1]\n"
    "                      (default 0.25; -1: no budget)\n"
    "  --budget-mode M     calibrate (default): after each step the controllers'\n"
    "                      full bias is set so that the step's share is S; dual: a\n"
    "                      Lagrange multiplier keeps it <= S (dual ascent)\n"
    "  --lr X              the controllers' Adam step (default 1e-3)\n"
    "  --map-lr X          the feature maps' (default 1e-3)\n"
    "  --map-weight X      the attention transfer's weight in stage 2 (default 1;\n"
    "                      stage 1 is that term alone)\n"
    "  --dual-lr X         the multiplier's ascent step (default 1; dual mode)\n"
    "  --recall P          the share of stage-2 steps on a retrieval prompt instead\n"
    "                      of a text sequence: a passkey or copy prompt (those of\n"
    "                      eval --task) of --context tokens with filler from --data,\n"
    "                      the right answer appended (default 0)\n"
    "  --recall-weight W   the KL weight of the answer's positions in them, the\n"
    "                      other positions' being 1 (default 32)\n"
    "  --st-temperature X  the straight-through gradient of a hard route is that of\n"
    "                      the controller's softmax at temperature X (default 1);\n"
    "                      above 1 it does not vanish where the controller is sure\n"
    "  --route-weight X    weight of the routing target in stage 2 (default 0: none):\n"
    "                      a BCE teaching each controller the token-blocks where\n"
    "                      local's output is furthest from full's (the budget's\n"
    "                      share of them)\n"
    "  --init FILE         start from this routing file (its config: --window,\n"
    "                      --sinks, --hidden, --feature-dim, --experts, --position\n"
    "                      are its own) instead of a fresh routing\n"
    "  --checkpoint N      write the checkpoint every N steps (default 25)\n"
    "  --resume            continue OUT from OUT.state (give the run's --data,\n"
    "                      --context and --seed again: they choose the sequences)\n"
    "  --quiet             no progress line\n"
    "  --fixed SPEC        token-independent routing: each token of a block takes\n"
    "                      full, linear, local with the probabilities F,N,L (a\n"
    "                      hash of seed, block and position draws it); SPEC is\n"
    "                      F,N,L for every block or BLOCKS:F,N,L;... with BLOCKS\n"
    "                      a block or a range A-B, e.g. 0,0,1 (StreamingLLM) or\n"
    "                      '0-3:1,0,0;4-29:0,0,1' (a static hybrid)\n"
    "  --window W          local: the keys [t - W, t] (default 256)\n"
    "  --sinks S           local: and the first S positions (default 4)\n"
    "  --hidden H          the controllers' width (default 32)\n"
    "  --feature-dim N     linear: the feature map's width (default: head_dim)\n"
    "  --seed N            draws, initialisation and training sequences (default 0)\n"
    "  --experts LIST      the experts the controllers choose among, of full, linear,\n"
    "                      local (default all three), e.g. full,local\n"
    "  --position          the controllers also see the position t / (context - 1)\n"
    "                      (default: not, so that routes trained at one length hold\n"
    "                      at others)\n"
    "  -h, --help          show this help\n";

/* "F,N,L" -> share; 0 or a usage error naming --fixed and the text. */
static int parse_shares(const char *spec, const char *s, double *share) {
    char *end = NULL;
    for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) {
        errno = 0;
        share[e] = strtod(s, &end);
        if (errno || end == s || (e < MATTN_ROUTE_EXPERTS - 1 && *end != ','))
            return cli_fail(EXIT_USAGE, "--fixed '%s': expected three shares F,N,L (full, linear, local) at '%s'",
                            spec, s);
        s = end + (e < MATTN_ROUTE_EXPERTS - 1);
    }
    if (*end && *end != ';')
        return cli_fail(EXIT_USAGE, "--fixed '%s': unexpected '%s' after three shares", spec, end);
    return 0;
}

/* "full,local" -> a mask of 1 << MATTN_ROUTE_*; 0 or a usage error. */
static int parse_experts(const char *list, int *mask) {
    static const char *const names[MATTN_ROUTE_EXPERTS] = {"full", "linear", "local"};
    *mask = 0;
    for (const char *s = list; *s;) {
        const size_t n = strcspn(s, ",");
        int e = -1;
        for (int k = 0; k < MATTN_ROUTE_EXPERTS; k++)
            if (strlen(names[k]) == n && !strncmp(s, names[k], n)) e = k;
        if (e < 0) return cli_fail(EXIT_USAGE, "--experts '%s': '%.*s' is not full, linear or local", list, (int)n, s);
        *mask |= 1 << e;
        s += n + (s[n] == ',');
    }
    if (!*mask) return cli_fail(EXIT_USAGE, "--experts '%s': names no expert", list);
    return 0;
}

/* Apply SPEC to the routing attached to m. */
static int apply_fixed(mattn_llama *m, const char *spec) {
    mattn_llama_info info;
    mattn_llama_get_info(m, &info);
    const char *s = spec;
    while (*s) {
        const char *colon = strchr(s, ':'), *semi = strchr(s, ';');
        long a = -1, b = -1;
        if (colon && (!semi || colon < semi)) {
            char *end;
            a = b = strtol(s, &end, 10);
            if (end != s && *end == '-') b = strtol(end + 1, &end, 10);
            if (end == s || end != colon || a < 0 || b < a || b >= info.n_layers)
                return cli_fail(EXIT_USAGE, "--fixed '%s': blocks '%.*s' are not a block or a range A-B within "
                                "[0, %d)", spec, (int)(colon - s), s, info.n_layers);
            s = colon + 1;
        }
        double share[MATTN_ROUTE_EXPERTS];
        if (parse_shares(spec, s, share)) return EXIT_USAGE;
        for (long l = a; l <= b; l++)
            if (mattn_llama_routing_fix(m, (int)l, share) != MATTN_OK)
                return cli_fail(EXIT_USAGE, "--fixed '%s': %s", spec, mattn_llama_errmsg(m));
        semi = strchr(s, ';');
        if (!semi) break;
        s = semi + 1;
    }
    return 0;
}

int cmd_surgery(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *fixed = NULL, *bmode = NULL, *experts = NULL;
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    long long window = cfg.window, sinks = cfg.sinks, hidden = cfg.controller_hidden, fd = 0;
    uint64_t seed = 0;
    int pos = 0;
    cli_surgery_opts so = {.context = 1024, .steps = 200, .stage1 = 50, .every = 25, .budget = 0.25, .lr = 1e-3,
                           .map_lr = 1e-3, .map_weight = 1.0, .dual_lr = 1.0, .recall_weight = 32.0, .st_temperature = 1.0};
    const cli_opt opts[] = {OPT_STRING("--model", &model), OPT_STRING("--out", &out), OPT_STRING("--fixed", &fixed),
                            OPT_INT("--window", &window, 1, 1 << 20), OPT_INT("--sinks", &sinks, 0, 1 << 20),
                            OPT_INT("--hidden", &hidden, 1, 4096), OPT_INT("--feature-dim", &fd, 1, 4096),
                            OPT_CUSTOM("--seed", &seed, cli_parse_seed), OPT_STRING("--data", &so.data),
                            OPT_STRING("--held-out", &so.held_out), OPT_INT("--context", &so.context, 2, 1 << 20),
                            OPT_INT("--steps", &so.steps, 1, 100000000), OPT_INT("--stage1", &so.stage1, 0, 100000000),
                            OPT_DOUBLE("--budget", &so.budget, -1.0, 1.0), OPT_DOUBLE("--lr", &so.lr, 0.0, 1.0),
                            OPT_DOUBLE("--map-lr", &so.map_lr, 0.0, 1.0),
                            OPT_DOUBLE("--map-weight", &so.map_weight, 0.0, 1e6),
                            OPT_DOUBLE("--dual-lr", &so.dual_lr, 0.0, 1e6), OPT_STRING("--budget-mode", &bmode),
                            OPT_INT("--checkpoint", &so.every, 0, 100000000), OPT_FLAG("--resume", &so.resume),
                            OPT_FLAG("--quiet", &so.quiet), OPT_FLAG("--position", &pos),
                            OPT_STRING("--experts", &experts), OPT_DOUBLE("--recall", &so.recall, 0.0, 1.0),
                            OPT_DOUBLE("--recall-weight", &so.recall_weight, 0.0, 1e6),
                            OPT_STRING("--init", &so.init),
                            OPT_DOUBLE("--st-temperature", &so.st_temperature, 1e-3, 1e3),
                            OPT_DOUBLE("--route-weight", &so.route_weight, 0.0, 1e6), OPT_END};
    int rc = cli_parse("surgery", usage_surgery, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (!model || !out || (!fixed && !so.data))
        return cli_fail(EXIT_USAGE, "surgery: --%s is required (see metaattn surgery --help)",
                        !model ? "model" : !out ? "out" : "data (or --fixed)");
    if (fixed && so.data) return cli_fail(EXIT_USAGE, "surgery: --fixed and --data exclude each other");
    if (fixed && so.init) return cli_fail(EXIT_USAGE, "surgery: --init trains a routing further: not with --fixed");
    int mask = 0;
    if (experts && (rc = parse_experts(experts, &mask))) return rc;
    if (bmode && strcmp(bmode, "calibrate") && strcmp(bmode, "dual"))
        return cli_fail(EXIT_USAGE, "--budget-mode: expected calibrate or dual, got '%s'", bmode);
    so.calibrate = !bmode || !strcmp(bmode, "calibrate");
    if (so.calibrate) so.dual_lr = 0.0;
    if (so.budget < 0.0 && so.budget != -1.0)
        return cli_fail(EXIT_USAGE, "--budget: %g is neither in [0, 1] nor -1 (none)", so.budget);
    if (cli_dry_run) return 0;
    cfg.window = (int)window, cfg.sinks = (int)sinks, cfg.controller_hidden = (int)hidden;
    cfg.feature_dim = (int)fd, cfg.seed = seed, cfg.position = pos, cfg.experts = mask;
    if (so.data) {
        so.model = model, so.out = out, so.seed = seed;
        return cli_surgery_train(&so, &cfg);
    }
    mattn_llama *m = NULL;
    if (mattn_llama_open(model, &m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    if (mattn_llama_routing_new(m, &cfg) != MATTN_OK) rc = cli_fail(1, "surgery: %s", mattn_llama_errmsg(m));
    /* blocks SPEC does not name stay the original attention, token-independently */
    if (!rc && mattn_llama_routing_fix(m, -1, (const double[MATTN_ROUTE_EXPERTS]){1, 0, 0}) != MATTN_OK)
        rc = cli_fail(1, "surgery: %s", mattn_llama_errmsg(m));
    if (!rc) rc = apply_fixed(m, fixed);
    if (!rc && mattn_llama_routing_save(m, out) != MATTN_OK) rc = cli_fail(1, "--out: %s", mattn_llama_errmsg(m));
    if (!rc) fprintf(stderr, "metaattn: wrote %s (token-independent routing %s, window %lld, sinks %lld)\n", out,
                     fixed, window, sinks);
    mattn_llama_free(m);
    return rc;
}
