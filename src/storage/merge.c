/* storage/merge.c - merge steps that take points out of a disk's chain.
 *
 * THE TWO CASES
 *
 * Head (the run starts at the chain's full D0; C is its first kept child):
 *   1. qemu-img commit -b D0 C: the data of C and of every layer between
 *      (and the zeros a shorter layer shows beyond its end, which QEMU
 *      counts as that layer's) is written into D0.  -b implies -d, so C is
 *      not emptied; the job resizes D0 up to C's size when it is smaller.
 *   2. qemu-img resize --shrink D0 to C's virtual size when they differ.
 *   3. repair leaked clusters in D0 (a commit cut off by a crash leaves
 *      some), fsync D0, seal it; crash point merge:committed.
 *   4. rename D0 over C's path, fsync the folder; crash point merge:renamed.
 *   Why each instant is safe: until the rename nobody kept reads D0
 *   directly.  C's view takes D0 only where no layer above D0 allocates,
 *   and the commit writes only where one does, so C's view (and with it
 *   the views of C's children) does not change while D0 fills; the shrink
 *   only drops what lies beyond C's end.  The intermediate files see a
 *   changed D0, but they are being removed and nobody restores them any
 *   more.  The rename swaps, in one step, a file for another showing the
 *   same bytes, and C's children find it under the same name.  Redo: C's
 *   file without a backing file means the rename happened; otherwise the
 *   commit runs again on the partly or fully written D0, which by the
 *   argument above ends equal to C's view again.
 *   Cost: qemu-img commit walks the allocation of the layers above D0 and
 *   copies only what they allocate (zeros as zero writes), so it is the
 *   data of C and the removed incrementals, not the disk size.
 *
 * Middle (kept ancestor A, removed run R1..Rk, kept child C):
 *   1. Serve C through a private qemu-nbd that reports
 *      qemu:allocation-depth (1 = C, 2 = Rk, ..., k+1 = R1, then A and
 *      below).  Every extent whose depth names a removed layer is read from
 *      C's own view and written back into C: data as data, all-zero as a
 *      zero write.  That covers what the removed layers allocate and the
 *      region a shorter removed layer hides (QEMU reports the zeros beyond a
 *      short layer's end at that layer's depth).  Then flush, close, repair the
 *      clusters a copy cut off by a crash leaked, fsync
 *      C; crash point merge:copied.
 *   2. qemu-img rebase -u -b <A relative to C> -F qcow2 C (header only),
 *      fsync, seal; crash point merge:rebased.
 *   Why each instant is safe: every write puts into C the bytes C showed
 *   there already, so C's view never changes during the copy (a partial
 *   cluster's copy-on-write reads the same old chain).  After the copy C
 *   allocates everything the removed layers supplied, so the rest of its
 *   view comes from A and below, and switching the backing name to A
 *   changes nothing C shows.  The header is written only after the data is
 *   on disk.  Redo: C already backed by A means rebased; otherwise the
 *   copy runs again (what it already copied is now C's own and is skipped).
 *   Cost: the extents of the removed layers, plus a hidden region (written
 *   as zero clusters, metadata only).
 *
 * QEMU 7.2 AND RESIZES (why not `qemu-img rebase` in safe mode)
 *
 * The safe rebase onto A compares, for the regions allocated above A in
 * the old chain, the old view with A's and writes the differences into C.
 * What we found, on Debian 12's qemu-img 7.2.22:
 *   - Upstream 7.2.0 to 7.2.6 never finish when C is larger than its old
 *     backing file and A is in the old chain: past the old backing file's
 *     end bdrv_is_allocated_above() reports no progress and the loop spins
 *     (fixed by "qemu-img: rebase: stop when reaching EOF of old backing
 *     file", 8b097fd6b06e, in 8.2 and backported to 7.2.7).  7.2.22 has the
 *     fix: in our tests it rebased every resize case correctly (a removed
 *     layer shorter than A hiding A's data, shrink then grow, C larger than
 *     its old backing, A shorter than C), about 40 random chains too.
 *   - It is not crash-safe: strace shows the copied data, then the new
 *     header, then the L2 table that maps the data, with no fdatasync
 *     between them, so a power cut can leave C backed by A without the
 *     data it showed.  Nor does it leave a place for merge:copied.
 * So the copy is ours (through qemu-nbd, QEMU's own reading of the chain
 * and writing of C), flushed and fsynced before an unsafe rebase changes
 * the header alone.
 *
 * Files are sealed 0444 (repo_seal_image): a step makes the files QEMU
 * opens read-write writable for its duration and seals them again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <libnbd.h>

#include "storage/merge.h"
#include "storage/qnbd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/crash.h"
#include "util/error.h"
#include "util/proc.h"

/* What qemu-img info says about one file, without its backing chain. */
struct layer_info {
  char *backing;              /* backing file name as recorded, or NULL */
  int64_t size;               /* virtual size */
};

