/* tests/fuzz/fuzz-relative.c - libFuzzer target for repo_relative, which
 * turns an incremental's parent image path into the backing-file name
 * recorded in the overlay.
 *
 * The input is split at its first NUL into FROM and TO.  Any split is run
 * (for the sanitizers); when both are what the hub passes - relative paths
 * whose components are ids - the result must be relative, use ".." only
 * as leading components, never climb above the repository root when read
 * from FROM's folder, and lead exactly to TO.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "storage/repo.h"
#include "util/id.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define MAX_DEPTH 64

/* Split p at '/' into comp[max], pointing into p (which is modified).
 * Returns the count, or -1 when there are more than max. */
static int
split (char *p, char *comp[], int max)
{
  int n = 0;
  for (char *tok = p, *slash; tok; tok = slash) {
    slash = strchr (tok, '/');
    if (slash)
      *slash++ = '\0';
    if (n == max)
      return -1;
    comp[n++] = tok;
  }
  return n;
}

/* A relative path of 1..MAX_DEPTH id components, as the hub makes. */
static bool
id_path (const char *p)
{
  char *copy = strdup (p), *comp[MAX_DEPTH];
  int n;
  bool ok;

  if (copy == NULL)
    abort ();
  n = split (copy, comp, MAX_DEPTH);
  ok = n >= 1;
  for (int i = 0; ok && i < n; i++)
    ok = id_valid (comp[i]);
  free (copy);
  return ok;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const uint8_t *nul = memchr (data, '\0', size);
  size_t flen = nul ? (size_t) (nul - data) : size;
  char *from = fuzz_cstr (data, flen);
  char *to = fuzz_cstr (nul ? nul + 1 : data + size, nul ? size - flen - 1 : 0);
  char *rel, *fcopy, *rcopy, *stack[2 * MAX_DEPTH], *rc[2 * MAX_DEPTH], *fc[MAX_DEPTH];
  size_t tlen = strlen (to), depth, joined_len;
  int nf, nr, i;
  bool climbing = true;
  char *joined;

  rel = repo_relative (from, to);
  CHECK (rel != NULL);
  if (!id_path (from) || !id_path (to)) {
    free (rel);
    free (from);
    free (to);
    return 0;
  }

  CHECK (rel[0] != '/' && rel[0] != '\0');
  CHECK (strlen (rel) <= 3 * strlen (from) + tlen);

  /* Walk rel from the folder holding FROM. */
  fcopy = strdup (from);
  rcopy = strdup (rel);
  CHECK (fcopy && rcopy);
  nf = split (fcopy, fc, MAX_DEPTH);
  nr = split (rcopy, rc, 2 * MAX_DEPTH);
  CHECK (nf >= 1 && nr >= 1);
  depth = 0;
  for (i = 0; i < nf - 1; i++)
    stack[depth++] = fc[i];
  for (i = 0; i < nr; i++) {
    if (strcmp (rc[i], "..") == 0) {
      CHECK (climbing);           /* ".." only leads */
      CHECK (depth > 0);          /* never above the root */
      depth--;
    }
    else {
      climbing = false;
      CHECK (id_valid (rc[i]));   /* no "", ".", or stray bytes */
      CHECK (depth < 2 * MAX_DEPTH);
      stack[depth++] = rc[i];
    }
  }

  joined_len = 0;
  for (size_t k = 0; k < depth; k++)
    joined_len += strlen (stack[k]) + 1;
  joined = malloc (joined_len + 1);
  CHECK (joined);
  joined[0] = '\0';
  for (size_t k = 0; k < depth; k++) {
    if (k)
      strcat (joined, "/");
    strcat (joined, stack[k]);
  }
  CHECK (strcmp (joined, to) == 0);

  free (joined);
  free (fcopy);
  free (rcopy);
  free (rel);
  free (from);
  free (to);
  return 0;
}
