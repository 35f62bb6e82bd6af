/* integrity/manifest.h - block hashes of one backup file, and the
 * manifest that keeps them next to it.
 *
 * Every backup file (a QCOW2 layer, storage/repo.h) has a manifest,
 * "<file>.manifest" in the same folder: the hashes of the 64 KiB blocks the
 * layer holds, taken from the source's data as the copy engine read it, and
 * the catalog facts of that point (JSON).  verify reads the files back and
 * compares; rebuild-catalog reads only the facts.  docs/MANIFEST.md
 * describes the format (version 1).
 *
 * Block semantics.  Block b covers bytes [b*64Ki, (b+1)*64Ki).  A block is
 * hashed as a whole 64 KiB: bytes past the layer's virtual size count as
 * zeroes.  A record says the layer holds the block: MF_DATA with its
 * XXH3-128 hash, or MF_ZERO (every byte reads zero; not hashed).  A block
 * with no record is not held by the layer: in an overlay it reads through
 * the backing file; in a full (no backing file) it reads as zeroes.
 *
 * Composition (a point's view through its chain, top layer first): block b
 * comes from the first layer that holds it, except that past the end of any
 * layer above, the view reads zeroes (a shorter overlay hides what lies
 * beyond its end); a block no layer holds reads zeroes.
 *
 * Every function returns 0 (or what it says) on success, -1 with the
 * thread-local error set (util/error.h): ERR_NOT_FOUND for a missing file,
 * ERR_INVALID for a malformed one (naming the file and what is wrong),
 * ERR_INTERNAL for I/O errors.
 */
#ifndef STRATA_INTEGRITY_MANIFEST_H
#define STRATA_INTEGRITY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MF_BLOCK_SIZE 65536u
#define MF_HASH_LEN 16           /* XXH3-128, canonical (big-endian) form */
#define MF_VERSION 1
#define MF_ALGORITHM "xxh3-128"
#define MF_SUFFIX ".manifest"

enum mf_kind { MF_NONE = 0, MF_DATA = 1, MF_ZERO = 2 };

/* Blocks of a disk of this virtual size (the last one may be partial). */
uint64_t mf_blocks_for (int64_t virtual_size);

/* Hash len <= MF_BLOCK_SIZE bytes as one block (zero-padded to the block
 * size): MF_ZERO when every byte is zero (hash untouched), else MF_DATA with
 * the hash. */
enum mf_kind mf_hash_block (const void *data, size_t len, uint8_t hash[MF_HASH_LEN]);

/* --- A block map: one disk's records while they are gathered ------------
 * Kinds in memory (2 bits a block), hashes in an unlinked temporary file
 * (16 bytes a block, sparse), so that a 1 TiB disk costs 4 MiB of memory.
 * Puts of different blocks may come from several threads at once. */
struct mf_map;

/* tmpdir: where the hash file lives; NULL for $TMPDIR, else /var/tmp. */
struct mf_map *mf_map_new (int64_t virtual_size, const char *tmpdir);
void mf_map_free (struct mf_map *m);      /* NULL is a no-op */
int64_t mf_map_virtual_size (const struct mf_map *m);
int mf_map_put (struct mf_map *m, uint64_t block, enum mf_kind kind,
                const uint8_t hash[MF_HASH_LEN]);
/* Hash buf, read at offset, block by block into the map.  offset is block
 * aligned; len is a multiple of the block size, or ends at the virtual
 * size (the last block is zero-padded). */
int mf_map_put_buffer (struct mf_map *m, uint64_t offset, const void *buf, size_t len);
/* Record [offset, offset+len) as zero blocks (the same alignment rule). */
int mf_map_put_zero (struct mf_map *m, uint64_t offset, uint64_t len);
/* A block's kind, and its hash (hash may be NULL) when MF_DATA. */
enum mf_kind mf_map_get (const struct mf_map *m, uint64_t block, uint8_t hash[MF_HASH_LEN]);
uint64_t mf_map_count (const struct mf_map *m, enum mf_kind kind);

