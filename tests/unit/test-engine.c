/* tests/unit/test-engine.c - the copy engine against real qemu-img, qemu-io
 * and qemu-nbd: a full, an incremental after writes and a discard, an
 * incremental whose bitmap is gone, and restores to raw and qcow2, each
 * compared with the source; the block hashes the copies take, checked
 * against the source's bytes hashed here; reading ranges and the
 * change-tracking audit. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "engine/engine-int.h"
#include "integrity/manifest.h"
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

/* How a map's records compare with a raw image's bytes, hashed here. */
struct check {
  uint64_t data, zero, none;  /* records of each kind */
  uint64_t bad;               /* records that do not match the bytes */
  int64_t first_bad;          /* its block, or -1 */
  uint64_t none_nonzero;      /* blocks with no record whose bytes are not zero */
};

static void
check_map (const struct mf_map *m, const char *raw, struct check *c)
{
  static char buf[MF_BLOCK_SIZE];
  int64_t size = mf_map_virtual_size (m);
  int fd = open (raw, O_RDONLY);

  memset (c, 0, sizeof *c);
  c->first_bad = -1;
  for (uint64_t b = 0; b < mf_blocks_for (size); b++) {
    uint8_t got[MF_HASH_LEN];
    XXH128_canonical_t want;
    enum mf_kind k = mf_map_get (m, b, got);
    ssize_t n = pread (fd, buf, MF_BLOCK_SIZE, b * MF_BLOCK_SIZE);
    bool zero = true, match;

    if (n < 0)
      n = 0;
    memset (buf + n, 0, MF_BLOCK_SIZE - n);   /* a partial block, padded */
    for (size_t i = 0; i < MF_BLOCK_SIZE && zero; i++)
      zero = buf[i] == 0;
    XXH128_canonicalFromHash (&want, XXH3_128bits (buf, MF_BLOCK_SIZE));
    switch (k) {
    case MF_DATA: c->data++; match = !zero && memcmp (got, want.digest, MF_HASH_LEN) == 0; break;
    case MF_ZERO: c->zero++; match = zero; break;
    default: c->none++; match = true; c->none_nonzero += !zero; break;
    }
    if (!match && c->bad++ == 0)
      c->first_bad = b;
  }
  close (fd);
}

/* Back src up into target (a qcow2, exported by a private qemu-nbd),
 * hashing into map (may be NULL). */
