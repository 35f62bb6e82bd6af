/* integrity/file.c - manifest files: making them (mf_finish, mf_union,
 * mf_refacts) and reading them (mf_open and the record iterator).
 *
 * A manifest is the block part, the facts and the footer (docs/MANIFEST.md).
 * Writers stream the block part through a 64 KiB buffer and keep the
 * footer's XXH3-64 as they go, so a 1 TiB disk's 256 MiB of hashes never
 * sit in memory.  mf_open trusts nothing in the file: every length is
 * checked against the file's size before it is used, the only allocation a
 * field decides is the facts (at most MF_FACTS_MAX), and the whole block
 * part is parsed once so that its end record lands exactly on the facts.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "integrity/manifest-int.h"
#include "util/cleanup.h"
#include "util/error.h"

struct mf_reader {
  char *what;                   /* "manifest PATH", for errors */
  int fd;
  int64_t virtual_size;
  bool hashed;
  json_t *facts;
  uint64_t facts_offset;
  struct mf_in in;
  struct mf_recs recs;
};

/* --- Writing ------------------------------------------------------------ */

/* What a manifest's writer needs: the block part comes from part,
 * then the facts and the footer follow. */
struct writing {
  json_t *facts;                /* with the format keys */
  int (*part) (void *opaque, struct mf_out *out);
  void *opaque;
};

static int
write_manifest (void *opaque, int fd)
{
  struct writing *w = opaque;
  CLEANUP_FREE struct mf_out *out = malloc (sizeof *out);
  CLEANUP_FREE char *facts = NULL;
  XXH3_state_t *xs = XXH3_createState ();
  uint8_t footer[MF_FOOTER_LEN];
  uint64_t facts_offset;
  size_t facts_len;
  int ret = -1;

  if (out == NULL || xs == NULL ||
      (facts = json_dumps (w->facts, JSON_COMPACT)) == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "writing a manifest");
    goto out;
  }
  facts_len = strlen (facts);
  XXH3_64bits_reset (xs);
  mf_out_init (out, fd, xs);
  if (w->part (w->opaque, out) == -1)
    goto out;
  facts_offset = out->written;
  if (mf_out_write (out, facts, facts_len) == -1)
    goto out;
  mf_le64 (footer, facts_offset);
  mf_le64 (footer + 8, facts_len);
  mf_le64 (footer + 16, XXH3_64bits_digest (xs));
  memcpy (footer + 24, MF_END_MAGIC, 8);
  out->xs = NULL;
  if (mf_out_write (out, footer, sizeof footer) == -1 || mf_out_flush (out) == -1)
    goto out;
  ret = 0;
 out:
  XXH3_freeState (xs);
  return ret;
}

/* A copy of facts with the format keys set. */
static json_t *
format_facts (json_t *facts, bool hashed)
{
  json_t *f;

  if (!json_is_object (facts)) {
    error_set (ERR_INVALID, "manifest facts must be a JSON object");
    return NULL;
  }
  f = json_deep_copy (facts);
  if (f == NULL ||
      json_object_set_new (f, "format", json_string ("strata-manifest")) == -1 ||
      json_object_set_new (f, "version", json_integer (MF_VERSION)) == -1 ||
      json_object_set_new (f, "block_size", json_integer (MF_BLOCK_SIZE)) == -1 ||
      json_object_set_new (f, "algorithm", json_string (MF_ALGORITHM)) == -1 ||
      json_object_set_new (f, "hashed", json_boolean (hashed)) == -1) {
    json_decref (f);
    error_set_errno (ERR_INTERNAL, ENOMEM, "manifest facts");
    return NULL;
  }
  return f;
}

static int
write_file (const char *final_path, json_t *facts, bool hashed,
            int (*part) (void *opaque, struct mf_out *out), void *opaque)
{
  CLEANUP_JSON json_t *f = format_facts (facts, hashed);
  struct writing w = { f, part, opaque };

  if (f == NULL)
    return -1;
  if (mf_replace (final_path, write_manifest, &w) == -1) {
    error_prefix ("manifest %s: ", final_path);
    return -1;
  }
  return 0;
}

