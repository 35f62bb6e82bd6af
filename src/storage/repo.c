/* storage/repo.c - the layout and files of a local repository. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "util/proc.h"

static char *
xasprintf (const char *fmt, ...) __attribute__((format (printf, 1, 2)));

static char *
xasprintf (const char *fmt, ...)
{
  va_list ap;
  char *s;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&s, fmt, ap);
  va_end (ap);
  if (r == -1) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  return s;
}

char *
repo_disk_relpath (const char *context_id, int disk_index, const char *backup_id)
{
  return xasprintf ("%s/disk%d/%s.qcow2", context_id, disk_index, backup_id);
}

char *
repo_abspath (const char *repo_path, const char *rel)
{
  return xasprintf ("%s/%s", repo_path, rel);
}

int
repo_sync_dir (const char *dir)
{
  CLEANUP_FD int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1 || fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "syncing folder %s", dir);
    return -1;
  }
  return 0;
}

char *
repo_dir_of (const char *path)
{
  const char *slash = strrchr (path, '/');
  if (slash == NULL)
    return strdup (".");
  if (slash == path)
    return strdup ("/");
  return strndup (path, slash - path);
}

int
repo_write_atomic (const char *path, const void *data, size_t len)
{
  CLEANUP_FREE char *tmp = xasprintf ("%s.XXXXXX", path);
  CLEANUP_FREE char *dir = repo_dir_of (path);
  const char *p = data;
  int fd;

  if (tmp == NULL || dir == NULL)
    return -1;
  /* A name of its own: two writers never share a temporary file. */
  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "creating %s", tmp);
    return -1;
  }
  if (fchmod (fd, 0640) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "chmod %s", tmp);
    goto fail;
  }
  while (len > 0) {
    ssize_t n = write (fd, p, len);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1) {
      error_set_errno (ERR_INTERNAL, errno, "writing %s", tmp);
      goto fail;
    }
    p += n;
    len -= n;
  }
  if (fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "syncing %s", tmp);
    goto fail;
  }
  close (fd);
  fd = -1;
  if (rename (tmp, path) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "renaming %s to %s", tmp, path);
    goto fail;
  }
  return repo_sync_dir (dir);

 fail:
  if (fd >= 0)
    close (fd);
  unlink (tmp);
  return -1;
}

int
repo_prepare (const char *path, char **canonical, bool *created)
{
  struct stat st;
  const char *p;

  *created = false;
  if (path == NULL || path[0] != '/') {
    error_set (ERR_INVALID, "repository path must be absolute");
    return -1;
  }
  if (strlen (path) >= PATH_MAX - 256) {
    error_set (ERR_INVALID, "repository path is too long");
    return -1;
  }
  /* Refuse "." and ".." components: the path stored is the path meant. */
  for (p = path; *p; ) {
    size_t n;
    while (*p == '/')
      p++;
    n = strcspn (p, "/");
    if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
      error_set (ERR_INVALID, "repository path must not contain '.' or '..'");
      return -1;
    }
    p += n;
  }
  if (stat (path, &st) == -1) {
    if (errno != ENOENT) {
      error_set_errno (ERR_INVALID, errno, "repository path %s", path);
      return -1;
    }
    if (mkdir (path, 0750) == -1) {
      error_set_errno (ERR_INVALID, errno,
                       "cannot create repository folder %s (its parent must exist)",
                       path);
      return -1;
    }
    *created = true;
  }
  else if (!S_ISDIR (st.st_mode)) {
    error_set (ERR_INVALID, "repository path %s is not a directory", path);
    return -1;
  }
  if (access (path, W_OK | X_OK) == -1) {
    error_set_errno (ERR_INVALID, errno, "repository path %s is not writable", path);
    goto undo;
  }
  *canonical = realpath (path, NULL);
  if (*canonical == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "resolving %s", path);
    goto undo;
  }
  return 0;

 undo:
  if (*created)
    rmdir (path);
  *created = false;
  return -1;
}

static __thread int64_t usage_sum;

static int
usage_visit (const char *fpath, const struct stat *sb, int type, struct FTW *ftw)
{
  if (type == FTW_F)
    usage_sum += (int64_t) sb->st_blocks * 512;
  return 0;
}

int
repo_usage (const char *repo_path, int64_t *used, int64_t *available)
{
  struct statvfs vfs;

  if (statvfs (repo_path, &vfs) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "statvfs %s", repo_path);
    return -1;
  }
  *available = (int64_t) vfs.f_bavail * (int64_t) vfs.f_frsize;
  usage_sum = 0;
  if (nftw (repo_path, usage_visit, 16, FTW_PHYS) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "walking %s", repo_path);
    return -1;
  }
  *used = usage_sum;
  return 0;
}

