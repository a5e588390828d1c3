/* world_trie.c: byte trie + greedy longest-match encoder for the RWKV World tokenizer.
 *
 * Algorithm (docs/tokenizers.md §2.4): from the current position walk down the
 * trie byte by byte, remember the last node that ends a token, stop when the next byte has no
 * edge; emit that token and continue right after it.
 *
 * Layout. The trie is built in two steps:
 *   1. insert every token through a hash map (parent node, byte) -> child node, which needs no
 *      ordering of the input and detects duplicates for free;
 *   2. compact it into CSR form: each node's out-edges lie next to each other, sorted by byte,
 *      in two flat arrays (edge_byte, edge_child). Nodes with many children (the root, the
 *      node after a space, ...) additionally get a dense 256-entry row so that the hot top of
 *      the trie costs one load per byte; the long thin tails use a short linear scan over
 *      bytes that sit in one cache line.
 * The World vocabulary gives about 116k nodes, ~530 of them dense: under 3 MB in all.
 */
#include "rwkv_tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Nodes with at least this many children get a dense row (a linear scan of 8 bytes is as cheap
 * as the dense load, more is not). */
static const uint32_t DENSE_MIN_CHILDREN = 8;

struct trie_node {
    uint32_t first_edge; /* index of the first out-edge in edge_byte/edge_child */
    uint32_t n_edges;    /* number of out-edges (0..256) */
    int32_t dense;       /* row in dense[] or -1 */
    int32_t token;       /* token id ending at this node or -1 */
};

struct rwkv_tok_trie {
    struct trie_node *nodes;
    size_t n_nodes;
    uint8_t *edge_byte;   /* n_nodes - 1 edges, grouped by parent, sorted by byte */
    uint32_t *edge_child;
    int32_t *dense;       /* n_dense rows of 256 child ids (-1 = no child) */
    size_t n_dense;
};

/* ------------------------------------------------------------------ build-time hash map */

/* Open addressing, linear probing. Key = ((parent << 8) | byte) + 1 so that 0 marks empty. */
struct edge_map {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap; /* power of two */
    size_t used;
};

