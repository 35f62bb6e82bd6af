/* engine/source.c - the sources of a backup: QCOW2 images whose persistent
 * dirty bitmaps strata manages, raw images and block devices, and NBD URIs;
 * each read through a private qemu-nbd (storage/qnbd.h) when it is a file.
 *
 * BITMAPS OF A QCOW2 SOURCE
 *
 * A backup adds a bitmap named after its backup id before it reads
 * anything, so every later write lands in it; that name is the disk's
 * change id.  An incremental reads the dirty extents of the previous
 * backup's bitmap (the hub's previous_change_id).  Only once the hub has
 * accepted the disk's completion does engine_backup_disk_commit remove that
 * older bitmap; until then both exist, so a failed or refused backup
 * (engine_backup_disk_abort removes the new one) leaves the chain able to
 * continue from the older one.  Rerunning a backup id whose bitmap already
 * exists (a crashed attempt) removes and re-adds it.  A bitmap flagged
 * "in-use" was not saved cleanly (its image was not closed properly): it
 * cannot be trusted, and the disk is copied in full into its overlay.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/engine-int.h"
#include "storage/qnbd.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/proc.h"

static bool
is_nbd_uri (const char *s)
{
  return strncmp (s, "nbd://", 6) == 0 || strncmp (s, "nbds://", 7) == 0 ||
         strncmp (s, "nbd+unix://", 11) == 0 || strncmp (s, "nbds+unix://", 12) == 0 ||
         strncmp (s, "nbd+vsock://", 12) == 0 || strncmp (s, "nbds+vsock://", 13) == 0;
}

/* ------------------------------------------------------- image facts --- */

struct image {
  char *path;                 /* absolute */
  bool blockdev;
  char *format;               /* "qcow2", "raw", ... */
  int64_t size;
  json_t *bitmaps;            /* qcow2: [{name, flags:[...]}], or NULL */
};

static void
image_clear (struct image *im)
{
  free (im->path);
  free (im->format);
  json_decref (im->bitmaps);
  memset (im, 0, sizeof *im);
}

/* Read what qemu-img knows about a file source.  force_share: do not take
 * the image's lock (only to read its size). */
static int
image_open (struct image *im, const char *source, bool force_share)
{
  struct stat sb;
  CLEANUP_FREE char *out = NULL;
  CLEANUP_JSON json_t *j = NULL;
  json_error_t jerr;
  const char *argv[8];
  int n = 0;

  memset (im, 0, sizeof *im);
  im->path = realpath (source, NULL);
  if (im->path == NULL || stat (im->path, &sb) == -1) {
    error_set_errno (ERR_INVALID, errno, "source %s", source);
    image_clear (im);
    return -1;
  }
  if (S_ISBLK (sb.st_mode)) {
    int fd = open (im->path, O_RDONLY | O_CLOEXEC);
    uint64_t sz = 0;
    if (fd == -1 || ioctl (fd, BLKGETSIZE64, &sz) == -1) {
      error_set_errno (ERR_INVALID, errno, "source %s", source);
      if (fd >= 0)
        close (fd);
      image_clear (im);
      return -1;
    }
    close (fd);
    im->blockdev = true;
    im->format = strdup ("raw");
    im->size = sz;
    return 0;
  }
  if (!S_ISREG (sb.st_mode)) {
    error_set (ERR_INVALID, "source %s is neither a file, a block device nor an NBD URI",
               source);
    image_clear (im);
    return -1;
  }
  argv[n++] = "qemu-img";
  argv[n++] = "info";
  argv[n++] = "--output=json";
  if (force_share)
    argv[n++] = "-U";
  argv[n++] = im->path;
  argv[n] = NULL;
  if (proc_run (argv, &out) == -1) {
    error_set (ERR_INVALID, "source %s: %s", source, error_message ());
    image_clear (im);
    return -1;
  }
  j = json_loads (out, 0, &jerr);
  if (!json_is_object (j) || !json_is_string (json_object_get (j, "format")) ||
      !json_is_integer (json_object_get (j, "virtual-size"))) {
    error_set (ERR_INTERNAL, "source %s: cannot read qemu-img info", source);
    image_clear (im);
    return -1;
  }
  im->format = strdup (json_string_value (json_object_get (j, "format")));
  im->size = json_integer_value (json_object_get (j, "virtual-size"));
  /* qemu rounds a raw file up to whole sectors: its copy would not be
   * bit-identical. */
  if (im->format && strcmp (im->format, "raw") == 0 && sb.st_size % 512) {
    error_set (ERR_INVALID, "source %s is %lld bytes, not a multiple of 512",
               source, (long long) sb.st_size);
    image_clear (im);
    return -1;
  }
  im->bitmaps = json_object_get (json_object_get (json_object_get (j, "format-specific"),
                                                  "data"), "bitmaps");
  json_incref (im->bitmaps);
  if (im->format == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "source %s", source);
    image_clear (im);
    return -1;
  }
  return 0;
}