/* mkdir -p for the folders of rel under root (at most a few levels). */
static int
make_dirs (const char *root, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (root, rel);
  char *p;

  if (path == NULL)
    return -1;
  for (p = path + strlen (root) + 1; (p = strchr (p, '/')) != NULL; p++) {
    *p = '\0';
    if (mkdir (path, 0750) == -1 && errno != EEXIST) {
      error_set_errno (ERR_INTERNAL, errno, "creating folder %s", path);
      return -1;
    }
    *p = '/';
  }
  return 0;
}

char *
repo_relative (const char *from, const char *to)
{
  size_t common = 0, i, ups = 0;
  char *ret, *q;

  /* Longest common run of whole leading folders. */
  for (i = 0; from[i] && from[i] == to[i]; i++)
    if (from[i] == '/')
      common = i + 1;
  for (i = common; from[i]; i++)
    if (from[i] == '/')
      ups++;
  ret = malloc (ups * 3 + strlen (to + common) + 1);
  if (ret == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  for (q = ret, i = 0; i < ups; i++, q += 3)
    memcpy (q, "../", 3);
  strcpy (q, to + common);
  return ret;
}

int
repo_create_image (const char *repo_path, const char *rel, int64_t size,
                   const char *parent_rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);
  CLEANUP_FREE char *backing = NULL;
  CLEANUP_FREE char *output = NULL;
  CLEANUP_FREE char *dir = NULL;
  char size_str[32];
  struct stat st;

  if (path == NULL || make_dirs (repo_path, rel) == -1)
    return -1;
  if (lstat (path, &st) == 0) {
    error_set (ERR_CONFLICT, "image %s exists already", path);
    return -1;
  }
  snprintf (size_str, sizeof size_str, "%" PRId64, size);
  if (parent_rel) {
    backing = repo_relative (rel, parent_rel);
    if (backing == NULL)
      return -1;
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2",
                           "-b", backing, "-F", "qcow2", path, size_str, NULL };
    if (proc_run (argv, &output) == -1)
      goto fail;
  }
  else {
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2",
                           path, size_str, NULL };
    if (proc_run (argv, &output) == -1)
      goto fail;
  }
  dir = repo_dir_of (path);
  if (dir == NULL || repo_sync_dir (dir) == -1)
    goto fail;
  return 0;

 fail:
  /* qemu-img does not say ENOSPC or EROFS in a way we can read: check
   * ourselves. */
  {
    struct statvfs vfs;
    if (statvfs (repo_path, &vfs) == -1)
      ;
    else if (vfs.f_flag & ST_RDONLY)
      error_set (ERR_UNAVAILABLE, "repository %s is on a read-only file system: %s",
                 repo_path, error_message ());
    else if ((int64_t) vfs.f_bavail * (int64_t) vfs.f_frsize < 1024 * 1024)
      error_set (ERR_NO_SPACE, "repository %s is full: %s", repo_path, error_message ());
  }
  {
    /* No file, and no folder it made, is left behind. */
    struct error_saved saved;
    error_save (&saved);
    repo_remove_image (repo_path, rel);
    error_restore (&saved);
  }
  return -1;
}

int
repo_sync_image (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_FD int fd = -1;

  if (path == NULL)
    return -1;
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "opening %s", path);
    return -1;
  }
  if (fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "syncing %s", path);
    return -1;
  }
  dir = repo_dir_of (path);
  return dir ? repo_sync_dir (dir) : -1;
}

int
repo_seal_image (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);
  struct stat st;

  if (path == NULL)
    return -1;
  if (stat (path, &st) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "%s", path);
    return -1;
  }
  if ((st.st_mode & 0777) != 0444 && chmod (path, 0444) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "making %s read-only", path);
    return -1;
  }
  return 0;
}

/* The files that go with an image: its manifest and a manifest's block
 * part still being written (integrity/manifest.h). */
static const char *const companions[] = { REPO_MANIFEST_SUFFIX ".part", REPO_MANIFEST_SUFFIX };

/* Unlink path: 0 when it is gone afterwards, also when it never was (a
 * read-only file system refuses unlink with EROFS even for a name that is
 * not there); else -1 with errno set. */
static int
unlink_gone (const char *path)
{
  struct stat st;
  int saved;

  if (unlink (path) == 0 || errno == ENOENT)
    return 0;
  saved = errno;
  if (lstat (path, &st) == -1 && errno == ENOENT)
    return 0;
  errno = saved;
  return -1;
}

