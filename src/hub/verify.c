/* hub/verify.c - verify tasks and audits: does a point still hold what its
 * source held?
 *
 * A point's view of a disk is its own file over its chain of parents.  The
 * manifests say, per 64 KiB block, which layer holds it and what its hash
 * was when the data left the source (integrity/manifest.h).  A verify task
 * checks each file of each chain for what can break around the data
 * (missing, not a sound QCOW2, another size or backing file than the
 * catalog's, a manifest that is not its own), then reads, for each layer,
 * the blocks the point takes from it, through a private read-only qemu-nbd
 * of that file alone (no backing), and compares each block's hash with the
 * manifest.  Per task a bitmap per file remembers which blocks were read
 * and which were bad, so a block is read once whatever the number of
 * points that need it, and a bad block counts against every point that
 * reads through it, and only those.
 *
 * The outcome is recorded per disk and per point (catalog_verify_record).
 * A corrupt point's chain is never built on again: the catalog's planning
 * rule turns the next backup of that disk into a full.
 *
 * Verify and merge steps exclude each other per context: a step waits while
 * a verify task reads the context (hub->verifying; prune.c's step_blocked)
 * and a verify waits while a step writes (hub_merge_wait).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "engine/engine.h"
#include "hub/hub-int.h"
#include "integrity/manifest.h"
#include "storage/qnbd.h"
#include "storage/repo.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"
#include "util/log.h"
#include "util/proc.h"

#define MAX_OFFSETS 8

/* --- A disk's chain ---------------------------------------------------- */

struct link {
  int64_t disk_id;
  char *backup_id;
  char *rel;                  /* qcow2_path, or NULL once gone */
  int64_t size_bytes;
};

struct chain {
  struct link *v;             /* top (the point's own) first */
  size_t n;
};

static void
chain_clear (struct chain *c)
{
  for (size_t i = 0; i < c->n; i++) {
    free (c->v[i].backup_id);
    free (c->v[i].rel);
  }
  free (c->v);
  memset (c, 0, sizeof *c);
}
#define CLEANUP_CHAIN __attribute__((cleanup (chain_clear)))

static int
chain_push (struct chain *c, const struct cat_disk *d)
{
  struct link *v = realloc (c->v, (c->n + 1) * sizeof *v);
  if (v == NULL)
    goto oom;
  c->v = v;
  v[c->n] = (struct link) { .disk_id = d->id, .size_bytes = d->size_bytes };
  v[c->n].backup_id = strdup (d->backup_job_id);
  v[c->n].rel = d->qcow2_path ? strdup (d->qcow2_path) : NULL;
  c->n++;
  if (v[c->n - 1].backup_id == NULL || (d->qcow2_path && v[c->n - 1].rel == NULL))
    goto oom;
  return 0;
 oom:
  error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
  return -1;
}

/* The rows of a disk's chain, from the catalog's parent links. */
static int
chain_of (struct hub *hub, const struct cat_job *job, const struct cat_disk *d,
          struct chain *out)
{
  CLEANUP_CAT_JOB struct cat_job cur = { 0 };
  const struct cat_disk *at = d;

  if (chain_push (out, d) == -1)
    return -1;
  while (at->parent_disk_id > 0 && at->parent_backup_id) {
    CLEANUP_CAT_JOB struct cat_job parent = { 0 };
    int64_t want = at->parent_disk_id;
    const struct cat_disk *pd;

    if (out->n > 100000) {
      error_set (ERR_INTERNAL, "the chain of backup %s disk %d does not end", job->id,
                 d->disk_index);
      return -1;
    }
    if (catalog_backup_get (hub->cat, at->parent_backup_id, &parent) == -1)
      return -1;
    pd = hub_job_disk (&parent, d->disk_index);
    if (pd == NULL || pd->id != want) {
      error_set (ERR_INTERNAL, "backup %s disk %d: its parent row %" PRId64
                 " is not in backup %s", job->id, d->disk_index, want, parent.id);
      return -1;
    }
    if (chain_push (out, pd) == -1)
      return -1;
    cat_job_clear (&cur);
    cur = parent;
    parent = (struct cat_job) { 0 };
    at = hub_job_disk (&cur, d->disk_index);
  }
  return 0;
}

/* --- Per file, for the whole task -------------------------------------- */

struct layer {
  int64_t disk_id;
  char *path;                 /* absolute */
  bool checked;               /* the structure was looked at */
  bool missing;               /* no file to read */
  bool alloc_checked;         /* its data clusters were held against its manifest */
  char *problem;              /* what is wrong with the file, or NULL */
  bool hashed;                /* it has a manifest with hashes */
  char *manifest;             /* its path */
  uint64_t nblocks;
  uint8_t *read, *bad;        /* bitmaps: blocks read in this task, bad ones */
};

