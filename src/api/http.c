/* api/http.c - the HTTP layer: libmicrohttpd, authentication, request
 * bodies, routing and error replies.
 *
 * libmicrohttpd runs one thread per connection, so a slow request (a
 * backup start runs qemu-img) never stalls the others.  A request's body is
 * gathered into a bounded buffer; past API_MAX_BODY the rest is drained and
 * the request answered 413 (at once, before any body byte, when the
 * declared Content-Length is already over).  Errors are logged here, once:
 * 5xx as errors, 4xx at debug level, since they are the client's to read.
 *
 * SLOW CLIENTS.  libmicrohttpd's connection timeout only ends a connection
 * that is idle, and a client sending one header line every few seconds
 * never is.  So every connection is tracked (on_connection) with a
 * deadline for what it is waiting for: its request head must be whole
 * within API_HEAD_SECONDS of the connection (or of the end of the previous
 * request on a kept-alive one), and its body within API_BODY_SECONDS plus
 * one second per API_BODY_MIN_RATE bytes received.  While a handler runs,
 * there is no deadline.  A watchdog thread shuts down the socket of a
 * connection past its deadline, which makes libmicrohttpd end it.  The
 * list and the deadlines are under api->conns_lock; libmicrohttpd reports
 * a connection closed before it closes its socket, so the watchdog never
 * shuts a descriptor that was reused.  On top, each client address may hold
 * at most API_PER_ADDR_CONNECTIONS connections, so slow clients from a few
 * addresses cannot fill the API_CONNECTIONS slots.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "api/api-int.h"
#include "hub/hub.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/json.h"
#include "util/log.h"
#include "web/web.h"

#define API_CONNECTIONS 1024
#define API_PER_ADDR_CONNECTIONS 32
#define API_HEAD_SECONDS 10
#define API_BODY_SECONDS 30
#define API_BODY_MIN_RATE (16 * 1024)
#define NS_PER_S INT64_C (1000000000)

/* One open connection and its deadline (see SLOW CLIENTS above). */
struct api_conn {
  struct api_conn *prev, *next;
  int fd;
  int64_t deadline_ns;       /* 0: none (a handler runs, or the answer goes out) */
  int64_t body_start_ns;
  uint64_t body_bytes;
  bool cut;                  /* the watchdog shut it down */
};

struct api {
  struct hub *hub;
  struct MHD_Daemon *daemon;
  pthread_mutex_t conns_lock;
  pthread_cond_t conns_cond;   /* wakes the watchdog to stop */
  struct api_conn *conns;
  bool stopping;
  bool watchdog_running;
  pthread_t watchdog;
};

/* The state of one request across libmicrohttpd's calls. */
struct conn_state {
  const char *bad_url;       /* set when on_unescape refused the URL */
  char *body;
  size_t len, cap;
  bool too_large;
  bool headers_too_large;    /* past API_MAX_HEADERS: answered 431 at once */
  /* An upload route (api/integrity.c): its body goes to the hub's file as
   * it arrives.  After a failure the rest is read and dropped (up to a
   * bound), and the saved error answers the request. */
  const char *method;
  bool uploading;
  struct hub_upload *upload;
  struct api_req up_req;
  char *up_id;
  uint64_t dropped;
  enum error_category up_cat;
  char *up_err;
  int64_t started_ns;        /* when the headers came (for the metrics) */
  struct api_conn *ac;       /* its connection's deadline */
  uint64_t too_large_bytes;  /* body bytes dropped past API_MAX_BODY */
};

/* Why the URL now being parsed on this thread was refused, or NULL.  With
 * one thread per connection, libmicrohttpd parses a request's URL (calling
 * on_uri, which resets this, then on_unescape) on the thread that then
 * calls on_request for it. */
static __thread const char *unescape_refused;

#define ROUTE(m, p, h) { .method = (m), .pattern = (p), .handler = (h) }
#define STREAMED(m, p, kind) { .method = (m), .pattern = (p), .streamed = true, \
                               .upload = (kind) }

/* The status of the answer this thread queued last (0: none), for the
 * request metrics. */
static __thread int reply_status;