/* Read the backing name and virtual size of the image at path.  On
 * success info->backing is owned by the caller. */
static int
layer_info (const char *path, struct layer_info *info)
{
  const char *argv[] = { "qemu-img", "info", "--output=json", "-f", "qcow2",
                         path, NULL };
  CLEANUP_FREE char *output = NULL;
  CLEANUP_JSON json_t *root = NULL;
  json_t *backing, *size;

  info->backing = NULL;
  info->size = -1;
  if (proc_run (argv, &output) == -1) {
    error_prefix ("reading %s", path);
    return -1;
  }
  root = json_loads (output, 0, NULL);
  size = json_object_get (root, "virtual-size");
  backing = json_object_get (root, "backing-filename");
  if (!json_is_integer (size) || (backing && !json_is_string (backing))) {
    error_set (ERR_INTERNAL, "reading %s: unexpected qemu-img info output", path);
    return -1;
  }
  info->size = json_integer_value (size);
  if (backing && (info->backing = strdup (json_string_value (backing))) == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  return 0;
}

static void
chain_free (struct layer_info *chain, size_t n)
{
  if (chain)
    for (size_t i = 0; i < n; i++)
      free (chain[i].backing);
  free (chain);
}

/* What layer_info says of each of rels[0..n-1], after checking that they
 * form a chain: each file from rels[1] up is backed by the one before it,
 * by the relative name the repository records.  Caller frees with
 * chain_free (chain, n). */
static struct layer_info *
chain_read (const char *repo_path, const char *const *rels, size_t n)
{
  struct layer_info *chain = calloc (n, sizeof *chain);

  if (chain == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    CLEANUP_FREE char *path = repo_abspath (repo_path, rels[i]);
    CLEANUP_FREE char *want = NULL;

    if (path == NULL || layer_info (path, &chain[i]) == -1)
      goto fail;
    if (i == 0)
      continue;
    want = repo_relative (rels[i], rels[i - 1]);
    if (want == NULL)
      goto fail;
    if (chain[i].backing == NULL || strcmp (chain[i].backing, want) != 0) {
      error_set (ERR_CONFLICT, "%s is backed by %s, not by %s as the chain says",
                 rels[i], chain[i].backing ? chain[i].backing : "no file", want);
      goto fail;
    }
  }
  return chain;

 fail:
  chain_free (chain, n);
  return NULL;
}

/* Let QEMU open a sealed image read-write for the step. */
static int
unseal (const char *path)
{
  struct stat st;

  if (stat (path, &st) == -1 || chmod (path, (st.st_mode & 07777) | S_IWUSR) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "making %s writable", path);
    return -1;
  }
  return 0;
}

/* A step writes files no QEMU process may hold (the caller checks this
 * before it plans a step; this makes a late reader a clear conflict). */
static int
check_free (const char *repo_path, const char *rel)
{
  if (repo_image_in_use (repo_path, rel)) {
    error_set (ERR_CONFLICT, "%s is in use by another QEMU process", rel);
    return -1;
  }
  return 0;
}

/* After a failed step: seal again what unseal opened (a redo opens it
 * anew), keeping the step's error. */
static void
reseal (const char *repo_path, const char *rel, const char *rel2)
{
  struct error_saved saved;

  error_save (&saved);
  repo_seal_image (repo_path, rel);
  if (rel2)
    repo_seal_image (repo_path, rel2);
  error_restore (&saved);
}

