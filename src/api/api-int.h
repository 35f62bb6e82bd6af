/* api/api-int.h - what the files of src/api/ share: the request record, the
 * handlers, input validation and the JSON forms of catalog objects. */
#ifndef STRATA_API_API_INT_H
#define STRATA_API_API_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api/api.h"
#include "catalog/catalog.h"
#include "hub/hub.h"

#define API_MAX_BODY (1024 * 1024)
#define API_MAX_URL 8192
#define API_MAX_HEADERS (32 * 1024)  /* names and values of a request's headers */
#define API_MAX_PATH 4096       /* vm_path, a disk's source, a repository's path */
#define API_MAX_STRING 255      /* every other free-text field */

struct api_req {
  struct hub *hub;
  struct MHD_Connection *conn;
  const char *method;
  const char *id;            /* the {id} or {vm_name} of the route, if any */
  json_t *body;              /* the parsed body, or NULL when it was empty */
  /* Filled by the handler. */
  int status;                /* default 200 */
  json_t *reply;             /* NULL for an empty reply (204) */
};

/* A handler returns 0 with r->reply (and r->status) set, or -1 with the
 * thread-local error set; the HTTP layer turns that into the error body. */
typedef int (*api_handler) (struct api_req *r);

/* Handlers, one file per resource. */
int api_health (struct api_req *r);
int api_repos_list (struct api_req *r);
int api_repos_create (struct api_req *r);
int api_repos_get (struct api_req *r);
int api_repos_delete (struct api_req *r);
int api_vms_list (struct api_req *r);
int api_vms_get (struct api_req *r);
int api_vms_put (struct api_req *r);
int api_vms_delete (struct api_req *r);
int api_backups_start (struct api_req *r);
int api_backups_list (struct api_req *r);
int api_backups_get (struct api_req *r);
int api_backups_delete (struct api_req *r);
int api_backups_complete (struct api_req *r);
int api_backups_fail (struct api_req *r);
int api_backups_cancel (struct api_req *r);
int api_backups_progress (struct api_req *r);
int api_backups_changeid (struct api_req *r);
int api_backups_changeids (struct api_req *r);
int api_contexts_list (struct api_req *r);
int api_contexts_get (struct api_req *r);
int api_contexts_delete (struct api_req *r);
int api_restores_create (struct api_req *r);
int api_restores_list (struct api_req *r);
int api_restores_get (struct api_req *r);
int api_restores_delete (struct api_req *r);
int api_backups_patch (struct api_req *r);
int api_contexts_prune (struct api_req *r);
int api_policies_list (struct api_req *r);
int api_policies_get (struct api_req *r);
int api_policies_put (struct api_req *r);
int api_policies_delete (struct api_req *r);
int api_tasks_list (struct api_req *r);
int api_backups_verify (struct api_req *r);
int api_contexts_verify (struct api_req *r);
/* The upload routes (api/integrity.c; their bodies are streamed by
 * api/http.c): check the request and open the hub's upload; then, once the
 * body is whole, end it and set the reply. */
int api_upload_open (struct api_req *r, const char *disk_text, enum hub_upload_kind kind,
                     struct hub_upload **u);
int api_upload_reply (struct api_req *r, struct hub_upload *u);
int api_tasks_get (struct api_req *r);

/* --- Routes (api/http.c) ---------------------------------------------- */
/* One route under /api/v1/: its method and its path's segments after
 * "/api/v1/", where "*" stands for one non-empty segment (an id, a VM name,
 * a disk index), given to the handler in order.  A streamed route's body is
 * not gathered and parsed but written to the hub as it arrives
 * (api_upload_open, api_upload_reply); it has no handler.  docs/openapi.json
 * describes every route of the table (tests/unit/test-openapi.c). */
struct api_route {
  const char *method;
  const char *pattern;
  api_handler handler;             /* NULL for a streamed route */
  bool streamed;
  enum hub_upload_kind upload;     /* a streamed route's kind of body */
};
/* The router's table, in matching order (literal routes before the "*"
 * routes they would also match); *n receives its length.  Static. */
const struct api_route *api_route_table (size_t *n);
/* The URL path of the OpenAPI document, served without a token. */
#define API_OPENAPI_PATH "/api/v1/openapi.json"
/* --- Metrics (api/metrics.c) ------------------------------------------ */
/* GET /metrics: *text (caller frees, *len bytes) in Prometheus' text format. */
int api_metrics (struct api_req *r, char **text, size_t *len);
/* Count a request answered with status, by its class (api/metrics.c says
 * which), method, and the seconds it took. */