/* Literal routes come before the "*" routes they would also match. */
static const struct api_route routes[] = {
  ROUTE ("GET", "repositories", api_repos_list),
  ROUTE ("POST", "repositories", api_repos_create),
  ROUTE ("GET", "repositories/*", api_repos_get),
  ROUTE ("DELETE", "repositories/*", api_repos_delete),
  ROUTE ("GET", "vms", api_vms_list),
  ROUTE ("GET", "vms/*", api_vms_get),
  ROUTE ("PUT", "vms/*", api_vms_put),
  ROUTE ("DELETE", "vms/*", api_vms_delete),
  ROUTE ("GET", "backups", api_backups_list),
  ROUTE ("POST", "backups", api_backups_start),
  ROUTE ("GET", "backups/changeid", api_backups_changeid),
  ROUTE ("POST", "backups/changeids", api_backups_changeids),
  ROUTE ("GET", "backups/*", api_backups_get),
  ROUTE ("DELETE", "backups/*", api_backups_delete),
  ROUTE ("PATCH", "backups/*", api_backups_patch),
  ROUTE ("POST", "backups/*/complete", api_backups_complete),
  ROUTE ("POST", "backups/*/fail", api_backups_fail),
  ROUTE ("POST", "backups/*/cancel", api_backups_cancel),
  ROUTE ("POST", "backups/*/progress", api_backups_progress),
  ROUTE ("POST", "backups/*/verify", api_backups_verify),
  STREAMED ("PUT", "backups/*/disks/*/manifest", HUB_UPLOAD_MANIFEST),
  STREAMED ("PUT", "backups/*/disks/*/audit", HUB_UPLOAD_AUDIT),
  ROUTE ("GET", "contexts", api_contexts_list),
  ROUTE ("GET", "contexts/*", api_contexts_get),
  ROUTE ("DELETE", "contexts/*", api_contexts_delete),
  ROUTE ("POST", "contexts/*/prune", api_contexts_prune),
  ROUTE ("POST", "contexts/*/verify", api_contexts_verify),
  ROUTE ("GET", "policies", api_policies_list),
  ROUTE ("GET", "policies/*", api_policies_get),
  ROUTE ("PUT", "policies/*", api_policies_put),
  ROUTE ("DELETE", "policies/*", api_policies_delete),
  ROUTE ("GET", "tasks", api_tasks_list),
  ROUTE ("GET", "tasks/*", api_tasks_get),
  ROUTE ("GET", "restores", api_restores_list),
  ROUTE ("POST", "restores", api_restores_create),
  ROUTE ("GET", "restores/*", api_restores_get),
  ROUTE ("DELETE", "restores/*", api_restores_delete),
};

const struct api_route *
api_route_table (size_t *n)
{
  *n = sizeof routes / sizeof routes[0];
  return routes;
}

#define MAX_CAPTURES 2

/* Match path (after "/api/v1/") against a pattern: the same segments, each
 * "*" matching one non-empty segment, which goes to caps[] in order.
 * path_copy is cut into its segments. */
static bool
route_match (const char *pattern, char *path_copy, const char *caps[MAX_CAPTURES])
{
  const char *pp = pattern;
  char *ps = path_copy;
  size_t n = 0;

  for (;;) {
    size_t plen = strcspn (ps, "/"), tlen = strcspn (pp, "/");
    bool plast = ps[plen] == '\0', tlast = pp[tlen] == '\0';

    if (tlen == 1 && pp[0] == '*') {
      if (plen == 0 || n == MAX_CAPTURES)
        return false;
      caps[n++] = ps;
    }
    else if (plen != tlen || strncmp (ps, pp, plen) != 0)
      return false;
    if (plast || tlast)
      return plast && tlast;
    ps[plen] = '\0';
    ps += plen + 1;
    pp += tlen + 1;
  }
}

static enum MHD_Result
send_reply (struct MHD_Connection *conn, int status, json_t *reply, const char *allow)
{
  struct MHD_Response *resp;
  enum MHD_Result ret;
  char *text = NULL;

  if (reply) {
    text = json_dumps (reply, STRATA_JSON_COMPACT);
    if (text == NULL)
      return MHD_NO;
    resp = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_FREE);
  }
  else
    resp = MHD_create_response_from_buffer (0, (void *) "", MHD_RESPMEM_PERSISTENT);
  if (resp == NULL) {
    free (text);
    return MHD_NO;
  }
  if (reply)
    MHD_add_response_header (resp, "Content-Type", "application/json");
  if (allow)
    MHD_add_response_header (resp, "Allow", allow);
  if (status == 401)
    MHD_add_response_header (resp, "WWW-Authenticate", "Bearer");
  reply_status = status;
  ret = MHD_queue_response (conn, status, resp);
  MHD_destroy_response (resp);
  return ret;
}

