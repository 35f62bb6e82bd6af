/* hub/manifest.c - the manifests of backup files (integrity/manifest.h):
 * their facts, their completion with a disk, an agent's uploads (the block
 * hashes of a disk, an audit's reading of its source) and the audit's
 * comparison with a point's chain.
 *
 * A disk's block part arrives before its completion: a hub worker writes it
 * as "<file>.manifest.part", an agent uploads it to the same name (through a
 * temporary name, so that a half upload never takes its place).  The
 * completion turns it, with the point's facts, into "<file>.manifest"
 * before the catalog records the disk: a completed disk always has its
 * manifest, with hashes or (a client that sent none) with facts only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

static json_t *
str_or_null (const char *s)
{
  return s ? json_string (s) : json_null ();
}

static json_t *
int_or_null (int64_t v)
{
  return v >= 0 ? json_integer (v) : json_null ();
}

/* "<parent backup id>.qcow2": the backing name of an incremental's file
 * (same folder), or NULL for a full. */
static char *
parent_file (const struct cat_disk *d)
{
  char *s = NULL;
  if (d->parent_backup_id == NULL)
    return NULL;
  if (asprintf (&s, "%s.qcow2", d->parent_backup_id) == -1)
    return NULL;
  return s;
}

json_t *
hub_manifest_facts (const struct cat_job *job, const struct cat_disk *d,
                    const char *origin)
{
  CLEANUP_FREE char *pfile = parent_file (d);
  const char *base = d->qcow2_path ? strrchr (d->qcow2_path, '/') : NULL;
  json_t *disks = json_array (), *facts;
  char now[32];

  for (size_t i = 0; disks && i < job->n_disks; i++)
    json_array_append_new (disks, json_integer (job->disks[i].disk_index));
  id_now (now, sizeof now);
  facts = json_pack ("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:o,"
                     " s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:s, s:s}",
                     "repository_id", job->repository_id,
                     "vm_name", job->vm_name,
                     "context_id", job->context_id,
                     "backup_id", job->id,
                     "disk_index", d->disk_index,
                     "job_backup_type", backup_type_name (job->backup_type),
                     "job_driver", job_driver_name (job->driver),
                     "job_created_at", job->created_at,
                     "job_disks", disks,
                     "backup_type", backup_type_name (d->backup_type),
                     "full_reason", str_or_null (d->full_reason),
                     "parent_backup_id", str_or_null (d->parent_backup_id),
                     "parent_file", str_or_null (pfile),
                     "change_id", str_or_null (d->disk_change_id),
                     "size_bytes", (json_int_t) d->size_bytes,
                     "bytes_transferred", (json_int_t) d->bytes_transferred,
                     "vmware_disk_key", int_or_null (d->vmware_disk_key),
                     "unit_number", int_or_null (d->unit_number),
                     "created_at", str_or_null (d->created_at),
                     "completed_at", str_or_null (d->completed_at),
                     "file", str_or_null (base ? base + 1 : d->qcow2_path),
                     "written_at", now,
                     "origin", origin);
  if (facts == NULL)
    error_set (ERR_INTERNAL, "out of memory");
  return facts;
}

char *
hub_manifest_part_path (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *file = repo_abspath (repo_path, rel);
  char *s = NULL;
  if (file == NULL || asprintf (&s, "%s%s.part", file, MF_SUFFIX) == -1) {
    error_set (ERR_INTERNAL, "out of memory");
    return NULL;
  }
  return s;
}

