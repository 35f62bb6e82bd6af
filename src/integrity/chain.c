/* integrity/chain.c - a point's chain of manifests: what each layer
 * contributes to the top's view, and the comparison of an observed view
 * with what the manifests say.
 *
 * Both walk the layers top first, streaming each layer's records once, and
 * keep one bit per block: "held by a layer above" (layer_needs) or
 * "resolved" (compare).  The composition rule (integrity/manifest.h):
 * block b comes from the first layer that holds it, except that once b is
 * past the end of a layer (b * 64 KiB >= its virtual size), the view reads
 * zeroes there whatever lies below.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "integrity/manifest-int.h"
#include "util/cleanup.h"
#include "util/error.h"

struct mf_chain {
  size_t n;
  struct mf_reader **r;
};

void
mf_chain_free (struct mf_chain *c)
{
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->n; i++)
    mf_close (c->r[i]);
  free (c->r);
  free (c);
}

struct mf_chain *
mf_chain_open (const char *const *paths, size_t n)
{
  struct mf_chain *c = calloc (1, sizeof *c);

  if (c == NULL || (c->r = calloc (n ? n : 1, sizeof *c->r)) == NULL) {
    free (c);
    error_set_errno (ERR_INTERNAL, ENOMEM, "manifest chain");
    return NULL;
  }
  if (n == 0) {
    error_set (ERR_INVALID, "manifest chain of no layers");
    mf_chain_free (c);
    return NULL;
  }
  for (c->n = 0; c->n < n; c->n++) {
    c->r[c->n] = mf_open (paths[c->n]);
    if (c->r[c->n] == NULL) {
      mf_chain_free (c);
      return NULL;
    }
  }
  return c;
}

/* A bitmap of nbits bits, all clear. */
static uint64_t *
bits_new (uint64_t nbits)
{
  uint64_t *b = calloc (nbits / 64 + 1, sizeof *b);
  if (b == NULL)
    error_set_errno (ERR_INTERNAL, ENOMEM, "bitmap of %llu blocks",
                     (unsigned long long) nbits);
  return b;
}

static inline bool
bit_get (const uint64_t *b, uint64_t i)
{
  return b[i / 64] >> (i % 64) & 1;
}

static inline void
bit_set (uint64_t *b, uint64_t i)
{
  b[i / 64] |= (uint64_t) 1 << (i % 64);
}

static int
need_hashes (struct mf_chain *c, size_t upto)
{
  for (size_t i = 0; i <= upto && i < c->n; i++)
    if (!mf_hashed (c->r[i])) {
      error_set (ERR_INVALID, "manifest of layer %zu has no hashes", i);
      return -1;
    }
  return 0;
}

static uint64_t
layer_blocks (struct mf_chain *c, size_t i)
{
  return mf_blocks_for (mf_virtual_size (c->r[i]));
}

int
mf_chain_layer_needs (struct mf_chain *c, size_t i,
                      int (*fn) (void *opaque, uint64_t block, enum mf_kind kind,
                                 const uint8_t hash[MF_HASH_LEN]),
                      void *opaque)
{
  CLEANUP_FREE uint64_t *held = NULL;
  uint64_t limit = UINT64_MAX, block;
  uint8_t hash[MF_HASH_LEN];
  enum mf_kind kind;
  int r;

  if (i >= c->n) {
    error_set (ERR_INVALID, "manifest chain has no layer %zu", i);
    return -1;
  }
  if (need_hashes (c, i) == -1)
    return -1;
  /* Only blocks before the end of every layer above can show through. */
  for (size_t j = 0; j < i; j++)
    if (layer_blocks (c, j) < limit)
      limit = layer_blocks (c, j);
  if (limit > layer_blocks (c, i))
    limit = layer_blocks (c, i);        /* layer i holds nothing past its end */
  held = bits_new (limit);
  if (held == NULL)
    return -1;
  for (size_t j = 0; j < i; j++) {
    if (mf_rewind (c->r[j]) == -1)
      return -1;
    while ((r = mf_next (c->r[j], &block, &kind, NULL)) == 1)
      if (block < limit)
        bit_set (held, block);
    if (r == -1)
      return -1;
  }
  if (mf_rewind (c->r[i]) == -1)
    return -1;
  while ((r = mf_next (c->r[i], &block, &kind, hash)) == 1) {
    if (block >= limit)
      break;
    if (!bit_get (held, block) && fn (opaque, block, kind, hash) == -1)
      return -1;
  }
  return r == -1 ? -1 : 0;
}

