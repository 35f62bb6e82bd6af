/* tests/fuzz/fuzz-body.c - libFuzzer target for JSON request bodies.
 *
 * The input is parsed the way src/api/http.c parses a body, and an object
 * then goes through the validation of every route that takes one, in the
 * route's own order and with its own limits: POST /backups, .../complete,
 * .../fail, PUT /vms/{name} and POST /repositories.  Each validator is held
 * to what its comment in api/api-int.h promises, on success and on failure,
 * and everything is freed so that LeakSanitizer sees a leak as a crash.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/api-int.h"
#include "hub/hub.h"
#include "util/error.h"
#include "util/id.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static bool
has_control (const char *s, size_t len, bool allow_newlines)
{
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if ((c < 0x20 || c == 0x7f) && !(allow_newlines && (c == '\n' || c == '\t')))
      return true;
  }
  return false;
}

static bool
in_list (const char *const list[], const char *key)
{
  for (const char *const *a = list; *a; a++)
    if (strcmp (*a, key) == 0)
      return true;
  return false;
}

/* api_body: it succeeds exactly when every key is allowed. */
static int
body (struct api_req *r, const char *const allowed[], json_t **obj)
{
  const char *key;
  json_t *v;
  bool all_known = true;
  int ret;

  error_clear ();
  ret = api_body (r, allowed, false, obj);
  json_object_foreach (r->body, key, v)
    all_known = all_known && in_list (allowed, key);
  CHECK ((ret == 0) == all_known);
  CHECK (*obj == r->body);
  if (ret == -1)
    fuzz_check_invalid ();
  return ret;
}

static int
field_str (json_t *obj, const char *key, bool required, size_t maxlen,
           bool allow_newlines, const char **out)
{
  json_t *v = json_object_get (obj, key);
  int ret;

  error_clear ();
  ret = api_field_str (obj, key, required, maxlen, allow_newlines, out);
  if (ret == -1) {
    CHECK (*out == NULL);
    fuzz_check_invalid ();
  }
  else if (*out == NULL)
    CHECK (!required && (v == NULL || json_is_null (v)));
  else {
    size_t len = strlen (*out);
    CHECK (json_is_string (v) && *out == json_string_value (v));
    CHECK (len == json_string_length (v) && len <= maxlen);
    CHECK (!has_control (*out, len, allow_newlines));
  }
  return ret;
}

static int
field_int (json_t *obj, const char *key, bool required, int64_t min, int64_t max,
           int64_t *out)
{
  json_t *v = json_object_get (obj, key);
  int64_t before = *out;
  bool present = true;
  int ret;

  error_clear ();
  ret = api_field_int (obj, key, required, min, max, out, &present);
  if (ret == -1) {
    CHECK (!present);
    fuzz_check_invalid ();
  }
  else if (!present) {
    CHECK (!required && (v == NULL || json_is_null (v)));
    CHECK (*out == before);
  }
  else {
    CHECK (json_is_integer (v) && json_integer_value (v) == *out);
    CHECK (*out >= min && *out <= max);
  }
  return ret;
}

static int
check_id (const char *what, const char *id)
{
  int ret;

  error_clear ();
  ret = api_check_id (what, id);
  CHECK ((ret == 0) == ref_id_ok (id));
  if (ret == -1)
    fuzz_check_invalid ();
  return ret;
}

/* api_field_disks, and on success the promise of api/api-int.h and
 * hub/hub.h: 1..HUB_MAX_DISKS disks sorted by a distinct disk_index in
 * [0, HUB_MAX_DISK_INDEX], each a positive multiple of 512 bytes no larger
 * than HUB_MAX_DISK_SIZE.  The caller frees with api_disks_free. */
static int
field_disks (json_t *obj, const char *key, struct cat_vm_disk **out, size_t *n)
{
  json_t *arr = json_object_get (obj, key);
  int ret;

  error_clear ();
  ret = api_field_disks (obj, key, out, n);
  if (ret == -1) {
    CHECK (*out == NULL && *n == 0);
    fuzz_check_invalid ();
    return -1;
  }
  CHECK (*out != NULL && json_is_array (arr) && *n == json_array_size (arr));
  CHECK (*n >= 1 && *n <= HUB_MAX_DISKS);
  for (size_t i = 0; i < *n; i++) {
    const struct cat_vm_disk *d = &(*out)[i];
    CHECK (d->disk_index >= 0 && d->disk_index <= HUB_MAX_DISK_INDEX);
    CHECK (i == 0 || d->disk_index > (*out)[i - 1].disk_index);
    CHECK (d->size_bytes > 0 && d->size_bytes <= HUB_MAX_DISK_SIZE);
    CHECK (d->size_bytes % 512 == 0);
    CHECK (d->vmware_disk_key >= -1 && d->vmware_disk_key <= INT32_MAX);
    CHECK (d->unit_number >= -1 && d->unit_number <= INT32_MAX);
    if (d->source) {
      size_t len = strlen (d->source);
      CHECK (len >= 1 && len <= 4096 && !has_control (d->source, len, false));
    }
  }
  return 0;
}

