/* agent/client.c - the agent's HTTP client for the hub's REST API
 * (libcurl, jansson).
 *
 * Each call uses its own curl easy handle, so the disks' threads may call
 * the hub at once; curl_global_init happens once, in client_init.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "agent/agent.h"
#include "agent/agent-int.h"
#include "util/cleanup.h"
#include "util/error.h"

#define RESPONSE_MAX (16 * 1024 * 1024)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void
curl_init_once (void)
{
  curl_global_init (CURL_GLOBAL_DEFAULT);
}

bool
client_opt (struct client_opts *o, int ch, const char *arg)
{
  switch (ch) {
  case CLIENT_OPT_HUB: o->hub = arg; return true;
  case CLIENT_OPT_TOKEN: o->token_file = arg; return true;
  case CLIENT_OPT_CA: o->ca_file = arg; return true;
  case CLIENT_OPT_PIN: o->pin = arg; return true;
  default: return false;
  }
}

void
client_opts_usage (FILE *fp, int col)
{
  static const char *const lines[][2] = {
    { "--hub URL", "the hub (default $STRATA_HUB or http://127.0.0.1:8082)" },
    { "--token-file F", "API token (first line of F) for a hub with --api-token-file" },
    { "--ca-file F", "an https:// hub: trust the CA certificates of F (PEM),\n"
      "or the hub's own certificate, not the system's CAs" },
    { "--pin-sha256 PIN", "an https:// hub: accept only the public key with this\n"
      "SHA-256 pin (base64, the hub logs it); without\n"
      "--ca-file, the pin alone is trusted" },
  };

  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    const char *d = lines[i][1];
    fprintf (fp, "  %-*s", col - 3, lines[i][0]);
    for (bool first = true; *d; first = false) {
      size_t len = strcspn (d, "\n");
      fprintf (fp, "%*s%.*s\n", first ? 1 : col, "", (int) len, d);
      d += len + (d[len] == '\n');
    }
  }
}

/* --pin-sha256: BASE64 of 32 bytes (43 characters and '='), with or
 * without curl's "sha256//" in front; *out (caller frees) is curl's form. */
static int
parse_pin (const char *pin, char **out)
{
  const char *b = strncmp (pin, "sha256//", 8) == 0 ? pin + 8 : pin;

  if (strlen (b) != 44 || b[43] != '=' ||
      strspn (b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") != 43) {
    error_set (ERR_INVALID, "--pin-sha256 %.100s: expected the base64 of a SHA-256 "
               "(44 characters ending in '='), as the hub logs it", pin);
    return -1;
  }
  if (asprintf (out, "sha256//%s", b) == -1) {
    *out = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "client");
    return -1;
  }
  return 0;
}

int
client_init (struct client *c, const struct client_opts *o)
{
  const char *hub_url = o->hub, *token_file = o->token_file;
  size_t n;

  memset (c, 0, sizeof *c);
  pthread_once (&curl_once, curl_init_once);
  if (hub_url == NULL)
    hub_url = getenv ("STRATA_HUB");
  if (hub_url == NULL || *hub_url == '\0')
    hub_url = "http://127.0.0.1:8082";
  if (strncmp (hub_url, "http://", 7) != 0 && strncmp (hub_url, "https://", 8) != 0) {
    error_set (ERR_INVALID, "--hub %s: not an http:// or https:// URL", hub_url);
    return -1;
  }
  if ((o->ca_file || o->pin) && strncmp (hub_url, "https://", 8) != 0) {
    error_set (ERR_INVALID, "--%s goes with an https:// hub, not %s",
               o->ca_file ? "ca-file" : "pin-sha256", hub_url);
    return -1;
  }
  c->base = strdup (hub_url);
  if (c->base == NULL)
    goto oom;
  if (o->ca_file) {
    if (access (o->ca_file, R_OK) == -1) {
      error_set_errno (ERR_INVALID, errno, "--ca-file %s", o->ca_file);
      client_clear (c);
      return -1;
    }
    if ((c->ca_file = strdup (o->ca_file)) == NULL)
      goto oom;
  }
  if (o->pin && parse_pin (o->pin, &c->pin) == -1) {
    client_clear (c);
    return -1;
  }
  n = strlen (c->base);
  while (n > 0 && c->base[n - 1] == '/')
    c->base[--n] = '\0';
  if (token_file) {
    char line[4200];
    FILE *fp = fopen (token_file, "re");
    size_t len;
    if (fp == NULL) {
      error_set_errno (ERR_INVALID, errno, "--token-file %s", token_file);
      client_clear (c);
      return -1;
    }
    if (fgets (line, sizeof line, fp) == NULL)
      line[0] = '\0';
    fclose (fp);
    len = strcspn (line, "\r\n");
    line[len] = '\0';
    if (len == 0 || len > 4096) {
      error_set (ERR_INVALID, "--token-file %s: the first line must hold the token", token_file);
      client_clear (c);
      return -1;
    }
    if (asprintf (&c->auth, "Authorization: Bearer %s", line) == -1) {
      c->auth = NULL;
      goto oom;
    }
  }
  return 0;

 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "client");
  client_clear (c);
  return -1;
}