static int
backup_hashed (const char *src, const char *target, const char *id, const char *prev,
               bool backing, struct mf_map *map, struct engine_disk_result *r)
{
  struct engine_progress p = { 0 };
  struct engine_backup_disk d = { .source = src, .backup_id = id,
                                  .previous_change_id = prev,
                                  .target_has_backing = backing, .hashes = map };
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
backup (const char *src, const char *target, const char *id, const char *prev,
        bool backing, struct engine_disk_result *r)
{
  return backup_hashed (src, target, id, prev, backing, NULL, r);
}

/* The blocks of m with a record, as a string of '.' and 'x' (caller frees). */
static char *
record_pattern (const struct mf_map *m)
{
  uint64_t n = mf_blocks_for (mf_map_virtual_size (m));
  char *s = calloc (n + 1, 1);
  for (uint64_t b = 0; s && b < n; b++)
    s[b] = mf_map_get (m, b, NULL) == MF_NONE ? '.' : 'x';
  return s;
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
  struct check c;
  struct mf_map *m, *m2;
  int64_t size;
  char *pat, *pat2;

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
  ok (engine_source_size ("src.qcow2", ENGINE_CONNECT_TIMEOUT, &size) == 0 && size == 64 << 20,
      "the source's size is its virtual size");

  /* Full, hashed. */
  sh ("qemu-img create -q -f qcow2 b0.qcow2 64M");
  m = mf_map_new (64 << 20, dir);
  ok (backup_hashed ("src.qcow2", "b0.qcow2", "b0", NULL, false, m, &r) == 0, "a full backup");
  is_str (r.copied ? backup_type_name (r.mode) : NULL, "full", "its mode is full");
  is_str (r.change_id, "b0", "its change id is the new bitmap");
  is_int (r.bytes_written, (3 << 20) + (64 << 10) + (1 << 20), "it writes the data only");
  engine_disk_result_clear (&r);
  is_int (sh ("qemu-img compare -q src.qcow2 b0.qcow2"), 0, "the full equals the source");
  sh ("qemu-img convert -U -O raw src.qcow2 s0.raw");
  check_map (m, "s0.raw", &c);
  is_int (c.bad, 0, "every block hash of the full is the source's (first bad block %" PRIi64 ")",
          c.first_bad);
  is_int (c.data, 48 + 1 + 16, "the full hashed every data block");
  is_int (c.none_nonzero, 0, "a block with no record reads zero in the source");
  mf_map_free (m);

  /* Writes and a discard, then an incremental into an overlay. */
  sh ("qemu-io -f qcow2 -c 'write -P 0x44 1M 64k' -c 'discard 2M 1M' "
      "-c 'write -P 0x55 50M 128k' src.qcow2 >/dev/null");
  sh ("qemu-img create -q -f qcow2 -b b0.qcow2 -F qcow2 b1.qcow2 64M");
  m = mf_map_new (64 << 20, dir);
  ok (backup_hashed ("src.qcow2", "b1.qcow2", "b1", "b0", true, m, &r) == 0, "an incremental");
  is_str (r.copied ? backup_type_name (r.mode) : NULL, "incremental", "its mode is incremental");
  is_int (r.bytes_written, (64 << 10) + (128 << 10), "it writes the dirty data only");
  is_int (r.bytes_zero, 1 << 20, "and the discarded MiB as zeroes");
  engine_disk_result_clear (&r);
  is_int (sh ("qemu-img compare -q src.qcow2 b1.qcow2"), 0, "the incremental equals the source");
  sh ("qemu-img convert -U -O raw src.qcow2 s1.raw");
  check_map (m, "s1.raw", &c);
  is_int (c.bad, 0, "every block hash of the incremental is the source's");
  ok (c.data == 1 + 2 && c.zero == 16 && mf_map_get (m, 16, NULL) == MF_DATA &&
      mf_map_get (m, 32, NULL) == MF_ZERO && mf_map_get (m, 800, NULL) == MF_DATA &&
      mf_map_get (m, 801, NULL) == MF_DATA,
      "it holds exactly the dirty blocks: %" PRIu64 " data, %" PRIu64 " zero", c.data, c.zero);
  mf_map_free (m);
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

  /* A disk whose last block is partial, with data in it, and data that
   * does not start on a block: blocks are hashed whole. */
  sh ("qemu-img create -q -f qcow2 p.qcow2 1049088");
  sh ("qemu-io -f qcow2 -c 'write -P 0x77 1048576 512' -c 'write -P 0x78 70000 1000' "
      "p.qcow2 >/dev/null");
  sh ("qemu-img create -q -f qcow2 pb.qcow2 1049088");
  m = mf_map_new (1049088, dir);
  ok (backup_hashed ("p.qcow2", "pb.qcow2", "pb", NULL, false, m, &r) == 0,
      "a full of a disk of 1 MiB + 512 bytes");
  engine_disk_result_clear (&r);
  sh ("qemu-img convert -U -O raw p.qcow2 p.raw");
  check_map (m, "p.raw", &c);
  ok (c.bad == 0 && c.data == 2 && mf_map_get (m, 16, NULL) == MF_DATA &&
      mf_map_get (m, 1, NULL) == MF_DATA,
      "its partial last block is hashed zero-padded (%" PRIu64 " bad, %" PRIu64 " data)",
      c.bad, c.data);
  is_int (sh ("qemu-img compare -q p.qcow2 pb.qcow2"), 0, "and the copy equals the source");
  mf_map_free (m);

  /* Ranges of a file, read and hashed. */
  {
    struct qnbd q;
    const uint64_t ranges[] = { 0, 3 << 20, 50 << 20, 128 << 10, 63 << 20, 1 << 20 };
    const uint64_t unaligned[] = { 4096, 65536 };

    m = mf_map_new (64 << 20, dir);
    ok (qnbd_start (&q, "src.raw", "raw", true, NULL, NULL) == 0, "serve the raw file");
    ok (engine_hash_ranges (q.uri, NULL, ranges, 3, m, NULL) == 0,
        "engine_hash_ranges reads three ranges");
    check_map (m, "src.raw", &c);
    ok (c.bad == 0 && c.data + c.zero == 48 + 2 + 16 && c.none == 1024 - 66,
        "it hashed exactly their blocks, as the file holds them");
    ok (engine_hash_ranges (q.uri, NULL, unaligned, 1, m, NULL) == -1 &&
        error_category () == ERR_INVALID, "a range not of whole blocks is refused");
    qnbd_stop (&q);
    mf_map_free (m);
  }

  /* The audit: every block, then a sample. */
  {
    struct engine_backup_disk d = { .source = "src.qcow2" };

    m = mf_map_new (64 << 20, dir);
    ok (engine_audit_disk (&d, 100, 1, m, NULL) == 0, "an audit of every block");
    check_map (m, "src.raw", &c);
    ok (c.bad == 0 && c.none == 0, "observes every block as the source holds it "
        "(%" PRIu64 " bad, %" PRIu64 " unread)", c.bad, c.none);
    mf_map_free (m);

    m = mf_map_new (64 << 20, dir);
    m2 = mf_map_new (64 << 20, dir);
    ok (engine_audit_disk (&d, 10, 42, m, NULL) == 0 &&
        engine_audit_disk (&d, 10, 42, m2, NULL) == 0, "two audits of 10%% with one seed");
    check_map (m, "src.raw", &c);
    ok (c.bad == 0 && c.data + c.zero == 103,
        "one observes 103 of the 1024 blocks (%" PRIu64 ")", c.data + c.zero);
    pat = record_pattern (m);
    pat2 = record_pattern (m2);
    ok (pat && pat2 && strcmp (pat, pat2) == 0, "the same seed samples the same blocks");
    free (pat2);
    mf_map_free (m2);
    m2 = mf_map_new (64 << 20, dir);
    engine_audit_disk (&d, 10, 43, m2, NULL);
    pat2 = record_pattern (m2);
    ok (pat && pat2 && strcmp (pat, pat2) != 0 && strchr (pat, 'x') < pat + 512 &&
        strrchr (pat, 'x') >= pat + 512, "another seed others, spread over the disk");
    free (pat);
    free (pat2);
    mf_map_free (m);
    mf_map_free (m2);
    ok (engine_audit_disk (&d, 0, 1, NULL, NULL) == -1 && error_category () == ERR_INVALID,
        "an audit of 0%% is refused");
    is_int (sh ("test \"$(qemu-img info -U src.qcow2 | grep -c 'name: ')\" = 1 && "
                "qemu-img info -U src.qcow2 | grep -q 'name: b2'"), 0, "the audit leaves the source's bitmaps as they were");
  }

  sh ("rm -rf %s", dir);
  return done_testing ();
}
