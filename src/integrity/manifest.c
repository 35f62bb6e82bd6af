/* integrity/manifest.c - block hashing, the block map, and block parts.
 *
 * THREAD SAFETY.  A map's kinds are 2 bits a block packed in 64-bit words;
 * a put changes its block's two bits with a compare-and-swap loop, so that
 * puts of different blocks from several copy workers never lose each
 * other's bits.  The hash goes to the hash file (pwrite at block * 16)
 * before the kind is published (release), so a reader that sees MF_DATA
 * (acquire) reads the hash that goes with it.  Two puts of the same block
 * at once are the caller's bug.
 *
 * The hash file is an unlinked temporary file: only the blocks that were
 * hashed take room (16 bytes each), holes read as zeroes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integrity/manifest-int.h"
#include "util/cleanup.h"
#include "util/error.h"

#define WORD_BLOCKS 32          /* blocks per 64-bit word of kinds */

struct mf_map {
  int64_t virtual_size;
  uint64_t nblocks;
  uint64_t *kinds;
  int fd;                       /* the hash file */
};

/* 64 KiB of zeroes: the padding of a partial last block. */
static const uint8_t zeros[MF_BLOCK_SIZE];

uint64_t
mf_blocks_for (int64_t virtual_size)
{
  if (virtual_size <= 0)
    return 0;
  return ((uint64_t) virtual_size + MF_BLOCK_SIZE - 1) / MF_BLOCK_SIZE;
}

enum mf_kind
mf_hash_block (const void *data, size_t len, uint8_t hash[MF_HASH_LEN])
{
  const uint8_t *p = data;
  XXH128_hash_t h;
  XXH128_canonical_t c;

  if (len > MF_BLOCK_SIZE)
    len = MF_BLOCK_SIZE;
  if (len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0))
    return MF_ZERO;
  if (len == MF_BLOCK_SIZE)
    h = XXH3_128bits (p, len);
  else {
    /* The streaming hash of data then zeroes is the hash of the padded
     * block, without a 64 KiB copy.  (The state is opaque in the shared
     * library's API, hence the allocation.) */
    XXH3_state_t *st = XXH3_createState ();
    if (st == NULL)
      abort ();                 /* a few hundred bytes: nothing to recover */
    XXH3_128bits_reset (st);
    XXH3_128bits_update (st, p, len);
    XXH3_128bits_update (st, zeros, MF_BLOCK_SIZE - len);
    h = XXH3_128bits_digest (st);
    XXH3_freeState (st);
  }
  XXH128_canonicalFromHash (&c, h);
  memcpy (hash, c.digest, MF_HASH_LEN);
  return MF_DATA;
}

/* An unlinked temporary file in dir (O_TMPFILE, or a named file removed at
 * once where the file system lacks it). */
static int
temp_file (const char *dir)
{
  CLEANUP_FREE char *name = NULL;
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
    return fd;
  if (asprintf (&name, "%s/.strata-hashes-XXXXXX", dir) == -1) {
    name = NULL;
    errno = ENOMEM;
    return -1;
  }
  fd = mkostemp (name, O_CLOEXEC);
  if (fd >= 0)
    unlink (name);
  return fd;
}

struct mf_map *
mf_map_new (int64_t virtual_size, const char *tmpdir)
{
  struct mf_map *m;
  size_t words;

  if (virtual_size < 0) {
    error_set (ERR_INVALID, "block map: negative virtual size");
    return NULL;
  }
  if (tmpdir == NULL) {
    tmpdir = getenv ("TMPDIR");
    if (tmpdir == NULL || *tmpdir == '\0')
      tmpdir = "/var/tmp";
  }
  m = calloc (1, sizeof *m);
  if (m == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "block map");
    return NULL;
  }
  m->virtual_size = virtual_size;
  m->nblocks = mf_blocks_for (virtual_size);
  words = m->nblocks / WORD_BLOCKS + 1;
  m->kinds = calloc (words, sizeof *m->kinds);
  if (m->kinds == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "block map of %llu blocks",
                     (unsigned long long) m->nblocks);
    free (m);
    return NULL;
  }
  m->fd = temp_file (tmpdir);
  if (m->fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "block map: temporary file in %s", tmpdir);
    free (m->kinds);
    free (m);
    return NULL;
  }
  return m;
}

void
mf_map_free (struct mf_map *m)
{
  if (m == NULL)
    return;
  close (m->fd);
  free (m->kinds);
  free (m);
}

int64_t
mf_map_virtual_size (const struct mf_map *m)
{
  return m->virtual_size;
}