/* Answer with the thread's error; log it once, here. */
static enum MHD_Result
send_error (struct MHD_Connection *conn, const char *method, const char *url,
            const char *allow)
{
  enum error_category cat = error_category ();
  int status = error_http_status (cat);
  CLEANUP_JSON json_t *body = NULL;

  if (status >= 500)
    log_error ("%s %s: %s", method, url, error_message ());
  else
    log_debug ("%s %s: %d %s", method, url, status, error_message ());
  body = json_pack ("{s:{s:s,s:s}}", "error", "code", error_code (cat),
                    "message", error_message ());
  return send_reply (conn, status, body, allow);
}

static enum MHD_Result
count_auth (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  if (strcasecmp (key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
    (*(int *) cls)++;
  return MHD_YES;
}

/* The Authorization header with its length (it may hold a NUL), and only
 * one of them: with two, which one a proxy or the hub reads would differ. */
static int
check_auth (struct hub *hub, struct MHD_Connection *conn)
{
  const char *value = NULL;
  size_t len = 0;
  int n = 0;

  MHD_get_connection_values (conn, MHD_HEADER_KIND, count_auth, &n);
  if (n > 1) {
    error_set (ERR_UNAUTHORIZED, "more than one Authorization header");
    return -1;
  }
  MHD_lookup_connection_value_n (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                 strlen (MHD_HTTP_HEADER_AUTHORIZATION), &value, &len);
  return hub_authorize (hub, value, len);
}

static int
parse_body (struct conn_state *cs, json_t **out)
{
  json_error_t jerr;

  *out = NULL;
  if (cs->too_large) {
    error_set (ERR_TOO_LARGE, "request body is larger than %d bytes", API_MAX_BODY);
    return -1;
  }
  /* An empty (or all-blank) body is no body. */
  if (cs->len == 0 || strspn (cs->body, " \t\r\n") == cs->len)
    return 0;
  *out = json_loadb (cs->body, cs->len, JSON_REJECT_DUPLICATES, &jerr);
  if (*out == NULL) {
    error_set (ERR_INVALID, "malformed JSON body (line %d, column %d): %s",
               jerr.line, jerr.column, jerr.text);
    return -1;
  }
  if (!json_is_object (*out)) {
    json_decref (*out);
    *out = NULL;
    error_set (ERR_INVALID, "request body must be a JSON object");
    return -1;
  }
  return 0;
}

/* The routes outside /api/v1 are read-only: true for GET and HEAD, else
 * the error is set (a 405 saying so, with "Allow: GET, HEAD"). */
static bool
read_only_method (const char *method, const char *url)
{
  if (strcmp (method, "GET") == 0 || strcmp (method, "HEAD") == 0)
    return true;
  error_set (ERR_METHOD, "%s is not allowed on %s (allowed: GET, HEAD)", method, url);
  return false;
}

/* Answer 200 with a file built into the binary (web/web.h).  The files
 * hold no data, so they need no token; every API call the dashboard makes
 * does.  The dashboard has no inline script or style, so the policy below
 * holds, and it keeps the page out of frames; no-cache makes a browser ask
 * again (the hub answers from memory), so it never runs an older hub's
 * page. */
static enum MHD_Result
send_asset (struct MHD_Connection *conn, const struct web_asset *a)
{
  struct MHD_Response *resp;
  enum MHD_Result ret;

  resp = MHD_create_response_from_buffer (a->len, (void *) a->data, MHD_RESPMEM_PERSISTENT);
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header (resp, "Content-Type", a->content_type);
  MHD_add_response_header (resp, "Cache-Control", "no-cache");
  MHD_add_response_header (resp, "Content-Security-Policy",
                           "default-src 'self'; frame-ancestors 'none'");
  MHD_add_response_header (resp, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header (resp, "Referrer-Policy", "no-referrer");
  reply_status = 200;
  ret = MHD_queue_response (conn, 200, resp);
  MHD_destroy_response (resp);
  return ret;
}

/* GET /api/v1/openapi.json: the API's description, as built into the
 * binary (docs/openapi.json).  No token: it holds no data. */
static enum MHD_Result
send_openapi (struct MHD_Connection *conn, const char *method, const char *url)
{
  const struct web_asset *a = web_asset_find (API_OPENAPI_PATH);

  if (!read_only_method (method, url))
    return send_error (conn, method, url, "GET, HEAD");
  if (a == NULL) {
    error_set (ERR_INTERNAL, "this build holds no OpenAPI document");
    return send_error (conn, method, url, NULL);
  }
  return send_asset (conn, a);
}

/* GET (or HEAD) of a file of the dashboard; an unknown one is the JSON 404. */
static enum MHD_Result
send_static (struct MHD_Connection *conn, const char *method, const char *url)
{
  const struct web_asset *a = web_asset_find (url);

  if (a == NULL) {
    error_set (ERR_NOT_FOUND, "no such route: %s (the API lives under /api/v1/)", url);
    return send_error (conn, method, url, NULL);
  }
  if (!read_only_method (method, url))
    return send_error (conn, method, url, "GET, HEAD");
  return send_asset (conn, a);
}

/* GET /metrics: the API's token is needed when there is one. */
static enum MHD_Result
send_metrics (struct api *api, struct MHD_Connection *conn, const char *method,
              const char *url, struct api_req *r)
{
  struct MHD_Response *resp;
  enum MHD_Result ret;
  char *text;
  size_t len;

  if (!read_only_method (method, url))
    return send_error (conn, method, url, "GET, HEAD");
  if (check_auth (api->hub, conn) == -1 || api_metrics (r, &text, &len) == -1)
    return send_error (conn, method, url, NULL);
  resp = MHD_create_response_from_buffer (len, text, MHD_RESPMEM_MUST_FREE);
  if (resp == NULL) {
    free (text);
    return MHD_NO;
  }
  MHD_add_response_header (resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  reply_status = 200;
  ret = MHD_queue_response (conn, 200, resp);
  MHD_destroy_response (resp);
  return ret;
}

/* Route and run one complete request. */
static enum MHD_Result
dispatch (struct api *api, struct MHD_Connection *conn, const char *url,
          const char *method, struct conn_state *cs)
{
  struct api_req r = { .hub = api->hub, .conn = conn, .method = method, .status = 200 };
  const struct api_route *found = NULL;
  char allow[64] = "";
  enum MHD_Result ret;
  const char *path;

  error_clear ();
  if (cs->bad_url) {
    error_set (ERR_INVALID, "%s", cs->bad_url);
    return send_error (conn, method, url, NULL);
  }
  if (cs->headers_too_large) {
    error_set (ERR_HEADERS_TOO_LARGE, "the request's headers are larger than %d bytes",
               API_MAX_HEADERS);
    return send_error (conn, method, "(large headers)", NULL);
  }
  if (strlen (url) > API_MAX_URL) {
    error_set (ERR_URI_TOO_LONG, "the URL is longer than %d bytes", API_MAX_URL);
    return send_error (conn, method, "(long URL)", NULL);
  }
  if (strcmp (url, "/healthz") == 0) {
    if (!read_only_method (method, url))
      return send_error (conn, method, url, "GET, HEAD");
    if (api_health (&r) == -1)
      return send_error (conn, method, url, NULL);
    ret = send_reply (conn, r.status, r.reply, NULL);
    json_decref (r.reply);
    return ret;
  }
  if (strcmp (url, API_OPENAPI_PATH) == 0)
    return send_openapi (conn, method, url);
  if (strcmp (url, "/metrics") == 0)
    return send_metrics (api, conn, method, url, &r);
  if (strncmp (url, "/api/", 5) != 0)
    return send_static (conn, method, url);
  if (strncmp (url, "/api/v1/", 8) != 0) {
    error_set (ERR_NOT_FOUND, "no such route: %s (the API lives under /api/v1/)", url);
    return send_error (conn, method, url, NULL);
  }
  if (check_auth (api->hub, conn) == -1)
    return send_error (conn, method, url, NULL);

  path = url + 8;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    char *copy = strdupa (path);
    const char *caps[MAX_CAPTURES] = { NULL };
    if (!route_match (routes[i].pattern, copy, caps))
      continue;
    if (strcmp (routes[i].method, method) == 0) {
      found = &routes[i];
      r.id = caps[0] ? strdupa (caps[0]) : NULL;
      break;
    }
    if (!strstr (allow, routes[i].method) && strlen (allow) < sizeof allow - 10) {
      if (*allow)
        strcat (allow, ", ");
      strcat (allow, routes[i].method);
    }
  }
  if (found == NULL) {
    if (*allow) {
      error_set (ERR_METHOD, "%s is not allowed on %s (allowed: %s)", method, url, allow);
      return send_error (conn, method, url, allow);
    }
    error_set (ERR_NOT_FOUND, "no such route: %s %s", method, url);
    return send_error (conn, method, url, NULL);
  }
  /* A streamed route's request was taken by upload_begin. */
  if (found->handler == NULL) {
    error_set (ERR_INTERNAL, "the streamed route %s %s reached the JSON router", method,
               url);
    return send_error (conn, method, url, NULL);
  }
  if (parse_body (cs, &r.body) == -1)
    return send_error (conn, method, url, NULL);
  if (found->handler (&r) == -1) {
    json_decref (r.body);
    json_decref (r.reply);
    return send_error (conn, method, url, NULL);
  }
  json_decref (r.body);
  ret = send_reply (conn, r.status, r.reply, NULL);
  json_decref (r.reply);
  return ret;
}

/* Keep the thread's error for the end of an upload's request. */
static void
upload_fail (struct conn_state *cs)
{
  if (cs->up_err == NULL) {
    cs->up_cat = error_category ();
    cs->up_err = strdup (error_message ());
  }
  hub_upload_abort (cs->upload);
  cs->upload = NULL;
}

/* The streamed route of the table that url and method name, if any: fills
 * *kind, the id and the disk text (a copy the caller frees, in *path_copy). */
static bool
upload_route (const char *url, const char *method, enum hub_upload_kind *kind,
              char **id, const char **disk, char **path_copy)
{
  if (strncmp (url, "/api/v1/", 8) != 0 || strlen (url) > API_MAX_URL)
    return false;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const char *caps[MAX_CAPTURES] = { NULL };
    CLEANUP_FREE char *copy = NULL;

    if (!routes[i].streamed || strcmp (routes[i].method, method) != 0)
      continue;
    if ((copy = strdup (url + 8)) == NULL)
      return false;
    if (!route_match (routes[i].pattern, copy, caps))
      continue;
    if ((*id = strdup (caps[0])) == NULL)
      return false;
    *kind = routes[i].upload;
    *disk = caps[1];
    *path_copy = copy;
    copy = NULL;
    return true;
  }
  return false;
}

/* The first call of an upload route: authenticate, check, open the file. */
static int
upload_begin (struct api *api, struct MHD_Connection *conn, const char *url,
              struct conn_state *cs)
{
  enum hub_upload_kind kind;
  const char *disk;
  CLEANUP_FREE char *path_copy = NULL;
  char disk_text[32];
  size_t dl;

  if (!upload_route (url, cs->method, &kind, &cs->up_id, &disk, &path_copy))
    return 0;
  cs->uploading = true;
  cs->up_req = (struct api_req) { .hub = api->hub, .conn = conn, .method = "PUT",
                                  .id = cs->up_id, .status = 200 };
  /* A disk index longer than any valid one is refused whole, never cut. */
  dl = strlen (disk);
  if (dl < sizeof disk_text)
    snprintf (disk_text, sizeof disk_text, "%.*s", (int) dl, disk);
  else
    snprintf (disk_text, sizeof disk_text, "(too long)");
  error_clear ();
  if (cs->bad_url)
    error_set (ERR_INVALID, "%s", cs->bad_url);
  else if (check_auth (api->hub, conn) == 0 &&
           api_upload_open (&cs->up_req, disk_text, kind, &cs->upload) == 0)
    return 0;
  upload_fail (cs);
  return 0;
}

static enum MHD_Result
upload_finish (struct MHD_Connection *conn, const char *url, struct conn_state *cs)
{
  struct api_req *r = &cs->up_req;
  enum MHD_Result ret;

  if (cs->upload) {
    struct hub_upload *u = cs->upload;
    cs->upload = NULL;
    if (api_upload_reply (r, u) == -1)
      upload_fail (cs);
  }
  if (cs->up_err) {
    error_set (cs->up_cat, "%s", cs->up_err);
    return send_error (conn, "PUT", url, NULL);
  }
  ret = send_reply (conn, r->status, r->reply, NULL);
  json_decref (r->reply);
  r->reply = NULL;
  return ret;
}

/* A request's class for the metrics (api/metrics.c): the pattern of the
 * route its path matches, whatever its method, or a fixed word. */
static const char *
request_class (const char *url)
{
  CLEANUP_FREE char *copy = NULL;
  const char *caps[MAX_CAPTURES];

  if (strcmp (url, "/healthz") == 0 || strcmp (url, "/metrics") == 0)
    return url + 1;
  if (strcmp (url, API_OPENAPI_PATH) == 0)
    return "openapi";
  if (strncmp (url, "/api/v1/", 8) != 0)
    return web_asset_find (url) ? "static" : "unmatched";
  if ((copy = strdup (url + 8)) == NULL)
    return "unmatched";
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    strcpy (copy, url + 8);
    if (route_match (routes[i].pattern, copy, caps))
      return routes[i].pattern;
  }
  return "unmatched";
}

/* Answer a request whose body is all here, and count it. */
static enum MHD_Result
answer (struct api *api, struct MHD_Connection *conn, const char *url,
        const char *method, struct conn_state *cs)
{
  enum MHD_Result ret;

  reply_status = 0;
  ret = cs->uploading ? upload_finish (conn, url, cs) : dispatch (api, conn, url, method, cs);
  if (reply_status)
    api_metrics_request (request_class (url), method, reply_status,
                         (double) (clock_mono_ns () - cs->started_ns) / 1e9);
  return ret;
}

/* Set a connection's deadline: secs from now (plus what its body bytes
 * earn when in_body), or none with secs < 0. */
static void
conn_deadline (struct api *api, struct api_conn *ac, int secs, bool in_body)
{
  int64_t now = clock_mono_ns ();

  if (ac == NULL)
    return;
  SCOPED_LOCK (&api->conns_lock);
  if (secs < 0)
    ac->deadline_ns = 0;
  else if (!in_body)
    ac->deadline_ns = now + secs * NS_PER_S;
  else
    ac->deadline_ns = ac->body_start_ns + secs * NS_PER_S +
                      (int64_t) (ac->body_bytes / API_BODY_MIN_RATE) * NS_PER_S;
}

/* The head is here: the body's deadline starts. */
static void
conn_body_begins (struct api *api, struct api_conn *ac)
{
  if (ac == NULL)
    return;
  {
    SCOPED_LOCK (&api->conns_lock);
    ac->body_start_ns = clock_mono_ns ();
    ac->body_bytes = 0;
  }
  conn_deadline (api, ac, API_BODY_SECONDS, true);
}

static void
conn_body_bytes (struct api *api, struct api_conn *ac, size_t n)
{
  if (ac == NULL)
    return;
  {
    SCOPED_LOCK (&api->conns_lock);
    ac->body_bytes += n;
  }
  conn_deadline (api, ac, API_BODY_SECONDS, true);
}

/* libmicrohttpd's connection notices: keep api->conns whole. */
static void
on_connection (void *cls, struct MHD_Connection *conn, void **socket_context,
               enum MHD_ConnectionNotificationCode code)
{
  struct api *api = cls;
  struct api_conn *ac = *socket_context;

  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    /* Out of memory: the connection just goes without a deadline. */
    if (ci == NULL || (ac = calloc (1, sizeof *ac)) == NULL)
      return;
    ac->fd = ci->connect_fd;
    ac->deadline_ns = clock_mono_ns () + API_HEAD_SECONDS * NS_PER_S;
    SCOPED_LOCK (&api->conns_lock);
    ac->next = api->conns;
    if (api->conns)
      api->conns->prev = ac;
    api->conns = ac;
    *socket_context = ac;
    return;
  }
  if (ac == NULL)
    return;
  {
    SCOPED_LOCK (&api->conns_lock);
    if (ac->prev)
      ac->prev->next = ac->next;
    else
      api->conns = ac->next;
    if (ac->next)
      ac->next->prev = ac->prev;
  }
  free (ac);
  *socket_context = NULL;
}