/* Give back the clusters a step cut off by a crash left allocated but
 * unused (QEMU writes data before the tables that map it, so a killed
 * writer leaks, it never corrupts): on a redo the file the step writes is
 * checked and its leaks repaired, so that no merged point keeps dead
 * space, and `qemu-img check` passes on it.  A file that is corrupt
 * (check's status 2) is an error: nothing goes on over it. */
static int
repair_leaks (const char *path, const char *rel)
{
  const char *argv[] = { "qemu-img", "check", "-q", "-r", "leaks", "-f", "qcow2", path,
                         NULL };

  if (proc_run (argv, NULL) == -1) {
    error_prefix ("checking %s for clusters a cut-off step left behind", rel);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- head --- */

bool
merge_head_done (const char *repo_path, const char *kept_rel)
{
  CLEANUP_FREE char *c = repo_abspath (repo_path, kept_rel);
  struct layer_info info;

  if (c == NULL || layer_info (c, &info) == -1)
    return false;
  if (info.backing) {
    free (info.backing);
    return false;
  }
  return true;
}

int
merge_head (const char *repo_path, const char *const *rels, size_t n)
{
  CLEANUP_FREE char *d0 = NULL, *c = NULL;
  struct layer_info top;
  struct layer_info *chain;
  int64_t d0_size, c_size;

  if (n < 2) {
    error_set (ERR_INVALID, "a head merge needs the full and a kept child");
    return -1;
  }
  d0 = repo_abspath (repo_path, rels[0]);
  c = repo_abspath (repo_path, rels[n - 1]);
  if (d0 == NULL || c == NULL)
    return -1;

  /* Redo: only the rename, the last step, leaves C standalone. */
  if (layer_info (c, &top) == -1)
    return -1;
  if (top.backing == NULL) {
    if (access (d0, F_OK) == 0) {
      error_set (ERR_CONFLICT, "%s has no backing file but %s still exists: "
                 "not the chain the merge was planned on", rels[n - 1], rels[0]);
      return -1;
    }
    return 0;
  }
  free (top.backing);

  chain = chain_read (repo_path, rels, n);
  if (chain == NULL) {
    error_prefix ("merging %s into %s", rels[n - 1], rels[0]);
    return -1;
  }
  d0_size = chain[0].size;
  c_size = chain[n - 1].size;
  if (chain[0].backing) {
    error_set (ERR_CONFLICT, "merging %s into %s: %s is backed by %s, "
               "not a full", rels[n - 1], rels[0], rels[0], chain[0].backing);
    chain_free (chain, n);
    return -1;
  }
  chain_free (chain, n);

  if (check_free (repo_path, rels[0]) == -1 ||
      check_free (repo_path, rels[n - 1]) == -1)
    return -1;
  if (unseal (d0) == -1 || unseal (c) == -1)
    goto fail;
  {
    const char *argv[] = { "qemu-img", "commit", "-q", "-f", "qcow2", "-b", d0,
                           c, NULL };
    if (proc_run (argv, NULL) == -1) {
      error_prefix ("committing %s into %s", rels[n - 1], rels[0]);
      goto fail;
    }
  }
  /* The commit grows D0 to C's size but never shrinks it. */
  if (d0_size != c_size) {
    char size_str[32];
    snprintf (size_str, sizeof size_str, "%" PRId64, c_size);
    const char *argv[] = { "qemu-img", "resize", "-q", "-f", "qcow2", "--shrink",
                           d0, size_str, NULL };
    if (proc_run (argv, NULL) == -1) {
      error_prefix ("resizing %s to %s bytes", rels[0], size_str);
      goto fail;
    }
  }
  if (repair_leaks (d0, rels[0]) == -1 ||
      repo_sync_image (repo_path, rels[0]) == -1 ||
      repo_seal_image (repo_path, rels[0]) == -1 ||
      repo_seal_image (repo_path, rels[n - 1]) == -1)
    goto fail;
  crash_point ("merge:committed");

  if (rename (d0, c) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "renaming %s to %s", d0, c);
    return -1;
  }
  if (repo_sync_image (repo_path, rels[n - 1]) == -1)
    return -1;
  crash_point ("merge:renamed");
  return 0;

 fail:
  reseal (repo_path, rels[0], rels[n - 1]);
  return -1;
}

/* ----------------------------------------------------------- middle --- */

/* The extents of one block-status reply that C's view takes from a
 * removed layer (allocation depth in [lo, hi]), and where the reply
 * ended. */
struct depth_scan {
  uint32_t lo, hi;
  uint64_t end;
  struct extent { uint64_t off, len; } *ext;
  size_t n, cap;
};

static int
depth_extent (void *opaque, const char *metacontext, uint64_t offset,
              uint32_t *entries, size_t nr_entries, int *error)
{
  struct depth_scan *s = opaque;

  if (strcmp (metacontext, "qemu:allocation-depth") != 0)
    return 0;
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i];
    uint32_t depth = entries[i + 1];

    if (depth >= s->lo && depth <= s->hi) {
      if (s->n > 0 && s->ext[s->n - 1].off + s->ext[s->n - 1].len == offset)
        s->ext[s->n - 1].len += len;
      else {
        if (s->n == s->cap) {
          size_t cap = s->cap ? s->cap * 2 : 64;
          struct extent *e = realloc (s->ext, cap * sizeof *e);
          if (e == NULL) {
            *error = ENOMEM;
            return -1;
          }
          s->ext = e;
          s->cap = cap;
        }
        s->ext[s->n++] = (struct extent) { offset, len };
      }
    }
    offset += len;
  }
  s->end = offset;
  return 0;
}

