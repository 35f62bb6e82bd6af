/* tests/fuzz/fuzz-manifest.c - libFuzzer target for mf_open and the record
 * iterator (integrity/manifest.h), the reader of files that may have been
 * damaged or written by someone else.
 *
 * The input becomes the file (fuzz_scratch_file).  It is opened as it is, and again with the
 * footer's checksum made right when the footer's lengths fit the input, so
 * that mutations reach the header, the runs and the facts instead of all
 * dying at the checksum.  The input is also checked as a block part.  An
 * open that fails must say why; one that succeeds must yield records in
 * ascending block order inside the disk, of a known kind, ending cleanly,
 * the same on a second pass, and facts that are a JSON object.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "integrity/manifest.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static const char *path;

static uint64_t
le64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* A zero run may hold 2^32 blocks: the walk looks at this many records
 * and stops there (the open has checked the whole part already). */
#define WALK_MAX 100000

/* Iterate the records once; returns their count (WALK_MAX when it was
 * cut short). */
static uint64_t
walk (struct mf_reader *r)
{
  uint64_t nblocks = mf_blocks_for (mf_virtual_size (r)), n = 0, block, prev = 0;
  uint8_t hash[MF_HASH_LEN];
  enum mf_kind kind;
  int rr;

  while ((rr = mf_next (r, &block, &kind, hash)) == 1) {
    CHECK (block < nblocks);
    CHECK (n == 0 || block > prev);
    CHECK (kind == MF_DATA || kind == MF_ZERO);
    prev = block;
    if (++n == WALK_MAX)
      return n;
  }
  CHECK (rr == 0);
  CHECK (mf_next (r, &block, &kind, hash) == 0);
  return n;
}

static void
open_and_walk (void)
{
  struct mf_reader *r;
  uint64_t n;

  error_clear ();
  r = mf_open (path);
  if (r == NULL) {
    fuzz_check_invalid ();
    return;
  }
  CHECK (json_is_object (mf_facts (r)));
  CHECK (mf_virtual_size (r) >= 0);
  n = walk (r);
  CHECK (mf_rewind (r) == 0);
  CHECK (walk (r) == n);
  mf_close (r);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  path = fuzz_scratch_file (data, size);
  open_and_walk ();

  if (size >= 56) {
    int r;

    error_clear ();
    r = mf_part_check (path, (int64_t) (le64 (data + 16) & INT64_MAX));
    CHECK (r == 0 || r == -1);
    if (r == -1)
      fuzz_check_invalid ();
  }

  /* Again with a right checksum, when the footer's lengths fit. */
  if (size >= 32) {
    uint64_t off = le64 (data + size - 32), len = le64 (data + size - 24), body;
    if (!__builtin_add_overflow (off, len, &body) && body == size - 32) {
      uint8_t *copy = malloc (size);
      uint64_t sum = XXH3_64bits (data, body);
      CHECK (copy != NULL);
      memcpy (copy, data, size);
      for (int i = 0; i < 8; i++)
        copy[size - 16 + i] = sum >> (8 * i);
      fuzz_scratch_file (copy, size);
      free (copy);
      open_and_walk ();
    }
  }
  return 0;
}