static enum mf_kind
kind_at (const struct mf_map *m, uint64_t block)
{
  uint64_t w = __atomic_load_n (&m->kinds[block / WORD_BLOCKS], __ATOMIC_ACQUIRE);
  return (w >> (block % WORD_BLOCKS * 2)) & 3;
}

int
mf_map_put (struct mf_map *m, uint64_t block, enum mf_kind kind,
            const uint8_t hash[MF_HASH_LEN])
{
  uint64_t *w, old, nw;
  unsigned shift = block % WORD_BLOCKS * 2;

  if (block >= m->nblocks) {
    error_set (ERR_INVALID, "block map: block %llu past the disk's %llu blocks",
               (unsigned long long) block, (unsigned long long) m->nblocks);
    return -1;
  }
  if (kind != MF_NONE && kind != MF_DATA && kind != MF_ZERO) {
    error_set (ERR_INVALID, "block map: unknown kind %d", (int) kind);
    return -1;
  }
  if (kind == MF_DATA) {
    if (hash == NULL) {
      error_set (ERR_INVALID, "block map: a data block needs its hash");
      return -1;
    }
    if (pwrite (m->fd, hash, MF_HASH_LEN, block * MF_HASH_LEN) != MF_HASH_LEN) {
      error_set_errno (ERR_INTERNAL, errno ? errno : EIO, "block map: writing a hash");
      return -1;
    }
  }
  w = &m->kinds[block / WORD_BLOCKS];
  old = __atomic_load_n (w, __ATOMIC_RELAXED);
  do
    nw = (old & ~((uint64_t) 3 << shift)) | ((uint64_t) kind << shift);
  while (!__atomic_compare_exchange_n (w, &old, nw, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
  return 0;
}

/* Check that [offset, offset+len) is block aligned (the end may be the
 * virtual size) and inside the disk. */
static int
check_range (const struct mf_map *m, uint64_t offset, uint64_t len)
{
  uint64_t end;

  if (offset % MF_BLOCK_SIZE != 0 ||
      __builtin_add_overflow (offset, len, &end) ||
      end > m->nblocks * MF_BLOCK_SIZE ||
      (end % MF_BLOCK_SIZE != 0 && end != (uint64_t) m->virtual_size)) {
    error_set (ERR_INVALID, "block map: range %llu+%llu is not block aligned inside the disk",
               (unsigned long long) offset, (unsigned long long) len);
    return -1;
  }
  return 0;
}

int
mf_map_put_buffer (struct mf_map *m, uint64_t offset, const void *buf, size_t len)
{
  const uint8_t *p = buf;

  if (check_range (m, offset, len) == -1)
    return -1;
  for (size_t done = 0; done < len; done += MF_BLOCK_SIZE) {
    uint64_t block = (offset + done) / MF_BLOCK_SIZE;
    uint64_t at = offset + done;
    size_t n = len - done < MF_BLOCK_SIZE ? len - done : MF_BLOCK_SIZE;
    uint8_t hash[MF_HASH_LEN];
    enum mf_kind kind;

    /* Bytes past the virtual size count as zeroes, whatever the buffer
     * holds there. */
    if (at + n > (uint64_t) m->virtual_size)
      n = m->virtual_size - at;
    kind = mf_hash_block (p + done, n, hash);
    if (mf_map_put (m, block, kind, hash) == -1)
      return -1;
  }
  return 0;
}

int
mf_map_put_zero (struct mf_map *m, uint64_t offset, uint64_t len)
{
  if (check_range (m, offset, len) == -1)
    return -1;
  for (uint64_t b = offset / MF_BLOCK_SIZE; b * MF_BLOCK_SIZE < offset + len; b++)
    if (mf_map_put (m, b, MF_ZERO, NULL) == -1)
      return -1;
  return 0;
}

enum mf_kind
mf_map_get (const struct mf_map *m, uint64_t block, uint8_t hash[MF_HASH_LEN])
{
  enum mf_kind kind;

  if (block >= m->nblocks)
    return MF_NONE;
  kind = kind_at (m, block);
  if (kind == MF_DATA && hash &&
      pread (m->fd, hash, MF_HASH_LEN, block * MF_HASH_LEN) != MF_HASH_LEN)
    memset (hash, 0, MF_HASH_LEN);
  return kind;
}

uint64_t
mf_map_count (const struct mf_map *m, enum mf_kind kind)
{
  const uint64_t lo_bits = 0x5555555555555555ull;
  uint64_t n = 0, words = m->nblocks / WORD_BLOCKS + 1;

  for (uint64_t i = 0; i < words; i++) {
    uint64_t w = __atomic_load_n (&m->kinds[i], __ATOMIC_ACQUIRE);
    uint64_t lo = w & lo_bits, hi = (w >> 1) & lo_bits;

    switch (kind) {
    case MF_DATA: n += __builtin_popcountll (lo & ~hi); break;
    case MF_ZERO: n += __builtin_popcountll (hi & ~lo); break;
    default: break;
    }
  }
  if (kind == MF_NONE)
    return m->nblocks - mf_map_count (m, MF_DATA) - mf_map_count (m, MF_ZERO);
  return n;
}

int
mf_map_write_part (const struct mf_map *m, int fd)
{
  CLEANUP_FREE struct mf_out *out = malloc (sizeof *out);
  CLEANUP_FREE struct mf_runs *runs = malloc (sizeof *runs);
  /* Hashes are read from the hash file a window at a time. */
  CLEANUP_FREE uint8_t *win = malloc ((size_t) MF_RUN_MAX * MF_HASH_LEN);
  uint64_t win_first = UINT64_MAX;
  uint8_t header[MF_HEADER_LEN];

  if (out == NULL || runs == NULL || win == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "writing a block part");
    return -1;
  }
  mf_out_init (out, fd, NULL);
  mf_runs_init (runs, out);
  mf_header_make (header, m->virtual_size);
  if (mf_out_write (out, header, sizeof header) == -1)
    return -1;
  for (uint64_t b = 0; b < m->nblocks; b++) {
    enum mf_kind kind;

    if (b % WORD_BLOCKS == 0 &&
        __atomic_load_n (&m->kinds[b / WORD_BLOCKS], __ATOMIC_ACQUIRE) == 0) {
      b += WORD_BLOCKS - 1;
      continue;
    }
    kind = kind_at (m, b);
    if (kind == MF_NONE)
      continue;
    if (kind == MF_DATA && (win_first == UINT64_MAX || b >= win_first + MF_RUN_MAX)) {
      ssize_t r;

      win_first = b / MF_RUN_MAX * MF_RUN_MAX;
      r = pread (m->fd, win, (size_t) MF_RUN_MAX * MF_HASH_LEN, win_first * MF_HASH_LEN);
      if (r == -1) {
        error_set_errno (ERR_INTERNAL, errno, "block map: reading hashes");
        return -1;
      }
      memset (win + r, 0, (size_t) MF_RUN_MAX * MF_HASH_LEN - r);
    }
    if (mf_runs_put (runs, b, kind,
                     kind == MF_DATA ? win + (b - win_first) * MF_HASH_LEN : NULL) == -1)
      return -1;
  }
  if (mf_runs_end (runs) == -1 || mf_out_flush (out) == -1)
    return -1;
  return 0;
}

char *
mf_path_for (const char *file)
{
  char *p;

  if (asprintf (&p, "%s%s", file, MF_SUFFIX) == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "manifest path");
    return NULL;
  }
  return p;
}