static size_t edge_map_slot(uint64_t key, size_t cap)
{
    /* Fibonacci hashing: the multiply spreads the (node, byte) bits over the whole word. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int edge_map_init(struct edge_map *m, size_t cap)
{
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    m->cap = cap;
    m->used = 0;
    if (m->keys == NULL || m->vals == NULL) {
        free(m->keys);
        free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return RWKV_TOK_E_NOMEM;
    }
    return RWKV_TOK_OK;
}

static void edge_map_free(struct edge_map *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
}

/* Returns the slot holding key, or the empty slot where it would go. */
static size_t edge_map_find(const struct edge_map *m, uint64_t key)
{
    size_t i = edge_map_slot(key, m->cap);
    while (m->keys[i] != 0 && m->keys[i] != key) {
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

static int edge_map_grow(struct edge_map *m)
{
    struct edge_map bigger;
    int status = edge_map_init(&bigger, m->cap * 2);
    if (status != RWKV_TOK_OK) {
        return status;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] != 0) {
            size_t j = edge_map_find(&bigger, m->keys[i]);
            bigger.keys[j] = m->keys[i];
            bigger.vals[j] = m->vals[i];
        }
    }
    bigger.used = m->used;
    edge_map_free(m);
    *m = bigger;
    return RWKV_TOK_OK;
}

/* Growable array of token ids per node while building. */
struct node_tokens {
    int32_t *token;
    size_t n;
    size_t cap;
};

static int node_tokens_push(struct node_tokens *nt)
{
    if (nt->n == nt->cap) {
        size_t cap = nt->cap ? nt->cap * 2 : 1024;
        int32_t *grown = realloc(nt->token, cap * sizeof *grown);
        if (grown == NULL) {
            return RWKV_TOK_E_NOMEM;
        }
        nt->token = grown;
        nt->cap = cap;
    }
    nt->token[nt->n++] = -1;
    return RWKV_TOK_OK;
}

static void set_bad(size_t *bad_index, size_t value)
{
    if (bad_index != NULL) {
        *bad_index = value;
    }
}

/* Step 1: hash-map trie. On success nt holds one token slot per node (node 0 = root). */
static int insert_all(const uint8_t *bytes, const uint32_t *offsets, const int32_t *ids, size_t n_tokens,
                      struct edge_map *map, struct node_tokens *nt, size_t *bad_index)
{
    int status = node_tokens_push(nt); /* the root */
    if (status != RWKV_TOK_OK) {
        return status;
    }
    for (size_t t = 0; t < n_tokens; t++) {
        uint32_t node = 0;
        for (uint32_t k = offsets[t]; k < offsets[t + 1]; k++) {
            uint64_t key = (((uint64_t)node << 8) | bytes[k]) + 1;
            size_t slot = edge_map_find(map, key);
            if (map->keys[slot] == 0) {
                /* New edge: keep the load factor under 1/2 so probes stay short. */
                if ((map->used + 1) * 2 > map->cap) {
                    status = edge_map_grow(map);
                    if (status != RWKV_TOK_OK) {
                        return status;
                    }
                    slot = edge_map_find(map, key);
                }
                if (nt->n > UINT32_MAX - 1) {
                    set_bad(bad_index, t);
                    return RWKV_TOK_E_ARG;
                }
                map->keys[slot] = key;
                map->vals[slot] = (uint32_t)nt->n;
                map->used++;
                status = node_tokens_push(nt);
                if (status != RWKV_TOK_OK) {
                    return status;
                }
            }
            node = map->vals[slot];
        }
        if (nt->token[node] >= 0) {
            set_bad(bad_index, t);
            return RWKV_TOK_E_DUPLICATE;
        }
        nt->token[node] = ids[t];
    }
    return RWKV_TOK_OK;
}

/* Step 2: CSR layout + dense rows. */
static int compact(rwkv_tok_trie *trie, const struct edge_map *map, const struct node_tokens *nt)
{
    size_t n_nodes = nt->n;
    size_t n_edges = n_nodes - 1;
    trie->n_nodes = n_nodes;
    trie->nodes = calloc(n_nodes, sizeof *trie->nodes);
    trie->edge_byte = malloc(n_edges ? n_edges : 1);
    trie->edge_child = malloc((n_edges ? n_edges : 1) * sizeof *trie->edge_child);
    uint32_t *cursor = malloc(n_nodes * sizeof *cursor);
    if (trie->nodes == NULL || trie->edge_byte == NULL || trie->edge_child == NULL || cursor == NULL) {
        free(cursor);
        return RWKV_TOK_E_NOMEM;
    }

    /* Count children per parent, then prefix sums give each node's first edge. */
    for (size_t i = 0; i < map->cap; i++) {
        if (map->keys[i] != 0) {
            trie->nodes[(map->keys[i] - 1) >> 8].n_edges++;
        }
    }
    uint32_t next = 0;
    size_t n_dense = 0;
    for (size_t v = 0; v < n_nodes; v++) {
        trie->nodes[v].first_edge = next;
        trie->nodes[v].token = nt->token[v];
        trie->nodes[v].dense = -1;
        cursor[v] = next;
        next += trie->nodes[v].n_edges;
        if (trie->nodes[v].n_edges >= DENSE_MIN_CHILDREN) {
            trie->nodes[v].dense = (int32_t)n_dense++;
        }
    }
    for (size_t i = 0; i < map->cap; i++) {
        if (map->keys[i] != 0) {
            uint64_t parent = (map->keys[i] - 1) >> 8;
            uint32_t e = cursor[parent]++;
            trie->edge_byte[e] = (uint8_t)((map->keys[i] - 1) & 0xFF);
            trie->edge_child[e] = map->vals[i];
        }
    }
    free(cursor);

    /* Sort each node's edges by byte (insertion sort: almost all nodes have 1-3 edges). */
    for (size_t v = 0; v < n_nodes; v++) {
        uint32_t lo = trie->nodes[v].first_edge;
        uint32_t hi = lo + trie->nodes[v].n_edges;
        for (uint32_t a = lo + 1; a < hi; a++) {
            uint8_t b = trie->edge_byte[a];
            uint32_t c = trie->edge_child[a];
            uint32_t k = a;
            while (k > lo && trie->edge_byte[k - 1] > b) {
                trie->edge_byte[k] = trie->edge_byte[k - 1];
                trie->edge_child[k] = trie->edge_child[k - 1];
                k--;
            }
            trie->edge_byte[k] = b;
            trie->edge_child[k] = c;
        }
    }

    trie->n_dense = n_dense;
    trie->dense = malloc((n_dense ? n_dense : 1) * 256 * sizeof *trie->dense);
    if (trie->dense == NULL) {
        return RWKV_TOK_E_NOMEM;
    }
    memset(trie->dense, 0xFF, (n_dense ? n_dense : 1) * 256 * sizeof *trie->dense); /* all -1 */
    for (size_t v = 0; v < n_nodes; v++) {
        const struct trie_node *nd = &trie->nodes[v];
        if (nd->dense >= 0) {
            int32_t *row = trie->dense + (size_t)nd->dense * 256;
            for (uint32_t e = nd->first_edge; e < nd->first_edge + nd->n_edges; e++) {
                row[trie->edge_byte[e]] = (int32_t)trie->edge_child[e];
            }
        }
    }
    return RWKV_TOK_OK;
}

int rwkv_tok_trie_new(const uint8_t *bytes, size_t n_bytes, const uint32_t *offsets,
                      const int32_t *ids, size_t n_tokens, rwkv_tok_trie **out, size_t *bad_index)
{
    set_bad(bad_index, 0);
    if (out == NULL) {
        return RWKV_TOK_E_ARG;
    }
    *out = NULL;
    if (n_tokens > 0 && (bytes == NULL || offsets == NULL || ids == NULL)) {
        return RWKV_TOK_E_ARG;
    }
    /* Validate everything before allocating: offsets strictly increase within the blob and
     * ids are non-negative. */
    for (size_t t = 0; t < n_tokens; t++) {
        if (offsets[t] >= offsets[t + 1] || offsets[t + 1] > n_bytes || ids[t] < 0) {
            set_bad(bad_index, t);
            return RWKV_TOK_E_ARG;
        }
    }

    rwkv_tok_trie *trie = calloc(1, sizeof *trie);
    struct edge_map map = {0};
    struct node_tokens nt = {0};
    int status = trie == NULL ? RWKV_TOK_E_NOMEM : edge_map_init(&map, 1024);
    if (status == RWKV_TOK_OK) {
        status = insert_all(bytes, offsets, ids, n_tokens, &map, &nt, bad_index);
    }
    if (status == RWKV_TOK_OK) {
        status = compact(trie, &map, &nt);
    }
    edge_map_free(&map);
    free(nt.token);
    if (status != RWKV_TOK_OK) {
        rwkv_tok_trie_free(trie);
        return status;
    }
    *out = trie;
    return RWKV_TOK_OK;
}

void rwkv_tok_trie_free(rwkv_tok_trie *trie)
{
    if (trie == NULL) {
        return;
    }
    free(trie->nodes);
    free(trie->edge_byte);
    free(trie->edge_child);
    free(trie->dense);
    free(trie);
}

/* Child of node along byte b, or -1. */
static inline int64_t child_of(const rwkv_tok_trie *trie, const struct trie_node *nd, uint8_t b)
{
    if (nd->dense >= 0) {
        return trie->dense[(size_t)nd->dense * 256 + b];
    }
    const uint8_t *eb = trie->edge_byte + nd->first_edge;
    for (uint32_t e = 0; e < nd->n_edges; e++) {
        if (eb[e] == b) {
            return trie->edge_child[nd->first_edge + e];
        }
        if (eb[e] > b) {
            break; /* sorted: b cannot come later */
        }
    }
    return -1;
}

int rwkv_tok_trie_encode(const rwkv_tok_trie *trie, const uint8_t *text, size_t n_text,
                         int32_t *ids_out, size_t cap, size_t *n_ids, size_t *n_consumed)
{
    if (n_ids != NULL) {
        *n_ids = 0;
    }
    if (n_consumed != NULL) {
        *n_consumed = 0;
    }
    if (trie == NULL || n_ids == NULL || n_consumed == NULL || (n_text > 0 && text == NULL) ||
        (cap > 0 && ids_out == NULL)) {
        return RWKV_TOK_E_ARG;
    }
    const struct trie_node *nodes = trie->nodes;
    size_t pos = 0;
    size_t count = 0;
    while (pos < n_text && count < cap) {
        const struct trie_node *nd = &nodes[0];
        size_t j = pos;
        size_t best_end = pos;
        int32_t best_id = -1;
        while (j < n_text) {
            int64_t child = child_of(trie, nd, text[j]);
            if (child < 0) {
                break;
            }
            nd = &nodes[child];
            j++;
            if (nd->token >= 0) {
                best_end = j;
                best_id = nd->token;
            }
        }
        if (best_id < 0) {
            *n_ids = count;
            *n_consumed = pos;
            return RWKV_TOK_E_NOMATCH;
        }
        ids_out[count++] = best_id;
        pos = best_end;
    }
    *n_ids = count;
    *n_consumed = pos;
    return RWKV_TOK_OK;
}

int rwkv_tok_trie_stats(const rwkv_tok_trie *trie, size_t *n_nodes, size_t *n_bytes_held)
{
    if (trie == NULL || n_nodes == NULL || n_bytes_held == NULL) {
        return RWKV_TOK_E_ARG;
    }
    size_t n_edges = trie->n_nodes - 1;
    *n_nodes = trie->n_nodes;
    *n_bytes_held = sizeof *trie + trie->n_nodes * sizeof *trie->nodes + n_edges * (1 + sizeof(uint32_t)) +
                    (trie->n_dense ? trie->n_dense : 1) * 256 * sizeof(int32_t);
    return RWKV_TOK_OK;
}