void api_metrics_request (const char *class, const char *method, int status,
                          double seconds);

/* --- Input (api/input.c) ---------------------------------------------- */
/* Reject query parameters outside allowed (NULL-terminated, at most 64
 * names), and any given more than once. */
int api_query_check (struct api_req *r, const char *const allowed[]);
/* A query parameter's value, or NULL. */
const char *api_query (struct api_req *r, const char *key);
/* "true"/"false" query flags; absent = false. */
int api_query_bool (struct api_req *r, const char *key, bool *out);
/* A query integer in [min, max]; absent leaves *out as it is. */
int api_query_int (struct api_req *r, const char *key, int64_t min, int64_t max,
                   int64_t *out);

/* The body as an object with only the allowed fields.  An empty body is
 * an error unless empty_ok, in which case *obj is NULL. */
int api_body (struct api_req *r, const char *const allowed[], bool empty_ok, json_t **obj);
/* A string field of at most maxlen bytes without control characters
 * (allow_newlines relaxes that for free text).  Absent or null: *out NULL,
 * an error when required. */
int api_field_str (json_t *obj, const char *key, bool required, size_t maxlen,
                   bool allow_newlines, const char **out);
/* An integer field in [min, max].  Absent or null: *present false (error when
 * required). */
int api_field_int (json_t *obj, const char *key, bool required, int64_t min,
                   int64_t max, int64_t *out, bool *present);
/* Refuse any member of obj whose name is not in allowed. */
int api_check_fields (json_t *obj, const char *const allowed[]);
/* A boolean field.  Absent or null: *present false (error when required). */
int api_field_bool (json_t *obj, const char *key, bool required, bool *out, bool *present);
/* The retention rules keep_last .. keep_yearly of obj (each an integer from
 * 0 to API_MAX_KEEP, absent = -1); *any tells whether one was given. */
#define API_MAX_KEEP 100000
extern const char *const api_retention_keys[];
int api_field_retention (json_t *obj, struct retention_rules *out, bool *any);
/* A "disks" array: 1..HUB_MAX_DISKS disks, sorted by disk_index, distinct.
 * *out is owned by the caller (api_disks_free). */
int api_field_disks (json_t *obj, const char *key, struct cat_vm_disk **out, size_t *n);
void api_disks_free (struct cat_vm_disk *d, size_t n);
/* A {id} from the URL that must be a well-formed id. */
int api_check_id (const char *what, const char *id);
/* A word of a request (field or query parameter what, text s) parsed into
 * *out by one of util/state.h's vocabularies, at this edge: 0, or -1 with
 * ERR_INVALID listing the allowed words. */
#define API_PARSE_WORD(what, s, parse, words, out)                      \
  ((parse) ((s), (out)) == 0 ? 0 : api_bad_word ((what), (words)))
int api_bad_word (const char *what, void (*words) (char *, size_t));

/* --- Output (api/output.c) -------------------------------------------- */
json_t *api_json_str (const char *s);   /* string or null */
json_t *api_json_repo (struct hub *hub, const struct cat_repository *r);  /* with usage */
json_t *api_json_vm (const struct cat_vm *vm);
/* A context with its summary (hub_context_summary). */
json_t *api_json_context (struct hub *hub, const struct cat_context *c);
json_t *api_json_policy (const struct cat_policy *p);
json_t *api_json_task (const struct cat_task *t);
/* The first bad offsets of a comparison, as an array. */
json_t *api_json_offsets (const struct mf_compare *c);
/* A job with its disks; repo_path makes qcow2_path absolute. */
json_t *api_json_job (struct hub *hub, const struct cat_job *job, const char *repo_path);
/* The same, looking the repository up. */
json_t *api_json_job_lookup (struct hub *hub, const struct cat_job *job);
/* The same with "nbd_tls": the running job's NBD credential (null when the
 * job is not running or NBD speaks no TLS).  Only for the job's starter's
 * answers (POST /backups, GET /backups/{id}), never in lists. */
json_t *api_json_job_credential (struct hub *hub, const struct cat_job *job);
/* {"identity":...,"psk":...}, or null when identity is NULL. */
json_t *api_json_nbd_tls (const char *identity, const char *psk);
/* A JSON array of the strings of a NULL-terminated vector (NULL: []). */
json_t *api_json_ids (char *const *ids);
/* {"deleted_backups":[...]} from a NULL-terminated vector. */
json_t *api_json_deleted (char **ids);
/* Set r->reply, checking for allocation failure (a NULL reply). */
int api_reply (struct api_req *r, int status, json_t *reply);

#endif
