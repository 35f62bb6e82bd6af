/* integrity/manifest-int.h - what the files of integrity/ share: the byte
 * layout of format v1 (docs/MANIFEST.md), a buffered writer that can keep
 * the footer's checksum as it goes, a bounded buffered reader, the run
 * writer that merges records into runs, and the record parser that checks
 * a block part as it streams over it.
 *
 * Nothing here holds a whole block part in memory: a 1 TiB disk's part is
 * up to 256 MiB of hashes, so both directions stream through 64 KiB
 * buffers.
 */
#ifndef STRATA_INTEGRITY_MANIFEST_INT_H
#define STRATA_INTEGRITY_MANIFEST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "integrity/manifest.h"

#define MF_MAGIC "STRATAMF"
#define MF_END_MAGIC "STRMFEND"
#define MF_HEADER_LEN 32
#define MF_RUN_LEN 16
#define MF_FOOTER_LEN 32
#define MF_ALGORITHM_XXH3_128 1
/* The most blocks one data run holds as this code writes it (others may
 * write longer runs): the run's hashes are buffered until it closes. */
#define MF_RUN_MAX 4096u
/* Facts larger than this are refused on reading (they are a few hundred
 * bytes in practice). */
#define MF_FACTS_MAX (16u << 20)
#define MF_IO_BUF 65536u

static inline void
mf_le32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static inline void
mf_le64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

static inline uint32_t
mf_get32 (const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static inline uint64_t
mf_get64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* A buffered writer to fd from its current position.  xs, when set, is
 * fed every byte written (the footer's XXH3-64). */
struct mf_out {
  int fd;
  XXH3_state_t *xs;
  uint64_t written;
  size_t len;
  uint8_t buf[MF_IO_BUF];
};
void mf_out_init (struct mf_out *o, int fd, XXH3_state_t *xs);
int mf_out_write (struct mf_out *o, const void *data, size_t len);
int mf_out_flush (struct mf_out *o);

/* A buffered reader of fd's bytes [pos, end), by pread (the fd's position
 * is not used, so a reader can start over). */
struct mf_in {
  int fd;
  uint64_t pos, end;
  size_t bpos, blen;
  uint8_t buf[MF_IO_BUF];
};
void mf_in_init (struct mf_in *in, int fd, uint64_t pos, uint64_t end);
/* Read len bytes: 1 when all were there, 0 when the range ended first,
 * -1 on an I/O error (set). */
int mf_in_read (struct mf_in *in, void *dst, size_t len);
/* Pass over len bytes (at most to the end of the range). */
void mf_in_skip (struct mf_in *in, uint64_t len);
/* The offset of the next byte mf_in_read returns. */
uint64_t mf_in_tell (const struct mf_in *in);

/* Records into runs: consecutive blocks of one kind share a run header;
 * data runs carry their hashes. */
struct mf_runs {
  struct mf_out *out;
  uint64_t first;
  uint32_t count;
  enum mf_kind kind;
  uint8_t hashes[MF_RUN_MAX * MF_HASH_LEN];
};
void mf_runs_init (struct mf_runs *w, struct mf_out *out);
/* Blocks must come in ascending order. */
int mf_runs_put (struct mf_runs *w, uint64_t block, enum mf_kind kind,
                 const uint8_t hash[MF_HASH_LEN]);
/* The last run and the end record. */
int mf_runs_end (struct mf_runs *w);

/* The 32-byte header for a disk of this virtual size. */
void mf_header_make (uint8_t h[MF_HEADER_LEN], int64_t virtual_size);
/* Check a header; what names the file in the error ("manifest PATH"). */
int mf_header_parse (const uint8_t h[MF_HEADER_LEN], const char *what,
                     int64_t *virtual_size);

/* Records parsed from a block part after its header, checked as they
 * come: runs ascending, inside nblocks, kinds known, the end record all
 * zero. */
struct mf_recs {
  struct mf_in *in;
  const char *what;
  uint64_t nblocks;
  uint64_t next;            /* the lowest block the next run may start at */
  uint64_t first;
  uint32_t count, done;
  enum mf_kind kind;
  bool ended;
};
void mf_recs_init (struct mf_recs *r, struct mf_in *in, const char *what, uint64_t nblocks);
/* As mf_next: 1 with a record, 0 after the end record, -1 on error. */
int mf_recs_next (struct mf_recs *r, uint64_t *block, enum mf_kind *kind,
                  uint8_t hash[MF_HASH_LEN]);
/* Pass over the rest of the current run (after mf_recs_next returned 1),
 * so that checking a part costs its runs, not its blocks: a hostile zero
 * run may claim 2^32 blocks. */
int mf_recs_skip_run (struct mf_recs *r);

/* Durable replacement of final_path: a temporary file in its folder is
 * written by body, fsynced, renamed over final_path and the folder
 * fsynced.  body writes to the open temporary file fd. */
int mf_replace (const char *final_path,
                int (*body) (void *opaque, int fd), void *opaque);

/* facts' "size_bytes" (a non-negative integer), or fallback when it is
 * absent (fallback < 0: absent is an error). */
int mf_facts_size (json_t *facts, int64_t fallback, int64_t *size);

#endif
