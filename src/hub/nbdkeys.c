/* hub/nbdkeys.c - the NBD targets' TLS pre-shared keys and the URIs they
 * shape.
 *
 * THE MASTER KEY.  With --nbd-tls-psk-file the operator's file holds the
 * keys and its first one is the master key; without it the hub makes
 * DATA-DIR/nbd.psk at its first start ("strata-hub:<64 hex>", 256 random
 * bits, mode 0600) and reads it at every later start.  The master identity
 * is the hub's own: its workers connect to its exports with it.
 *
 * PER-JOB KEYS.  Each running backup has the identity "job-<backup id>" and
 * each open restore "restore-<restore id>", with the key
 * HMAC-SHA256(master key, identity): derived, never stored in the catalog.
 * The API hands it to whoever started the job or opened the restore.
 *
 * THE KEYS FILE.  The storage daemon's tls-creds-psk object reads
 * DATA-DIR/run/tls/keys.psk, and GnuTLS reads that file again at each
 * handshake.  hub_nbd_keys_write rewrites it (temporary file, fsync, rename)
 * from the master file's lines, this hub's running jobs (catalog) and its
 * open restores, with hub->lock held, after every change of those: so a
 * job's key opens a connection from its start to its end, and none after
 * (connections already open go on until the export is removed).
 *
 * qemu's NBD server checks keys for the whole server (tls-authz too is
 * server-wide): any key it accepts may open any export whose name it knows,
 * and list the exports.  Keys come from the API, whose holders may do
 * anything to any backup anyway; what the keys shut out is everyone else
 * who reaches --nbd-listen.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "hub/hub-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"

#define MASTER_IDENTITY "strata-hub"
#define PSK_IDENTITY_MAX 128    /* GnuTLS's MAX_USERNAME_SIZE */

static void
hex_encode (const unsigned char *raw, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++)
    sprintf (out + 2 * i, "%02x", raw[i]);
}

static int
hex_value (char c)
{
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* What a keys file holds: its lines (normalised), the first identity and
 * the first key's bytes. */
struct psk_file {
  char *lines;
  char *user;
  unsigned char *key;
  size_t key_len;
};

static void
psk_file_clear (struct psk_file *f)
{
  free (f->lines);
  free (f->user);
  if (f->key)
    gnutls_memset (f->key, 0, f->key_len);
  free (f->key);
  memset (f, 0, sizeof *f);
}

/* Read a keys file of IDENTITY:HEXKEY lines.  A missing file is
 * ERR_NOT_FOUND; a malformed one ERR_INVALID, naming the line. */
static int
psk_read (const char *file, struct psk_file *out)
{
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0, lines_len = 0;
  FILE *fp = fopen (file, "r"), *mem = NULL;
  ssize_t len;
  int lineno = 0;

  memset (out, 0, sizeof *out);
  if (fp == NULL) {
    error_set_errno (errno == ENOENT ? ERR_NOT_FOUND : ERR_INVALID, errno,
                     "NBD PSK file %s", file);
    return -1;
  }
  mem = open_memstream (&out->lines, &lines_len);
  if (mem == NULL)
    goto oom;
  while ((len = getline (&line, &cap, fp)) != -1) {
    char *colon;
    size_t idlen, hexlen;

    lineno++;
    while (len > 0 && strchr (" \t\r\n", line[len - 1]))
      line[--len] = '\0';
    if (len == 0)
      continue;
    colon = strchr (line, ':');
    idlen = colon ? (size_t) (colon - line) : 0;
    hexlen = colon ? strlen (colon + 1) : 0;
    *(colon ? colon : line) = '\0';
    if (colon == NULL || idlen == 0 || idlen > 64 || !id_valid (line) ||
        hexlen < 32 || hexlen % 2 != 0 || strspn (colon + 1, "0123456789abcdefABCDEF") != hexlen) {
      error_set (ERR_INVALID, "NBD PSK file %s:%d: expected IDENTITY:HEXKEY with an "
                 "identity of [A-Za-z0-9._-] and a key of at least 32 hex digits",
                 file, lineno);
      goto fail;
    }
    if (out->user == NULL) {
      if ((out->user = strdup (line)) == NULL || (out->key = malloc (hexlen / 2)) == NULL)
        goto oom;
      out->key_len = hexlen / 2;
      for (size_t i = 0; i < out->key_len; i++)
        out->key[i] = hex_value (colon[1 + 2 * i]) << 4 | hex_value (colon[2 + 2 * i]);
    }
    fprintf (mem, "%s:%s\n", line, colon + 1);
  }
  fclose (fp);
  fp = NULL;
  if (fclose (mem) != 0) {
    mem = NULL;
    goto oom;
  }
  mem = NULL;
  if (out->user == NULL) {
    error_set (ERR_INVALID, "NBD PSK file %s holds no key", file);
    goto fail;
  }
  return 0;

 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
 fail:
  if (fp)
    fclose (fp);
  if (mem)
    fclose (mem);
  psk_file_clear (out);
  return -1;
}

/* Put len bytes at path durably and atomically, mode 0600: a temporary
 * file made with O_EXCL (one a crash left behind is removed first), fsync,
 * rename, fsync of the folder. */
static int
write_private (const char *path, const char *data, size_t len)
{
  CLEANUP_FREE char *tmp = NULL;
  CLEANUP_FREE char *dir = NULL;
  int fd;

  if (asprintf (&tmp, "%s.tmp", path) == -1 || (dir = strdup (path)) == NULL) {
    tmp = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  *strrchr (dir, '/') = '\0';
  unlink (tmp);
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd == -1 || write (fd, data, len) != (ssize_t) len || fsync (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "writing %s", path);
    if (fd != -1)
      close (fd);
    unlink (tmp);
    return -1;
  }
  if (close (fd) == -1 || rename (tmp, path) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "writing %s", path);
    unlink (tmp);
    return -1;
  }
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd != -1) {
    fsync (fd);
    close (fd);
  }
  return 0;
}