void
client_clear (struct client *c)
{
  free (c->base);
  free (c->auth);
  free (c->ca_file);
  free (c->pin);
  memset (c, 0, sizeof *c);
}

struct buf {
  char *p;
  size_t n;
};

static size_t
write_cb (char *data, size_t size, size_t nmemb, void *opaque)
{
  struct buf *b = opaque;
  size_t len = size * nmemb;
  char *np;

  if (b->n + len > RESPONSE_MAX)
    return 0;
  np = realloc (b->p, b->n + len + 1);
  if (np == NULL)
    return 0;
  memcpy (np + b->n, data, len);
  b->p = np;
  b->n += len;
  b->p[b->n] = '\0';
  return len;
}

/* Why a request got no answer (ERR_UNAVAILABLE), with a hint where TLS
 * is the cause: a key that is not the pinned one, a certificate nobody
 * vouches for, or http:// and https:// mixed up. */
static void
transport_error (struct client *c, CURLcode rc, const char *why)
{
  bool https = strncmp (c->base, "https://", 8) == 0;
  const char *hint = "";

  if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH)
    hint = " (its public key is not the one --pin-sha256 names: refused)";
  else if (rc == CURLE_PEER_FAILED_VERIFICATION)
    hint = c->ca_file ? " (its certificate is not signed by --ca-file, or does not name "
                        "the host of the hub URL)"
                      : " (its certificate is not one this machine trusts: give --ca-file "
                        "or --pin-sha256, as the hub's log says)";
  else if (https && rc == CURLE_SSL_CONNECT_ERROR)
    hint = " (is it an http:// hub?)";
  else if (!https && (rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR))
    hint = " (is it an https:// hub?)";
  error_set (ERR_UNAVAILABLE, "the hub at %s does not answer: %s%s", c->base, why, hint);
}

/* One request with a JSON body (payload, may be NULL) or a body streamed
 * from upload (upload_size bytes), as client_call and client_put_file
 * describe. */
static int
perform (struct client *c, const char *method, const char *path, const char *payload,
         FILE *upload, int64_t upload_size, json_t **resp)
{
  CLEANUP_FREE char *url = NULL;
  struct buf b = { NULL, 0 };
  struct curl_slist *hdrs = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  long status = 0;
  CURLcode rc;
  CURL *curl;
  json_t *j = NULL;

  if (resp)
    *resp = NULL;
  if (asprintf (&url, "%s%s", c->base, path) == -1) {
    url = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "request");
    return -1;
  }
  curl = curl_easy_init ();
  if (curl == NULL) {
    error_set (ERR_INTERNAL, "curl_easy_init failed");
    return -1;
  }
  hdrs = curl_slist_append (hdrs, "Accept: application/json");
  if (payload)
    hdrs = curl_slist_append (hdrs, "Content-Type: application/json");
  if (upload)
    hdrs = curl_slist_append (hdrs, "Content-Type: application/octet-stream");
  if (c->auth)
    hdrs = curl_slist_append (hdrs, c->auth);
  curl_easy_setopt (curl, CURLOPT_URL, url);
  curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt (curl, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT, c->timeout > 0 ? c->timeout : 300L);
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (curl, CURLOPT_WRITEDATA, &b);
  if (c->ca_file)
    curl_easy_setopt (curl, CURLOPT_CAINFO, c->ca_file);
  if (c->pin) {
    curl_easy_setopt (curl, CURLOPT_PINNEDPUBLICKEY, c->pin);
    if (c->ca_file == NULL) {
      /* The pin alone: a self-signed certificate, whatever name it has. */
      curl_easy_setopt (curl, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt (curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
  }
  if (payload) {
    curl_easy_setopt (curl, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) strlen (payload));
  }
  if (upload) {
    /* Streamed: libcurl reads the FILE as it sends (fread). */
    curl_easy_setopt (curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt (curl, CURLOPT_READDATA, upload);
    curl_easy_setopt (curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) upload_size);
  }
  rc = curl_easy_perform (curl);
  if (rc == CURLE_OK)
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (curl);
  if (rc != CURLE_OK) {
    free (b.p);
    transport_error (c, rc, errbuf[0] ? errbuf : curl_easy_strerror (rc));
    return -1;
  }

  if (b.p && b.n)
    j = json_loads (b.p, 0, NULL);
  if (status >= 400) {
    const char *msg = json_string_value (json_object_get (json_object_get (j, "error"),
                                                          "message"));
    enum error_category cat = status == 409 ? ERR_CONFLICT
                            : status == 404 ? ERR_NOT_FOUND
                            : status == 401 ? ERR_UNAUTHORIZED
                            : status >= 500 ? ERR_UNAVAILABLE : ERR_INVALID;
    error_set (cat, "%s %s: %ld %s", method, path, status,
               msg ? msg : (b.p && b.n ? b.p : "(no message)"));
  }
  free (b.p);
  if (resp)
    *resp = j;
  else
    json_decref (j);
  return (int) status;
}

int
client_call (struct client *c, const char *method, const char *path,
             json_t *body, json_t **resp)
{
  CLEANUP_FREE char *payload = NULL;

  if (body) {
    payload = json_dumps (body, JSON_COMPACT);
    if (payload == NULL) {
      if (resp)
        *resp = NULL;
      error_set (ERR_INTERNAL, "encoding the request");
      return -1;
    }
  }
  return perform (c, method, path, payload, NULL, 0, resp);
}

int
client_put_file (struct client *c, const char *path, int fd, json_t **resp)
{
  struct stat sb;
  FILE *fp;
  int dupfd, st;

  if (resp)
    *resp = NULL;
  if (fstat (fd, &sb) == -1 || lseek (fd, 0, SEEK_SET) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "PUT %s", path);
    return -1;
  }
  dupfd = dup (fd);
  fp = dupfd >= 0 ? fdopen (dupfd, "rb") : NULL;
  if (fp == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "PUT %s", path);
    if (dupfd >= 0)
      close (dupfd);
    return -1;
  }
  st = perform (c, "PUT", path, NULL, fp, sb.st_size, resp);
  fclose (fp);
  return st;
}