int
repo_remove_manifest (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);

  if (path == NULL)
    return -1;
  for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
    CLEANUP_FREE char *c = xasprintf ("%s%s", path, companions[i]);
    if (c == NULL)
      return -1;
    if (unlink_gone (c) == -1) {
      error_set_errno (ERR_INTERNAL, errno, "deleting %s", c);
      return -1;
    }
  }
  return 0;
}

int
repo_remove_image (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_FREE char *ctxdir = NULL;

  if (path == NULL)
    return -1;
  /* Its manifest first: a crash in between leaves an image with no
   * manifest (an orphan the next start deletes), never a manifest that
   * names a file that is gone. */
  if (repo_remove_manifest (repo_path, rel) == -1)
    return -1;
  if (unlink_gone (path) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "deleting %s", path);
    return -1;
  }
  dir = repo_dir_of (path);
  if (dir == NULL)
    return -1;
  repo_sync_dir (dir);
  if (rmdir (dir) == 0) {
    ctxdir = repo_dir_of (dir);
    if (ctxdir && rmdir (ctxdir) == -1 && errno != ENOTEMPTY && errno != EEXIST)
      log_warn ("removing folder %s: %m", ctxdir);
  }
  return 0;
}

bool
repo_image_in_use (const char *repo_path, const char *rel)
{
  CLEANUP_FREE char *path = repo_abspath (repo_path, rel);
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100,
                      .l_len = 200 };
  int fd;
  bool used;

  if (path == NULL || (fd = open (path, O_RDONLY | O_CLOEXEC)) == -1)
    return false;
  /* F_OFD_GETLK reports a conflicting lock of any other open file
   * description, in this process or another. */
  used = fcntl (fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  close (fd);
  return used;
}

static bool
is_disk_dir_name (const char *name)
{
  if (strncmp (name, "disk", 4) != 0 || name[4] == '\0')
    return false;
  for (const char *p = name + 4; *p; p++)
    if (*p < '0' || *p > '9')
      return false;
  return true;
}

static bool
ends_with (const char *name, const char *suffix)
{
  size_t n = strlen (name), m = strlen (suffix);
  return n > m && strcmp (name + n - m, suffix) == 0;
}

static bool
is_image_name (const char *name)
{
  return ends_with (name, ".qcow2");
}

/* "<image>.qcow2.manifest", "<image>.qcow2.manifest.part", or a temporary
 * file of one being written, "<image>.qcow2.manifest.<anything>". */
static bool
is_manifest_name (const char *name)
{
  return ends_with (name, ".qcow2" REPO_MANIFEST_SUFFIX) ||
         strstr (name, ".qcow2" REPO_MANIFEST_SUFFIX ".") != NULL;
}

/* Call fn for each image (manifests set: each manifest file instead) of
 * each disk folder of a context folder; with prune, remove the folders
 * that are left empty.  ctx_rel is the context folder's name. */
static int
walk_context (const char *repo_path, const char *ctx_rel,
              int (*fn) (const char *rel, void *opaque), void *opaque, bool prune,
              bool manifests)
{
  CLEANUP_FREE char *ctxdir = repo_abspath (repo_path, ctx_rel);
  DIR *d, *dd;
  struct dirent *de, *fe;
  int ret = 0;

  if (ctxdir == NULL || (d = opendir (ctxdir)) == NULL)
    return 0;
  while ((de = readdir (d)) != NULL) {
    CLEANUP_FREE char *diskdir = NULL;
    if (!is_disk_dir_name (de->d_name))
      continue;
    diskdir = xasprintf ("%s/%s", ctxdir, de->d_name);
    if (diskdir == NULL || (dd = opendir (diskdir)) == NULL)
      continue;
    while (fn && (fe = readdir (dd)) != NULL) {
      CLEANUP_FREE char *rel = NULL;
      if (!(manifests ? is_manifest_name (fe->d_name) : is_image_name (fe->d_name)))
        continue;
      rel = xasprintf ("%s/%s/%s", ctx_rel, de->d_name, fe->d_name);
      if (rel && fn (rel, opaque) == -1)
        ret = -1;
    }
    closedir (dd);
    if (prune)
      rmdir (diskdir);
  }
  closedir (d);
  if (prune)
    rmdir (ctxdir);
  return ret;
}

static int
is_context_dir (const char *repo_path, const char *name)
{
  CLEANUP_FREE char *p = NULL;
  struct stat st;

  if (strncmp (name, "ctx-", 4) != 0 || !id_valid (name))
    return 0;
  p = repo_abspath (repo_path, name);
  return p && lstat (p, &st) == 0 && S_ISDIR (st.st_mode);
}