struct vtask {
  struct hub *hub;
  char *task_id;
  struct layer *layers;
  size_t n_layers;
  int64_t blocks_read, bytes_read;
};

static void
vtask_clear (struct vtask *t)
{
  for (size_t i = 0; i < t->n_layers; i++) {
    free (t->layers[i].path);
    free (t->layers[i].problem);
    free (t->layers[i].manifest);
    free (t->layers[i].read);
    free (t->layers[i].bad);
  }
  free (t->layers);
  free (t->task_id);
}

static bool
bit (const uint8_t *m, uint64_t b)
{
  return m[b >> 3] & (1u << (b & 7));
}

static void
set_bit (uint8_t *m, uint64_t b)
{
  m[b >> 3] |= (uint8_t) (1u << (b & 7));
}

static struct layer *
layer_get (struct vtask *t, int64_t disk_id)
{
  struct layer *v;

  for (size_t i = 0; i < t->n_layers; i++)
    if (t->layers[i].disk_id == disk_id)
      return &t->layers[i];
  v = realloc (t->layers, (t->n_layers + 1) * sizeof *v);
  if (v == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return NULL;
  }
  t->layers = v;
  memset (&v[t->n_layers], 0, sizeof *v);
  v[t->n_layers].disk_id = disk_id;
  return &v[t->n_layers++];
}

static void
layer_problem (struct layer *l, const char *fmt, ...) __attribute__((format (printf, 2, 3)));
static void
layer_problem (struct layer *l, const char *fmt, ...)
{
  va_list ap;
  if (l->problem)
    return;
  va_start (ap, fmt);
  if (vasprintf (&l->problem, fmt, ap) == -1)
    l->problem = NULL;
  va_end (ap);
}

/* What qemu-img says of the file alone: its virtual size and backing name. */
static void
layer_check_image (struct layer *l, const char *expect_backing, int64_t *vsize)
{
  const char *info[] = { "qemu-img", "info", "--output=json", "-U", l->path, NULL };
  const char *check[] = { "qemu-img", "check", "--output=json", "-U", l->path, NULL };
  CLEANUP_FREE char *out = NULL;
  CLEANUP_JSON json_t *j = NULL;
  const char *backing, *format;
  int rc;

  *vsize = -1;
  if (proc_run (info, &out) == -1 ||
      (j = json_loads (out ? out : "", 0, NULL)) == NULL) {
    layer_problem (l, "qemu-img cannot read it: %s", error_message ());
    return;
  }
  format = json_string_value (json_object_get (j, "format"));
  backing = json_string_value (json_object_get (j, "backing-filename"));
  *vsize = json_integer_value (json_object_get (j, "virtual-size"));
  if (format == NULL || strcmp (format, "qcow2") != 0) {
    layer_problem (l, "it is not a QCOW2 image (format %s)", format ? format : "unknown");
    return;
  }
  if (json_is_true (json_object_get (json_object_get (json_object_get (j,
                    "format-specific"), "data"), "corrupt")))
    layer_problem (l, "QEMU has flagged the image corrupt");
  if (expect_backing == NULL && backing)
    layer_problem (l, "its backing file is '%s', but it is a full and has none", backing);
  else if (expect_backing && (backing == NULL || strcmp (backing, expect_backing) != 0))
    layer_problem (l, "its backing file is %s%s%s, not '%s' as the catalog says",
                   backing ? "'" : "", backing ? backing : "none", backing ? "'" : "",
                   expect_backing);

  json_decref (j);
  j = NULL;
  free (out);
  out = NULL;
  /* Exit 3 is leaked clusters alone, listed on standard error: space that
   * a killed storage daemon had allocated for writes it never recorded
   * (the disk was copied again).  The data is sound; the log says so. */
  rc = proc_run_stdout (check, &out);
  j = out ? json_loads (out, 0, NULL) : NULL;
  if (j == NULL) {
    layer_problem (l, "qemu-img check failed: %s", rc == -1 ? error_message () : "no answer");
    return;
  }
  if (json_integer_value (json_object_get (j, "leaks")) > 0)
    log_info ("verify: %s has %" JSON_INTEGER_FORMAT " leaked cluster(s) (allocated, holding "
              "no data: space a storage daemon killed mid-write left behind); not an error",
              l->path, json_integer_value (json_object_get (j, "leaks")));
  if (json_integer_value (json_object_get (j, "corruptions")) > 0 ||
      json_integer_value (json_object_get (j, "check-errors")) > 0)
    layer_problem (l, "qemu-img check finds %" JSON_INTEGER_FORMAT " corruption(s) and %"
                   JSON_INTEGER_FORMAT " error(s) (a truncated or damaged file)",
                   json_integer_value (json_object_get (j, "corruptions")),
                   json_integer_value (json_object_get (j, "check-errors")));
}

/* Look at a file of a chain once per task: present, a sound QCOW2 of the
 * catalog's size and backing file, with a manifest that is its own. */