/* What compare keeps while it walks. */
struct comparing {
  const struct mf_map *observed;
  uint64_t *resolved;
  uint64_t nblocks;             /* the observed map's */
  uint8_t zero_hash[MF_HASH_LEN];
  struct mf_compare *out;
};

static void
note_bad (struct comparing *s, uint64_t block)
{
  int64_t off = (int64_t) (block * MF_BLOCK_SIZE);
  struct mf_compare *o = s->out;
  size_t n = sizeof o->bad_offsets / sizeof o->bad_offsets[0];

  o->bad++;
  /* Keep the smallest few offsets, ascending (layers are walked in turn,
   * so bad blocks do not come in block order). */
  for (size_t k = 0; k < n; k++) {
    if (o->bad_offsets[k] == -1 || off < o->bad_offsets[k]) {
      memmove (&o->bad_offsets[k + 1], &o->bad_offsets[k],
               (n - k - 1) * sizeof o->bad_offsets[0]);
      o->bad_offsets[k] = off;
      break;
    }
  }
  o->first_bad = o->bad_offsets[0];
}

/* Compare observed block b with what the chain says (kind, hash), and
 * mark it resolved.  Blocks the observer did not see are skipped. */
static void
compare_block (struct comparing *s, uint64_t b, enum mf_kind want, const uint8_t *want_hash)
{
  uint8_t got_hash[MF_HASH_LEN];
  enum mf_kind got;
  bool same;

  if (b >= s->nblocks || bit_get (s->resolved, b))
    return;
  bit_set (s->resolved, b);
  got = mf_map_get (s->observed, b, NULL);
  if (got == MF_NONE)
    return;
  s->out->checked++;
  /* A data record whose hash is the zero block's (a writer that did not
   * sort out zero blocks) still says zero. */
  if (want == MF_DATA && memcmp (want_hash, s->zero_hash, MF_HASH_LEN) == 0)
    want = MF_ZERO;
  if (got == MF_ZERO || want == MF_ZERO)
    same = got == want;
  else
    same = mf_map_get (s->observed, b, got_hash) == MF_DATA &&
      memcmp (got_hash, want_hash, MF_HASH_LEN) == 0;
  if (!same)
    note_bad (s, b);
}

/* Every unresolved observed block in [from, to) reads zeroes. */
static void
compare_zero_range (struct comparing *s, uint64_t from, uint64_t to)
{
  if (to > s->nblocks)
    to = s->nblocks;
  for (uint64_t b = from; b < to; b++)
    compare_block (s, b, MF_ZERO, NULL);
}

int
mf_chain_compare (struct mf_chain *c, const struct mf_map *observed,
                  struct mf_compare *out)
{
  CLEANUP_FREE uint64_t *resolved = NULL;
  static const uint8_t zeros[MF_BLOCK_SIZE];
  struct comparing s;
  uint64_t limit = UINT64_MAX, block;
  uint8_t hash[MF_HASH_LEN];
  enum mf_kind kind;
  int r;

  memset (out, 0, sizeof *out);
  out->first_bad = -1;
  for (size_t k = 0; k < sizeof out->bad_offsets / sizeof out->bad_offsets[0]; k++)
    out->bad_offsets[k] = -1;
  if (need_hashes (c, c->n - 1) == -1)
    return -1;
  s.observed = observed;
  s.nblocks = mf_blocks_for (mf_map_virtual_size (observed));
  s.out = out;
  resolved = s.resolved = bits_new (s.nblocks);
  if (resolved == NULL)
    return -1;
  {
    /* XXH3-128 of 64 KiB of zeroes, computed (mf_hash_block would call
     * it a zero block). */
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash (&canon, XXH3_128bits (zeros, sizeof zeros));
    memcpy (s.zero_hash, canon.digest, MF_HASH_LEN);
  }

  for (size_t i = 0; i < c->n; i++) {
    uint64_t end = layer_blocks (c, i);

    if (mf_rewind (c->r[i]) == -1)
      return -1;
    while ((r = mf_next (c->r[i], &block, &kind, hash)) == 1) {
      if (block >= limit)
        break;
      compare_block (&s, block, kind, hash);
    }
    if (r == -1)
      return -1;
    /* Past this layer's end the view reads zeroes, whatever lies below. */
    if (end < limit) {
      compare_zero_range (&s, end, limit);
      limit = end;
    }
  }
  /* What no layer holds reads zeroes. */
  compare_zero_range (&s, 0, limit);
  return 0;
}
