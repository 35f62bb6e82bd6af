/* tests/unit/test-engine.c - the copy engine against real qemu-img, qemu-io
 * and qemu-nbd: a full, an incremental after writes and a discard, an
 * incremental whose bitmap is gone, and restores to raw and qcow2, each
 * compared with the source. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine-int.h"
#include "storage/qnbd.h"
#include "util/error.h"
#include "tap.h"

static char dir[] = "/tmp/strata-test-engine.XXXXXX";

static int
sh (const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  return system (cmd);
}

/* Back src up into target (a qcow2, exported by a private qemu-nbd). */
static int
backup (const char *src, const char *target, const char *id, const char *prev,
        bool backing, struct engine_disk_result *r)
{
  struct engine_progress p = { 0 };
  struct engine_backup_disk d = { .source = src, .backup_id = id,
                                  .previous_change_id = prev,
                                  .target_has_backing = backing };
  struct qnbd q;
  int ret;

  if (qnbd_start (&q, target, "qcow2", false, NULL, NULL) == -1) {
    diag ("qnbd_start: %s", error_message ());
    return -1;
  }
  d.target_uri = q.uri;
  ret = engine_backup_disk (&d, &p, r);
  if (ret == -1)
    diag ("engine_backup_disk: %s", error_message ());
  else if (p.bytes_done != p.bytes_total) {
    diag ("progress %" PRIi64 " of %" PRIi64, (int64_t) p.bytes_done, (int64_t) p.bytes_total);
    ret = -1;
  }
  else if (engine_backup_disk_commit (&d, r) == -1) {
    diag ("commit: %s", error_message ());
    ret = -1;
  }
  qnbd_stop (&q);
  return ret;
}

static int
restore (const char *image, const char *out, const char *fmt)
{
  struct engine_disk_result r;
  struct qnbd q;
  int ret;

  if (qnbd_start (&q, image, "qcow2", true, NULL, NULL) == -1)
    return -1;
  ret = engine_restore (q.uri, NULL, out, fmt, NULL, &r);
  if (ret == -1)
    diag ("engine_restore: %s", error_message ());
  engine_disk_result_clear (&r);
  qnbd_stop (&q);
  return ret;
}

int
main (void)
{
  struct engine_disk_result r;
  struct stat sb;
  int64_t size;

  if (system ("command -v qemu-nbd qemu-io qemu-img >/dev/null") != 0)
    skip_all ("qemu-nbd, qemu-io or qemu-img missing");
  if (mkdtemp (dir) == NULL)
    return 1;
  if (chdir (dir) == -1)
    return 1;

  /* A 64 MiB disk with some data. */
  sh ("qemu-img create -q -f qcow2 src.qcow2 64M");
  sh ("qemu-io -f qcow2 -c 'write -P 0x11 0 3M' -c 'write -P 0x22 20M 64k' "
      "-c 'write -P 0x33 63M 1M' -c 'write -z 40M 1M' src.qcow2 >/dev/null");
  ok (engine_source_size ("src.qcow2", &size) == 0 && size == 64 << 20,
      "the source's size is its virtual size");

  /* Full. */
  sh ("qemu-img create -q -f qcow2 b0.qcow2 64M");
  ok (backup ("src.qcow2", "b0.qcow2", "b0", NULL, false, &r) == 0, "a full backup");
  is_str (r.copied ? backup_type_name (r.mode) : NULL, "full", "its mode is full");
  is_str (r.change_id, "b0", "its change id is the new bitmap");
  is_int (r.bytes_written, (3 << 20) + (64 << 10) + (1 << 20), "it writes the data only");
  engine_disk_result_clear (&r);
  is_int (sh ("qemu-img compare -q src.qcow2 b0.qcow2"), 0, "the full equals the source");

  /* Writes and a discard, then an incremental into an overlay. */
  sh ("qemu-io -f qcow2 -c 'write -P 0x44 1M 64k' -c 'discard 2M 1M' "
      "-c 'write -P 0x55 50M 128k' src.qcow2 >/dev/null");
  sh ("qemu-img create -q -f qcow2 -b b0.qcow2 -F qcow2 b1.qcow2 64M");
  ok (backup ("src.qcow2", "b1.qcow2", "b1", "b0", true, &r) == 0, "an incremental");
  is_str (r.copied ? backup_type_name (r.mode) : NULL, "incremental", "its mode is incremental");
  is_int (r.bytes_written, (64 << 10) + (128 << 10), "it writes the dirty data only");
  is_int (r.bytes_zero, 1 << 20, "and the discarded MiB as zeroes");
  engine_disk_result_clear (&r);
  is_int (sh ("qemu-img compare -q src.qcow2 b1.qcow2"), 0, "the incremental equals the source");
  is_int (sh ("qemu-img info src.qcow2 | grep -q 'name: b0'"), 256,
          "the older bitmap is gone after commit");

  /* The bitmap is lost: a full copy into the overlay, with a reason. */
  sh ("qemu-io -f qcow2 -c 'write -P 0x66 10M 64k' src.qcow2 >/dev/null");
  sh ("qemu-img bitmap --remove src.qcow2 b1");
  sh ("qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 b2.qcow2 64M");
  ok (backup ("src.qcow2", "b2.qcow2", "b2", "b1", true, &r) == 0,
      "an incremental whose bitmap is gone");
  is_str (r.copied ? backup_type_name (r.mode) : NULL, "full", "is copied in full");
  ok (r.full_reason && strstr (r.full_reason, "b1") && strstr (r.full_reason, "missing"),
      "and says why: %s", r.full_reason ? r.full_reason : "(null)");
  engine_disk_result_clear (&r);
  is_int (sh ("qemu-img compare -q src.qcow2 b2.qcow2"), 0, "the fallback equals the source");

  /* Restores. */
  sh ("qemu-img convert -O raw src.qcow2 src.raw");
  ok (restore ("b2.qcow2", "r.raw", "raw") == 0, "restore to raw");
  is_int (sh ("cmp -s src.raw r.raw"), 0, "the raw restore equals the source");
  if (stat ("r.raw", &sb) == -1)
    sb.st_blocks = -1;
  ok (sb.st_blocks > 0 && sb.st_blocks * 512 < (16 << 20),
      "and is sparse (%lld bytes allocated)", (long long) sb.st_blocks * 512);
  ok (restore ("b2.qcow2", "r.qcow2", "qcow2") == 0, "restore to qcow2");
  is_int (sh ("qemu-img compare -q src.raw r.qcow2"), 0, "the qcow2 restore equals the source");
  ok (restore ("b2.qcow2", "r.qcow2", "qcow2") == -1 && error_category () == ERR_CONFLICT,
      "an existing output is refused");

  sh ("rm -rf %s", dir);
  return done_testing ();
}
