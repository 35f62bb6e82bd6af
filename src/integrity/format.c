/* integrity/format.c - the byte layout of manifest format v1: buffered
 * writing and reading, runs, the header, the checked record parser and the
 * durable replacement of a manifest file (integrity/manifest-int.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "integrity/manifest-int.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"

void
mf_out_init (struct mf_out *o, int fd, XXH3_state_t *xs)
{
  o->fd = fd;
  o->xs = xs;
  o->written = 0;
  o->len = 0;
}

int
mf_out_flush (struct mf_out *o)
{
  size_t done = 0;

  while (done < o->len) {
    ssize_t r = write (o->fd, o->buf + done, o->len - done);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      error_set_errno (ERR_INTERNAL, errno, "writing a manifest");
      return -1;
    }
    done += r;
  }
  o->len = 0;
  return 0;
}

int
mf_out_write (struct mf_out *o, const void *data, size_t len)
{
  const uint8_t *p = data;

  if (o->xs)
    XXH3_64bits_update (o->xs, data, len);
  o->written += len;
  while (len > 0) {
    size_t n = sizeof o->buf - o->len;
    if (n > len)
      n = len;
    memcpy (o->buf + o->len, p, n);
    o->len += n;
    p += n;
    len -= n;
    if (o->len == sizeof o->buf && mf_out_flush (o) == -1)
      return -1;
  }
  return 0;
}

void
mf_in_init (struct mf_in *in, int fd, uint64_t pos, uint64_t end)
{
  in->fd = fd;
  in->pos = pos;
  in->end = end;
  in->bpos = in->blen = 0;
}

uint64_t
mf_in_tell (const struct mf_in *in)
{
  return in->pos - (in->blen - in->bpos);
}

int
mf_in_read (struct mf_in *in, void *dst, size_t len)
{
  uint8_t *p = dst;

  while (len > 0) {
    if (in->bpos == in->blen) {
      size_t want = sizeof in->buf;
      ssize_t r;

      if (in->pos >= in->end)
        return 0;
      if (want > in->end - in->pos)
        want = in->end - in->pos;
      do
        r = pread (in->fd, in->buf, want, in->pos);
      while (r == -1 && errno == EINTR);
      if (r == -1) {
        error_set_errno (ERR_INTERNAL, errno, "reading a manifest");
        return -1;
      }
      if (r == 0)
        return 0;
      in->pos += r;
      in->bpos = 0;
      in->blen = r;
    }
    size_t n = in->blen - in->bpos;
    if (n > len)
      n = len;
    memcpy (p, in->buf + in->bpos, n);
    in->bpos += n;
    p += n;
    len -= n;
  }
  return 1;
}

void
mf_in_skip (struct mf_in *in, uint64_t len)
{
  size_t n = in->blen - in->bpos;

  if (len <= n) {
    in->bpos += len;
    return;
  }
  len -= n;
  in->bpos = in->blen = 0;
  in->pos = len > in->end - in->pos ? in->end : in->pos + len;
}

void
mf_runs_init (struct mf_runs *w, struct mf_out *out)
{
  w->out = out;
  w->first = 0;
  w->count = 0;
  w->kind = MF_NONE;
}

/* Write the pending run, if any. */
static int
runs_flush (struct mf_runs *w)
{
  uint8_t h[MF_RUN_LEN];

  if (w->count == 0)
    return 0;
  mf_le64 (h, w->first);
  mf_le32 (h + 8, w->count);
  mf_le32 (h + 12, w->kind);
  if (mf_out_write (w->out, h, sizeof h) == -1 ||
      (w->kind == MF_DATA &&
       mf_out_write (w->out, w->hashes, (size_t) w->count * MF_HASH_LEN) == -1))
    return -1;
  w->count = 0;
  return 0;
}

int
mf_runs_put (struct mf_runs *w, uint64_t block, enum mf_kind kind,
             const uint8_t hash[MF_HASH_LEN])
{
  uint32_t max = kind == MF_DATA ? MF_RUN_MAX : UINT32_MAX;

  if (kind != MF_DATA && kind != MF_ZERO)
    return 0;
  if (w->count == 0 || kind != w->kind || block != w->first + w->count ||
      w->count == max) {
    if (runs_flush (w) == -1)
      return -1;
    w->first = block;
    w->kind = kind;
  }
  if (kind == MF_DATA)
    memcpy (w->hashes + (size_t) w->count * MF_HASH_LEN, hash, MF_HASH_LEN);
  w->count++;
  return 0;
}

int
mf_runs_end (struct mf_runs *w)
{
  static const uint8_t end[MF_RUN_LEN];

  if (runs_flush (w) == -1 || mf_out_write (w->out, end, sizeof end) == -1)
    return -1;
  return 0;
}

int
mf_recs_skip_run (struct mf_recs *r)
{
  uint64_t left = r->count - r->done, end;

  if (r->kind == MF_DATA && left > 0) {
    uint64_t at = mf_in_tell (r->in);
    /* A run longer than what remains cannot be whole. */
    if (__builtin_add_overflow (at, left * MF_HASH_LEN, &end) || end > r->in->end) {
      error_set (ERR_INVALID, "%s: truncated (no end record)", r->what);
      return -1;
    }
    mf_in_skip (r->in, left * MF_HASH_LEN);
  }
  r->done = r->count;
  return 0;
}

void
mf_header_make (uint8_t h[MF_HEADER_LEN], int64_t virtual_size)
{
  memset (h, 0, MF_HEADER_LEN);
  memcpy (h, MF_MAGIC, 8);
  mf_le32 (h + 8, MF_VERSION);
  mf_le32 (h + 12, MF_BLOCK_SIZE);
  mf_le64 (h + 16, virtual_size);
  h[24] = MF_ALGORITHM_XXH3_128;
}

