/* tests/unit/test-manifest.c - integrity/manifest.h: block maps, block
 * parts, manifest files, their union, and a chain's needs and comparison.
 *
 * Blocks are real 64 KiB buffers hashed by the code under test; the chain
 * cases build small synthetic chains (a top, a shorter middle layer, a
 * bottom) whose expected view is worked out by hand from the composition
 * rule in the header.  Damaged files are made by flipping, cutting and
 * hand-writing bytes.  STRATA_KEEP_MANIFESTS=DIR also writes a few valid
 * manifests there (the fuzzer's seed corpus).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "tap.h"
#include "integrity/manifest.h"
#include "util/error.h"

#define BS ((int64_t) MF_BLOCK_SIZE)

static char dir[] = "/tmp/test-manifest.XXXXXX";
static uint8_t block_buf[MF_BLOCK_SIZE];

static char *
path_in (const char *name)
{
  char *p;
  if (asprintf (&p, "%s/%s", dir, name) == -1)
    abort ();
  return p;
}

/* A block's content: seed and block number, never all zero. */
static const uint8_t *
block_data (int seed, uint64_t block)
{
  for (size_t i = 0; i < sizeof block_buf; i++)
    block_buf[i] = (uint8_t) (seed * 31 + block * 7 + i % 251 + 1);
  return block_buf;
}

static void
hash_of (int seed, uint64_t block, uint8_t hash[MF_HASH_LEN])
{
  mf_hash_block (block_data (seed, block), MF_BLOCK_SIZE, hash);
}

/* One layer of a synthetic chain: "D" data (hashed with seed), "Z" zero,
 * "." not held, one letter per block; the virtual size is the letters'
 * count in blocks. */
static struct mf_map *
map_from (const char *spec, int seed)
{
  struct mf_map *m = mf_map_new ((int64_t) strlen (spec) * BS, dir);
  uint8_t h[MF_HASH_LEN];

  if (m == NULL)
    abort ();
  for (uint64_t b = 0; spec[b]; b++) {
    if (spec[b] == 'D') {
      hash_of (seed, b, h);
      mf_map_put (m, b, MF_DATA, h);
    }
    else if (spec[b] == 'Z')
      mf_map_put (m, b, MF_ZERO, NULL);
  }
  return m;
}

static json_t *
facts_for (int64_t size, const char *backup_id)
{
  return json_pack ("{s:I, s:s, s:i}", "size_bytes", (json_int_t) size,
                    "backup_id", backup_id, "disk_index", 0);
}

/* Write m as a part, finish it as name; returns the manifest's path. */
static char *
manifest_from (struct mf_map *m, const char *name)
{
  char *path = path_in (name), *part;
  json_t *facts = facts_for (mf_map_virtual_size (m), name);
  int fd;

  if (asprintf (&part, "%s.part", path) == -1)
    abort ();
  fd = open (part, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd == -1 || mf_map_write_part (m, fd) == -1 || close (fd) == -1 ||
      mf_finish (part, facts, path) == -1) {
    diag ("making %s: %s", name, error_message ());
    abort ();
  }
  json_decref (facts);
  free (part);
  return path;
}

/* The records of a manifest as a spec string like map_from's (data blocks
 * checked against seeds: the letter is 'a' + seed). */
static char *
spec_of (const char *path, const int *seeds, size_t nseeds)
{
  struct mf_reader *r = mf_open (path);
  uint64_t nblocks, b;
  enum mf_kind kind;
  uint8_t h[MF_HASH_LEN], want[MF_HASH_LEN];
  char *s;
  int rr;

  if (r == NULL) {
    diag ("open %s: %s", path, error_message ());
    return strdup ("(unreadable)");
  }
  nblocks = mf_blocks_for (mf_virtual_size (r));
  s = malloc (nblocks + 1);
  memset (s, '.', nblocks);
  s[nblocks] = '\0';
  while ((rr = mf_next (r, &b, &kind, h)) == 1) {
    if (kind == MF_ZERO)
      s[b] = 'Z';
    else {
      s[b] = '?';
      for (size_t k = 0; k < nseeds; k++) {
        hash_of (seeds[k], b, want);
        if (memcmp (h, want, MF_HASH_LEN) == 0)
          s[b] = 'a' + seeds[k];
      }
    }
  }
  if (rr == -1)
    diag ("reading %s: %s", path, error_message ());
  mf_close (r);
  return s;
}