static bool
all_zero (const char *b, size_t n)
{
  return n == 0 || (b[0] == 0 && memcmp (b, b + 1, n - 1) == 0);
}

#define COPY_CHUNK (4 * 1024 * 1024)
#define ZERO_BLOCK (64 * 1024)
#define STATUS_SPAN (1024 * 1024 * 1024)

/* Read C's view of each extent and write it back into C. */
static int
copy_extents (struct nbd_handle *h, const struct depth_scan *s, char *buf,
              bool can_zero)
{
  for (size_t i = 0; i < s->n; i++) {
    uint64_t off = s->ext[i].off, end = off + s->ext[i].len;

    while (off < end) {
      size_t len = end - off < COPY_CHUNK ? end - off : COPY_CHUNK;

      if (nbd_pread (h, buf, len, off, 0) == -1)
        return -1;
      /* Write runs of all-zero blocks as zeros: a hidden region costs
       * metadata, not data. */
      for (size_t at = 0; at < len; ) {
        size_t run = 0;
        bool zero = false;

        while (at + run < len) {
          size_t b = len - at - run < ZERO_BLOCK ? len - at - run : ZERO_BLOCK;
          bool z = can_zero && all_zero (buf + at + run, b);
          if (run > 0 && z != zero)
            break;
          zero = z;
          run += b;
        }
        if ((zero ? nbd_zero (h, run, off + at, 0)
                  : nbd_pwrite (h, buf + at, run, off + at, 0)) == -1)
          return -1;
        at += run;
      }
      off += len;
    }
  }
  return 0;
}

/* Copy into C (path c, the top of a chain whose removed layers sit at
 * depths 2..hi) every extent its view takes from a removed layer.
 *
 * qemu-nbd is a private one of storage/qnbd.h, which dies with the hub: a
 * hub killed in the middle of the copy must not leave it holding C's write
 * lock, or the restarted hub's task, and restores and backups of the
 * context, would all find C in use. */