/* 1 when the image has the bitmap (with *in_use its "in-use" flag), 0 when
 * not. */
static int
image_bitmap (const struct image *im, const char *name, bool *in_use)
{
  size_t i, k;
  json_t *b, *f;

  json_array_foreach (im->bitmaps, i, b) {
    if (!json_is_string (json_object_get (b, "name")) ||
        strcmp (json_string_value (json_object_get (b, "name")), name) != 0)
      continue;
    if (in_use) {
      *in_use = false;
      json_array_foreach (json_object_get (b, "flags"), k, f)
        if (json_is_string (f) && strcmp (json_string_value (f), "in-use") == 0)
          *in_use = true;
    }
    return 1;
  }
  return 0;
}

static int
bitmap_op (const char *path, const char *op, const char *name)
{
  const char *argv[] = { "qemu-img", "bitmap", "-f", "qcow2", op, path, name, NULL };
  if (proc_run (argv, NULL) == -1) {
    error_prefix ("%s bitmap %s of %s", op + 2, name, path);
    return -1;
  }
  return 0;
}

/* Remove a bitmap if the image has it. */
static int
bitmap_remove_if (const char *source, const char *name)
{
  struct image im;
  int r = 0;

  if (name == NULL || *name == '\0')
    return 0;
  if (image_open (&im, source, false) == -1)
    return -1;
  if (strcmp (im.format, "qcow2") == 0 && image_bitmap (&im, name, NULL))
    r = bitmap_op (im.path, "--remove", name);
  image_clear (&im);
  return r;
}

/* ------------------------------------------------------------ public --- */

int
engine_source_size (const char *source, int timeout_s, int64_t *size)
{
  struct image im;

  if (is_nbd_uri (source)) {
    struct nbd_handle *h = copy_connect_within (source, NULL, true, NULL, timeout_s);
    if (h == NULL)
      return -1;
    *size = nbd_get_size (h);
    if (*size < 0)
      error_set (ERR_UNAVAILABLE, "%s: %s", source, nbd_get_error ());
    nbd_shutdown (h, 0);
    nbd_close (h);
    return *size < 0 ? -1 : 0;
  }
  if (image_open (&im, source, true) == -1)
    return -1;
  *size = im.size;
  image_clear (&im);
  return 0;
}

static void
result_from (struct engine_disk_result *out, const struct copy_stats *st, int64_t t0)
{
  out->size_bytes = st->size;
  out->bytes_read = st->bytes_read;
  out->bytes_written = st->bytes_written;
  out->bytes_zero = st->bytes_zero;
  out->seconds = (clock_mono_ns () - t0) / 1e9;
}

static int
set_str (char **dst, const char *src)
{
  *dst = src ? strdup (src) : NULL;
  if (src && *dst == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "result");
    return -1;
  }
  return 0;
}

int
engine_backup_disk (const struct engine_backup_disk *d, struct engine_progress *p,
                    struct engine_disk_result *out)
{
  struct copy_spec spec = { .dst_uri = d->target_uri, .dst_psk = d->tls_psk_file,
                            .dst_fd = -1, .zero_holes = d->target_has_backing,
                            .hashes = d->hashes };
  struct copy_stats st;
  struct image im = { 0 };
  struct qnbd q = { 0 };
  CLEANUP_FREE char *ctx = NULL;
  const char *prev = d->previous_change_id && *d->previous_change_id
                     ? d->previous_change_id : NULL;
  const char *reason = NULL;
  CLEANUP_FREE char *fallback = NULL;
  bool added = false;
  int64_t t0 = clock_mono_ns ();
  int r;

  memset (out, 0, sizeof *out);
  if (p && p->started_ns == 0)
    p->started_ns = t0;