/* POST /api/v1/backups (api_backups_start). */
static void
route_backup_start (json_t *obj)
{
  static const char *const fields[] = {
    "vm_name", "repository_id", "backup_type", "disks", NULL
  };
  struct api_req r = { .body = obj };
  const char *vm_name, *repository_id, *backup_type;
  struct cat_vm_disk *disks = NULL;
  size_t n = 0;
  json_t *b, *jd;

  if (body (&r, fields, &b) == -1 ||
      field_str (b, "vm_name", true, 1024, false, &vm_name) == -1 ||
      fuzz_vm_name (vm_name) == -1 ||
      field_str (b, "repository_id", false, 1024, false, &repository_id) == -1 ||
      (repository_id && check_id ("repository_id", repository_id) == -1) ||
      field_str (b, "backup_type", true, 32, false, &backup_type) == -1 ||
      (strcmp (backup_type, "full") != 0 && strcmp (backup_type, "incremental") != 0))
    return;
  jd = json_object_get (b, "disks");
  if (jd && !json_is_null (jd) && field_disks (b, "disks", &disks, &n) == -1)
    return;
  api_disks_free (disks, n);
}

/* POST /api/v1/backups/{id}/complete (api_backups_complete). */
static void
route_backup_complete (json_t *obj)
{
  static const char *const fields[] = { "disk_id", "change_id", "bytes_transferred", NULL };
  struct api_req r = { .body = obj };
  const char *change_id;
  int64_t disk_id = -1, bytes = 0;
  json_t *b;

  if (body (&r, fields, &b) == -1 ||
      field_int (b, "disk_id", true, 0, HUB_MAX_DISK_INDEX, &disk_id) == -1 ||
      field_str (b, "change_id", false, HUB_MAX_CHANGE_ID, false, &change_id) == -1 ||
      field_int (b, "bytes_transferred", false, 0, INT64_C (1) << 62, &bytes) == -1)
    return;
  CHECK (disk_id >= 0 && disk_id <= HUB_MAX_DISK_INDEX && bytes >= 0);
}

/* POST /api/v1/backups/{id}/fail (end_job in api/backups.c). */
static void
route_backup_fail (json_t *obj)
{
  static const char *const fields[] = { "disk_id", "error", NULL };
  struct api_req r = { .body = obj };
  const char *error;
  int64_t disk_id = -1;
  json_t *b;

  if (body (&r, fields, &b) == -1 ||
      field_int (b, "disk_id", false, 0, HUB_MAX_DISK_INDEX, &disk_id) == -1 ||
      field_str (b, "error", true, HUB_MAX_ERROR, true, &error) == -1)
    return;
  CHECK (error != NULL && disk_id >= -1 && disk_id <= HUB_MAX_DISK_INDEX);
}

/* PUT /api/v1/vms/{vm_name} (api_vms_put); the name comes from the URL. */
static void
route_vm_put (json_t *obj)
{
  static const char *const fields[] = {
    "vmware_vm_id", "vm_path", "vcenter_host", "datacenter", "disks", NULL
  };
  struct api_req r = { .body = obj };
  const char *vmware_vm_id, *vm_path, *vcenter_host, *datacenter;
  struct cat_vm_disk *disks = NULL;
  size_t n = 0;
  json_t *b;

  if (body (&r, fields, &b) == -1 ||
      field_str (b, "vmware_vm_id", false, 255, false, &vmware_vm_id) == -1 ||
      field_str (b, "vm_path", false, 500, false, &vm_path) == -1 ||
      field_str (b, "vcenter_host", false, 255, false, &vcenter_host) == -1 ||
      field_str (b, "datacenter", false, 255, false, &datacenter) == -1 ||
      field_disks (b, "disks", &disks, &n) == -1)
    return;
  api_disks_free (disks, n);
}

/* POST /api/v1/repositories (api_repos_create). */
static void
route_repo_create (json_t *obj)
{
  static const char *const fields[] = { "id", "name", "type", "path", NULL };
  struct api_req r = { .body = obj };
  const char *id, *name, *type, *path;
  json_t *b;

  if (body (&r, fields, &b) == -1 ||
      field_str (b, "id", false, 128, false, &id) == -1 ||
      field_str (b, "name", true, 255, false, &name) == -1 ||
      field_str (b, "type", true, 32, false, &type) == -1 ||
      field_str (b, "path", true, 4000, false, &path) == -1 ||
      (id && check_id ("repository id", id) == -1))
    return;
  CHECK (name && type && path);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  json_error_t jerr;
  json_t *root = json_loadb ((const char *) data, size, JSON_REJECT_DUPLICATES, &jerr);

  if (root == NULL)
    return 0;
  if (json_is_object (root)) {
    route_backup_start (root);
    route_backup_complete (root);
    route_backup_fail (root);
    route_vm_put (root);
    route_repo_create (root);
  }
  json_decref (root);
  return 0;
}