/* Write the map's records as a manifest's block part (header, runs in
 * block order, end record) to fd, from its current position. */
int mf_map_write_part (const struct mf_map *m, int fd);

/* --- Manifest files ------------------------------------------------------ */
/* "<file>.manifest" for a backup file path (caller frees). */
char *mf_path_for (const char *file);

/* Check a block part (as an agent uploads it) for a disk of this virtual
 * size: header (version, block size, algorithm, the same virtual size),
 * runs ascending and inside the disk, end record last and nothing after
 * it.  ERR_INVALID saying what is wrong. */
int mf_part_check (const char *part_path, int64_t virtual_size);
/* The most bytes a valid block part for that virtual size can take (an
 * upload past it is refused before it is stored). */
uint64_t mf_part_max (int64_t virtual_size);

/* Make the manifest final_path: the block part at part_path (checked with
 * mf_part_check against facts' "size_bytes"; NULL: no hashes, "hashed":
 * false) followed by the facts and the footer.  The format keys ("format",
 * "version", "block_size", "algorithm", "hashed") are set in a copy of
 * facts.  Written to a temporary name, fsynced, renamed over final_path,
 * folder fsynced; part_path is gone afterwards. */
int mf_finish (const char *part_path, json_t *facts, const char *final_path);

/* The union of the manifests at inputs[0..n) (top first: a block comes from
 * the first input that holds it; past the end of an input, blocks no input
 * above holds are zero records), limited to facts' "size_bytes", with
 * facts, written to final_path as mf_finish does.  When an input has no
 * hashes the result has none.  No input is modified; final_path may be
 * one of them (it is replaced only at the end). */
int mf_union (const char *const *inputs, size_t n, json_t *facts, const char *final_path);

/* Read a manifest: the footer, the checksum over the whole file, the
 * header and the facts are checked when it is opened. */
struct mf_reader;
struct mf_reader *mf_open (const char *path);
void mf_close (struct mf_reader *r);      /* NULL is a no-op */
json_t *mf_facts (const struct mf_reader *r);   /* borrowed */
bool mf_hashed (const struct mf_reader *r);
int64_t mf_virtual_size (const struct mf_reader *r);
/* The next record in block order: 1 with *block, *kind and (MF_DATA) hash
 * set; 0 after the last; -1 on error.  mf_rewind starts over. */
int mf_next (struct mf_reader *r, uint64_t *block, enum mf_kind *kind,
             uint8_t hash[MF_HASH_LEN]);
int mf_rewind (struct mf_reader *r);

/* Write fresh facts into an existing manifest (the records kept), as
 * mf_union does with one input. */
int mf_refacts (const char *path, json_t *facts);

/* --- A point's chain ----------------------------------------------------- */
struct mf_chain;
/* The manifests of a point's chain, top (the point's own layer) first. */
struct mf_chain *mf_chain_open (const char *const *paths, size_t n);
void mf_chain_free (struct mf_chain *c);

/* The blocks the top's view takes from layer i, in block order: fn is
 * called with each record of layer i that no layer above holds and that
 * lies before the end of every layer above.  fn returns 0, or -1 to stop
 * (the error set).  Memory: one bit per block. */
int mf_chain_layer_needs (struct mf_chain *c, size_t i,
                          int (*fn) (void *opaque, uint64_t block, enum mf_kind kind,
                                     const uint8_t hash[MF_HASH_LEN]),
                          void *opaque);

/* Compare what was observed of the top's view (every block of observed
 * that is not MF_NONE) with what the chain's manifests say it is. */
struct mf_compare {
  uint64_t checked;          /* observed blocks compared */
  uint64_t bad;              /* of those, blocks that differ */
  int64_t first_bad;         /* byte offset of the first, or -1 */
  int64_t bad_offsets[8];    /* the first few, -1 past bad */
};
int mf_chain_compare (struct mf_chain *c, const struct mf_map *observed,
                      struct mf_compare *out);

#endif