static off_t
file_size (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? st.st_size : -1;
}

static void
test_hash_block (void)
{
  uint8_t h1[MF_HASH_LEN], h2[MF_HASH_LEN], padded[MF_BLOCK_SIZE] = { 0 };
  uint8_t *big = calloc (1, MF_BLOCK_SIZE);
  XXH128_canonical_t c;

  ok (mf_hash_block (big, MF_BLOCK_SIZE, h1) == MF_ZERO, "a block of zeroes is MF_ZERO");
  ok (mf_hash_block (big, 1000, h1) == MF_ZERO, "a short block of zeroes is MF_ZERO");
  big[MF_BLOCK_SIZE - 1] = 1;
  ok (mf_hash_block (big, MF_BLOCK_SIZE, h1) == MF_DATA, "one non-zero byte makes it data");
  XXH128_canonicalFromHash (&c, XXH3_128bits (big, MF_BLOCK_SIZE));
  ok (memcmp (h1, c.digest, MF_HASH_LEN) == 0, "the hash is XXH3-128 in canonical form");

  memcpy (padded, block_data (3, 0), 5000);
  mf_hash_block (block_data (3, 0), 5000, h1);
  mf_hash_block (padded, MF_BLOCK_SIZE, h2);
  ok (memcmp (h1, h2, MF_HASH_LEN) == 0,
      "a partial block hashes as the block zero-padded to 64 KiB");
  is_int (mf_blocks_for (0), 0, "no blocks for an empty disk");
  is_int (mf_blocks_for (BS + 1), 2, "a partial last block counts");
  free (big);
}

static void
test_map_round_trip (void)
{
  int64_t size = 10 * BS + 1000;
  struct mf_map *m = mf_map_new (size, dir);
  uint8_t *buf = calloc (3, MF_BLOCK_SIZE), *last = malloc (MF_BLOCK_SIZE);
  uint8_t h[MF_HASH_LEN], want[MF_HASH_LEN];
  char *path;
  struct mf_reader *r;
  uint64_t b, n = 0;
  enum mf_kind kind;
  bool same = true;
  int rr;

  /* blocks 0, 1 data; 2 zero (read as zeroes); 3-4 zero items; 7 data;
   * 10 the partial last block, with junk past the virtual size. */
  memcpy (buf, block_data (1, 0), MF_BLOCK_SIZE);
  memcpy (buf + BS, block_data (1, 1), MF_BLOCK_SIZE);
  ok (mf_map_put_buffer (m, 0, buf, 3 * MF_BLOCK_SIZE) == 0, "put a 3-block buffer");
  ok (mf_map_put_zero (m, 3 * BS, 2 * BS) == 0, "put two zero blocks");
  ok (mf_map_put_buffer (m, 7 * BS, block_data (1, 7), MF_BLOCK_SIZE) == 0, "put block 7");
  memcpy (last, block_data (1, 10), MF_BLOCK_SIZE);
  ok (mf_map_put_buffer (m, 10 * BS, last, 1000) == 0,
      "put the partial last block, ending at the virtual size");
  memset (last + 1000, 0xee, MF_BLOCK_SIZE - 1000);
  mf_map_get (m, 10, h);
  ok (mf_map_put_buffer (m, 10 * BS, last, MF_BLOCK_SIZE) == 0 &&
      mf_map_get (m, 10, want) == MF_DATA && memcmp (h, want, MF_HASH_LEN) == 0,
      "bytes past the virtual size count as zeroes whatever the buffer holds");
  ok (mf_map_put_buffer (m, 100, buf, MF_BLOCK_SIZE) == -1 && error_category () == ERR_INVALID,
      "an unaligned put is refused");
  ok (mf_map_put_zero (m, 11 * BS, BS) == -1, "a put past the disk is refused");
  is_int (mf_map_count (m, MF_DATA), 4, "4 data blocks");
  is_int (mf_map_count (m, MF_ZERO), 3, "3 zero blocks");
  is_int (mf_map_count (m, MF_NONE), 4, "4 blocks not held");

  path = manifest_from (m, "round");
  r = mf_open (path);
  ok (r != NULL, "the finished manifest opens: %s", r ? "" : error_message ());
  if (r) {
    is_int (mf_virtual_size (r), size, "its virtual size");
    ok (mf_hashed (r), "it has hashes");
    is_str (json_string_value (json_object_get (mf_facts (r), "backup_id")), "round",
            "the caller's facts are kept");
    is_str (json_string_value (json_object_get (mf_facts (r), "format")), "strata-manifest",
            "the format keys are added");
    is_int (json_integer_value (json_object_get (mf_facts (r), "block_size")), MF_BLOCK_SIZE,
            "block_size fact");
    while ((rr = mf_next (r, &b, &kind, h)) == 1) {
      n++;
      if (mf_map_get (m, b, want) != kind || (kind == MF_DATA && memcmp (h, want, 16) != 0))
        same = false;
    }
    is_int (rr, 0, "the records end cleanly");
    is_int (n, 7, "7 records");
    ok (same, "every record equals the map's");
    ok (mf_rewind (r) == 0 && mf_next (r, &b, &kind, h) == 1 && b == 0, "rewind starts over");
  }
  mf_close (r);
  ok (access (path, F_OK) == 0 && file_size (path) > 0, "the manifest is in place");
  {
    char *part;
    if (asprintf (&part, "%s.part", path) == -1)
      abort ();
    ok (access (part, F_OK) == -1 && errno == ENOENT, "the part is gone");
    free (part);
  }
  free (path);
  free (buf);
  free (last);
  mf_map_free (m);
}