/* A block part with no records: a manifest without hashes. */
static int
part_empty (void *opaque, struct mf_out *out)
{
  const int64_t *size = opaque;
  CLEANUP_FREE struct mf_runs *runs = malloc (sizeof *runs);
  uint8_t header[MF_HEADER_LEN];

  if (runs == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "writing a manifest");
    return -1;
  }
  mf_header_make (header, *size);
  mf_runs_init (runs, out);
  if (mf_out_write (out, header, sizeof header) == -1 || mf_runs_end (runs) == -1)
    return -1;
  return 0;
}

/* The block part copied byte for byte from a checked part file. */
static int
part_copy (void *opaque, struct mf_out *out)
{
  const char *path = opaque;
  CLEANUP_FD int fd = open (path, O_RDONLY | O_CLOEXEC);
  uint8_t buf[MF_IO_BUF];
  ssize_t r;

  if (fd == -1) {
    error_set_errno (ERR_INTERNAL, errno, "block part %s", path);
    return -1;
  }
  while ((r = read (fd, buf, sizeof buf)) != 0) {
    if (r == -1) {
      if (errno == EINTR)
        continue;
      error_set_errno (ERR_INTERNAL, errno, "reading block part %s", path);
      return -1;
    }
    if (mf_out_write (out, buf, r) == -1)
      return -1;
  }
  return 0;
}

int
mf_finish (const char *part_path, json_t *facts, const char *final_path)
{
  int64_t size;

  if (mf_facts_size (facts, -1, &size) == -1)
    return -1;
  if (part_path == NULL)
    return write_file (final_path, facts, false, part_empty, &size);
  if (mf_part_check (part_path, size) == -1 ||
      write_file (final_path, facts, true, part_copy, (void *) part_path) == -1)
    return -1;
  if (unlink (part_path) == -1 && errno != ENOENT) {
    error_set_errno (ERR_INTERNAL, errno, "removing block part %s", part_path);
    return -1;
  }
  return 0;
}

/* The union's inputs, each with its current record. */
struct union_in {
  struct mf_reader *r;
  uint64_t nblocks;
  uint64_t block;               /* UINT64_MAX after the last record */
  enum mf_kind kind;
  uint8_t hash[MF_HASH_LEN];
};

struct union_state {
  struct union_in *in;
  size_t n;
  int64_t size;
};

static int
union_advance (struct union_in *u)
{
  int r = mf_next (u->r, &u->block, &u->kind, u->hash);

  if (r == 0)
    u->block = UINT64_MAX;
  return r == -1 ? -1 : 0;
}

/* The k-way merge: candidate blocks are every input's next record and,
 * from the first end of any input on, every block (past that end the view
 * is a zero record unless an input above holds the block). */
static int
part_union (void *opaque, struct mf_out *out)
{
  struct union_state *s = opaque;
  CLEANUP_FREE struct mf_runs *runs = malloc (sizeof *runs);
  uint64_t nblocks = mf_blocks_for (s->size), first_end = UINT64_MAX;
  uint8_t header[MF_HEADER_LEN];
  uint64_t b = 0;

  if (runs == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "writing a manifest");
    return -1;
  }
  mf_header_make (header, s->size);
  mf_runs_init (runs, out);
  if (mf_out_write (out, header, sizeof header) == -1)
    return -1;
  for (size_t i = 0; i < s->n; i++) {
    if (s->in[i].nblocks < first_end)
      first_end = s->in[i].nblocks;
    if (mf_rewind (s->in[i].r) == -1 || union_advance (&s->in[i]) == -1)
      return -1;
  }

  while (b < nblocks) {
    uint64_t next = b >= first_end ? b : first_end;

    for (size_t i = 0; i < s->n; i++)
      if (s->in[i].block < next)
        next = s->in[i].block;
    if (next >= nblocks)
      break;
    b = next;
    for (size_t i = 0; i < s->n; i++) {
      struct union_in *u = &s->in[i];
      if (b >= u->nblocks) {
        if (mf_runs_put (runs, b, MF_ZERO, NULL) == -1)
          return -1;
        break;
      }
      if (u->block == b) {
        if (mf_runs_put (runs, b, u->kind, u->hash) == -1)
          return -1;
        break;
      }
    }
    for (size_t i = 0; i < s->n; i++)
      if (s->in[i].block == b && union_advance (&s->in[i]) == -1)
        return -1;
    b++;
  }
  return mf_runs_end (runs);
}

