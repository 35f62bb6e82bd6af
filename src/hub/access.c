/* hub/access.c - who may talk to the hub and what it may read: the API
 * token and the folders hub-driven sources must lie in (the NBD keys are
 * hub/nbdkeys.c's).
 *
 * Everything here is read at start (hub_access_open).  SIGHUP reads the
 * token and the NBD keys file again (hub_reload): the token is then swapped
 * under hub->access_lock, which every reader of it takes.  The rest (source
 * folders) is read-only after start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub-int.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "virt/virt.h"

/* Read the API token: the first line of the file, which must not be empty. */
static char *
read_token (const char *file)
{
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  FILE *fp = fopen (file, "r");
  struct stat st;

  if (fp == NULL) {
    error_set_errno (ERR_INVALID, errno, "API token file %s", file);
    return NULL;
  }
  if (fstat (fileno (fp), &st) == 0 && (st.st_mode & 077))
    log_warn ("API token file %s can be read by other users; chmod 600 it", file);
  len = getline (&line, &cap, fp);
  fclose (fp);
  if (len > 0 && (size_t) len != strlen (line)) {
    error_set (ERR_INVALID, "API token file %s: the token has a NUL byte", file);
    return NULL;
  }
  while (len > 0 && strchr (" \t\r\n", line[len - 1]))
    line[--len] = '\0';
  if (len <= 0 || strspn (line, " \t") > 0) {
    error_set (ERR_INVALID, "API token file %s: the first line must hold the token, "
               "with no blanks before it", file);
    return NULL;
  }
  for (ssize_t i = 0; i < len; i++)
    if ((unsigned char) line[i] <= ' ' || line[i] == 0x7f) {
      error_set (ERR_INVALID, "API token file %s: the token must not contain blanks "
                 "or control characters", file);
      return NULL;
    }
  if (len > 4096) {
    error_set (ERR_INVALID, "API token file %s: the token is longer than 4096 bytes", file);
    return NULL;
  }
  char *ret = line;
  line = NULL;
  return ret;
}

/* --source-dirs: each folder resolved (it must exist), so that sources
 * are compared with real paths. */
