/*
 * tokenizer.h — internal: the byte-level BPE tokenizer of the LLaMA/GGUF
 * model family (tokenizer.ggml.model = "gpt2": GPT-2, SmolLM, StarCoder...),
 * built from a GGUF file's metadata.
 *
 * What it reads: tokenizer.ggml.tokens (the vocabulary, byte-level spelled:
 * every byte is one character of GPT-2's bytes_to_unicode alphabet, a space
 * is "Ġ"), tokenizer.ggml.merges ("A B" strings; rank = position),
 * tokenizer.ggml.token_type (optional; MATTN_TOK_* below), the special ids
 * tokenizer.ggml.{bos,eos,unknown,padding}_token_id (optional, each < the
 * vocabulary size), add_bos_token/add_eos_token (optional), and
 * tokenizer.ggml.pre, the pre-tokenizer: one entry of a table in
 * tok_encode.c — "smollm" (each digit alone, then GPT-2's pattern) and
 * "gpt-2".  Another model or pre type is refused by name.
 *
 * Encoding (llama.cpp's and Hugging Face's algorithm):
 *  1. with MATTN_TOK_SPECIAL only: the text of every control, user-defined
 *     and unknown token is recognised, leftmost-longest, and becomes that
 *     token; the text between them goes on alone through 2-4.  Without the
 *     flag such text is ordinary text ("<|im_end|>" -> "<", "|", "im", ...).
 *  2. pre-tokenization: the pre type's regexes (PCRE2, UTF + UCP, JIT when
 *     available) in sequence; each cuts every piece of the previous one into
 *     its matches and the gaps between them (both kept).  A regex sees only
 *     its piece: a lookahead such as \s+(?!\S) stops at the piece's end.
 *  3. byte-level BPE within each piece: the piece's bytes as symbols, then
 *     repeatedly the adjacent pair with the lowest merge rank (ties: the
 *     leftmost) is merged, until no pair has a merge (a priority queue over
 *     a linked list of symbols: O(n log n) per piece).
 *  4. each final symbol is its token; one that is no token (a merge result
 *     missing from the vocabulary) becomes the tokens of its bytes, and a
 *     byte without a token is dropped, as llama.cpp and Hugging Face do
 *     (SmolLM2's vocabulary lacks 21 of the 256 bytes: 0x04 0x06 0x13 0x14
 *     0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5..0xFF; the file's unknown token is
 *     not used for them).
 * Invalid UTF-8 never fails: PCRE2 runs with PCRE2_MATCH_INVALID_UTF, so a
 * byte that is not part of valid UTF-8 matches no regex item; each run of
 * them between matches is a piece of its own, encoded byte-wise like any
 * other, and decodes back to the same bytes when the vocabulary has them
 * (llama.cpp instead replaces each such byte by U+FFFD; Hugging Face takes
 * only valid text).  NUL is an ordinary character.
 *
 * Decoding: the concatenation of the tokens' bytes — a normal token's text
 * mapped back through bytes_to_unicode (one whose text is not all in that
 * alphabet is taken as it is, as Hugging Face does), a user-defined token's
 * text as it is, a control, unknown or unused token's text only with
 * MATTN_TOK_SPECIAL (else nothing).
 *
 * Errors: every function returns a status and leaves its message (naming
 * the key, the value, the id...) in the thread-local mattn_last_error().
 * Thread safety: a tokenizer is immutable after init; any number of threads
 * may encode and decode with it at once.
 */
#ifndef MATTN_TOKENIZER_H
#define MATTN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "metaattn.h"
#include "io/gguf.h"

typedef struct mattn_tok mattn_tok;

/* Token types, the numbers of tokenizer.ggml.token_type (llama.cpp's). */
typedef enum mattn_tok_type {
    MATTN_TOK_UNDEFINED = 0,    /* decoded like a normal token */
    MATTN_TOK_NORMAL = 1,
    MATTN_TOK_UNKNOWN = 2,
    MATTN_TOK_CONTROL = 3,      /* <|im_start|>, <|endoftext|> */
    MATTN_TOK_USER_DEFINED = 4,
    MATTN_TOK_UNUSED = 5,
    MATTN_TOK_BYTE = 6          /* "<0xHH>" decodes to that byte, other text as a normal token */
} mattn_tok_type;