int
mf_union (const char *const *inputs, size_t n, json_t *facts, const char *final_path)
{
  CLEANUP_FREE struct union_in *in = NULL;
  struct union_state s;
  bool hashed = true;
  int ret = -1;
  size_t i;

  if (n == 0) {
    error_set (ERR_INVALID, "manifest union of no inputs");
    return -1;
  }
  in = calloc (n, sizeof *in);
  if (in == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "manifest union");
    return -1;
  }
  for (i = 0; i < n; i++) {
    in[i].r = mf_open (inputs[i]);
    if (in[i].r == NULL)
      goto out;
    in[i].nblocks = mf_blocks_for (mf_virtual_size (in[i].r));
    hashed = hashed && mf_hashed (in[i].r);
  }
  s.in = in;
  s.n = n;
  if (mf_facts_size (facts, mf_virtual_size (in[0].r), &s.size) == -1)
    goto out;
  if (hashed)
    ret = write_file (final_path, facts, true, part_union, &s);
  else
    ret = write_file (final_path, facts, false, part_empty, &s.size);
 out:
  for (i = 0; i < n; i++)
    mf_close (in[i].r);
  return ret;
}

int
mf_refacts (const char *path, json_t *facts)
{
  return mf_union (&path, 1, facts, path);
}

/* --- Reading ------------------------------------------------------------ */

void
mf_close (struct mf_reader *r)
{
  if (r == NULL)
    return;
  if (r->fd >= 0)
    close (r->fd);
  json_decref (r->facts);
  free (r->what);
  free (r);
}

static int
bad (struct mf_reader *r, const char *msg)
{
  error_set (ERR_INVALID, "%s: %s", r->what, msg);
  return -1;
}