static int
resolve_source_dirs (struct hub *hub)
{
  const char *p = hub->cfg.source_dirs;
  size_t n = 1;

  for (const char *c = p; *c; c++)
    n += *c == ':';
  hub->source_dirs = calloc (n + 1, sizeof *hub->source_dirs);
  if (hub->source_dirs == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const char *end = strchrnul (p, ':');
    CLEANUP_FREE char *dir = strndup (p, end - p);
    struct stat st;

    if (dir == NULL) {
      error_set_errno (ERR_INTERNAL, errno, "out of memory");
      return -1;
    }
    if ((hub->source_dirs[i] = realpath (dir, NULL)) == NULL ||
        stat (hub->source_dirs[i], &st) == -1) {
      error_set_errno (ERR_INVALID, errno, "--source-dirs: folder %s", dir);
      return -1;
    }
    if (!S_ISDIR (st.st_mode)) {
      error_set (ERR_INVALID, "--source-dirs: %s is not a folder", dir);
      return -1;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

int
hub_access_open (struct hub *hub)
{
  if (hub->cfg.source_dirs && resolve_source_dirs (hub) == -1)
    return -1;
  if (hub->cfg.api_token_file && (hub->token = read_token (hub->cfg.api_token_file)) == NULL)
    return -1;
  else if (!hub->cfg.api_token_file && !net_is_loopback (&hub->listen))
    /* hub_config_parse refused this without --insecure-no-auth. */
    log_warn ("the API listens on %s with --insecure-no-auth: anyone who reaches it "
              "can delete backups", hub->cfg.listen);
  return 0;
}

int
hub_reload (struct hub *hub)
{
  int ret = 0;

  if (hub->cfg.api_token_file) {
    char *token = read_token (hub->cfg.api_token_file);
    if (token == NULL) {
      log_error ("SIGHUP: %s; the API token in force stays", error_message ());
      ret = -1;
    }
    else {
      SCOPED_LOCK (&hub->access_lock);
      free (hub->token);
      hub->token = token;
      log_info ("SIGHUP: API token read again from %s", hub->cfg.api_token_file);
    }
  }
  if (hub_nbd_key_file (hub)) {
    if (hub_nbd_keys_reload (hub) == -1) {
      log_error ("SIGHUP: %s; the NBD keys in force stay", error_message ());
      ret = -1;
    }
    else
      log_info ("SIGHUP: NBD keys read again from %s (new connections use them)",
                hub_nbd_key_file (hub));
  }
  log_info ("SIGHUP: the log goes to standard error, which the hub never opens "
            "itself: there is nothing to reopen");
  return ret;
}

void
hub_access_clear (struct hub *hub)
{
  free (hub->token);
  hub_nbd_keys_clear (hub);
  cleanup_strv (&hub->source_dirs);
  hub->token = NULL;
}

/* Constant-time comparison of the gl bytes at given with the token, so
 * the token cannot be guessed byte by byte. */
static bool
token_equal (const char *given, size_t gl, const char *want)
{
  size_t wl = strlen (want);
  unsigned char diff = gl != wl;
  for (size_t i = 0; i < gl; i++)
    diff |= (unsigned char) given[i] ^ (unsigned char) want[i % (wl ? wl : 1)];
  return diff == 0;
}

int
hub_authorize (struct hub *hub, const char *value, size_t len)
{
  const char *token;
  size_t tlen;

  SCOPED_LOCK (&hub->access_lock);
  if (hub->token == NULL)
    return 0;
  /* RFC 9110: the scheme is case-insensitive and one or more spaces
   * separate it from the credentials; blanks that end a field are not
   * part of its value.  The rest must be the token exactly: a NUL (which
   * would end a C string early), a second word or a tab is a wrong token. */
  if (value == NULL || len < 7 || strncasecmp (value, "Bearer ", 7) != 0) {
    error_set (ERR_UNAUTHORIZED, "this hub needs 'Authorization: Bearer <token>'");
    return -1;
  }
  token = value + 7;
  tlen = len - 7;
  while (tlen > 0 && *token == ' ')
    token++, tlen--;
  while (tlen > 0 && (token[tlen - 1] == ' ' || token[tlen - 1] == '\t'))
    tlen--;
  if (memchr (token, '\0', tlen) != NULL || !token_equal (token, tlen, hub->token)) {
    error_set (ERR_UNAUTHORIZED, "wrong API token");
    return -1;
  }
  return 0;
}

int
hub_source_check (const char *source)
{
  static const char *const schemes[] = { "nbd://", "nbd+unix://", NULL };
  const char *domain;

  if (source == NULL || *source == '\0') {
    error_set (ERR_INVALID, "source must not be empty");
    return -1;
  }
  if (virt_source_parse (source, &domain)) {
    if (*domain == '\0' || strchr (domain, '/')) {
      error_set (ERR_INVALID, "source '%.200s': libvirt://DOMAIN names one domain", source);
      return -1;
    }
    return 0;
  }
  for (const char *const *s = schemes; *s; s++)
    if (strncmp (source, *s, strlen (*s)) == 0)
      return 0;
  if (source[0] == '/')
    return 0;
  error_set (ERR_INVALID, "source '%.200s' must be an absolute path (an image file or "
             "block device), an nbd:// or nbd+unix:// URI, or libvirt://DOMAIN", source);
  return -1;
}

int
hub_source_allowed (struct hub *hub, const char *source, bool must_exist)
{
  CLEANUP_FREE char *real = NULL;
  const char *path = source;

  if (hub->source_dirs == NULL || source[0] != '/')
    return 0;
  real = realpath (source, NULL);
  if (real)
    path = real;                 /* symbolic links resolved */
  else if (must_exist || errno != ENOENT) {
    error_set_errno (ERR_INVALID, errno, "source %.200s", source);
    return -1;
  }
  else if (strstr (source, "/../") || strstr (source, "/./") ||
           (strlen (source) >= 3 && strcmp (source + strlen (source) - 3, "/..") == 0)) {
    error_set (ERR_INVALID, "source %.200s: no '.' or '..' components in a source that "
               "does not exist yet", source);
    return -1;
  }
  for (char **d = hub->source_dirs; *d; d++) {
    size_t len = strlen (*d);
    if (strncmp (path, *d, len) == 0 && (path[len] == '/' || (len == 1 && **d == '/')))
      return 0;
  }
  error_set (ERR_INVALID, "source %.200s lies outside the folders the hub may read "
             "(--source-dirs %.200s)", source, hub->cfg.source_dirs);
  return -1;
}