/* Flag of mattn_tok_encode, mattn_tok_decode, mattn_tok_piece. */
#define MATTN_TOK_SPECIAL 1

/* Build from f's metadata (the tokenizer keeps no pointer into f).
 * MATTN_ERR_UNSUPPORTED: tokenizer.ggml.model other than "gpt2", or an
 * unknown or missing tokenizer.ggml.pre (named in the message);
 * MATTN_ERR_NOT_FOUND: no tokenizer.ggml.model, tokens or merges (the key
 * named); MATTN_ERR_FORMAT: anything
 * malformed (a merge without a space, a token type or special id out of
 * range, ...); MATTN_ERR_NOMEM.  On failure *out = NULL. */
mattn_status mattn_tok_init_gguf(const mattn_gguf_file *f, mattn_tok **out);
void mattn_tok_free(mattn_tok *t); /* NULL is fine */

int32_t mattn_tok_n_vocab(const mattn_tok *t);
int32_t mattn_tok_bos(const mattn_tok *t);  /* -1 when the file names none */
int32_t mattn_tok_eos(const mattn_tok *t);
int32_t mattn_tok_unk(const mattn_tok *t);
int32_t mattn_tok_pad(const mattn_tok *t);
int mattn_tok_add_bos(const mattn_tok *t);  /* tokenizer.ggml.add_bos_token (0 when absent) */
int mattn_tok_add_eos(const mattn_tok *t);
const char *mattn_tok_pre_name(const mattn_tok *t);  /* "smollm" */
int mattn_tok_jit(const mattn_tok *t);  /* 1: every regex is JIT-compiled */
/* The type of id; -1 when id is out of range. */
int mattn_tok_token_type(const mattn_tok *t, int32_t id);
/* The id of the control/user-defined/unknown token whose text is text[0..len)
 * ("<|im_end|>"), -1 if none. */
int32_t mattn_tok_find_special(const mattn_tok *t, const char *text, size_t len);

/* Encode text[0..len) (any bytes; len may be 0, text then may be NULL).
 * flags: MATTN_TOK_SPECIAL recognises special tokens' text (chat mode).
 * Nothing is added: no BOS, no EOS.  At most len ids result.
 * ids == NULL: only counts (*n_out = the number of ids, MATTN_OK).
 * Otherwise up to cap ids are written; when there are more, the first cap
 * are written, *n_out is the number needed and MATTN_ERR_INVALID_ARG says so.
 * MATTN_ERR_NOMEM. */
mattn_status mattn_tok_encode(const mattn_tok *t, const char *text, size_t len, int flags, int32_t *ids,
                              size_t cap, size_t *n_out);

/* Decode ids[0..n) to bytes.  flags: MATTN_TOK_SPECIAL includes the text of
 * control, unknown and unused tokens.  out == NULL: only counts.  Otherwise
 * up to cap bytes are written, a NUL after them when there is room; when
 * more are needed, *len_out is the number needed and MATTN_ERR_INVALID_ARG.
 * An id out of range: MATTN_ERR_INVALID_ARG naming it and its position,
 * nothing counted. */
mattn_status mattn_tok_decode(const mattn_tok *t, const int32_t *ids, size_t n, int flags, char *out, size_t cap,
                              size_t *len_out);

/* The bytes of one token as decode gives them (len 0 for a control token
 * without MATTN_TOK_SPECIAL): *bytes points into the tokenizer, valid until
 * mattn_tok_free, not NUL-terminated.  MATTN_ERR_INVALID_ARG for an id out
 * of range. */
mattn_status mattn_tok_piece(const mattn_tok *t, int32_t id, int flags, const char **bytes, size_t *len);

#endif