/* --- Parts written by hand ------------------------------------------------ */

struct bytes {
  uint8_t b[4096];
  size_t n;
};

static void
put_le (struct bytes *x, uint64_t v, int len)
{
  for (int i = 0; i < len; i++)
    x->b[x->n++] = v >> (8 * i);
}

static void
put_header (struct bytes *x, uint32_t version, uint32_t bsize, uint64_t size, uint8_t alg)
{
  memcpy (x->b + x->n, "STRATAMF", 8);
  x->n += 8;
  put_le (x, version, 4);
  put_le (x, bsize, 4);
  put_le (x, size, 8);
  x->b[x->n++] = alg;
  memset (x->b + x->n, 0, 7);
  x->n += 7;
}

static void
put_run (struct bytes *x, uint64_t first, uint32_t count, uint32_t kind)
{
  put_le (x, first, 8);
  put_le (x, count, 4);
  put_le (x, kind, 4);
  if (kind == MF_DATA)
    for (uint32_t i = 0; i < count; i++) {
      hash_of (1, first + i, x->b + x->n);
      x->n += MF_HASH_LEN;
    }
}

static void
write_bytes (const char *path, const struct bytes *x)
{
  FILE *f = fopen (path, "w");
  if (f == NULL || fwrite (x->b, 1, x->n, f) != x->n || fclose (f) != 0)
    abort ();
}

static void
check_part (const char *what, const struct bytes *x, int64_t size, bool good)
{
  char *p = path_in ("hand.part");
  int r;

  write_bytes (p, x);
  r = mf_part_check (p, size);
  if (good)
    ok (r == 0, "part check accepts %s%s%s", what, r ? ": " : "", r ? error_message () : "");
  else
    ok (r == -1 && error_category () == ERR_INVALID,
        "part check refuses %s: %s", what, r ? error_message () : "(accepted)");
  free (p);
}

