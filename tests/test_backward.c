/*
 * test_backward.c — backward passes of the attention cores: the streaming
 * kernels against their reference twins, and both against central finite
 * differences of the forward (L = sum R .* out, accumulated in double), for
 * causal/bidirectional, windows, key padding, additive masks and dropout,
 * on odd shapes (T = 1, 7, 33; dh = 5).
 */
#include "test_util.h"

typedef struct {
    int B, T, H, dh, causal, window, linear;
    float dropout;
    mattn_masks m;
    int use_masks;
    float *qkv, *out, *lse, *state, *R;
} kcase;

static mattn_attn_args kargs(kcase *c) {
    const int D = c->H * c->dh;
    return (mattn_attn_args){.B = c->B, .T = c->T, .H = c->H, .dh = c->dh, .q = c->qkv, .k = c->qkv + D,
                             .v = c->qkv + 2 * D, .ld = 3 * D, .out = c->out, .ldo = D,
                             .masks = c->use_masks ? &c->m : NULL, .causal = c->causal,
                             .window = c->window, .dropout = c->dropout, .dropout_key = 7,
                             .lse = c->lse, .state = c->state};
}

static double kloss(void *ctx) {
    kcase *c = ctx;
    mattn_attn_args a = kargs(c);
    if (c->linear) mattn_attn_linear_forward_ref(&a);
    else mattn_attn_softmax_forward_ref(&a);
    double L = 0.0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->H * c->dh; i++) L += (double)c->R[i] * c->out[i];
    return L;
}

static void run_kernel_case(int linear, int T, int causal, int window, int masks, float dropout) {
    kcase c = {.B = 2, .T = T, .H = 2, .dh = 5, .causal = causal, .window = window, .linear = linear,
               .dropout = dropout, .use_masks = masks > 0};
    const int D = c.H * c.dh;
    const size_t N = (size_t)c.B * T;
    c.qkv = falloc(N * 3 * D);
    c.out = falloc(N * D);
    c.lse = falloc((size_t)c.B * c.H * T);
    c.state = falloc(mattn_attn_linear_backward_scratch(c.B, T, c.H, c.dh) / sizeof(float));
    c.R = falloc(N * D);
    uint8_t *kp = malloc(N);
    float *add = falloc((size_t)c.B * T * T);
    fill_normal(c.qkv, N * 3 * D, 100 + T, 0.7);
    fill_normal(c.R, N * D, 200 + T, 1.0);
    fill_normal(add, (size_t)c.B * T * T, 300 + T, 0.5);
    for (size_t i = 0; i < N; i++) kp[i] = (i * 7919 + 3) % 4 != 0;
    if (masks >= 1) c.m.key_padding = kp;
    if (masks >= 2) c.m.additive = add, c.m.additive_batched = 1;

    mattn_attn_args a = kargs(&c);
    if (linear) mattn_attn_linear_forward(&a);
    else mattn_attn_softmax_forward(&a);
    float *g = falloc(N * 3 * D), *gr = falloc(N * 3 * D);
    mattn_attn_grad gg = {.gout = c.R, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D,
                          .state = c.state};
    mattn_attn_grad gref = gg;
    gref.gq = gr, gref.gk = gr + D, gref.gv = gr + 2 * D;
    if (linear) {
        mattn_attn_linear_backward(&a, &gg);
        mattn_attn_linear_backward_ref(&a, &gref);
    } else {
        mattn_attn_softmax_backward(&a, &gg);
        mattn_attn_softmax_backward_ref(&a, &gref);
    }
    char what[160];
    snprintf(what, sizeof what, "%s T=%d causal=%d window=%d masks=%d dropout=%.1f", linear ? "linear" : "softmax",
             T, causal, window, masks, (double)dropout);
    assert_close(g, gr, N * 3 * D, 2e-5, what);
    double worst = fd_check(kloss, &c, c.qkv, N * 3 * D, g, 12, 3, 1e-2, 1e-2, 2e-3, T, what);
    assert_true(worst <= 1.0);
    free(c.qkv); free(c.out); free(c.lse); free(c.state); free(c.R); free(kp); free(add); free(g); free(gr);
}

static void test_softmax_backward(void **st) {
    (void)st;
    const int Ts[] = {1, 7, 33};
    for (int ti = 0; ti < 3; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int wi = 0; wi < 2; wi++)
                for (int masks = 0; masks < 3; masks++)
                    for (int dr = 0; dr < 2; dr++)
                        run_kernel_case(0, Ts[ti], causal, wi ? 2 : -1, masks, dr ? 0.2f : 0.0f);
}

static void test_linear_backward(void **st) {
    (void)st;
    const int Ts[] = {1, 7, 33};
    for (int ti = 0; ti < 3; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int masks = 0; masks < 2; masks++) run_kernel_case(1, Ts[ti], causal, -1, masks, 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_backward),
        cmocka_unit_test(test_linear_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
