/* rwkv_tokenizer.h: byte trie for the RWKV World tokenizer (greedy longest match).
 *
 * The World tokenizer (docs/tokenizers.md §2.4) encodes UTF-8 bytes by repeatedly
 * taking the longest vocabulary entry that is a prefix of the remaining input. Doing that walk
 * in Python costs about a microsecond per byte; this trie does it in C so that encoding runs at
 * tens of MB/s. Python (rwkv_ggml/tokenizer/world.py) parses the vocabulary file and hands the token
 * byte strings over; C never reads files.
 *
 * Every fallible function returns an rwkv_tok_status value (0 = success) and writes results
 * through out-parameters. The trie is immutable after rwkv_tok_trie_new, so any number of
 * threads may call rwkv_tok_trie_encode on it at once.
 *
 * This header is also cffi cdef input: plain declarations only, no macros in them.
 */
#ifndef RWKV_TOKENIZER_H
#define RWKV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct rwkv_tok_trie rwkv_tok_trie;

enum rwkv_tok_status {
    RWKV_TOK_OK = 0,
    RWKV_TOK_E_ARG = 1,       /* NULL pointer, empty token, offsets not increasing, negative id */
    RWKV_TOK_E_NOMEM = 2,     /* an allocation failed */
    RWKV_TOK_E_DUPLICATE = 3, /* two tokens have the same byte string */
    RWKV_TOK_E_NOMATCH = 4    /* no vocabulary entry starts with the input byte at some position */
};

/* Build a trie from n_tokens byte strings.
 * Token i is bytes[offsets[i] .. offsets[i + 1]) and gets id ids[i] (>= 0); offsets has
 * n_tokens + 1 entries, starts at 0, strictly increases (no empty tokens) and ends <= n_bytes.
 * On RWKV_TOK_E_ARG or RWKV_TOK_E_DUPLICATE, *bad_index (if not NULL) is the offending token
 * index, so the caller can name it. On success *out owns the trie; free it with
 * rwkv_tok_trie_free. */
int rwkv_tok_trie_new(const uint8_t *bytes, size_t n_bytes, const uint32_t *offsets,
                      const int32_t *ids, size_t n_tokens, rwkv_tok_trie **out, size_t *bad_index);

/* Free a trie; NULL is a no-op. */
void rwkv_tok_trie_free(rwkv_tok_trie *trie);

/* Greedy longest-match encode of text[0 .. n_text).
 * Writes at most cap ids to ids_out. *n_ids = ids written, *n_consumed = input bytes they cover.
 * Returns RWKV_TOK_OK also when ids_out filled up first (then *n_consumed < n_text): call again
 * on text + *n_consumed to continue; greedy matching depends only on the remaining input, so
 * the pieces concatenate to the one-call result. With cap >= n_text one call always suffices
 * (every token covers at least one byte).
 * On RWKV_TOK_E_NOMATCH the ids before the failure are written and *n_consumed is the byte
 * position that no token matches. */
int rwkv_tok_trie_encode(const rwkv_tok_trie *trie, const uint8_t *text, size_t n_text,
                         int32_t *ids_out, size_t cap, size_t *n_ids, size_t *n_consumed);

/* Size of the trie, for tests and diagnostics: nodes (root included) and bytes of memory held. */
int rwkv_tok_trie_stats(const rwkv_tok_trie *trie, size_t *n_nodes, size_t *n_bytes_held);

#endif