static int
scan (const char *repo_path, int (*fn) (const char *rel, void *opaque), void *opaque,
      bool manifests)
{
  DIR *d = opendir (repo_path);
  struct dirent *de;
  int ret = 0;

  if (d == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "opening repository %s", repo_path);
    return -1;
  }
  while ((de = readdir (d)) != NULL)
    if (is_context_dir (repo_path, de->d_name) &&
        walk_context (repo_path, de->d_name, fn, opaque, false, manifests) == -1)
      ret = -1;
  closedir (d);
  return ret;
}

int
repo_scan (const char *repo_path, int (*fn) (const char *rel, void *opaque),
           void *opaque)
{
  return scan (repo_path, fn, opaque, false);
}

int
repo_scan_manifests (const char *repo_path, int (*fn) (const char *rel, void *opaque),
                     void *opaque)
{
  return scan (repo_path, fn, opaque, true);
}

void
repo_prune (const char *repo_path)
{
  DIR *d = opendir (repo_path);
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    if (is_context_dir (repo_path, de->d_name))
      walk_context (repo_path, de->d_name, NULL, NULL, true, false);
  closedir (d);
}

static int
remove_manifest_of (const char *rel, void *opaque)
{
  return repo_remove_manifest (opaque, rel);
}

static int
remove_one (const char *rel, void *opaque)
{
  return repo_remove_image (opaque, rel);
}

static int
remove_file (const char *rel, void *opaque)
{
  CLEANUP_FREE char *path = repo_abspath (opaque, rel);

  if (path == NULL || unlink_gone (path) == -1) {
    if (path)
      error_set_errno (ERR_INTERNAL, errno, "deleting %s", path);
    return -1;
  }
  return 0;
}

int
repo_remove_context (const char *repo_path, const char *context_id)
{
  CLEANUP_FREE char *retired = NULL, *path = NULL;
  const char *folder = context_id;
  struct stat st;

  if (!id_valid (context_id)) {
    error_set (ERR_INVALID, "bad context id");
    return -1;
  }
  retired = xasprintf ("%s%s", REPO_RETIRED_PREFIX, context_id);
  path = retired ? repo_abspath (repo_path, retired) : NULL;
  if (path == NULL)
    return -1;
  if (lstat (path, &st) == 0 && S_ISDIR (st.st_mode))
    folder = retired;
  /* Every manifest first, then the images, then manifests no image had. */
  if (walk_context (repo_path, folder, remove_manifest_of, (void *) repo_path, false,
                    false) == -1 ||
      walk_context (repo_path, folder, remove_one, (void *) repo_path, false, false) == -1 ||
      walk_context (repo_path, folder, remove_file, (void *) repo_path, true, true) == -1)
    return -1;
  return 0;
}

/* Rename the folder from -> to inside the repository, and sync the root.  A
 * missing from is no error. */
static int
rename_in (const char *repo_path, const char *from, const char *to)
{
  CLEANUP_FREE char *a = repo_abspath (repo_path, from);
  CLEANUP_FREE char *b = repo_abspath (repo_path, to);

  if (a == NULL || b == NULL)
    return -1;
  if (rename (a, b) == -1) {
    if (errno == ENOENT)
      return 0;
    error_set_errno (errno == ENOSPC ? ERR_NO_SPACE : ERR_INTERNAL, errno,
                     "renaming %s to %s", a, b);
    return -1;
  }
  return repo_sync_dir (repo_path);
}

int
repo_retire_context (const char *repo_path, const char *context_id)
{
  CLEANUP_FREE char *retired = NULL;

  if (!id_valid (context_id)) {
    error_set (ERR_INVALID, "bad context id");
    return -1;
  }
  retired = xasprintf ("%s%s", REPO_RETIRED_PREFIX, context_id);
  return retired ? rename_in (repo_path, context_id, retired) : -1;
}

int
repo_unretire_context (const char *repo_path, const char *context_id)
{
  CLEANUP_FREE char *retired = NULL;

  if (!id_valid (context_id)) {
    error_set (ERR_INVALID, "bad context id");
    return -1;
  }
  retired = xasprintf ("%s%s", REPO_RETIRED_PREFIX, context_id);
  return retired ? rename_in (repo_path, retired, context_id) : -1;
}

int
repo_scan_retired (const char *repo_path,
                   int (*fn) (const char *context_id, void *opaque), void *opaque)
{
  DIR *d = opendir (repo_path);
  struct dirent *de;
  size_t plen = strlen (REPO_RETIRED_PREFIX);
  int ret = 0;

  if (d == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "opening repository %s", repo_path);
    return -1;
  }
  while ((de = readdir (d)) != NULL)
    if (strncmp (de->d_name, REPO_RETIRED_PREFIX, plen) == 0 &&
        id_valid (de->d_name + plen) && fn (de->d_name + plen, opaque) == -1)
      ret = -1;
  closedir (d);
  return ret;
}