static struct layer *
layer_check (struct vtask *t, const char *repo_path, const struct chain *c, size_t i,
             int disk_index)
{
  const struct link *k = &c->v[i];
  struct layer *l = layer_get (t, k->disk_id);
  CLEANUP_FREE char *expect = NULL;
  struct mf_reader *mr;
  struct stat st;
  int64_t vsize = -1;

  if (l == NULL || l->checked)
    return l;
  l->checked = true;
  if (k->rel == NULL) {
    l->missing = true;
    layer_problem (l, "backup %s disk %d has no file", k->backup_id, disk_index);
    return l;
  }
  l->path = repo_abspath (repo_path, k->rel);
  l->manifest = l->path ? mf_path_for (l->path) : NULL;
  if (l->path == NULL || l->manifest == NULL)
    return NULL;
  if (stat (l->path, &st) == -1) {
    l->missing = true;
    layer_problem (l, "the file is missing (%s)", strerror (errno));
    return l;
  }
  if (i + 1 < c->n && c->v[i + 1].rel) {
    expect = repo_relative (k->rel, c->v[i + 1].rel);
    if (expect == NULL)
      return NULL;
  }
  layer_check_image (l, i + 1 < c->n ? (expect ? expect : "?") : NULL, &vsize);
  if (vsize >= 0 && vsize != k->size_bytes)
    layer_problem (l, "its virtual size is %" PRId64 " bytes, not %" PRId64
                   " as the catalog says", vsize, k->size_bytes);

  mr = mf_open (l->manifest);
  if (mr == NULL) {
    if (error_category () != ERR_NOT_FOUND)
      layer_problem (l, "%s", error_message ());
    return l;                 /* no manifest: structure only */
  }
  {
    json_t *f = mf_facts (mr);
    const char *bid = json_string_value (json_object_get (f, "backup_id"));
    json_int_t di = json_integer_value (json_object_get (f, "disk_index"));
    if (bid == NULL || strcmp (bid, k->backup_id) != 0 || di != disk_index ||
        mf_virtual_size (mr) != k->size_bytes)
      layer_problem (l, "its manifest is not its own: it describes backup %s disk %d of "
                     "%" PRId64 " bytes", bid ? bid : "?", (int) di, mf_virtual_size (mr));
    else if (mf_hashed (mr)) {
      l->hashed = true;
      l->nblocks = mf_blocks_for (k->size_bytes);
      l->read = calloc (l->nblocks / 8 + 1, 1);
      l->bad = calloc (l->nblocks / 8 + 1, 1);
      if (l->read == NULL || l->bad == NULL) {
        mf_close (mr);
        error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
        return NULL;
      }
    }
  }
  mf_close (mr);
  return l;
}

/* --- Reading the blocks a point needs from one layer ------------------- */

struct ranges {
  uint64_t *v;                /* pairs (offset, length) */
  size_t n, cap;
  uint64_t size;              /* the layer's virtual size */
};

static int
ranges_add_block (struct ranges *r, uint64_t b)
{
  uint64_t off = b * MF_BLOCK_SIZE, len = MF_BLOCK_SIZE;

  if (off + len > r->size)
    len = r->size - off;
  if (r->n && r->v[2 * (r->n - 1)] + r->v[2 * (r->n - 1) + 1] == off) {
    r->v[2 * (r->n - 1) + 1] += len;
    return 0;
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 256;
    uint64_t *v = realloc (r->v, cap * 2 * sizeof *v);
    if (v == NULL) {
      error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
      return -1;
    }
    r->v = v;
    r->cap = cap;
  }
  r->v[2 * r->n] = off;
  r->v[2 * r->n + 1] = len;
  r->n++;
  return 0;
}

struct pass {
  struct layer *l;
  struct ranges ranges;       /* first pass: what to read */
  struct mf_map *observed;    /* second pass: what was read */
  /* Second pass: this point's count. */
  uint64_t checked, bad;
  int64_t offsets[MAX_OFFSETS];
};

static int
collect (void *opaque, uint64_t block, enum mf_kind kind, const uint8_t *hash)
{
  struct pass *p = opaque;
  if (block >= p->l->nblocks || bit (p->l->read, block))
    return 0;
  return ranges_add_block (&p->ranges, block);
}

static int
compare (void *opaque, uint64_t block, enum mf_kind kind, const uint8_t *hash)
{
  struct pass *p = opaque;
  struct layer *l = p->l;

  if (block >= l->nblocks)
    return 0;
  if (!bit (l->read, block)) {
    uint8_t got[MF_HASH_LEN];
    enum mf_kind k = mf_map_get (p->observed, block, got);
    set_bit (l->read, block);
    if (k != kind || (kind == MF_DATA && memcmp (got, hash, MF_HASH_LEN) != 0))
      set_bit (l->bad, block);
  }
  p->checked++;
  if (bit (l->bad, block)) {
    if (p->bad < MAX_OFFSETS)
      p->offsets[p->bad] = (int64_t) (block * MF_BLOCK_SIZE);
    p->bad++;
  }
  return 0;
}