uint64_t
mf_part_max (int64_t virtual_size)
{
  /* Worst case: every block its own data run (a run header and a hash). */
  return MF_HEADER_LEN + MF_RUN_LEN +
    mf_blocks_for (virtual_size) * (MF_RUN_LEN + MF_HASH_LEN);
}

int
mf_part_check (const char *part_path, int64_t virtual_size)
{
  CLEANUP_FD int fd = open (part_path, O_RDONLY | O_CLOEXEC);
  CLEANUP_FREE struct mf_in *in = NULL;
  const char *what = "block part";
  uint8_t header[MF_HEADER_LEN], extra;
  struct mf_recs recs;
  int64_t size;
  uint64_t block;
  enum mf_kind kind;
  int r;

  if (fd == -1) {
    error_set_errno (errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno,
                     "block part %s", part_path);
    return -1;
  }
  in = malloc (sizeof *in);
  if (in == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "block part");
    return -1;
  }
  mf_in_init (in, fd, 0, UINT64_MAX);
  r = mf_in_read (in, header, sizeof header);
  if (r == 0)
    error_set (ERR_INVALID, "%s: shorter than its header", what);
  if (r != 1 || mf_header_parse (header, what, &size) == -1)
    return -1;
  if (size != virtual_size) {
    error_set (ERR_INVALID, "%s: virtual size %lld, the disk has %lld",
               what, (long long) size, (long long) virtual_size);
    return -1;
  }
  mf_recs_init (&recs, in, what, mf_blocks_for (size));
  while ((r = mf_recs_next (&recs, &block, &kind, NULL)) == 1)
    if (mf_recs_skip_run (&recs) == -1)
      return -1;
  if (r == -1)
    return -1;
  r = mf_in_read (in, &extra, 1);
  if (r == -1)
    return -1;
  if (r == 1) {
    error_set (ERR_INVALID, "%s: bytes after the end record", what);
    return -1;
  }
  return 0;
}