  if (is_nbd_uri (d->source)) {
    spec.src_uri = d->source;
    if (d->source_bitmap && *d->source_bitmap && d->target_has_backing &&
        asprintf (&ctx, "qemu:dirty-bitmap:%s", d->source_bitmap) == -1) {
      ctx = NULL;
      error_set_errno (ERR_INTERNAL, ENOMEM, "backup");
      return -1;
    }
    spec.dirty_context = ctx;
    if (copy_run (&spec, p, &st) == -1) {
      error_prefix ("backing up %s", d->source);
      return -1;
    }
    result_from (out, &st, t0);
    out->copied = true;
    out->mode = st.incremental ? BACKUP_INCREMENTAL : BACKUP_FULL;
    if (set_str (&out->change_id, d->source_change_id) == -1) {
      free (st.full_reason);
      engine_disk_result_clear (out);
      return -1;
    }
    out->full_reason = st.full_reason;
    if (out->full_reason == NULL && d->source_full_reason &&
        set_str (&out->full_reason, d->source_full_reason) == -1) {
      engine_disk_result_clear (out);
      return -1;
    }
    return 0;
  }

  if (image_open (&im, d->source, false) == -1)
    return -1;

  if (strcmp (im.format, "qcow2") == 0) {
    bool in_use = false;

    if (d->backup_id == NULL || *d->backup_id == '\0') {
      error_set (ERR_INVALID, "a QCOW2 source needs a backup id to name its bitmap");
      goto fail;
    }
    if (prev && strcmp (prev, d->backup_id) == 0) {
      error_set (ERR_CONFLICT, "the previous change id is this backup's own bitmap %s", prev);
      goto fail;
    }
    /* A crashed attempt of the same backup left its bitmap: start over. */
    if (image_bitmap (&im, d->backup_id, NULL) &&
        bitmap_op (im.path, "--remove", d->backup_id) == -1)
      goto fail;
    if (bitmap_op (im.path, "--add", d->backup_id) == -1)
      goto fail;
    added = true;

    if (prev && d->target_has_backing) {
      if (!image_bitmap (&im, prev, &in_use))
        reason = "missing";
      else if (in_use)
        reason = "inconsistent (flagged in-use: the image was not closed cleanly)";
      if (reason) {
        if (asprintf (&fallback, "dirty bitmap %s of %s is %s; the whole disk was copied",
                      prev, im.path, reason) == -1)
          fallback = NULL;
      }
    }
    if (qnbd_start (&q, im.path, "qcow2", true,
                    prev && d->target_has_backing && !reason ? prev : NULL, NULL) == -1)
      goto fail;
    if (prev && d->target_has_backing && !reason) {
      if (asprintf (&ctx, "qemu:dirty-bitmap:%s", prev) == -1) {
        ctx = NULL;
        error_set_errno (ERR_INTERNAL, ENOMEM, "backup");
        goto fail;
      }
    }
  }
  else {
    /* Raw images, block devices and other formats: a full copy. */
    if (qnbd_start (&q, im.path, im.format, true, NULL, NULL) == -1)
      goto fail;
  }

  spec.src_uri = q.uri;
  spec.dirty_context = ctx;
  r = copy_run (&spec, p, &st);
  if (r == 0 && fallback && st.full_reason == NULL) {
    st.full_reason = fallback;
    fallback = NULL;
  }
  qnbd_stop (&q);
  if (r == -1) {
    error_prefix ("backing up %s", im.path);
    goto fail;
  }
  result_from (out, &st, t0);
  out->copied = true;
  out->mode = st.incremental ? BACKUP_INCREMENTAL : BACKUP_FULL;
  if (set_str (&out->change_id, added ? d->backup_id : NULL) == -1) {
    free (st.full_reason);
    goto fail;
  }
  out->full_reason = st.full_reason;
  image_clear (&im);
  return 0;

 fail:
  {
    struct error_saved es;
    error_save (&es);
    qnbd_stop (&q);
    if (added)
      bitmap_op (im.path, "--remove", d->backup_id);
    image_clear (&im);
    engine_disk_result_clear (out);
    error_restore (&es);
  }
  return -1;
}

/* Serve a source for reading only: an NBD URI as it is (*uri points into
 * source), a file through a private read-only qemu-nbd q (qnbd_stop it). */
static int
source_serve (const char *source, struct qnbd *q, const char **uri)
{
  struct image im;
  int r;

  memset (q, 0, sizeof *q);
  if (is_nbd_uri (source)) {
    *uri = source;
    return 0;
  }
  if (image_open (&im, source, false) == -1)
    return -1;
  r = qnbd_start (q, im.path, im.format, true, NULL, NULL);
  image_clear (&im);
  if (r == -1)
    return -1;
  *uri = q->uri;
  return 0;
}