int
hub_manifest_complete (const char *repo_path, const struct cat_job *job,
                       const struct cat_disk *d, const char *change_id,
                       int64_t bytes_transferred, const char *full_reason,
                       const char *completed_at)
{
  CLEANUP_FREE char *file = repo_abspath (repo_path, d->qcow2_path);
  CLEANUP_FREE char *final = file ? mf_path_for (file) : NULL;
  CLEANUP_FREE char *part = hub_manifest_part_path (repo_path, d->qcow2_path);
  CLEANUP_JSON json_t *facts = NULL;
  struct cat_disk now = *d;
  struct stat st;

  if (final == NULL || part == NULL)
    return -1;
  /* The disk as the catalog is about to record it. */
  now.disk_change_id = (char *) change_id;
  now.bytes_transferred = bytes_transferred;
  if (full_reason)
    now.full_reason = (char *) full_reason;
  now.completed_at = (char *) completed_at;
  now.status = DISK_COMPLETED;
  facts = hub_manifest_facts (job, &now, "source");
  if (facts == NULL)
    return -1;
  if (mf_finish (stat (part, &st) == 0 ? part : NULL, facts, final) == -1) {
    error_prefix ("disk %d: its manifest", d->disk_index);
    return -1;
  }
  return 0;
}

/* --- Uploads ----------------------------------------------------------- */

struct hub_upload {
  struct hub *hub;
  enum hub_upload_kind kind;
  char *backup_id;
  int disk_index;
  int64_t virtual_size;
  uint64_t max, len;
  char *tmp;                 /* the file being written */
  char *part;                /* where a checked manifest part goes */
  int fd;
};

static void
upload_free (struct hub_upload *u)
{
  if (u == NULL)
    return;
  if (u->fd >= 0)
    close (u->fd);
  if (u->tmp)
    unlink (u->tmp);
  free (u->tmp);
  free (u->part);
  free (u->backup_id);
  free (u);
}