/* The watchdog: once a second, shut down the connections past their
 * deadline.  libmicrohttpd's thread of such a connection then reads the
 * end of the stream and closes it. */
static void *
watchdog_run (void *opaque)
{
  struct api *api = opaque;

  SCOPED_LOCK (&api->conns_lock);
  while (!api->stopping) {
    int64_t now = clock_mono_ns ();
    struct timespec ts;
    unsigned cut = 0;

    for (struct api_conn *ac = api->conns; ac; ac = ac->next)
      if (!ac->cut && ac->deadline_ns && now >= ac->deadline_ns) {
        shutdown (ac->fd, SHUT_RDWR);
        ac->cut = true;
        cut++;
      }
    if (cut)
      log_debug ("http: closed %u connection(s) whose request did not arrive in time", cut);
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&api->conns_cond, &api->conns_lock, &ts);
  }
  return NULL;
}

/* The declared Content-Length, when there is one over API_MAX_BODY. */
static bool
declared_too_large (struct MHD_Connection *conn)
{
  const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_CONTENT_LENGTH);
  unsigned long long n;
  char *end;

  if (cl == NULL)
    return false;
  errno = 0;
  n = strtoull (cl, &end, 10);
  return end != cl && (errno == ERANGE || n > API_MAX_BODY);
}

