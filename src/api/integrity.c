/* api/integrity.c - the routes of block hashes and verification: an
 * agent's uploads of a disk's manifest part and of an audit (their bodies
 * are streamed by api/http.c into the hub's files), and verify tasks. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "util/cleanup.h"
#include "util/error.h"

static const char *const no_params[] = { NULL };

int
api_upload_open (struct api_req *r, const char *disk_text, enum hub_upload_kind kind,
                 struct hub_upload **u)
{
  const char *cl = MHD_lookup_connection_value (r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_CONTENT_LENGTH);
  int64_t length = -1;
  char *end;
  long disk;

  if (api_query_check (r, no_params) == -1 || api_check_id ("backup id", r->id) == -1)
    return -1;
  errno = 0;
  disk = strtol (disk_text, &end, 10);
  if (errno || end == disk_text || *end || disk < 0 || disk > HUB_MAX_DISK_INDEX ||
      disk_text[0] == '+' || disk_text[0] == '-' || disk_text[0] == ' ') {
    error_set (ERR_INVALID, "disk index '%s' must be an integer from 0 to %d",
               disk_text, HUB_MAX_DISK_INDEX);
    return -1;
  }
  if (cl) {
    errno = 0;
    long long v = strtoll (cl, &end, 10);
    if (errno == 0 && end != cl && *end == '\0' && v >= 0)
      length = v;
  }
  return hub_upload_begin (r->hub, kind, r->id, (int) disk, length, u);
}

int
api_upload_reply (struct api_req *r, struct hub_upload *u)
{
  struct hub_upload_result res;
  bool audit = hub_upload_is_audit (u);

  if (hub_upload_end (u, &res) == -1)
    return -1;
  if (!audit) {
    r->status = 204;
    r->reply = NULL;
    return 0;
  }
  return api_reply (r, 200, json_pack ("{s:I,s:I,s:o,s:o,s:s}",
                                       "checked", (json_int_t) res.audit.checked,
                                       "bad", (json_int_t) res.audit.bad,
                                       "first_bad_offset",
                                       res.audit.first_bad >= 0
                                       ? json_integer (res.audit.first_bad) : json_null (),
                                       "bad_offsets", api_json_offsets (&res.audit),
                                       "verify_state",
                                       verify_state_name (res.verify_state)));
}

/* POST /api/v1/backups/{id}/verify and /api/v1/contexts/{id}/verify: an
 * empty body (or {}). */
static int
verify (struct api_req *r, bool context)
{
  static const char *const fields[] = { NULL };
  CLEANUP_FREE char *task_id = NULL;
  json_t *body;

  if (api_query_check (r, no_params) == -1 ||
      api_check_id (context ? "context id" : "backup id", r->id) == -1 ||
      api_body (r, fields, true, &body) == -1)
    return -1;
  if (hub_verify_start (r->hub, context ? NULL : r->id, context ? r->id : NULL,
                        &task_id) == -1)
    return -1;
  return api_reply (r, 202, json_pack ("{s:s}", "task_id", task_id));
}

int
api_backups_verify (struct api_req *r)
{
  return verify (r, false);
}

int
api_contexts_verify (struct api_req *r)
{
  return verify (r, true);
}