int
hub_upload_begin (struct hub *hub, enum hub_upload_kind kind, const char *backup_id,
                  int disk_index, int64_t declared_length, struct hub_upload **out)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  const char *what = kind == HUB_UPLOAD_MANIFEST ? "manifest" : "audit";
  const struct cat_disk *d;
  struct hub_upload *u;
  CLEANUP_FREE char *file = NULL;

  *out = NULL;
  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  d = hub_job_disk (&job, disk_index);
  if (d == NULL) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (kind == HUB_UPLOAD_MANIFEST) {
    if (job.driver != DRIVER_AGENT) {
      error_set (ERR_CONFLICT, "backup %s is the hub's own: the hub hashes its disks "
                 "itself", backup_id);
      return -1;
    }
    if (job.status != JOB_RUNNING || d->status != DISK_RUNNING) {
      error_set (ERR_CONFLICT, "disk %d of backup %s is %s: a manifest comes before the "
                 "disk's completion", disk_index, backup_id,
                 job.status != JOB_RUNNING ? job_status_name (job.status)
                 : disk_status_name (d->status));
      return -1;
    }
  }
  else if (d->status != DISK_COMPLETED ||
           (job.status != JOB_COMPLETED && job.status != JOB_FINISHING &&
            job.status != JOB_RUNNING)) {
    error_set (ERR_CONFLICT, "disk %d of backup %s is %s: an audit compares a completed "
               "disk", disk_index, backup_id, disk_status_name (d->status));
    return -1;
  }
  if (d->qcow2_path == NULL) {
    error_set (ERR_CONFLICT, "disk %d of backup %s has no file", disk_index, backup_id);
    return -1;
  }
  if (declared_length >= 0 && (uint64_t) declared_length > mf_part_max (d->size_bytes)) {
    error_set (ERR_TOO_LARGE, "the %s of a %" PRId64 "-byte disk is at most %" PRIu64
               " bytes, not %" PRId64, what, d->size_bytes, mf_part_max (d->size_bytes),
               declared_length);
    return -1;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return -1;

  u = calloc (1, sizeof *u);
  if (u == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  u->hub = hub;
  u->kind = kind;
  u->fd = -1;
  u->disk_index = disk_index;
  u->virtual_size = d->size_bytes;
  u->max = mf_part_max (d->size_bytes);
  u->backup_id = strdup (backup_id);
  file = repo_abspath (repo.path, d->qcow2_path);
  u->part = hub_manifest_part_path (repo.path, d->qcow2_path);
  if (u->backup_id == NULL || file == NULL || u->part == NULL ||
      asprintf (&u->tmp, "%s%s.%s-XXXXXX", file, MF_SUFFIX, what) == -1) {
    u->tmp = NULL;
    upload_free (u);
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  u->fd = mkstemp (u->tmp);
  if (u->fd == -1) {
    error_set_errno (errno == ENOSPC ? ERR_NO_SPACE : ERR_INTERNAL, errno,
                     "creating %s", u->tmp);
    free (u->tmp);
    u->tmp = NULL;
    upload_free (u);
    return -1;
  }
  *out = u;
  return 0;
}

int
hub_upload_write (struct hub_upload *u, const void *data, size_t n)
{
  const char *p = data;

  if (u->len + n > u->max) {
    error_set (ERR_TOO_LARGE, "the upload is larger than the %" PRIu64 " bytes a "
               "%" PRId64 "-byte disk's block part can take", u->max, u->virtual_size);
    return -1;
  }
  while (n > 0) {
    ssize_t w = write (u->fd, p, n);
    if (w == -1 && errno == EINTR)
      continue;
    if (w == -1) {
      error_set_errno (errno == ENOSPC ? ERR_NO_SPACE : ERR_INTERNAL, errno,
                       "writing %s", u->tmp);
      return -1;
    }
    p += w;
    n -= (size_t) w;
    u->len += (uint64_t) w;
  }
  return 0;
}

void
hub_upload_abort (struct hub_upload *u)
{
  upload_free (u);
}

/* The records of a checked block part, as a map: the part becomes a
 * manifest of facts that say only its size, which is read back. */
static struct mf_map *
map_of_part (const char *part, int64_t size)
{
  CLEANUP_FREE char *mf = NULL;
  CLEANUP_JSON json_t *facts = json_pack ("{s:I}", "size_bytes", (json_int_t) size);
  struct mf_reader *r = NULL;
  struct mf_map *m = NULL;
  uint8_t hash[MF_HASH_LEN];
  enum mf_kind kind;
  uint64_t block;
  int got;

  if (facts == NULL || asprintf (&mf, "%s%s", part, MF_SUFFIX) == -1) {
    mf = NULL;
    error_set (ERR_INTERNAL, "out of memory");
    return NULL;
  }
  if (mf_finish (part, facts, mf) == -1 || (r = mf_open (mf)) == NULL ||
      (m = mf_map_new (size, NULL)) == NULL)
    goto fail;
  while ((got = mf_next (r, &block, &kind, hash)) == 1)
    if (mf_map_put (m, block, kind, hash) == -1)
      goto fail;
  if (got == -1)
    goto fail;
  mf_close (r);
  unlink (mf);
  return m;
 fail:
  mf_close (r);
  mf_map_free (m);
  unlink (mf);
  return NULL;
}

int
hub_upload_end (struct hub_upload *u, struct hub_upload_result *res)
{
  int ret = -1;

  memset (res, 0, sizeof *res);
  if (fsync (u->fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "syncing %s", u->tmp);
    goto out;
  }
  if (mf_part_check (u->tmp, u->virtual_size) == -1) {
    /* What the client sent is wrong, whatever the reader calls it. */
    error_recategorize (ERR_INVALID);
    goto out;
  }
  if (u->kind == HUB_UPLOAD_MANIFEST) {
    /* The disk may have been ended meanwhile: its files then go, and a
     * part left here would be deleted at the next start. */
    if (rename (u->tmp, u->part) == -1) {
      error_set_errno (ERR_INTERNAL, errno, "renaming %s", u->tmp);
      goto out;
    }
    free (u->tmp);
    u->tmp = NULL;
    ret = 0;
  }
  else {
    struct mf_map *observed = map_of_part (u->tmp, u->virtual_size);
    if (observed == NULL)
      goto out;
    ret = hub_audit_record (u->hub, u->backup_id, u->disk_index, observed, &res->audit);
    res->verify_state = res->audit.bad ? VERIFY_CORRUPT : VERIFY_NONE;
    mf_map_free (observed);
  }

 out:
  upload_free (u);
  return ret;
}

bool
hub_upload_is_audit (const struct hub_upload *u)
{
  return u->kind == HUB_UPLOAD_AUDIT;
}