static void
test_part_check (void)
{
  const int64_t size = 8 * BS - 10;
  struct bytes x;

#define PART(what, good, ...) do { x.n = 0; __VA_ARGS__; check_part (what, &x, size, good); } while (0)
  PART ("a valid part", true,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 2, 1);
        put_run (&x, 2, 3, 2); put_run (&x, 7, 1, 1); put_run (&x, 0, 0, 0));
  PART ("adjacent runs of one kind", true,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 1, 1);
        put_run (&x, 1, 1, 1); put_run (&x, 0, 0, 0));
  PART ("no records at all", true,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 0, 0));
  PART ("an empty file", false, (void) 0);
  PART ("a bad magic", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); x.b[0] = 'X'; put_run (&x, 0, 0, 0));
  PART ("version 2", false, put_header (&x, 2, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 0, 0));
  PART ("a 4 KiB block size", false, put_header (&x, 1, 4096, size, 1); put_run (&x, 0, 0, 0));
  PART ("algorithm 2", false, put_header (&x, 1, MF_BLOCK_SIZE, size, 2); put_run (&x, 0, 0, 0));
  PART ("another virtual size", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size + 1, 1); put_run (&x, 0, 0, 0));
  PART ("non-zero reserved bytes", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); x.b[31] = 1; put_run (&x, 0, 0, 0));
  PART ("an empty run", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 3, 0, 2); put_run (&x, 0, 0, 0));
  PART ("an unknown kind", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 3, 1, 3); put_run (&x, 0, 0, 0));
  PART ("overlapping runs", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 3, 2);
        put_run (&x, 2, 1, 1); put_run (&x, 0, 0, 0));
  PART ("descending runs", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 5, 1, 2);
        put_run (&x, 1, 1, 1); put_run (&x, 0, 0, 0));
  PART ("a run past the disk", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 7, 2, 2); put_run (&x, 0, 0, 0));
  PART ("a run whose end overflows", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, UINT64_MAX, 2, 2);
        put_run (&x, 0, 0, 0));
  PART ("no end record", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 2, 1));
  PART ("a cut-off hash", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 2, 1); x.n -= 5);
  PART ("an end record that is not all zero", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 4, 0, 0));
  PART ("bytes after the end record", false,
        put_header (&x, 1, MF_BLOCK_SIZE, size, 1); put_run (&x, 0, 0, 0); x.b[x.n++] = 0);
#undef PART
  ok (mf_part_check ("/nonexistent/x.part", size) == -1 && error_category () == ERR_NOT_FOUND,
      "a missing part is ERR_NOT_FOUND");
}