/* DATA-DIR/nbd.psk on a first start: the master key. */
static int
master_make (const char *path)
{
  unsigned char raw[32];
  char line[sizeof MASTER_IDENTITY + 1 + 64 + 1];

  if (id_random (raw, sizeof raw) == -1)
    return -1;
  memcpy (line, MASTER_IDENTITY ":", sizeof MASTER_IDENTITY);
  hex_encode (raw, sizeof raw, line + sizeof MASTER_IDENTITY);
  strcat (line, "\n");
  gnutls_memset (raw, 0, sizeof raw);
  if (write_private (path, line, strlen (line)) == -1)
    return -1;
  gnutls_memset (line, 0, sizeof line);
  log_info ("made the NBD master key %s", path);
  return 0;
}

/* Read the master keys file (making DATA-DIR/nbd.psk if it is missing and
 * make is true) and put it in force. */
static int
master_load (struct hub *hub, bool make)
{
  struct psk_file f;
  struct stat st;

  if (psk_read (hub->nbd_key_file, &f) == -1) {
    if (!make || hub->cfg.nbd_tls_psk_file || error_category () != ERR_NOT_FOUND ||
        master_make (hub->nbd_key_file) == -1 || psk_read (hub->nbd_key_file, &f) == -1)
      return -1;
  }
  if (stat (hub->nbd_key_file, &st) == 0 && (st.st_mode & 077))
    log_warn ("NBD PSK file %s can be read by other users; chmod 600 it", hub->nbd_key_file);
  SCOPED_LOCK (&hub->access_lock);
  free (hub->nbd_tls_user);
  free (hub->nbd_master_lines);
  if (hub->nbd_master) {
    gnutls_memset (hub->nbd_master, 0, hub->nbd_master_len);
    free (hub->nbd_master);
  }
  hub->nbd_tls_user = f.user;
  hub->nbd_master_lines = f.lines;
  hub->nbd_master = f.key;
  hub->nbd_master_len = f.key_len;
  return 0;
}

int
hub_nbd_credential (struct hub *hub, const char *kind, const char *id, char **identity,
                    char psk[HUB_PSK_HEX + 1])
{
  unsigned char digest[32];
  char *ident = NULL;
  int r = 0;

  *identity = NULL;
  if (hub->cfg.nbd_insecure)
    return 0;
  /* Ids are at most ID_MAX long; an identity GnuTLS would refuse names the
   * id by its hash instead. */
  if (strlen (kind) + 1 + strlen (id) <= PSK_IDENTITY_MAX)
    r = asprintf (&ident, "%s-%s", kind, id);
  else if (gnutls_hash_fast (GNUTLS_DIG_SHA256, id, strlen (id), digest) == 0) {
    char hex[65];
    hex_encode (digest, sizeof digest, hex);
    r = asprintf (&ident, "%s-%s", kind, hex);
  }
  else
    r = -1;
  if (r == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "making the NBD identity of %s", id);
    return -1;
  }
  {
    SCOPED_LOCK (&hub->access_lock);
    r = gnutls_hmac_fast (GNUTLS_MAC_SHA256, hub->nbd_master, hub->nbd_master_len,
                          ident, strlen (ident), digest);
  }
  if (r != 0) {
    free (ident);
    error_set (ERR_INTERNAL, "deriving the NBD key: %s", gnutls_strerror (r));
    return -1;
  }
  hex_encode (digest, sizeof digest, psk);
  gnutls_memset (digest, 0, sizeof digest);
  *identity = ident;
  return 0;
}

/* One "IDENTITY:KEY" line of a job's or restore's credential. */
static int
put_credential (struct hub *hub, FILE *out, const char *kind, const char *id)
{
  CLEANUP_FREE char *identity = NULL;
  char psk[HUB_PSK_HEX + 1];

  if (hub_nbd_credential (hub, kind, id, &identity, psk) == -1)
    return -1;
  fprintf (out, "%s:%s\n", identity, psk);
  gnutls_memset (psk, 0, sizeof psk);
  return 0;
}

