/* tests/fuzz/fuzz-names.c - libFuzzer target for VM names and ids.
 *
 * Both come from clients (bodies, URL paths, query strings) and both end up
 * near file names: an id directly, a VM name through the slug that id_new
 * makes of it.  id_check_vm_name and id_valid are held to the rules of
 * util/id.h both ways (fuzz.h restates them), and an id made from an
 * accepted name must itself be a valid id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/id.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = fuzz_cstr (data, size);
  size_t len = strlen (s);

  if (fuzz_vm_name (s) == 0) {
    char *id;

    /* The rule, spelt out once more as the brief of this target. */
    CHECK (len >= 1 && len <= VM_NAME_MAX);
    CHECK (strcmp (s, ".") != 0 && strcmp (s, "..") != 0);
    CHECK (strchr (s, '/') == NULL);
    for (size_t i = 0; i < len; i++)
      CHECK ((unsigned char) s[i] >= 0x20 && (unsigned char) s[i] != 0x7f);

    id = id_new ("backup", s);
    CHECK (id != NULL);
    CHECK (id_valid (id));
    CHECK (strncmp (id, "backup-", 7) == 0);
    free (id);
  }

  if (id_valid (s)) {
    CHECK (ref_id_ok (s));
    CHECK (len >= 1 && len <= ID_MAX);
    CHECK (strspn (s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-") == len);
  }
  else
    CHECK (!ref_id_ok (s));

  free (s);
  return 0;
}