static enum MHD_Result
add_header_size (void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                 const char *value, size_t value_size)
{
  size_t *total = cls;

  *total += key_size + value_size;
  return MHD_YES;
}

/* The request's headers, names and values, past API_MAX_HEADERS.  (Heads
 * past the connection's memory limit never reach us: libmicrohttpd answers
 * them itself.) */
static bool
headers_too_large (struct MHD_Connection *conn)
{
  size_t total = 0;

  MHD_get_connection_values_n (conn, MHD_HEADER_KIND, add_header_size, &total);
  return total > API_MAX_HEADERS;
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *conn, const char *url,
            const char *method, const char *version, const char *upload_data,
            size_t *upload_data_size, void **con_cls)
{
  struct api *api = cls;
  struct conn_state *cs = *con_cls;

  if (cs == NULL) {
    cs = calloc (1, sizeof *cs);
    if (cs == NULL)
      return MHD_NO;
    cs->bad_url = unescape_refused;
    unescape_refused = NULL;
    *con_cls = cs;
    cs->method = method;
    cs->started_ns = clock_mono_ns ();
    {
      const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info (conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
      cs->ac = ci ? ci->socket_context : NULL;
    }
    conn_body_begins (api, cs->ac);
    if (headers_too_large (conn)) {
      cs->headers_too_large = true;
      conn_deadline (api, cs->ac, -1, false);
      return answer (api, conn, url, method, cs);
    }
    upload_begin (api, conn, url, cs);
    /* A body declared over the limit is answered now, before any byte of
     * it is read (after the route and the token are checked). */
    if (!cs->uploading && declared_too_large (conn)) {
      cs->too_large = true;
      conn_deadline (api, cs->ac, -1, false);
      return answer (api, conn, url, method, cs);
    }
    return MHD_YES;
  }
  if (*upload_data_size > 0)
    conn_body_bytes (api, cs->ac, *upload_data_size);
  else
    conn_deadline (api, cs->ac, -1, false);
  if (cs->uploading && *upload_data_size > 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (cs->upload && hub_upload_write (cs->upload, upload_data, n) == -1)
      upload_fail (cs);
    /* Read what a failed upload still sends, to answer it; a client that
     * goes on far past any valid size is cut off. */
    if (cs->upload == NULL && (cs->dropped += n) > (UINT64_C (64) << 20))
      return MHD_NO;
    return MHD_YES;
  }
  if (cs->uploading)
    return answer (api, conn, url, method, cs);
  if (*upload_data_size > 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (cs->too_large || cs->len + n > API_MAX_BODY) {
      cs->too_large = true;
      /* Read on to answer it, but not for ever. */
      if ((cs->too_large_bytes += n) > (UINT64_C (64) << 20))
        return MHD_NO;
      return MHD_YES;
    }
    if (cs->len + n + 1 > cs->cap) {
      size_t cap = cs->cap ? cs->cap : 4096;
      while (cap < cs->len + n + 1)
        cap *= 2;
      char *p = realloc (cs->body, cap);
      if (p == NULL)
        return MHD_NO;
      cs->body = p;
      cs->cap = cap;
    }
    memcpy (cs->body + cs->len, upload_data, n);
    cs->len += n;
    cs->body[cs->len] = '\0';
    return MHD_YES;
  }
  return answer (api, conn, url, method, cs);
}

static void
on_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
  struct api *api = cls;
  struct conn_state *cs = *con_cls;
  if (cs) {
    /* A kept-alive connection now waits for its next request's head. */
    conn_deadline (api, cs->ac, API_HEAD_SECONDS, false);
    hub_upload_abort (cs->upload);
    free (cs->up_err);
    free (cs->up_id);
    free (cs->body);
    free (cs);
    *con_cls = NULL;
  }
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decoding of paths and query values, in place.  An escape that
 * would decode to NUL or '/' is refused (it would cut an id short, or make
 * a name look like more path), and so is a '%' without two hex digits:
 * the request is then answered 400 rather than read as something else. */
static size_t
on_unescape (void *cls, struct MHD_Connection *conn, char *s)
{
  char *in = s, *out = s;
  while (*in) {
    int hi, lo, c;
    if (in[0] != '%') {
      *out++ = *in++;
      continue;
    }
    if ((hi = hexval (in[1])) < 0 || (lo = hexval (in[2])) < 0) {
      unescape_refused = "a '%' in the URL is not followed by two hex digits";
      *out++ = *in++;
      continue;
    }
    c = hi * 16 + lo;
    if (c == 0 || c == '/') {
      unescape_refused = "the URL encodes a NUL or '/' (%00, %2F), which no id or "
        "VM name may contain";
      *out++ = *in++;
      continue;
    }
    *out++ = (char) c;
    in += 3;
  }
  *out = '\0';
  return out - s;
}

/* The request-target as it came on the request line, before any decoding:
 * only the bytes RFC 3986 lets a path and a query hold (unreserved,
 * sub-delims, ':', '@', '/', '?' and '%' escapes).  libmicrohttpd takes
 * everything between the method and the version as the URL, so a raw
 * space would otherwise reach a route as part of a name ("a b"); a byte
 * that needs escaping is refused, the same way as a bad escape. */
static void *
on_uri (void *cls, const char *uri, struct MHD_Connection *conn)
{
  static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789-._~!$&'()*+,;=:@/?%";

  unescape_refused = NULL;
  if (uri[strspn (uri, allowed)] != '\0')
    unescape_refused = "the URL holds a byte that must be percent-encoded (a space, a "
      "control character, a non-ASCII byte or one of \"#<>[\\]^`{|})";
  return NULL;
}

static void __attribute__((format (printf, 2, 0)))
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
  char buf[512];
  vsnprintf (buf, sizeof buf, fmt, ap);
  buf[strcspn (buf, "\n")] = '\0';
  log_debug ("http: %s", buf);
}