/* A file's data clusters against its manifest: each block the file holds
 * data in must have a record (data or zero), else the file holds data its
 * manifest never saw (written behind strata's back, or the manifest of
 * another file). */
struct alloc_walk {
  const uint8_t *listed;      /* a bit per block with a record */
  uint64_t nblocks, unlisted;
  int64_t first;
};

static int
alloc_extent (void *opaque, uint64_t offset, uint64_t length)
{
  struct alloc_walk *a = opaque;
  uint64_t b = offset / MF_BLOCK_SIZE, e = (offset + length + MF_BLOCK_SIZE - 1) / MF_BLOCK_SIZE;

  for (; b < e && b < a->nblocks; b++)
    if (!bit (a->listed, b)) {
      if (a->unlisted++ == 0)
        a->first = (int64_t) (b * MF_BLOCK_SIZE);
    }
  return 0;
}

static int
layer_alloc_check (struct layer *l, const char *uri)
{
  CLEANUP_FREE uint8_t *listed = calloc (l->nblocks / 8 + 1, 1);
  struct alloc_walk a = { .nblocks = l->nblocks, .first = -1 };
  struct mf_reader *r;
  uint8_t hash[MF_HASH_LEN];
  enum mf_kind kind;
  uint64_t block;
  int got;

  if (listed == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  if ((r = mf_open (l->manifest)) == NULL)
    return -1;
  while ((got = mf_next (r, &block, &kind, hash)) == 1)
    if (block < l->nblocks)
      set_bit (listed, block);
  mf_close (r);
  if (got == -1)
    return -1;
  a.listed = listed;
  if (engine_data_extents (uri, NULL, alloc_extent, &a) == -1)
    return -1;
  if (a.unlisted)
    layer_problem (l, "the file holds data in %" PRIu64 " block%s its manifest does not "
                   "list (first at offset %" PRId64 "): the manifest is not this file's, "
                   "or the file was written to after its backup", a.unlisted,
                   a.unlisted == 1 ? "" : "s", a.first);
  return 0;
}

/* Read what layer i must give the chain's top and compare it (and, the
 * first time the task reads the file, hold its data clusters against its
 * manifest). */
static int
layer_blocks (struct vtask *t, struct mf_chain *mc, size_t i, struct layer *l,
              int64_t size, struct pass *p)
{
  struct qnbd q = { 0 };
  CLEANUP_FREE char *spec = NULL;
  CLEANUP_JSON json_t *js = NULL;
  struct engine_progress prog = { 0 };
  int ret = -1;

  p->l = l;
  p->ranges.size = (uint64_t) size;
  if (mf_chain_layer_needs (mc, i, collect, p) == -1)
    goto out;
  p->observed = mf_map_new (size, NULL);
  if (p->observed == NULL)
    goto out;
  if (p->ranges.n > 0 || !l->alloc_checked) {
    /* The file alone: what this layer holds, not what its backing shows. */
    js = json_pack ("{s:s,s:n,s:{s:s,s:s}}", "driver", "qcow2", "backing",
                    "file", "driver", "file", "filename", l->path);
    spec = js ? json_dumps (js, JSON_COMPACT) : NULL;
    if (spec == NULL) {
      error_set (ERR_INTERNAL, "out of memory");
      goto out;
    }
    {
      CLEANUP_FREE char *image = NULL;
      if (asprintf (&image, "json:%s", spec) == -1) {
        error_set (ERR_INTERNAL, "out of memory");
        goto out;
      }
      if (qnbd_start (&q, image, "qcow2", true, NULL, NULL) == -1)
        goto out;
    }
    if (!l->alloc_checked) {
      l->alloc_checked = true;
      if (layer_alloc_check (l, q.uri) == -1) {
        qnbd_stop (&q);
        goto out;
      }
    }
    if (engine_hash_ranges (q.uri, NULL, p->ranges.v, p->ranges.n, p->observed, &prog) == -1) {
      qnbd_stop (&q);
      goto out;
    }
    qnbd_stop (&q);
    for (size_t r = 0; r < p->ranges.n; r++) {
      t->bytes_read += (int64_t) p->ranges.v[2 * r + 1];
      t->blocks_read += (int64_t) ((p->ranges.v[2 * r + 1] + MF_BLOCK_SIZE - 1) / MF_BLOCK_SIZE);
    }
  }
  if (mf_chain_layer_needs (mc, i, compare, p) == -1)
    goto out;
  ret = 0;
 out:
  free (p->ranges.v);
  p->ranges = (struct ranges) { 0 };
  mf_map_free (p->observed);
  p->observed = NULL;
  return ret;
}

/* --- One point --------------------------------------------------------- */

static json_t *
offsets_json (const int64_t *v, uint64_t n)
{
  json_t *a = json_array ();
  for (uint64_t i = 0; a && i < n && i < MAX_OFFSETS; i++)
    json_array_append_new (a, json_integer (v[i]));
  return a;
}

/* Verify one disk of a point: its result object; *corrupt set; *first
 * the first problem's text (caller frees). */
static json_t *
verify_disk (struct vtask *t, const struct cat_repository *repo, const struct cat_job *job,
             const struct cat_disk *d, bool *corrupt, char **first)
{
  CLEANUP_CHAIN struct chain c = { 0 };
  json_t *problems = json_array ();
  struct mf_chain *mc = NULL;
  bool hashed = true;
  uint64_t checked = 0, bad = 0;
  int64_t first_bad = -1;
  const char **paths = NULL;
  json_t *res = NULL;

  *corrupt = false;
  *first = NULL;
  if (problems == NULL || chain_of (t->hub, job, d, &c) == -1)
    goto fail;
  paths = calloc (c.n + 1, sizeof *paths);
  if (paths == NULL)
    goto fail;
  for (size_t i = 0; i < c.n; i++) {
    struct layer *l = layer_check (t, repo->path, &c, i, d->disk_index);
    if (l == NULL)
      goto fail;
    hashed &= l->hashed;
    paths[i] = l->manifest;
  }
  if (hashed && (mc = mf_chain_open (paths, c.n)) == NULL) {
    json_array_append_new (problems, json_pack ("{s:o,s:s}", "file", json_null (),
                                                "message", error_message ()));
    hashed = false;
  }
  for (size_t i = 0; hashed && i < c.n; i++) {
    struct layer *l = layer_get (t, c.v[i].disk_id);
    struct pass p = { 0 };
    if (l->missing)
      continue;
    if (layer_blocks (t, mc, i, l, c.v[i].size_bytes, &p) == -1) {
      json_array_append_new (problems, json_pack ("{s:s,s:s}", "file", l->path,
                                                  "message", error_message ()));
      continue;
    }
    checked += p.checked;
    if (p.bad) {
      char msg[256];
      snprintf (msg, sizeof msg, "%" PRIu64 " block%s differ%s from its manifest (first at "
                "offset %" PRId64 ")", p.bad, p.bad == 1 ? "" : "s", p.bad == 1 ? "s" : "",
                p.offsets[0]);
      json_array_append_new (problems, json_pack ("{s:s,s:s,s:I,s:o}", "file", l->path,
                                                  "message", msg, "bad_blocks",
                                                  (json_int_t) p.bad, "bad_offsets",
                                                  offsets_json (p.offsets, p.bad)));
      if (first_bad < 0 || p.offsets[0] < first_bad)
        first_bad = p.offsets[0];
      bad += p.bad;
    }
  }
  /* What is wrong with the files themselves (the reads above may have
   * found more), first. */
  {
    json_t *all = json_array ();
    if (all == NULL)
      goto fail;
    for (size_t i = 0; i < c.n; i++) {
      struct layer *l = layer_get (t, c.v[i].disk_id);
      if (l && l->problem)
        json_array_append_new (all, json_pack ("{s:o,s:s}", "file",
                                               l->path ? json_string (l->path) : json_null (),
                                               "message", l->problem));
    }
    json_array_extend (all, problems);
    json_decref (problems);
    problems = all;
  }
  mf_chain_free (mc);
  free (paths);
  *corrupt = json_array_size (problems) > 0;
  if (*corrupt) {
    json_t *p0 = json_array_get (problems, 0);
    const char *file = json_string_value (json_object_get (p0, "file"));
    if (asprintf (first, "%s%s%s", file ? file : "", file ? ": " : "",
                  json_string_value (json_object_get (p0, "message"))) == -1)
      *first = NULL;
  }
  res = json_pack ("{s:i,s:s,s:b,s:I,s:I,s:o,s:o}", "disk_index", d->disk_index,
                   "verify_state", verify_state_name (*corrupt ? VERIFY_CORRUPT : VERIFY_OK),
                   "hashed", hashed, "blocks_checked", (json_int_t) checked,
                   "bad_blocks", (json_int_t) bad,
                   "first_bad_offset", first_bad >= 0 ? json_integer (first_bad) : json_null (),
                   "problems", problems);
  return res;

 fail:
  mf_chain_free (mc);
  free (paths);
  json_decref (problems);
  return NULL;
}

/* --- Exclusion with merge steps (hub->lock) ---------------------------- */

bool
hub_verifying (struct hub *hub, const char *context_id)
{
  return hub_names_has (hub->verifying, hub->n_verifying, context_id);
}

static void
verifying_remove (struct hub *hub, const char *context_id)
{
  {
    SCOPED_LOCK (&hub->lock);
    hub_names_remove (hub->verifying, &hub->n_verifying, context_id);
  }
  hub_prune_wake (hub, context_id);
}

/* Verify one point and record it.  NULL with the error set when the point
 * can't be verified (gone, no longer completed). */
static json_t *
verify_point (struct vtask *t, const char *backup_id)
{
  struct hub *hub = t->hub;
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  json_t *disks = NULL, *res = NULL;
  CLEANUP_FREE int *idx = NULL;
  CLEANUP_FREE enum verify_state *states = NULL;
  CLEANUP_FREE char **errors = NULL;
  bool any_corrupt = false;
  char now[32];

  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return NULL;
  if (job.status != JOB_COMPLETED) {
    error_set (ERR_CONFLICT, "backup %s is %s", backup_id, job_status_name (job.status));
    return NULL;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1)
    return NULL;
  idx = calloc (job.n_disks + 1, sizeof *idx);
  states = calloc (job.n_disks + 1, sizeof *states);
  errors = calloc (job.n_disks + 1, sizeof *errors);
  disks = json_array ();
  if (idx == NULL || states == NULL || errors == NULL || disks == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    goto out;
  }
  {
    SCOPED_LOCK (&hub->lock);
    hub_merge_wait (hub, job.context_id);
    if (hub_names_add (&hub->verifying, &hub->n_verifying, job.context_id) == -1)
      goto out;
  }
  for (size_t i = 0; i < job.n_disks; i++) {
    bool corrupt;
    json_t *dr = verify_disk (t, &repo, &job, &job.disks[i], &corrupt, &errors[i]);
    if (dr == NULL) {
      verifying_remove (hub, job.context_id);
      goto out;
    }
    json_array_append_new (disks, dr);
    idx[i] = job.disks[i].disk_index;
    states[i] = corrupt ? VERIFY_CORRUPT : VERIFY_OK;
    any_corrupt |= corrupt;
  }
  verifying_remove (hub, job.context_id);
  id_now (now, sizeof now);
  if (catalog_verify_record (hub->cat, backup_id, job.n_disks, idx, states,
                             (const char *const *) errors, now) == -1)
    goto out;
  log_info ("verify: backup %s is %s", backup_id, any_corrupt ? "CORRUPT" : "ok");
  res = json_pack ("{s:s,s:s,s:O}", "backup_id", backup_id, "verify_state",
                   verify_state_name (any_corrupt ? VERIFY_CORRUPT : VERIFY_OK), "disks",
                   disks);

 out:
  for (size_t i = 0; errors && i < job.n_disks; i++)
    free (errors[i]);
  json_decref (disks);
  return res;
}

/* --- The task ---------------------------------------------------------- */

static void
task_run (struct hub *hub, const char *task_id)
{
  CLEANUP_CAT_TASK struct cat_task task = { 0 };
  CLEANUP_JSON json_t *result = NULL;
  struct vtask t = { .hub = hub };
  json_t *todo, *points;
  int64_t done = 0, total;
  CLEANUP_FREE char *text = NULL;
  const char *error = NULL;

  if (catalog_task_get (hub->cat, task_id, &task) == -1 || task.status != TASK_RUNNING ||
      task.kind != TASK_VERIFY)
    return;
  result = task.result ? json_loads (task.result, 0, NULL) : NULL;
  todo = json_object_get (result, "backups");
  points = json_array ();
  if (!json_is_array (todo) || points == NULL) {
    json_decref (points);
    error = "the task's record is unreadable";
    goto end;
  }
  json_object_set_new (result, "points", points);
  total = (int64_t) json_array_size (todo);
  for (size_t i = 0; i < json_array_size (todo); i++) {
    const char *id = json_string_value (json_array_get (todo, i));
    json_t *pr;

    if (hub_stopping (hub)) {
      error = "the hub stopped";
      break;
    }
    pr = id ? verify_point (&t, id) : NULL;
    if (pr)
      json_array_append_new (points, pr);
    else if (id) {
      log_info ("verify task %s: backup %s skipped: %s", task_id, id, error_message ());
      json_array_append_new (points, json_pack ("{s:s,s:s,s:s}", "backup_id", id,
                                                "verify_state", "skipped",
                                                "error", error_message ()));
    }
    done++;
    json_object_set_new (result, "blocks_read", json_integer (t.blocks_read));
    json_object_set_new (result, "bytes_read", json_integer (t.bytes_read));
    free (text);
    text = json_dumps (result, JSON_COMPACT);
    if (catalog_task_update (hub->cat, task_id, done, total, NULL, text) == -1)
      log_warn ("verify task %s: %s", task_id, error_message ());
  }

 end:
  free (text);
  text = result ? json_dumps (result, JSON_COMPACT) : NULL;
  if (catalog_task_end (hub->cat, task_id, error ? TASK_FAILED : TASK_COMPLETED, error,
                        text) == -1)
    log_error ("verify task %s: recording its end: %s", task_id, error_message ());
  else
    log_info ("verify task %s %s", task_id, error ? "failed" : "completed");
  vtask_clear (&t);
}

static void
task_op (struct hub *hub, const char *task_id)
{
  task_run (hub, task_id);
}

int
hub_verify_start (struct hub *hub, const char *backup_id, const char *context_id,
                  char **task_id)
{
  CLEANUP_CAT_CONTEXT struct cat_context ctx = { 0 };
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_JOB_LIST struct cat_job_list jobs = { 0 };
  CLEANUP_JSON json_t *ids = json_array ();
  CLEANUP_FREE char *text = NULL;
  struct cat_task task = { 0 };
  char now[32];
  int64_t total;

  *task_id = NULL;
  if (ids == NULL) {
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  if (backup_id) {
    if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
      return -1;
    if (job.status != JOB_COMPLETED) {
      error_set (ERR_CONFLICT, "backup %s is %s: only completed backups are verified",
                 backup_id, job_status_name (job.status));
      return -1;
    }
    json_array_append_new (ids, json_string (backup_id));
    if (catalog_context_get (hub->cat, job.context_id, &ctx) == -1)
      return -1;
  }
  else {
    struct cat_job_filter f = { .by_status = true, .status = JOB_COMPLETED };
    if (catalog_context_get (hub->cat, context_id, &ctx) == -1)
      return -1;
    f.vm_name = ctx.vm_name;
    f.repository_id = ctx.repository_id;
    if (catalog_backup_list (hub->cat, &f, &jobs.v, &jobs.n, &total) == -1)
      return -1;
    /* Oldest first: the chain's lower layers are read for the first
     * points, and found read already for the later ones. */
    for (size_t i = jobs.n; i-- > 0; )
      json_array_append_new (ids, json_string (jobs.v[i].id));
    if (jobs.n == 0) {
      error_set (ERR_CONFLICT, "context %s has no completed backup to verify", context_id);
      return -1;
    }
  }
  {
    CLEANUP_JSON json_t *rec = json_pack ("{s:O}", "backups", ids);
    text = rec ? json_dumps (rec, JSON_COMPACT) : NULL;
  }
  id_now (now, sizeof now);
  task.id = id_new ("task-verify", ctx.vm_name);
  task.kind = TASK_VERIFY;
  task.context_id = ctx.context_id;
  task.status = TASK_RUNNING;
  task.steps_total = (int64_t) json_array_size (ids);
  task.result = text;
  task.created_at = now;
  task.updated_at = now;
  task.owner_hub = hub->hub_id;
  if (task.id == NULL || text == NULL) {
    free (task.id);
    error_set (ERR_INTERNAL, "out of memory");
    return -1;
  }
  if (catalog_task_insert (hub->cat, &task) == -1) {
    free (task.id);
    return -1;
  }
  log_info ("verify task %s: %zu backup(s) of context %s", task.id,
            json_array_size (ids), ctx.context_id);
  if (hub->hooks.run_op)
    hub->hooks.run_op (hub, task.id, task_op);
  *task_id = task.id;
  return 0;
}

void
hub_verify_recover (struct hub *hub)
{
  CLEANUP_CAT_TASK_LIST struct cat_task_list tasks = { 0 };

  if (catalog_task_list (hub->cat, true, TASK_RUNNING, &tasks.v, &tasks.n) == -1) {
    log_error ("listing running tasks: %s", error_message ());
    return;
  }
  for (size_t i = 0; i < tasks.n; i++)
    if (tasks.v[i].kind == TASK_VERIFY && hub_owns (hub, tasks.v[i].owner_hub) &&
        catalog_task_end (hub->cat, tasks.v[i].id, TASK_FAILED,
                          "interrupted: the hub stopped while it ran; start it again",
                          NULL) == 0)
      log_warn ("verify task %s was cut off by the last stop: failed", tasks.v[i].id);
}

/* --- Audits ------------------------------------------------------------ */

int
hub_audit_record (struct hub *hub, const char *backup_id, int disk_index,
                  const struct mf_map *observed, struct mf_compare *out)
{
  CLEANUP_CAT_JOB struct cat_job job = { 0 };
  CLEANUP_CAT_REPO struct cat_repository repo = { 0 };
  CLEANUP_CHAIN struct chain c = { 0 };
  CLEANUP_FREE const char **paths = NULL;
  struct mf_chain *mc;
  const struct cat_disk *d;
  char now[32], msg[256];
  int ret = -1;

  memset (out, 0, sizeof *out);
  if (catalog_backup_get (hub->cat, backup_id, &job) == -1)
    return -1;
  d = hub_job_disk (&job, disk_index);
  if (d == NULL) {
    error_set (ERR_NOT_FOUND, "backup %s has no disk %d", backup_id, disk_index);
    return -1;
  }
  if (catalog_repo_get (hub->cat, job.repository_id, &repo) == -1 ||
      chain_of (hub, &job, d, &c) == -1)
    return -1;
  paths = calloc (c.n + 1, sizeof *paths);
  if (paths == NULL) {
    error_set_errno (ERR_INTERNAL, ENOMEM, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < c.n; i++) {
    CLEANUP_FREE char *f = c.v[i].rel ? repo_abspath (repo.path, c.v[i].rel) : NULL;
    paths[i] = f ? mf_path_for (f) : NULL;
    if (paths[i] == NULL) {
      error_set (ERR_CONFLICT, "backup %s disk %d: a file of its chain is gone",
                 backup_id, disk_index);
      goto out;
    }
  }
  mc = mf_chain_open (paths, c.n);
  if (mc == NULL) {
    error_prefix ("backup %s disk %d: its chain's manifests", backup_id, disk_index);
    if (error_category () == ERR_NOT_FOUND || error_category () == ERR_INVALID)
      error_recategorize (ERR_CONFLICT);
    goto out;
  }
  ret = mf_chain_compare (mc, observed, out);
  mf_chain_free (mc);
  if (ret == -1)
    goto out;
  if (out->bad == 0) {
    log_info ("audit: backup %s disk %d: %" PRIu64 " block(s) agree with the source",
              backup_id, disk_index, out->checked);
    goto out;
  }
  snprintf (msg, sizeof msg, CATALOG_AUDIT_MISSED " %" PRIu64 " blocks (first at offset %"
            PRId64 ")", out->bad, out->first_bad);
  log_error ("audit: backup %s disk %d: %s", backup_id, disk_index, msg);
  id_now (now, sizeof now);
  {
    enum verify_state st = VERIFY_CORRUPT;
    const char *errs[] = { msg };
    ret = catalog_verify_record (hub->cat, backup_id, 1, &disk_index, &st, errs, now);
  }

 out:
  for (size_t i = 0; paths && i < c.n; i++)
    free ((char *) paths[i]);
  return ret;
}

/* --- By policy --------------------------------------------------------- */

/* The VM's policy, when it has one. */
static bool
policy_of (struct hub *hub, const char *vm_name, struct cat_policy *pol)
{
  CLEANUP_CAT_VM struct cat_vm vm = { 0 };
  return catalog_vm_get (hub->cat, vm_name, &vm) == 0 && vm.policy &&
         catalog_policy_get (hub->cat, vm.policy, pol) == 0;
}

void
hub_verify_after_backup (struct hub *hub, const struct cat_job *job)
{
  CLEANUP_CAT_POLICY struct cat_policy pol = { 0 };
  CLEANUP_FREE char *task_id = NULL;

  if (job->status != JOB_COMPLETED || !policy_of (hub, job->vm_name, &pol) ||
      !pol.verify_after_backup)
    return;
  if (hub_verify_start (hub, job->id, NULL, &task_id) == -1)
    log_warn ("verify after backup %s: %s", job->id, error_message ());
}

/* Whether a running verify task has the backup in its list. */
static bool
verify_pending (const struct cat_task_list *running, const char *backup_id)
{
  for (size_t i = 0; i < running->n; i++) {
    CLEANUP_JSON json_t *r = NULL;
    json_t *ids;
    if (running->v[i].kind != TASK_VERIFY || running->v[i].result == NULL)
      continue;
    r = json_loads (running->v[i].result, 0, NULL);
    ids = json_object_get (r, "backups");
    for (size_t k = 0; k < json_array_size (ids); k++)
      if (strcmp (json_string_value (json_array_get (ids, k)) ?: "", backup_id) == 0)
        return true;
  }
  return false;
}

void
hub_verify_due (struct hub *hub)
{
  CLEANUP_CAT_TASK_LIST struct cat_task_list running = { 0 };
  char **due = NULL;
  char now[32];

  id_now (now, sizeof now);
  if (catalog_verify_due (hub->cat, now, &due) == -1) {
    log_warn ("finding backups due for verification: %s", error_message ());
    return;
  }
  if (due && due[0] &&
      catalog_task_list (hub->cat, true, TASK_RUNNING, &running.v, &running.n) == -1)
    log_warn ("listing running tasks: %s", error_message ());
  for (size_t i = 0; due && due[i]; i++) {
    CLEANUP_FREE char *task_id = NULL;
    if (!verify_pending (&running, due[i]) &&
        hub_verify_start (hub, due[i], NULL, &task_id) == -1)
      log_warn ("verify of backup %s (its policy's every_days): %s", due[i],
                error_message ());
    free (due[i]);
  }
  free (due);
}
