/* api/input.c - validating what clients send: query parameters, JSON
 * bodies and ids.  Every check names the field and says what is wanted. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "util/error.h"
#include "util/id.h"

struct query_scan {
  const char *const *allowed;
  uint64_t seen;                /* bit i: allowed[i] was given */
  const char *bad;              /* an unknown name, or one given twice */
  bool twice;
};

/* True when s is one of the NULL-terminated list's names. */
static bool
in_list (const char *const list[], const char *s)
{
  for (const char *const *a = list; *a; a++)
    if (strcmp (*a, s) == 0)
      return true;
  return false;
}

int
api_check_fields (json_t *obj, const char *const allowed[])
{
  const char *key;
  json_t *v;

  json_object_foreach (obj, key, v) {
    if (!in_list (allowed, key)) {
      error_set (ERR_INVALID, "unknown field '%.64s'", key);
      return -1;
    }
  }
  return 0;
}

static enum MHD_Result
query_visit (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct query_scan *qs = cls;

  for (size_t i = 0; qs->allowed[i]; i++) {
    if (strcmp (qs->allowed[i], key) != 0)
      continue;
    if (qs->seen & (UINT64_C (1) << i)) {
      qs->bad = key;
      qs->twice = true;
      return MHD_NO;
    }
    qs->seen |= UINT64_C (1) << i;
    return MHD_YES;
  }
  qs->bad = key;
  return MHD_NO;
}

/* Every query parameter is one the route knows, given once: a second
 * value would otherwise be ignored without a word (api_query reads the
 * first). */
int
api_query_check (struct api_req *r, const char *const allowed[])
{
  struct query_scan qs = { .allowed = allowed };

  MHD_get_connection_values (r->conn, MHD_GET_ARGUMENT_KIND, query_visit, &qs);
  if (qs.bad) {
    error_set (ERR_INVALID, qs.twice ? "query parameter '%.64s' is given more than once"
               : "unknown query parameter '%.64s'", qs.bad);
    return -1;
  }
  return 0;
}

const char *
api_query (struct api_req *r, const char *key)
{
  return MHD_lookup_connection_value (r->conn, MHD_GET_ARGUMENT_KIND, key);
}

int
api_query_bool (struct api_req *r, const char *key, bool *out)
{
  const char *v = api_query (r, key);
  *out = false;
  if (v == NULL)
    return 0;
  if (strcmp (v, "true") == 0)
    *out = true;
  else if (strcmp (v, "false") != 0) {
    error_set (ERR_INVALID, "query parameter '%s' must be true or false", key);
    return -1;
  }
  return 0;
}

int
api_query_int (struct api_req *r, const char *key, int64_t min, int64_t max,
               int64_t *out)
{
  const char *v = api_query (r, key);
  char *end;
  long long n;

  if (v == NULL)
    return 0;
  errno = 0;
  n = strtoll (v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno || n < min || n > max ||
      !(*v >= '0' && *v <= '9') ) {
    error_set (ERR_INVALID, "query parameter '%s' must be an integer from %" PRId64
               " to %" PRId64, key, min, max);
    return -1;
  }
  *out = n;
  return 0;
}

int
api_body (struct api_req *r, const char *const allowed[], bool empty_ok, json_t **obj)
{
  *obj = r->body;
  if (r->body == NULL) {
    if (empty_ok)
      return 0;
    error_set (ERR_INVALID, "this request needs a JSON object body");
    return -1;
  }
  return api_check_fields (r->body, allowed);
}

/* A field's value: 1 with *v set when obj has it (not null), 0 when it is
 * absent or null and not required, -1 (ERR_INVALID) when it is required. */
static int
field_value (json_t *obj, const char *key, bool required, json_t **v)
{
  *v = obj ? json_object_get (obj, key) : NULL;
  if (*v != NULL && !json_is_null (*v))
    return 1;
  if (required) {
    error_set (ERR_INVALID, "field '%s' is required", key);
    return -1;
  }
  return 0;
}

int
api_field_str (json_t *obj, const char *key, bool required, size_t maxlen,
               bool allow_newlines, const char **out)
{
  json_t *v;
  const char *s;
  size_t len;
  int f = field_value (obj, key, required, &v);

  *out = NULL;
  if (f <= 0)
    return f;
  if (!json_is_string (v)) {
    error_set (ERR_INVALID, "field '%s' must be a string", key);
    return -1;
  }
  s = json_string_value (v);
  len = json_string_length (v);
  if (len > maxlen) {
    error_set (ERR_INVALID, "field '%s' is %zu bytes long; the limit is %zu", key, len,
               maxlen);
    return -1;
  }
  if (strlen (s) != len) {
    error_set (ERR_INVALID, "field '%s' must not contain NUL", key);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if ((c < 0x20 || c == 0x7f) && !(allow_newlines && (c == '\n' || c == '\t'))) {
      error_set (ERR_INVALID, "field '%s' must not contain control characters", key);
      return -1;
    }
  }
  *out = s;
  return 0;
}

int
api_field_int (json_t *obj, const char *key, bool required, int64_t min, int64_t max,
               int64_t *out, bool *present)
{
  json_t *v;
  json_int_t n;
  int f = field_value (obj, key, required, &v);

  if (present)
    *present = false;
  if (f <= 0)
    return f;
  if (!json_is_integer (v)) {
    error_set (ERR_INVALID, "field '%s' must be an integer", key);
    return -1;
  }
  n = json_integer_value (v);
  if (n < min || n > max) {
    error_set (ERR_INVALID, "field '%s' is %" PRId64 "; it must be from %" PRId64
               " to %" PRId64, key, (int64_t) n, min, max);
    return -1;
  }
  *out = n;
  if (present)
    *present = true;
  return 0;
}