int
mf_header_parse (const uint8_t h[MF_HEADER_LEN], const char *what, int64_t *virtual_size)
{
  uint64_t size = mf_get64 (h + 16);

  if (memcmp (h, MF_MAGIC, 8) != 0) {
    error_set (ERR_INVALID, "%s: not a strata manifest (bad magic)", what);
    return -1;
  }
  if (mf_get32 (h + 8) != MF_VERSION) {
    error_set (ERR_INVALID, "%s: version %u, this hub reads version %d",
               what, mf_get32 (h + 8), MF_VERSION);
    return -1;
  }
  if (mf_get32 (h + 12) != MF_BLOCK_SIZE) {
    error_set (ERR_INVALID, "%s: block size %u, expected %u",
               what, mf_get32 (h + 12), MF_BLOCK_SIZE);
    return -1;
  }
  if (h[24] != MF_ALGORITHM_XXH3_128) {
    error_set (ERR_INVALID, "%s: unknown hash algorithm %u", what, h[24]);
    return -1;
  }
  for (int i = 25; i < MF_HEADER_LEN; i++)
    if (h[i] != 0) {
      error_set (ERR_INVALID, "%s: reserved header bytes are not zero", what);
      return -1;
    }
  if (size > INT64_MAX) {
    error_set (ERR_INVALID, "%s: virtual size %llu out of range",
               what, (unsigned long long) size);
    return -1;
  }
  *virtual_size = size;
  return 0;
}

void
mf_recs_init (struct mf_recs *r, struct mf_in *in, const char *what, uint64_t nblocks)
{
  r->in = in;
  r->what = what;
  r->nblocks = nblocks;
  r->next = 0;
  r->first = 0;
  r->count = r->done = 0;
  r->kind = MF_NONE;
  r->ended = false;
}

static int
recs_truncated (struct mf_recs *r, int rr)
{
  if (rr == 0)
    error_set (ERR_INVALID, "%s: truncated (no end record)", r->what);
  return -1;
}

int
mf_recs_next (struct mf_recs *r, uint64_t *block, enum mf_kind *kind,
              uint8_t hash[MF_HASH_LEN])
{
  int rr;

  if (r->ended)
    return 0;
  if (r->done == r->count) {
    uint8_t h[MF_RUN_LEN];
    uint64_t first, end;
    uint32_t count, k;

    if ((rr = mf_in_read (r->in, h, sizeof h)) != 1)
      return recs_truncated (r, rr);
    first = mf_get64 (h);
    count = mf_get32 (h + 8);
    k = mf_get32 (h + 12);
    if (k == MF_NONE) {
      if (first != 0 || count != 0) {
        error_set (ERR_INVALID, "%s: end record is not all zero", r->what);
        return -1;
      }
      r->ended = true;
      return 0;
    }
    if (k != MF_DATA && k != MF_ZERO) {
      error_set (ERR_INVALID, "%s: run at block %llu has unknown kind %u",
                 r->what, (unsigned long long) first, k);
      return -1;
    }
    if (count == 0) {
      error_set (ERR_INVALID, "%s: run at block %llu is empty",
                 r->what, (unsigned long long) first);
      return -1;
    }
    if (first < r->next) {
      error_set (ERR_INVALID, "%s: run at block %llu is out of order or overlaps the one before",
                 r->what, (unsigned long long) first);
      return -1;
    }
    if (__builtin_add_overflow (first, (uint64_t) count, &end) || end > r->nblocks) {
      error_set (ERR_INVALID, "%s: run at block %llu (%u blocks) goes past the disk's %llu blocks",
                 r->what, (unsigned long long) first, count,
                 (unsigned long long) r->nblocks);
      return -1;
    }
    r->first = first;
    r->count = count;
    r->done = 0;
    r->kind = k;
    r->next = end;
  }
  *block = r->first + r->done;
  *kind = r->kind;
  if (r->kind == MF_DATA) {
    uint8_t tmp[MF_HASH_LEN];
    if ((rr = mf_in_read (r->in, hash ? hash : tmp, MF_HASH_LEN)) != 1)
      return recs_truncated (r, rr);
  }
  r->done++;
  return 1;
}

int
mf_replace (const char *final_path, int (*body) (void *opaque, int fd), void *opaque)
{
  CLEANUP_FREE char *tmp = NULL, *dir = NULL;
  CLEANUP_FD int fd = -1;

  if (asprintf (&tmp, "%s.new-XXXXXX", final_path) == -1 ||
      (dir = repo_dir_of (final_path)) == NULL) {
    tmp = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "manifest %s", final_path);
    return -1;
  }
  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd == -1) {
    error_set_errno (errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno,
                     "creating a temporary file for manifest %s", final_path);
    return -1;
  }
  if (body (opaque, fd) == -1)
    goto fail;
  if (fchmod (fd, 0444) == -1 || fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "syncing manifest %s", tmp);
    goto fail;
  }
  if (rename (tmp, final_path) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "renaming %s to %s", tmp, final_path);
    goto fail;
  }
  return repo_sync_dir (dir);

 fail:
  unlink (tmp);
  return -1;
}

int
mf_facts_size (json_t *facts, int64_t fallback, int64_t *size)
{
  json_t *v = json_object_get (facts, "size_bytes");

  if (v == NULL && fallback >= 0) {
    *size = fallback;
    return 0;
  }
  if (!json_is_integer (v) || json_integer_value (v) < 0) {
    error_set (ERR_INVALID, "manifest facts: \"size_bytes\" must be a non-negative integer");
    return -1;
  }
  *size = json_integer_value (v);
  return 0;
}