int
client_exit_status (int status)
{
  if (status == 409)
    return AGENT_EXIT_CONFLICT;
  if (status == -1 || (status >= 400 && status < 500))
    return AGENT_EXIT_HUB;
  return AGENT_EXIT_FAILED;
}

char *
client_escape (const char *s)
{
  CURL *curl = curl_easy_init ();
  char *e, *ret;

  if (curl == NULL)
    return NULL;
  e = curl_easy_escape (curl, s, 0);
  ret = e ? strdup (e) : NULL;
  curl_free (e);
  curl_easy_cleanup (curl);
  return ret;
}

int
client_psk_file (json_t *answer, char **path)
{
  json_t *cred = json_object_get (answer, "nbd_tls");
  const char *identity = json_string_value (json_object_get (cred, "identity"));
  const char *psk = json_string_value (json_object_get (cred, "psk"));
  const char *dir = getenv ("TMPDIR");
  CLEANUP_FREE char *line = NULL;
  char *file;
  int fd;
  ssize_t len;

  *path = NULL;
  if (cred == NULL || json_is_null (cred))
    return 0;
  if (identity == NULL || psk == NULL || *identity == '\0' || strpbrk (identity, ":\n") ||
      strspn (psk, "0123456789abcdefABCDEF") != strlen (psk) || strlen (psk) < 32) {
    error_set (ERR_INTERNAL, "the hub's answer has a malformed nbd_tls");
    return -1;
  }
  if (asprintf (&file, "%s/strata-nbd-XXXXXX", dir && *dir ? dir : "/tmp") == -1 ||
      asprintf (&line, "%s:%s\n", identity, psk) == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  len = (ssize_t) strlen (line);
  fd = mkstemp (file);            /* mode 0600 */
  if (fd == -1 || write (fd, line, len) != len || close (fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "writing the NBD key file %s", file);
    if (fd != -1) {
      close (fd);
      unlink (file);
    }
    free (file);
    return -1;
  }
  *path = file;
  return 0;
}

void
client_psk_file_remove (char **path)
{
  if (*path) {
    unlink (*path);
    free (*path);
    *path = NULL;
  }
}

char *
client_uri_identity (const char *uri, const char *psk_file)
{
  CLEANUP_FREE char *line = NULL;
  const char *at;
  size_t cap = 0;
  char *ret;
  FILE *fp;

  if (strncmp (uri, "nbds://", 7) != 0 || (at = strchr (uri + 7, '@')) == NULL ||
      at > uri + 7 + strcspn (uri + 7, "/"))
    return strdup (uri);             /* no identity to replace */
  fp = fopen (psk_file, "r");
  if (fp == NULL) {
    error_set_errno (ERR_INVALID, errno, "--tls-psk-file %s", psk_file);
    return NULL;
  }
  if (getline (&line, &cap, fp) <= 0 || strchr (line, ':') == NULL) {
    fclose (fp);
    error_set (ERR_INVALID, "--tls-psk-file %s: the first line is no IDENTITY:KEY",
               psk_file);
    return NULL;
  }
  fclose (fp);
  *strchr (line, ':') = '\0';
  if (asprintf (&ret, "nbds://%s%s", line, at) == -1) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return NULL;
  }
  return ret;
}