static int
copy_removed (const char *c, int64_t size, uint32_t hi)
{
  static const char *const extra[] = { "--allocation-depth", NULL };
  struct qnbd q = { 0 };
  struct nbd_handle *h = nbd_create ();
  struct depth_scan s = { .lo = 2, .hi = hi };
  CLEANUP_FREE char *buf = malloc (COPY_CHUNK);
  uint64_t off = 0;
  int64_t export_size;
  int ret = -1;

  if (h == NULL || buf == NULL) {
    error_set (ERR_INTERNAL, "copying into %s: %s", c,
               h ? "out of memory" : nbd_get_error ());
    nbd_close (h);
    return -1;
  }
  if (nbd_add_meta_context (h, "qemu:allocation-depth") == -1)
    goto nbd_fail;
  if (qnbd_start (&q, c, "qcow2", false, NULL, extra) == -1) {
    error_prefix ("copying into %s", c);
    goto out;
  }
  if (nbd_connect_uri (h, q.uri) == -1)
    goto nbd_fail;
  if (nbd_can_meta_context (h, "qemu:allocation-depth") != 1) {
    error_set (ERR_INTERNAL, "copying into %s: qemu-nbd does not report "
               "allocation depths", c);
    goto out;
  }
  export_size = nbd_get_size (h);
  if (export_size != size) {
    error_set (ERR_INTERNAL, "copying into %s: qemu-nbd serves %" PRId64
               " bytes, qemu-img said %" PRId64, c, export_size, size);
    goto out;
  }
  while (off < (uint64_t) size) {
    uint64_t span = (uint64_t) size - off < STATUS_SPAN ? (uint64_t) size - off
                                                        : STATUS_SPAN;
    s.n = 0;
    s.end = off;
    if (nbd_block_status (h, span, off,
                          (nbd_extent_callback) { .callback = depth_extent,
                                                  .user_data = &s }, 0) == -1)
      goto nbd_fail;
    if (s.end <= off) {
      error_set (ERR_INTERNAL, "copying into %s: no allocation reported at %" PRIu64,
                 c, off);
      goto out;
    }
    if (copy_extents (h, &s, buf, nbd_can_zero (h) == 1) == -1)
      goto nbd_fail;
    off = s.end;
  }
  if (nbd_flush (h, 0) == -1 || nbd_shutdown (h, 0) == -1)
    goto nbd_fail;
  ret = 0;
  goto out;

 nbd_fail:
  error_set (ERR_INTERNAL, "copying into %s: %s", c, nbd_get_error ());
 out:
  /* The client goes first; then qemu-nbd, which closes C. */
  nbd_close (h);
  qnbd_stop (&q);
  free (s.ext);
  return ret;
}

int
merge_middle (const char *repo_path, const char *const *rels, size_t n)
{
  CLEANUP_FREE char *c = NULL, *to_a = NULL;
  struct layer_info top;
  struct layer_info *chain;
  int64_t c_size;
  bool done;

  if (n < 3) {
    error_set (ERR_INVALID, "a middle merge needs a kept ancestor, a removed "
               "layer and a kept child");
    return -1;
  }
  c = repo_abspath (repo_path, rels[n - 1]);
  to_a = repo_relative (rels[n - 1], rels[0]);
  if (c == NULL || to_a == NULL)
    return -1;

  /* Redo: the backing name changes last. */
  if (layer_info (c, &top) == -1)
    return -1;
  done = top.backing && strcmp (top.backing, to_a) == 0;
  free (top.backing);
  if (done)
    return repo_seal_image (repo_path, rels[n - 1]);

  chain = chain_read (repo_path, rels, n);
  if (chain == NULL) {
    error_prefix ("taking %s out from under %s", rels[n - 2], rels[n - 1]);
    return -1;
  }
  c_size = chain[n - 1].size;
  chain_free (chain, n);

  /* C's view takes the removed layers at allocation depths 2 (rels[n-2])
   * to n-1 (rels[1]); depth 1 is C itself, n is A. */
  if (check_free (repo_path, rels[n - 1]) == -1)
    return -1;
  if (unseal (c) == -1 ||
      copy_removed (c, c_size, (uint32_t) n - 1) == -1 ||
      repair_leaks (c, rels[n - 1]) == -1 ||
      repo_sync_image (repo_path, rels[n - 1]) == -1)
    goto fail;
  crash_point ("merge:copied");

  {
    const char *argv[] = { "qemu-img", "rebase", "-q", "-u", "-f", "qcow2",
                           "-b", to_a, "-F", "qcow2", c, NULL };
    if (proc_run (argv, NULL) == -1) {
      error_prefix ("setting the backing file of %s to %s", rels[n - 1], to_a);
      goto fail;
    }
  }
  if (repo_sync_image (repo_path, rels[n - 1]) == -1 ||
      repo_seal_image (repo_path, rels[n - 1]) == -1)
    goto fail;
  crash_point ("merge:rebased");
  return 0;

 fail:
  reseal (repo_path, rels[n - 1], NULL);
  return -1;
}