static int
cmp_disk (const void *a, const void *b)
{
  const struct cat_vm_disk *x = a, *y = b;
  return (x->disk_index > y->disk_index) - (x->disk_index < y->disk_index);
}

void
api_disks_free (struct cat_vm_disk *d, size_t n)
{
  if (d == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free (d[i].source);
  free (d);
}

int
api_field_disks (json_t *obj, const char *key, struct cat_vm_disk **out, size_t *n)
{
  static const char *const allowed[] = {
    "disk_index", "size_bytes", "vmware_disk_key", "unit_number", "source", NULL
  };
  json_t *arr = json_object_get (obj, key), *d;
  struct cat_vm_disk *disks;
  size_t i, count;

  *out = NULL;
  *n = 0;
  if (!json_is_array (arr)) {
    error_set (ERR_INVALID, "field '%s' must be an array of disks", key);
    return -1;
  }
  count = json_array_size (arr);
  if (count == 0 || count > HUB_MAX_DISKS) {
    error_set (ERR_INVALID, "field '%s' must hold 1 to %d disks", key, HUB_MAX_DISKS);
    return -1;
  }
  disks = calloc (count, sizeof *disks);
  if (disks == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "out of memory");
    return -1;
  }
  json_array_foreach (arr, i, d) {
    struct cat_vm_disk *x = &disks[i];
    const char *source;
    int64_t num;
    bool present;

    if (!json_is_object (d)) {
      error_set (ERR_INVALID, "%s[%zu] must be an object", key, i);
      goto fail;
    }
    if (api_check_fields (d, allowed) == -1)
      goto field_fail;
    if (api_field_int (d, "disk_index", true, 0, HUB_MAX_DISK_INDEX, &num, NULL) == -1)
      goto field_fail;
    x->disk_index = (int) num;
    if (api_field_int (d, "size_bytes", true, 1, HUB_MAX_DISK_SIZE, &x->size_bytes,
                       NULL) == -1)
      goto field_fail;
    if (x->size_bytes % 512 != 0) {
      error_set (ERR_INVALID, "%s[%zu]: size_bytes must be a multiple of 512", key, i);
      goto fail;
    }
    x->vmware_disk_key = -1;
    x->unit_number = -1;
    if (api_field_int (d, "vmware_disk_key", false, 0, INT32_MAX, &num, &present) == -1)
      goto field_fail;
    if (present)
      x->vmware_disk_key = num;
    if (api_field_int (d, "unit_number", false, 0, INT32_MAX, &num, &present) == -1)
      goto field_fail;
    if (present)
      x->unit_number = num;
    if (api_field_str (d, "source", false, API_MAX_PATH, false, &source) == -1)
      goto field_fail;
    if (source && (*source == '\0' || (x->source = strdup (source)) == NULL)) {
      error_set (ERR_INVALID, "%s[%zu]: source must not be empty", key, i);
      goto fail;
    }
  }
  qsort (disks, count, sizeof *disks, cmp_disk);
  for (i = 1; i < count; i++)
    if (disks[i].disk_index == disks[i - 1].disk_index) {
      error_set (ERR_INVALID, "disk_index %d appears twice in '%s'",
                 disks[i].disk_index, key);
      goto fail;
    }
  *out = disks;
  *n = count;
  return 0;

 field_fail:
  error_prefix ("%s[%zu]", key, i);
 fail:
  api_disks_free (disks, count);
  return -1;
}

int
api_bad_word (const char *what, void (*words) (char *, size_t))
{
  char allowed[128];

  words (allowed, sizeof allowed);
  error_set (ERR_INVALID, "%s must be %s", what, allowed);
  return -1;
}

int
api_check_id (const char *what, const char *id)
{
  if (!id_valid (id)) {
    error_set (ERR_INVALID, "malformed %s: ids are 1 to %d characters of "
               "[A-Za-z0-9._-]", what, ID_MAX);
    return -1;
  }
  return 0;
}

int
api_field_bool (json_t *obj, const char *key, bool required, bool *out, bool *present)
{
  json_t *v;
  int f = field_value (obj, key, required, &v);

  if (present)
    *present = false;
  if (f <= 0)
    return f;
  if (!json_is_boolean (v)) {
    error_set (ERR_INVALID, "field '%s' must be true or false", key);
    return -1;
  }
  *out = json_is_true (v);
  if (present)
    *present = true;
  return 0;
}

/* The names of the retention rules, in the order they run. */
const char *const api_retention_keys[] = {
  "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
  NULL
};

int
api_field_retention (json_t *obj, struct retention_rules *out, bool *any)
{
  int64_t *rules[] = {
    &out->keep_last, &out->keep_hourly, &out->keep_daily, &out->keep_weekly,
    &out->keep_monthly, &out->keep_yearly,
  };

  *any = false;
  for (size_t i = 0; api_retention_keys[i]; i++) {
    bool present;
    *rules[i] = -1;
    if (api_field_int (obj, api_retention_keys[i], false, 0, API_MAX_KEEP, rules[i],
                       &present) == -1)
      return -1;
    *any |= present;
  }
  return 0;
}
