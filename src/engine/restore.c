/* engine/restore.c - bringing a backup point back out: copy an NBD export
 * (the hub's read-only restore export) into a new local file.
 *
 * A raw output is written directly: it is sized with ftruncate and only
 * the source's data extents are written (all-zero blocks are skipped too),
 * so holes stay holes.  A qcow2 output is created with qemu-img and written
 * through a private qemu-nbd, again data only.  Either way the file is
 * synced, and its folder too, before success; on failure it is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine-int.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "storage/qnbd.h"
#include "util/proc.h"

static int
sync_path (const char *path, bool dir)
{
  int fd = open (path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd == -1 || fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "fsync %s", path);
    if (fd >= 0)
      close (fd);
    return -1;
  }
  close (fd);
  return 0;
}

static int
sync_parent (const char *path)
{
  CLEANUP_FREE char *copy = strdup (path);
  if (copy == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "restore");
    return -1;
  }
  return sync_path (dirname (copy), true);
}

int
engine_restore (const char *source_uri, const char *tls_psk_file, const char *output,
                const char *format, struct engine_progress *p,
                struct engine_disk_result *out)
{
  struct copy_spec spec = { .src_uri = source_uri, .src_psk = tls_psk_file,
                            .dst_fd = -1, .zero_holes = false };
  struct copy_stats st;
  int64_t t0;
  struct qnbd q = { 0 };
  struct stat sb;
  bool created = false;
  int fd = -1;

  memset (out, 0, sizeof *out);
  t0 = clock_mono_ns ();
  if (format == NULL)
    format = "raw";
  if (strcmp (format, "raw") != 0 && strcmp (format, "qcow2") != 0) {
    error_set (ERR_INVALID, "unknown output format '%s' (raw or qcow2)", format);
    return -1;
  }
  if (lstat (output, &sb) == 0) {
    error_set (ERR_CONFLICT, "%s already exists", output);
    return -1;
  }

  if (strcmp (format, "raw") == 0) {
    fd = open (output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd == -1) {
      error_set_errno (ERR_INVALID, errno, "creating %s", output);
      return -1;
    }
    created = true;
    spec.dst_fd = fd;
  }
  else {
    struct nbd_handle *h = copy_connect (source_uri, tls_psk_file, true, NULL);
    char size[32];
    int64_t sz;

    if (h == NULL)
      return -1;
    sz = nbd_get_size (h);
    nbd_shutdown (h, 0);
    nbd_close (h);
    if (sz < 0) {
      error_set (ERR_UNAVAILABLE, "size of %s", source_uri);
      return -1;
    }
    snprintf (size, sizeof size, "%" PRIi64, sz);
    {
      const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", output, size, NULL };
      if (proc_run (argv, NULL) == -1) {
        error_prefix ("creating %s", output);
        return -1;
      }
    }
    created = true;
    if (qnbd_start (&q, output, "qcow2", false, NULL, NULL) == -1)
      goto fail;
    spec.dst_uri = q.uri;
  }

  if (copy_run (&spec, p, &st) == -1)
    goto fail;
  qnbd_stop (&q);
  if (fd >= 0) {
    if (close (fd) == -1) {
      fd = -1;
      error_set_errno (ERR_INTERNAL, errno, "closing %s", output);
      goto fail;
    }
    fd = -1;
  }
  else if (sync_path (output, false) == -1)
    goto fail;
  if (sync_parent (output) == -1)
    goto fail;

  out->copied = true;
  out->mode = BACKUP_FULL;
  out->size_bytes = st.size;
  out->bytes_read = st.bytes_read;
  out->bytes_written = st.bytes_written;
  out->bytes_zero = st.bytes_zero;
  out->seconds = (clock_mono_ns () - t0) / 1e9;
  free (st.full_reason);
  return 0;

 fail:
  {
    struct error_saved es;
    error_save (&es);
    qnbd_stop (&q);
    if (fd >= 0)
      close (fd);
    if (created)
      unlink (output);
    error_restore (&es);
  }
  return -1;
}