/* A step of splitmix64: the audit's sample only needs to be spread
 * evenly and the same for the same seed. */
static uint64_t
sample_next (uint64_t *state)
{
  uint64_t z = (*state += UINT64_C (0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* percent% of the blocks of a disk of size bytes (at least one), chosen
 * by selection sampling (each block in turn, with the probability of the
 * picks still owed over the blocks left), as ranges in disk order
 * (adjacent picks merged).  *ranges is the caller's to free. */
static int
sample_ranges (int64_t size, int percent, uint64_t seed, uint64_t **ranges, size_t *n)
{
  uint64_t blocks = mf_blocks_for (size);
  uint64_t want = (blocks * (uint64_t) percent + 99) / 100, picked = 0;
  uint64_t state = seed, *v = NULL;
  size_t nv = 0, cap = 0;

  for (uint64_t b = 0; b < blocks && picked < want; b++) {
    /* A pick with probability (want - picked) / (blocks - b). */
    double u = (sample_next (&state) >> 11) * 0x1.0p-53;
    uint64_t off, len;
    if ((double) (blocks - b) * u >= (double) (want - picked))
      continue;
    picked++;
    off = b * MF_BLOCK_SIZE;
    len = (uint64_t) size - off < MF_BLOCK_SIZE ? (uint64_t) size - off : MF_BLOCK_SIZE;
    if (nv && v[2 * nv - 2] + v[2 * nv - 1] == off) {
      v[2 * nv - 1] += len;
      continue;
    }
    if (nv == cap) {
      size_t ncap = cap ? cap * 2 : 256;
      uint64_t *nvp = realloc (v, ncap * 2 * sizeof *v);
      if (nvp == NULL) {
        free (v);
        error_set_errno (ERR_INTERNAL, errno, "the audit's sample");
        return -1;
      }
      v = nvp;
      cap = ncap;
    }
    v[2 * nv] = off;
    v[2 * nv + 1] = len;
    nv++;
  }
  *ranges = v;
  *n = nv;
  return 0;
}

int
engine_audit_disk (const struct engine_backup_disk *d, int percent, uint64_t seed,
                   struct mf_map *observed, struct engine_progress *p)
{
  struct copy_spec spec = { .dst_fd = -1, .zero_holes = true, .hashes = observed };
  struct copy_stats st;
  struct qnbd q;
  CLEANUP_FREE uint64_t *ranges = NULL;
  size_t n_ranges = 0;
  int r;

  if (percent < 1 || percent > 100) {
    error_set (ERR_INVALID, "an audit covers 1 to 100 percent of the blocks, not %d", percent);
    return -1;
  }
  if (percent < 100) {
    if (sample_ranges (mf_map_virtual_size (observed), percent, seed, &ranges,
                       &n_ranges) == -1)
      return -1;
    spec.ranges = ranges;
    spec.n_ranges = n_ranges;
  }
  if (source_serve (d->source, &q, &spec.src_uri) == -1) {
    error_prefix ("auditing %s", d->source);
    return -1;
  }
  r = copy_run (&spec, p, &st);
  qnbd_stop (&q);
  if (r == -1) {
    error_prefix ("auditing %s", d->source);
    return -1;
  }
  free (st.full_reason);
  return 0;
}

int
engine_hash_ranges (const char *uri, const char *psk, const uint64_t *ranges,
                    size_t n_ranges, struct mf_map *map, struct engine_progress *p)
{
  struct copy_spec spec = { .src_uri = uri, .src_psk = psk, .dst_fd = -1, .hashes = map,
                            .ranges = ranges, .n_ranges = n_ranges };
  struct copy_stats st;

  if (n_ranges == 0)
    return 0;
  if (copy_run (&spec, p, &st) == -1) {
    error_prefix ("reading %s", uri);
    return -1;
  }
  free (st.full_reason);
  return 0;
}

/* The block-status answers of one request, for engine_data_extents. */
struct data_walk {
  uint64_t pos;               /* where the answer starts */
  uint64_t covered;           /* bytes it described */
  int (*fn) (void *opaque, uint64_t offset, uint64_t length);
  void *opaque;
  int failed;
};

static int
data_extent_cb (void *opaque, const char *ctx, uint64_t offset, uint32_t *entries,
                size_t n, int *error)
{
  struct data_walk *w = opaque;

  if (*error || strcmp (ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (size_t i = 0; i + 1 < n && !w->failed; i += 2) {
    uint64_t len = entries[i];
    if (!(entries[i + 1] & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) &&
        w->fn (w->opaque, offset, len) == -1)
      w->failed = 1;
    offset += len;
    w->covered += len;
  }
  return 0;
}

int
engine_data_extents (const char *uri, const char *psk,
                     int (*fn) (void *opaque, uint64_t offset, uint64_t length),
                     void *opaque)
{
  static const char *const contexts[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
  struct nbd_handle *h = copy_connect (uri, psk, true, contexts);
  struct data_walk w = { .fn = fn, .opaque = opaque };
  int64_t size;
  int ret = -1;

  if (h == NULL)
    return -1;
  size = nbd_get_size (h);
  if (size < 0 || nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    error_set (ERR_UNAVAILABLE, "NBD %s: no block status: %s", uri, nbd_get_error ());
    goto out;
  }
  while (w.pos < (uint64_t) size) {
    uint64_t chunk = (uint64_t) size - w.pos > UINT64_C (0xffff0000)
                     ? UINT64_C (0xffff0000) : (uint64_t) size - w.pos;
    w.covered = 0;
    if (nbd_block_status (h, chunk, w.pos,
                          (nbd_extent_callback) { .callback = data_extent_cb,
                                                  .user_data = &w }, 0) == -1) {
      error_set (ERR_UNAVAILABLE, "NBD %s: block status at %" PRIu64 ": %s", uri, w.pos,
                 nbd_get_error ());
      goto out;
    }
    if (w.failed)
      goto out;
    if (w.covered == 0) {
      error_set (ERR_UNAVAILABLE, "NBD %s: block status at %" PRIu64 " without extents",
                 uri, w.pos);
      goto out;
    }
    w.pos += w.covered;
  }
  ret = 0;
 out:
  nbd_close (h);
  return ret;
}

int
engine_source_bitmaps (const char *source, char ***names)
{
  struct image im;
  size_t i, k = 0;
  json_t *b;

  *names = NULL;
  if (is_nbd_uri (source)) {
    *names = calloc (1, sizeof **names);
    goto out;
  }
  if (image_open (&im, source, true) == -1)
    return -1;
  *names = calloc (json_array_size (im.bitmaps) + 1, sizeof **names);
  json_array_foreach (im.bitmaps, i, b) {
    const char *name = json_string_value (json_object_get (b, "name"));
    if (*names && name && ((*names)[k++] = strdup (name)) == NULL) {
      for (size_t j = 0; j + 1 < k; j++)
        free ((*names)[j]);
      free (*names);
      *names = NULL;
    }
  }
  image_clear (&im);
 out:
  if (*names == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "bitmaps of %s", source);
    return -1;
  }
  return 0;
}

int
engine_source_bitmap_remove (const char *source, const char *name)
{
  if (is_nbd_uri (source))
    return 0;
  return bitmap_remove_if (source, name);
}

int
engine_backup_disk_commit (const struct engine_backup_disk *d,
                           const struct engine_disk_result *r)
{
  const char *old[] = { d->previous_change_id, d->superseded_change_id };
  int ret = 0;

  if (is_nbd_uri (d->source) || r->change_id == NULL)
    return 0;
  for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
    if (old[i] == NULL || *old[i] == '\0' || strcmp (old[i], r->change_id) == 0 ||
        (i > 0 && old[0] && strcmp (old[i], old[0]) == 0))
      continue;
    if (bitmap_remove_if (d->source, old[i]) == -1)
      ret = -1;
  }
  return ret;
}

void
engine_backup_disk_abort (const struct engine_backup_disk *d,
                          const struct engine_disk_result *r)
{
  struct error_saved es;
  const char *name = r && r->change_id ? r->change_id : d->backup_id;

  if (is_nbd_uri (d->source) || name == NULL)
    return;
  if (d->previous_change_id && strcmp (d->previous_change_id, name) == 0)
    return;
  error_save (&es);
  bitmap_remove_if (d->source, name);
  error_restore (&es);
}

void
engine_disk_result_clear (struct engine_disk_result *r)
{
  free (r->change_id);
  free (r->full_reason);
  memset (r, 0, sizeof *r);
}