static void
test_part_max (void)
{
  /* Alternating kinds: every block its own run. */
  char spec[65];
  struct mf_map *m;
  char *p = path_in ("alt.part");
  int fd;

  for (int i = 0; i < 64; i++)
    spec[i] = i % 2 ? 'Z' : 'D';
  spec[64] = '\0';
  m = map_from (spec, 2);
  fd = open (p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ok (fd >= 0 && mf_map_write_part (m, fd) == 0 && close (fd) == 0, "write an alternating part");
  is_int (file_size (p), 32 + 16 + 64 * 16 + 32 * 16, "header, a run header a block, hashes, end");
  ok ((uint64_t) file_size (p) <= mf_part_max (64 * BS), "within mf_part_max");
  is_int (mf_part_max (64 * BS), 32 + 16 + 64 * 32, "mf_part_max: a run header and a hash a block");
  ok (mf_part_check (p, 64 * BS) == 0, "the written part passes the check");
  mf_map_free (m);
  free (p);
}

/* Copy src to dst with one byte changed (at offset from the end when
 * negative), or cut to len bytes (len >= 0, flip < 0 unused). */
static void
damage (const char *src, const char *dst, long flip_at, long cut_to)
{
  FILE *f = fopen (src, "r");
  static uint8_t data[1 << 20];
  size_t n = fread (data, 1, sizeof data, f);
  FILE *g;

  fclose (f);
  if (flip_at != LONG_MIN) {
    size_t at = flip_at < 0 ? n + flip_at : (size_t) flip_at;
    data[at] ^= 0x40;
  }
  if (cut_to >= 0)
    n = cut_to;
  unlink (dst);
  g = fopen (dst, "w");
  fwrite (data, 1, n, g);
  fclose (g);
}

static void
refused (const char *path, const char *what, const char *needle)
{
  struct mf_reader *r = mf_open (path);

  ok (r == NULL && error_category () == ERR_INVALID &&
      strstr (error_message (), path) && strstr (error_message (), needle),
      "open refuses %s: %s", what, r ? "(accepted)" : error_message ());
  mf_close (r);
}

/* A whole manifest written by hand: part bytes, facts, a correct footer. */
static void
hand_manifest (const char *path, const struct bytes *part, const char *facts)
{
  struct bytes x = *part;
  size_t flen = strlen (facts);
  uint64_t sum;

  memcpy (x.b + x.n, facts, flen);
  x.n += flen;
  sum = XXH3_64bits (x.b, x.n);
  put_le (&x, part->n, 8);
  put_le (&x, flen, 8);
  put_le (&x, sum, 8);
  memcpy (x.b + x.n, "STRMFEND", 8);
  x.n += 8;
  write_bytes (path, &x);
}

/* Manifests written by hand with a right checksum: a header with this
 * algorithm, maybe a one-block data run, this many end records, facts. */
static const struct {
  uint8_t alg;
  bool data_run;
  int ends;
  const char *facts, *what, *needle;  /* needle NULL: valid (the last) */
} hand[] = {
  { 1, false, 2, "{\"hashed\":true}", "a block part that ends before the facts",
    "end where the facts" },
  { 1, true, 0, "{\"hashed\":true}", "a block part running into the facts", "truncated" },
  { 1, false, 1, "[1,2]", "facts that are not an object", "JSON object" },
  { 1, false, 1, "{\"hashed\":true", "facts that are not JSON", "JSON object" },
  { 1, false, 1, "{}", "facts without \"hashed\"", "hashed" },
  { 7, false, 1, "{\"hashed\":true}", "an unknown algorithm", "algorithm" },
  { 1, false, 1, "{\"hashed\":true}", "(valid)", NULL },
};

static void
test_open_damaged (void)
{
  struct mf_map *m = map_from ("DDZ.D", 1);
  char *good = manifest_from (m, "good"), *bad = path_in ("bad");
  long size = file_size (good);
  struct bytes part;
  struct mf_reader *r;

  damage (good, bad, 40, -1);
  refused (bad, "a flipped byte in the block part", "checksum");
  damage (good, bad, -40, -1);
  refused (bad, "a flipped byte in the facts", "checksum");
  damage (good, bad, -12, -1);
  refused (bad, "a flipped byte in the footer's checksum", "checksum");
  damage (good, bad, -1, -1);
  refused (bad, "a bad footer magic", "footer");
  damage (good, bad, -30, -1);
  refused (bad, "a bad facts offset", "footer");
  damage (good, bad, LONG_MIN, size - 1);
  refused (bad, "a file cut by one byte", "footer");
  damage (good, bad, LONG_MIN, 20);
  refused (bad, "a file cut to 20 bytes", "short");
  damage (good, bad, LONG_MIN, 0);
  refused (bad, "an empty file", "short");

  for (size_t i = 0; i < sizeof hand / sizeof hand[0]; i++) {
    part.n = 0;
    put_header (&part, 1, MF_BLOCK_SIZE, 4 * BS, hand[i].alg);
    if (hand[i].data_run)
      put_run (&part, 0, 1, MF_DATA);
    for (int k = 0; k < hand[i].ends; k++)
      put_run (&part, 0, 0, 0);
    hand_manifest (bad, &part, hand[i].facts);
    if (hand[i].needle)
      refused (bad, hand[i].what, hand[i].needle);
  }
  r = mf_open (bad);
  ok (r != NULL, "a hand-written manifest by the documented layout opens: %s",
      r ? "" : error_message ());
  mf_close (r);

  r = mf_open ("/nonexistent/x.manifest");
  ok (r == NULL && error_category () == ERR_NOT_FOUND, "a missing manifest is ERR_NOT_FOUND");
  free (good);
  free (bad);
  mf_map_free (m);
}

static void
test_facts_only (void)
{
  char *path = path_in ("facts-only");
  json_t *facts = facts_for (3 * BS, "f");
  struct mf_reader *r;
  uint64_t b;
  enum mf_kind k;

  ok (mf_finish (NULL, facts, path) == 0, "a manifest without a part");
  r = mf_open (path);
  ok (r && !mf_hashed (r) && mf_next (r, &b, &k, NULL) == 0 && mf_virtual_size (r) == 3 * BS,
      "it opens with no hashes and no records");
  mf_close (r);
  json_object_del (facts, "size_bytes");
  ok (mf_finish (NULL, facts, path) == -1 && error_category () == ERR_INVALID,
      "facts without size_bytes are refused");
  json_decref (facts);
  free (path);
}

/* The chain used below, top first:
 *   T  "DZ....D."   8 blocks
 *   M  ".DD.Z"      5 blocks (shorter)
 *   B  "DDDDDDDD"   8 blocks
 * The top's view: 0 T, 1 Z (T), 2 M, 3 B, 4 Z (M), 5-7 zero past M's end
 * except 6, which T holds. */
static const int seeds[] = { 1, 2, 3 };       /* T, M, B */
static char *chain_paths[3];

static void
build_chain (void)
{
  const char *specs[] = { "DZ....D.", ".DD.Z", "DDDDDDDD" };
  const char *names[] = { "T", "M", "B" };

  for (int i = 0; i < 3; i++) {
    struct mf_map *m = map_from (specs[i], seeds[i]);
    chain_paths[i] = manifest_from (m, names[i]);
    mf_map_free (m);
  }
}

static void
test_union (void)
{
  char *out = path_in ("U"), *s;
  json_t *facts = facts_for (8 * BS, "U");
  struct mf_reader *r;

  ok (mf_union ((const char *const *) chain_paths, 3, facts, out) == 0, "union of T, M, B");
  s = spec_of (out, seeds, 3);
  is_str (s, "bZcdZZbZ", "top wins; past M's end blocks not held above are zero records");
  free (s);
  r = mf_open (out);
  ok (r && json_is_true (json_object_get (mf_facts (r), "hashed")) &&
      strcmp (json_string_value (json_object_get (mf_facts (r), "backup_id")), "U") == 0,
      "the union carries the given facts");
  mf_close (r);

  json_object_set_new (facts, "size_bytes", json_integer (3 * BS + 5));
  ok (mf_union ((const char *const *) chain_paths + 1, 2, facts, out) == 0, "union of M, B");
  s = spec_of (out, seeds, 3);
  is_str (s, "dccd", "limited to size_bytes");
  free (s);

  /* One input is the output: it is replaced only at the end. */
  {
    char *copy = path_in ("Tcopy");
    const char *in[2];
    struct mf_map *m = map_from ("DZ....D.", 1);
    char *made = manifest_from (m, "Tcopy");

    in[0] = copy;
    in[1] = chain_paths[2];
    json_object_set_new (facts, "size_bytes", json_integer (8 * BS));
    ok (mf_union (in, 2, facts, copy) == 0, "union written over its own top input");
    s = spec_of (copy, seeds, 3);
    is_str (s, "bZddddbd", "T over B");
    free (s);
    json_object_set_new (facts, "origin", json_string ("merge"));
    ok (mf_refacts (copy, facts) == 0, "refacts");
    s = spec_of (copy, seeds, 3);
    is_str (s, "bZddddbd", "refacts keeps the records");
    free (s);
    r = mf_open (copy);
    is_str (r ? json_string_value (json_object_get (mf_facts (r), "origin")) : NULL, "merge",
            "refacts writes the new facts");
    mf_close (r);
    mf_map_free (m);
    free (made);
    free (copy);
  }

  {
    char *none = path_in ("none");
    json_t *f = facts_for (8 * BS, "none");
    const char *in[2] = { none, chain_paths[2] };
    mf_finish (NULL, f, none);
    ok (mf_union (in, 2, facts, out) == 0, "union with an input without hashes");
    r = mf_open (out);
    ok (r && !mf_hashed (r), "has no hashes");
    mf_close (r);
    json_decref (f);
    free (none);
  }
  json_decref (facts);
  free (out);
}

struct needs {
  char s[16];
  int layer_seed;
  bool hashes_ok;
};

static int
need_fn (void *opaque, uint64_t block, enum mf_kind kind, const uint8_t hash[MF_HASH_LEN])
{
  struct needs *n = opaque;
  uint8_t want[MF_HASH_LEN];

  n->s[block] = kind == MF_ZERO ? 'Z' : 'D';
  if (kind == MF_DATA) {
    hash_of (n->layer_seed, block, want);
    if (memcmp (want, hash, MF_HASH_LEN) != 0)
      n->hashes_ok = false;
  }
  return 0;
}

static void
test_chain_needs (void)
{
  struct mf_chain *c = mf_chain_open ((const char *const *) chain_paths, 3);
  const char *want[] = { "DZ....D.", "..D.Z...", "...D...." };

  ok (c != NULL, "chain opens");
  for (int i = 0; c && i < 3; i++) {
    struct needs n = { .layer_seed = seeds[i], .hashes_ok = true };
    memset (n.s, '.', 8);
    ok (mf_chain_layer_needs (c, i, need_fn, &n) == 0, "needs of layer %d", i);
    is_str (n.s, want[i], "layer %d gives the top what no layer above holds, before their ends",
            i);
    ok (n.hashes_ok, "with the layer's own hashes");
  }
  mf_chain_free (c);
  {
    const char *paths[] = { chain_paths[0], "/nonexistent/x" };
    ok (mf_chain_open (paths, 2) == NULL && error_category () == ERR_NOT_FOUND,
        "a chain with a missing manifest does not open");
  }
}

static void
test_chain_compare (void)
{
  struct mf_chain *c = mf_chain_open ((const char *const *) chain_paths, 3);
  struct mf_map *obs = mf_map_new (8 * BS, dir);
  struct mf_compare cmp;
  uint8_t h[MF_HASH_LEN];
  static uint8_t zero[MF_BLOCK_SIZE];

  /* The true view: 0 T, 1 Z, 2 M, 3 B, 4-5 Z, 6 T, 7 Z. */
  mf_map_put_buffer (obs, 0, block_data (1, 0), MF_BLOCK_SIZE);
  mf_map_put_zero (obs, 1 * BS, BS);
  mf_map_put_buffer (obs, 2 * BS, block_data (2, 2), MF_BLOCK_SIZE);
  mf_map_put_buffer (obs, 3 * BS, block_data (3, 3), MF_BLOCK_SIZE);
  mf_map_put_buffer (obs, 4 * BS, zero, MF_BLOCK_SIZE);
  mf_map_put_zero (obs, 5 * BS, BS);
  mf_map_put_buffer (obs, 6 * BS, block_data (1, 6), MF_BLOCK_SIZE);
  mf_map_put_zero (obs, 7 * BS, BS);
  ok (mf_chain_compare (c, obs, &cmp) == 0, "compare the true view");
  is_int (cmp.checked, 8, "8 blocks checked");
  is_int (cmp.bad, 0, "none bad");
  is_int (cmp.first_bad, -1, "no first bad offset");

  /* Block 5 shows B's data (the shorter M hides it: it must read zero),
   * block 2 shows B's instead of M's, block 3 is not observed. */
  hash_of (3, 5, h);
  mf_map_put (obs, 5, MF_DATA, h);
  hash_of (3, 2, h);
  mf_map_put (obs, 2, MF_DATA, h);
  mf_map_put (obs, 3, MF_NONE, NULL);
  ok (mf_chain_compare (c, obs, &cmp) == 0, "compare a damaged view");
  is_int (cmp.checked, 7, "7 blocks checked (one not observed)");
  is_int (cmp.bad, 2, "2 bad");
  is_int (cmp.first_bad, 2 * BS, "the first bad offset");
  ok (cmp.bad_offsets[0] == 2 * BS && cmp.bad_offsets[1] == 5 * BS && cmp.bad_offsets[2] == -1,
      "bad offsets in order: %lld %lld %lld", (long long) cmp.bad_offsets[0],
      (long long) cmp.bad_offsets[1], (long long) cmp.bad_offsets[2]);

  mf_map_free (obs);
  mf_chain_free (c);
}

/* --- Puts from several threads ------------------------------------------ */

#define THREADS 4
#define TBLOCKS 2000

struct worker {
  struct mf_map *m;
  int t;
  int failed;
};

static void *
put_worker (void *opaque)
{
  struct worker *w = opaque;
  uint8_t *buf = malloc (MF_BLOCK_SIZE);

  for (uint64_t b = w->t; b < TBLOCKS; b += THREADS) {
    if (b % 5 == 0) {
      w->failed += mf_map_put_zero (w->m, b * BS, BS) != 0;
      continue;
    }
    for (size_t i = 0; i < MF_BLOCK_SIZE; i++)
      buf[i] = (uint8_t) (b * 7 + i % 251 + 1);
    w->failed += mf_map_put_buffer (w->m, b * BS, buf, MF_BLOCK_SIZE) != 0;
  }
  free (buf);
  return NULL;
}

static void
test_threads (void)
{
  struct mf_map *m = mf_map_new (TBLOCKS * BS, dir);
  struct worker w[THREADS];
  pthread_t th[THREADS];
  uint8_t *buf = malloc (MF_BLOCK_SIZE), h[MF_HASH_LEN], want[MF_HASH_LEN];
  int failed = 0, wrong = 0;

  for (int t = 0; t < THREADS; t++) {
    w[t] = (struct worker) { m, t, 0 };
    pthread_create (&th[t], NULL, put_worker, &w[t]);
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join (th[t], NULL);
    failed += w[t].failed;
  }
  is_int (failed, 0, "%d threads put %d interleaved blocks", THREADS, TBLOCKS);
  is_int (mf_map_count (m, MF_ZERO), TBLOCKS / 5, "every zero block is there");
  is_int (mf_map_count (m, MF_DATA), TBLOCKS - TBLOCKS / 5, "every data block is there");
  for (uint64_t b = 0; b < TBLOCKS; b++) {
    if (b % 5 == 0)
      continue;
    for (size_t i = 0; i < MF_BLOCK_SIZE; i++)
      buf[i] = (uint8_t) (b * 7 + i % 251 + 1);
    mf_hash_block (buf, MF_BLOCK_SIZE, want);
    if (mf_map_get (m, b, h) != MF_DATA || memcmp (h, want, MF_HASH_LEN) != 0)
      wrong++;
  }
  is_int (wrong, 0, "every hash is the block's");
  free (buf);
  mf_map_free (m);
}

/* Valid manifests for the fuzzer's seed corpus. */
static void
keep_manifests (const char *to)
{
  const char *names[] = { "T", "M", "B", "round", "facts-only", "U" };

  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char *from = path_in (names[i]), *cmd;
    if (asprintf (&cmd, "cp '%s' '%s/%s'", from, to, names[i]) == -1 || system (cmd) != 0)
      diag ("could not keep %s", names[i]);
    free (cmd);
    free (from);
  }
}

int
main (void)
{
  const char *keep = getenv ("STRATA_KEEP_MANIFESTS");
  char *cmd;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  test_hash_block ();
  test_map_round_trip ();
  test_part_check ();
  test_part_max ();
  test_open_damaged ();
  test_facts_only ();
  build_chain ();
  test_union ();
  test_chain_needs ();
  test_chain_compare ();
  test_threads ();
  if (keep)
    keep_manifests (keep);
  for (int i = 0; i < 3; i++)
    free (chain_paths[i]);
  if (asprintf (&cmd, "rm -rf '%s'", dir) != -1 && system (cmd) != 0)
    diag ("could not remove %s", dir);
  free (cmd);
  return done_testing ();
}