struct api *
api_start (struct hub *hub)
{
  struct api *api = calloc (1, sizeof *api);
  const struct net_addr *addr;
  const char *listen_text, *cert = NULL, *key = NULL;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                   MHD_USE_ERROR_LOG;
  bool tls = hub_api_tls (hub, &cert, &key);
  /* HTTPS: TLS 1.2 and 1.3 only; the list stays empty for plain HTTP. */
  struct MHD_OptionItem tls_opts[] = {
    { tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *) cert },
    { MHD_OPTION_HTTPS_MEM_KEY, 0, (void *) key },
    { MHD_OPTION_HTTPS_PRIORITIES, 0,
      (void *) "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE" },
    { MHD_OPTION_END, 0, NULL },
  };

  if (api == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return NULL;
  }
  api->hub = hub;
  pthread_mutex_init (&api->conns_lock, NULL);
  {
    pthread_condattr_t ca;
    pthread_condattr_init (&ca);
    pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
    pthread_cond_init (&api->conns_cond, &ca);
    pthread_condattr_destroy (&ca);
  }
  addr = hub_api_address (hub, &listen_text);
  if (addr->ipv6)
    flags |= MHD_USE_IPv6;
  if (tls)
    flags |= MHD_USE_TLS;
  api->daemon = MHD_start_daemon (flags, (uint16_t) addr->port, NULL, NULL,
                                  on_request, api,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr->ss,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
                                  MHD_OPTION_NOTIFY_CONNECTION, on_connection, api,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) API_CONNECTIONS,
                                  MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                  (unsigned) API_PER_ADDR_CONNECTIONS,
                                  /* Idle: mostly an answer its client does
                                   * not read; the rest has deadlines. */
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 60,
                                  /* Room for long URLs to reach us, so that
                                   * they get a JSON 414, not the library's
                                   * HTML page. */
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                  (size_t) 512 * 1024,
                                  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, api,
                                  MHD_OPTION_URI_LOG_CALLBACK, on_uri, api,
                                  MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, api,
                                  MHD_OPTION_ARRAY, tls_opts,
                                  MHD_OPTION_END);
  if (api->daemon == NULL) {
    error_set (ERR_INTERNAL, "cannot listen on %s for the API (in use, or not an "
               "address of this machine?)", listen_text);
    api_stop (api);
    return NULL;
  }
  if (pthread_create (&api->watchdog, NULL, watchdog_run, api) != 0) {
    error_set (ERR_INTERNAL, "cannot start the API's watchdog thread");
    api_stop (api);
    return NULL;
  }
  api->watchdog_running = true;
  log_info ("API listening on %s://%s", tls ? "https" : "http", listen_text);
  return api;
}

void
api_stop (struct api *api)
{
  if (api == NULL)
    return;
  if (api->watchdog_running) {
    {
      SCOPED_LOCK (&api->conns_lock);
      api->stopping = true;
      pthread_cond_signal (&api->conns_cond);
    }
    pthread_join (api->watchdog, NULL);
  }
  if (api->daemon)
    MHD_stop_daemon (api->daemon);
  pthread_cond_destroy (&api->conns_cond);
  pthread_mutex_destroy (&api->conns_lock);
  free (api);
}