int
hub_nbd_keys_write (struct hub *hub)
{
  struct cat_job_filter f = { .by_status = true, .status = JOB_RUNNING };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  CLEANUP_STRV char **restores = NULL;
  CLEANUP_FREE char *path = NULL;
  char *text = NULL;
  size_t len = 0;
  int64_t total;
  FILE *out;
  int ret = -1;

  if (hub->nbd_tls_dir == NULL)
    return 0;
  if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, &total) == -1 ||
      (restores = hub_restore_ids (hub)) == NULL)
    goto done;
  if ((out = open_memstream (&text, &len)) == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    goto done;
  }
  {
    SCOPED_LOCK (&hub->access_lock);
    fputs (hub->nbd_master_lines, out);
  }
  ret = 0;
  for (size_t i = 0; ret == 0 && i < jobs.n; i++)
    if (hub_owns (hub, jobs.v[i].owner_hub))    /* another hub's job: its keys */
      ret = put_credential (hub, out, "job", jobs.v[i].id);
  for (size_t i = 0; ret == 0 && restores[i]; i++)
    ret = put_credential (hub, out, "restore", restores[i]);
  if (fclose (out) != 0 && ret == 0) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    ret = -1;
  }
  if (ret == 0 && asprintf (&path, "%s/keys.psk", hub->nbd_tls_dir) == -1) {
    path = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    ret = -1;
  }
  if (ret == 0)
    ret = write_private (path, text, len);
  if (text) {
    gnutls_memset (text, 0, len);
    free (text);
  }
 done:
  if (ret == -1)
    error_prefix ("writing the NBD keys");
  return ret;
}

void
hub_nbd_keys_update (struct hub *hub)
{
  if (hub_nbd_keys_write (hub) == -1)
    log_error ("%s; the keys in force stay", error_message ());
}

int
hub_nbd_keys_open (struct hub *hub, const char **tls_dir)
{
  *tls_dir = NULL;
  if (hub->cfg.nbd_insecure) {
    log_warn ("--nbd-insecure: the NBD targets on %s speak no TLS; anyone who can reach "
              "it can list the exports and write into running backups", hub->cfg.nbd_listen);
    return 0;
  }
  if (hub->cfg.nbd_tls_psk_file)
    hub->nbd_key_file = strdup (hub->cfg.nbd_tls_psk_file);
  else if (asprintf (&hub->nbd_key_file, "%s/nbd.psk", hub->cfg.data_dir) == -1)
    hub->nbd_key_file = NULL;
  if (hub->nbd_key_file == NULL ||
      asprintf (&hub->nbd_tls_dir, "%s/tls", hub->run_dir) == -1) {
    hub->nbd_tls_dir = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  if (master_load (hub, true) == -1)
    return -1;
  if (mkdir (hub->nbd_tls_dir, 0700) == -1 && errno != EEXIST) {
    error_set_errno (ERR_INTERNAL, errno, "creating %s", hub->nbd_tls_dir);
    return -1;
  }
  {
    SCOPED_LOCK (&hub->lock);
    if (hub_nbd_keys_write (hub) == -1)
      return -1;
  }
  *tls_dir = hub->nbd_tls_dir;
  return 0;
}

int
hub_nbd_keys_reload (struct hub *hub)
{
  if (hub->nbd_tls_dir == NULL)
    return 0;
  if (master_load (hub, false) == -1)
    return -1;
  SCOPED_LOCK (&hub->lock);
  return hub_nbd_keys_write (hub);
}

const char *
hub_nbd_key_file (struct hub *hub)
{
  return hub->nbd_tls_dir ? hub->nbd_key_file : NULL;
}

void
hub_nbd_keys_clear (struct hub *hub)
{
  free (hub->nbd_tls_user);
  free (hub->nbd_master_lines);
  if (hub->nbd_master) {
    gnutls_memset (hub->nbd_master, 0, hub->nbd_master_len);
    free (hub->nbd_master);
  }
  free (hub->nbd_key_file);
  free (hub->nbd_tls_dir);
  hub->nbd_tls_user = hub->nbd_master_lines = hub->nbd_key_file = hub->nbd_tls_dir = NULL;
  hub->nbd_master = NULL;
  hub->nbd_master_len = 0;
}

char *
hub_nbd_uri (struct hub *hub, const char *identity, const char *export_name)
{
  char *uri;
  int r;

  SCOPED_LOCK (&hub->access_lock);
  if (hub->nbd_tls_user)
    r = asprintf (&uri, hub->nbd.ipv6 ? "nbds://%s@[%s]:%d/%s" : "nbds://%s@%s:%d/%s",
                  identity ? identity : hub->nbd_tls_user, hub->nbd.host, hub->nbd.port,
                  export_name);
  else
    r = asprintf (&uri, hub->nbd.ipv6 ? "nbd://[%s]:%d/%s" : "nbd://%s:%d/%s",
                  hub->nbd.host, hub->nbd.port, export_name);
  return r == -1 ? NULL : uri;
}