/* The footer, the checksum, the header, the block part and the facts. */
static int
reader_check (struct mf_reader *r)
{
  CLEANUP_FREE char *facts = NULL;
  uint8_t footer[MF_FOOTER_LEN], header[MF_HEADER_LEN], buf[MF_IO_BUF];
  uint64_t size, facts_offset, facts_len, body, sum, block;
  XXH3_state_t *xs;
  enum mf_kind kind;
  json_error_t jerr;
  json_t *hashed;
  struct stat st;
  int rr;

  if (fstat (r->fd, &st) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "%s", r->what);
    return -1;
  }
  if (!S_ISREG (st.st_mode))
    return bad (r, "not a regular file");
  size = st.st_size;
  if (size < MF_HEADER_LEN + MF_RUN_LEN + MF_FOOTER_LEN)
    return bad (r, "too short to be a manifest");
  if (pread (r->fd, footer, sizeof footer, size - MF_FOOTER_LEN) != MF_FOOTER_LEN)
    return bad (r, "cannot read the footer");
  if (memcmp (footer + 24, MF_END_MAGIC, 8) != 0)
    return bad (r, "no footer (truncated or not a manifest)");
  facts_offset = mf_get64 (footer);
  facts_len = mf_get64 (footer + 8);
  if (facts_offset < MF_HEADER_LEN + MF_RUN_LEN ||
      __builtin_add_overflow (facts_offset, facts_len, &body) ||
      body != size - MF_FOOTER_LEN)
    return bad (r, "footer lengths do not match the file's size");
  if (facts_len == 0 || facts_len > MF_FACTS_MAX)
    return bad (r, "facts length out of range");

  /* The checksum over the block part and the facts. */
  xs = XXH3_createState ();
  if (xs == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "%s", r->what);
    return -1;
  }
  XXH3_64bits_reset (xs);
  mf_in_init (&r->in, r->fd, 0, body);
  for (uint64_t left = body; left > 0; ) {
    size_t n = left < sizeof buf ? left : sizeof buf;
    if ((rr = mf_in_read (&r->in, buf, n)) != 1) {
      XXH3_freeState (xs);
      return rr == 0 ? bad (r, "shorter than its footer says") : -1;
    }
    XXH3_64bits_update (xs, buf, n);
    left -= n;
  }
  sum = XXH3_64bits_digest (xs);
  XXH3_freeState (xs);
  if (sum != mf_get64 (footer + 16))
    return bad (r, "checksum mismatch (the file is damaged)");

  if (pread (r->fd, header, sizeof header, 0) != MF_HEADER_LEN)
    return bad (r, "cannot read the header");
  if (mf_header_parse (header, r->what, &r->virtual_size) == -1)
    return -1;
  r->facts_offset = facts_offset;

  /* The block part, once through, must end exactly where the facts begin. */
  if (mf_rewind (r) == -1)
    return -1;
  while ((rr = mf_next (r, &block, &kind, NULL)) == 1)
    if (mf_recs_skip_run (&r->recs) == -1)
      return -1;
  if (rr == -1)
    return -1;
  if (mf_in_tell (&r->in) != facts_offset)
    return bad (r, "block part does not end where the facts begin");

  facts = malloc (facts_len);
  if (facts == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "%s", r->what);
    return -1;
  }
  if (pread (r->fd, facts, facts_len, facts_offset) != (ssize_t) facts_len)
    return bad (r, "cannot read the facts");
  r->facts = json_loadb (facts, facts_len, JSON_REJECT_DUPLICATES, &jerr);
  if (r->facts == NULL || !json_is_object (r->facts))
    return bad (r, "facts are not a JSON object");
  hashed = json_object_get (r->facts, "hashed");
  if (!json_is_boolean (hashed))
    return bad (r, "facts have no \"hashed\" boolean");
  r->hashed = json_is_true (hashed);
  return mf_rewind (r);
}

struct mf_reader *
mf_open (const char *path)
{
  struct mf_reader *r = calloc (1, sizeof *r);

  if (r == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "manifest %s", path);
    return NULL;
  }
  r->fd = -1;
  if (asprintf (&r->what, "manifest %s", path) == -1) {
    r->what = NULL;
    error_set_errno (ERR_INTERNAL, ENOMEM, "manifest %s", path);
    mf_close (r);
    return NULL;
  }
  r->fd = open (path, O_RDONLY | O_CLOEXEC);
  if (r->fd == -1) {
    error_set_errno (errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno, "%s", r->what);
    mf_close (r);
    return NULL;
  }
  if (reader_check (r) == -1) {
    mf_close (r);
    return NULL;
  }
  return r;
}

json_t *
mf_facts (const struct mf_reader *r)
{
  return r->facts;
}

bool
mf_hashed (const struct mf_reader *r)
{
  return r->hashed;
}

int64_t
mf_virtual_size (const struct mf_reader *r)
{
  return r->virtual_size;
}

int
mf_rewind (struct mf_reader *r)
{
  mf_in_init (&r->in, r->fd, MF_HEADER_LEN, r->facts_offset);
  mf_recs_init (&r->recs, &r->in, r->what, mf_blocks_for (r->virtual_size));
  return 0;
}

int
mf_next (struct mf_reader *r, uint64_t *block, enum mf_kind *kind,
         uint8_t hash[MF_HASH_LEN])
{
  return mf_recs_next (&r->recs, block, kind, hash);
}
