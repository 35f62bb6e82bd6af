/* tests/fuzz/fuzz-legacy-config.c - libFuzzer target for the config JSON of
 * a legacy backup_repositories row, read by `strata migrate-legacy`
 * (legacy_repo_folder in catalog/legacy.c).
 *
 * The first byte picks the repository_type (local, nfs, cifs, or one that
 * is none of them); the rest is the config text.  A folder it accepts must
 * be what catalog/legacy.h promises: absolute, not the root, without a
 * trailing slash or a "." or ".." component, and come with its origin; an
 * unknown type is never accepted; a refusal must say why and hand out
 * nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/legacy.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Absolute, not "/", no trailing '/', no "." or ".." component. */
static bool
ref_folder_ok (const char *f)
{
  size_t n = strlen (f);

  if (n < 2 || f[0] != '/' || f[n - 1] == '/')
    return false;
  for (const char *c = f; *c; c++)
    if (c[0] == '/' && c[1] == '.' &&
        (c[2] == '\0' || c[2] == '/' || (c[2] == '.' && (c[3] == '\0' || c[3] == '/'))))
      return false;
  return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const types[] = { "local", "nfs", "cifs", "s3" };
  const char *type;
  char *config, *folder = (char *) 1, *origin = (char *) 1;
  int r;

  if (size < 1)
    return 0;
  type = types[data[0] % 4];
  config = fuzz_cstr (data + 1, size - 1);
  error_clear ();
  r = legacy_repo_folder (type, config, &folder, &origin);
  if (r == 0) {
    CHECK (strcmp (type, "s3") != 0);
    CHECK (folder != NULL && origin != NULL);
    CHECK (ref_folder_ok (folder));
    free (folder);
    free (origin);
  }
  else {
    CHECK (r == -1);
    CHECK (folder == NULL && origin == NULL);
    fuzz_check_invalid ();
  }
  free (config);
  return 0;
}
