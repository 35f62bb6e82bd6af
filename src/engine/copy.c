/* engine/copy.c - the copier: maps a source's extents over NBD, then moves
 * them to an NBD target (or a local file) over several connections, each
 * with many asynchronous requests in flight.
 *
 * DESIGN
 *
 * 1. Mapping.  One connection asks the source for block status over the
 *    whole disk, in requests of up to MAP_CHUNK bytes: "base:allocation"
 *    always, and the dirty bitmap's context for an incremental.  The
 *    answers become a plan: an ordered list of DATA extents (read and
 *    write) and ZERO extents (write zeroes).  A full copy plans every
 *    allocated extent as DATA and every zero extent as ZERO (or nothing,
 *    when the target is fresh and reads zeroes already); an incremental
 *    plans only the intersection of the dirty extents with those.  Holes
 *    are never read, so the work scales with the data, not the disk size;
 *    dirty extents are never widened.
 *
 * 2. Copying.  N worker threads each own one source and one target
 *    connection and run their own poll loop over the two.  They take the
 *    next piece of the plan (at most request_size bytes of DATA, or a large
 *    ZERO run) under a mutex, so work stays balanced and roughly in disk
 *    order.  A read that completes is checked for zeroes over every byte;
 *    an all-zero block becomes a write-zeroes (overlay) or nothing (fresh
 *    target), else a write.  Completion callbacks only record the result;
 *    the loop issues the follow-up command.
 *
 * 3. Each worker flushes its own target connection before it disconnects
 *    (so multi-conn support is not needed for durability); a file target
 *    is fsynced by copy_run.
 *
 * 4. Hashing (spec->hashes set).  The plan is widened to whole 64 KiB
 *    blocks of the hash map once it is mapped: a block wholly covered by
 *    ZERO items stays ZERO, any other block an item touches becomes DATA as
 *    a whole (clamped to the size), and the request size is a multiple of
 *    the block size, so every piece is whole blocks.  A worker hashes each
 *    read buffer into the map as the source gave it, before the zero check
 *    decides between a write and a write-zeroes, and records each ZERO
 *    piece as zero blocks; the map takes puts from every worker at once.
 *    Blocks outside the plan get no record: in an incremental they are the
 *    backing file's, in a full into a fresh target they read zeroes.
 *    Widening reads a little more than the extents in an incremental whose
 *    bitmap is finer than 64 KiB; what it reads is the source's current
 *    data, which is what the target must hold there anyway.
 *
 * 5. Without a target (dst_uri NULL, dst_fd < 0) the copy only reads and
 *    hashes: verify and the change-tracking audit (engine_hash_ranges,
 *    engine_audit_disk).  spec->ranges then may replace the mapping.
 *
 * The first error (or a cancel) stops every worker; copy_run reports it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine-int.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/error.h"

#define MAP_CHUNK  UINT64_C (0xffff0000)     /* 4 GiB - 64 KiB, 64 KiB aligned */
#define ZERO_MAX   (UINT64_C (1) << 30)      /* largest write-zeroes request */

enum { K_DATA = 1, K_ZERO = 2 };

struct item {
  uint64_t off, len;
  int kind;
};

struct plan {
  struct item *v;
  size_t n, cap;
  int64_t bytes;
};

struct shared {
  const struct copy_spec *s;
  struct engine_progress *p;
  struct copy_tuning t;
  uint32_t req_size;
  bool write;                 /* there is a target (else: read and hash) */

  pthread_mutex_t lock;
  struct plan plan;
  size_t next;                /* plan cursor: item index ... */
  uint64_t next_off;          /* ... and offset inside it */

  _Atomic int64_t bytes_read, bytes_written, bytes_zero;
  _Atomic bool failed;
  enum error_category err_cat;
  char err[768];
};

/* Record the first failure of the copy; later ones are dropped. */
static void
fail_copy (struct shared *sh, enum error_category cat, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
static void
fail_copy (struct shared *sh, enum error_category cat, const char *fmt, ...)
{
  va_list ap;
  SCOPED_LOCK (&sh->lock);
  if (sh->failed)
    return;
  va_start (ap, fmt);
  vsnprintf (sh->err, sizeof sh->err, fmt, ap);
  va_end (ap);
  sh->err_cat = cat;
  sh->failed = true;
}

static int
env_int (const char *name, long def, long min, long max)
{
  const char *v = getenv (name);
  char *end;
  long n;

  if (v == NULL || *v == '\0')
    return def;
  errno = 0;
  n = strtol (v, &end, 0);
  if (errno || *end || n < min || n > max)
    return def;
  return n;
}

void
copy_tuning_get (struct copy_tuning *t)
{
  /* Measured (make bench, and the same copy with the repository on
   * tmpfs so that the CPU, not the disk, bounds it): on 2 cores, 2
   * connections of 16 requests of 512 KiB copied 2 GiB in ~2.0 s where 4
   * of 16 x 1 MiB took 2.3-3.2 s and nbdcopy 2.2-2.4 s; 1 MiB requests
   * cost the most system time.  More connections than cores only add
   * contention, so one per core, up to 4. */
  long cpus = sysconf (_SC_NPROCESSORS_ONLN);
  int conns = cpus < 1 ? 1 : cpus > 4 ? 4 : (int) cpus;

  t->connections = env_int ("STRATA_COPY_CONNECTIONS", conns, 1, 16);
  t->requests = env_int ("STRATA_COPY_REQUESTS", 16, 1, 256);
  t->request_size = env_int ("STRATA_COPY_REQUEST_SIZE", 512 << 10, 4096, 32 << 20);
}

struct nbd_handle *
copy_connect (const char *uri, const char *psk, bool ro, const char *const *contexts)
{
  return copy_connect_within (uri, psk, ro, contexts, ENGINE_CONNECT_TIMEOUT);
}

struct nbd_handle *
copy_connect_within (const char *uri, const char *psk, bool ro,
                     const char *const *contexts, int timeout_s)
{
  struct nbd_handle *h = nbd_create ();
  int64_t deadline = clock_mono_ns () + (int64_t) timeout_s * 1000000000;
  size_t i;

  if (h == NULL)
    goto err;
  if (nbd_set_uri_allow_local_file (h, true) == -1)
    goto err;
  if (psk && *psk && nbd_set_tls_psk_file (h, psk) == -1)
    goto err;
  for (i = 0; contexts && contexts[i]; i++)
    if (nbd_add_meta_context (h, contexts[i]) == -1)
      goto err;
  /* Connect without blocking, so as to ACK at once during the handshake:
   * qemu's NBD server sends some replies in pieces with Nagle's algorithm
   * on, so each later piece waits for this side's delayed ACK, some 40 ms
   * per option.  TCP_QUICKACK is not sticky, hence set before each wait.
   * (On a Unix socket the option does not apply; its error is ignored.) */
  if (nbd_aio_connect_uri (h, uri) == -1)
    goto err;
  /* The whole handshake has one deadline, so a server that answers a
   * byte at a time cannot stretch it either. */
  while (nbd_aio_is_connecting (h)) {
    int fd = nbd_aio_get_fd (h), one = 1;
    int64_t left_ms = (deadline - clock_mono_ns ()) / 1000000;
    /* A server that takes one client at a time (qemu-nbd without
     * --shared) never answers the second connection: say so, don't hang. */
    if (left_ms <= 0) {
      error_set (ERR_UNAVAILABLE, "NBD %s: no handshake within %d s (a server that "
                 "accepts and never answers; the engine opens several connections: a "
                 "qemu-nbd source needs --shared=0)", uri, timeout_s);
      nbd_close (h);
      return NULL;
    }
    if (fd >= 0)
      (void) setsockopt (fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    if (nbd_poll (h, left_ms < 1000 ? (int) left_ms : 1000) == -1)
      goto err;
  }
  if (!nbd_aio_is_ready (h))
    goto err;
  if (!ro && nbd_is_read_only (h) == 1) {
    error_set (ERR_INTERNAL, "NBD export %s is read-only", uri);
    nbd_close (h);
    return NULL;
  }
  return h;

 err:
  error_set (ERR_UNAVAILABLE, "NBD %s: %s", uri, nbd_get_error ());
  nbd_close (h);
  return NULL;
}

/* ----------------------------------------------------------- mapping --- */

static int
plan_add (struct plan *pl, uint64_t off, uint64_t len, int kind)
{
  struct item *last = pl->n ? &pl->v[pl->n - 1] : NULL;

  if (len == 0)
    return 0;
  pl->bytes += len;
  if (last && last->kind == kind && last->off + last->len == off) {
    last->len += len;
    return 0;
  }
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? pl->cap * 2 : 1024;
    struct item *v = realloc (pl->v, cap * sizeof *v);
    if (v == NULL) {
      error_set_errno (ERR_INTERNAL, errno, "mapping extents");
      return -1;
    }
    pl->v = v;
    pl->cap = cap;
  }
  pl->v[pl->n++] = (struct item) { off, len, kind };
  return 0;
}

/* Add [off, off+len) to a plan being widened to blocks.  An item may start
 * inside the last one only by a partial block both touch, which both made
 * DATA: that part is the last item's already. */
static int
plan_add_widened (struct plan *pl, uint64_t off, uint64_t len, int kind)
{
  uint64_t end = off + len;

  if (pl->n) {
    const struct item *last = &pl->v[pl->n - 1];
    if (off < last->off + last->len)
      off = last->off + last->len;
  }
  return end > off ? plan_add (pl, off, end - off, kind) : 0;
}

/* Widen pl to whole blocks of MF_BLOCK_SIZE (the last one ends at size):
 * see HASHING above. */
static int
plan_widen (struct plan *pl, uint64_t size)
{
  const uint64_t bs = MF_BLOCK_SIZE;
  struct plan out = { 0 };

  for (size_t i = 0; i < pl->n; i++) {
    const struct item *it = &pl->v[i];
    uint64_t end = it->off + it->len;
    uint64_t a = it->off / bs * bs;
    uint64_t e = (end + bs - 1) / bs * bs;
    uint64_t zs, ze;
    int r = 0;

    if (e > size)
      e = size;
    /* The whole blocks inside a ZERO item. */
    zs = (it->off + bs - 1) / bs * bs;
    ze = end == size ? size : end / bs * bs;
    if (it->kind == K_DATA || zs >= ze)
      r = plan_add_widened (&out, a, e - a, K_DATA);
    else {
      if (a < zs)
        r = plan_add_widened (&out, a, zs - a, K_DATA);
      if (r == 0)
        r = plan_add_widened (&out, zs, ze - zs, K_ZERO);
      if (r == 0 && ze < e)
        r = plan_add_widened (&out, ze, e - ze, K_DATA);
    }
    if (r == -1) {
      free (out.v);
      return -1;
    }
  }
  free (pl->v);
  *pl = out;
  return 0;
}

/* The caller's ranges as the plan: all DATA. */
static int
plan_ranges (struct plan *pl, const uint64_t *ranges, size_t n, uint64_t size)
{
  uint64_t prev_end = 0;

  for (size_t i = 0; i < n; i++) {
    uint64_t off = ranges[2 * i], len = ranges[2 * i + 1], end;
    if (__builtin_add_overflow (off, len, &end) || end > size || off < prev_end ||
        off % MF_BLOCK_SIZE || (end % MF_BLOCK_SIZE && end != size)) {
      error_set (ERR_INVALID, "range %" PRIu64 "+%" PRIu64 " is not whole blocks in "
                 "order inside the %" PRIu64 " bytes of the source", off, len, size);
      return -1;
    }
    if (plan_add (pl, off, len, K_DATA) == -1)
      return -1;
    prev_end = end;
  }
  return 0;
}

/* The extents of one block-status answer, per context. */
struct ext_list {
  uint32_t *e;                /* pairs (length, flags) */
  size_t n;
};

struct map_answer {
  const char *dirty_context;
  struct ext_list alloc, dirty;
  int err;
};

static int
map_extent_cb (void *opaque, const char *ctx, uint64_t offset,
               uint32_t *entries, size_t nr_entries, int *error)
{
  struct map_answer *a = opaque;
  struct ext_list *l = NULL;

  if (*error) {
    a->err = *error;
    return 0;
  }
  if (strcmp (ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    l = &a->alloc;
  else if (a->dirty_context && strcmp (ctx, a->dirty_context) == 0)
    l = &a->dirty;
  if (l == NULL || l->e)
    return 0;
  l->e = malloc (nr_entries * sizeof *entries);
  if (l->e == NULL) {
    a->err = ENOMEM;
    return 0;
  }
  memcpy (l->e, entries, nr_entries * sizeof *entries);
  l->n = nr_entries;
  return 0;
}

/* Bytes from pos that a list of extents covers, clamped to [pos, end). */
static uint64_t
ext_cover (const struct ext_list *l, uint64_t pos, uint64_t end)
{
  uint64_t c = 0;
  size_t i;
  for (i = 0; i + 1 < l->n && pos + c < end; i += 2)
    c += l->e[i];
  return pos + c > end ? end - pos : c;
}

/* Turn one block-status answer for [pos, end) into plan items.  Sets
 * *covered to the bytes from pos that every context answered for. */
static int
map_apply (struct shared *sh, struct map_answer *a, uint64_t pos, uint64_t end,
           bool have_alloc, const char *dirty, uint64_t *covered)
{
  const struct copy_spec *s = sh->s;
  uint64_t ca = end - pos, cd = end - pos, cur, cov;
  size_t ia = 0, id = 0;
  uint64_t ra = 0, rd = 0;     /* bytes left in the current extents */
  uint32_t fa = 0, fd = 1;     /* their flags (no context: data, dirty) */

  if (a->err) {
    error_set_errno (ERR_UNAVAILABLE, a->err, "mapping the source at %" PRIu64, pos);
    return -1;
  }
  if (have_alloc)
    ca = ext_cover (&a->alloc, pos, end);
  if (dirty)
    cd = ext_cover (&a->dirty, pos, end);
  cov = ca < cd ? ca : cd;
  if (cov == 0) {
    error_set (ERR_UNAVAILABLE, "the source answered block status at %" PRIu64
               " without extents", pos);
    return -1;
  }
  if (!have_alloc)
    ra = cov;
  if (!dirty)
    rd = cov;

  for (cur = pos; cur < pos + cov; ) {
    uint64_t step;
    int kind;

    if (ra == 0) {
      ra = a->alloc.e[ia];
      fa = a->alloc.e[ia + 1];
      ia += 2;
    }
    if (rd == 0) {
      rd = a->dirty.e[id];
      fd = a->dirty.e[id + 1];
      id += 2;
    }
    step = ra < rd ? ra : rd;
    if (cur + step > pos + cov)
      step = pos + cov - cur;
    if (!(fd & 1))
      kind = 0;                              /* clean: nothing to do */
    else if (fa & LIBNBD_STATE_ZERO)
      kind = s->zero_holes ? K_ZERO : 0;     /* reads as zero */
    else
      kind = K_DATA;
    if (kind && plan_add (&sh->plan, cur, step, kind) == -1)
      return -1;
    cur += step;
    ra -= step < ra ? step : ra;
    rd -= step < rd ? step : rd;
  }
  *covered = cov;
  return 0;
}

/* One block-status request of the mapping window. */
struct map_req {
  uint64_t start, end;
  struct map_answer a;
  bool done;
};

static int
map_done_cb (void *opaque, int *error)
{
  struct map_req *r = opaque;
  if (*error && !r->a.err)
    r->a.err = *error;
  r->done = true;
  return 1;
}

static void
map_req_clear (struct map_req *r)
{
  free (r->a.alloc.e);
  free (r->a.dirty.e);
  memset (&r->a, 0, sizeof r->a);
}

static int
map_issue (struct nbd_handle *h, struct map_req *r, uint64_t start, uint64_t end,
           const char *dirty)
{
  map_req_clear (r);
  r->a.dirty_context = dirty;
  r->start = start;
  r->end = end;
  r->done = false;
  if (nbd_aio_block_status (h, end - start, start,
                            (nbd_extent_callback) { .callback = map_extent_cb,
                                                    .user_data = &r->a },
                            (nbd_completion_callback) { .callback = map_done_cb,
                                                        .user_data = r }, 0) == -1) {
    error_set (ERR_UNAVAILABLE, "mapping the source at %" PRIu64 ": %s", start,
               nbd_get_error ());
    return -1;
  }
  return 0;
}

/* Map [0, size) into sh->plan, with MAP_DEPTH block-status requests in
 * flight over consecutive ranges.  Answers are applied in disk order; a
 * short answer is completed by asking again for the rest of its range
 * before the next range is applied.  On failure *hp may have been closed
 * (set to NULL). */
#define MAP_DEPTH 16
static int
map_source (struct shared *sh, struct nbd_handle **hp, uint64_t size,
            bool have_alloc, const char *dirty)
{
  struct nbd_handle *h = *hp;
  struct map_req ring[MAP_DEPTH];
  uint64_t next = 0;
  int head = 0, n = 0, i, ret = -1;

  if (!have_alloc && dirty == NULL)
    return plan_add (&sh->plan, 0, size, K_DATA);

  memset (ring, 0, sizeof ring);
  for (;;) {
    struct map_req *r;
    uint64_t covered;

    if (sh->p && sh->p->cancel) {
      error_set (ERR_UNAVAILABLE, "cancelled");
      goto out;
    }
    while (n < MAP_DEPTH && next < size) {
      uint64_t end = size - next > MAP_CHUNK ? next + MAP_CHUNK : size;
      if (map_issue (h, &ring[(head + n) % MAP_DEPTH], next, end, dirty) == -1)
        goto out;
      next = end;
      n++;
    }
    if (n == 0)
      break;
    r = &ring[head];
    if (!r->done) {
      if (nbd_poll (h, -1) == -1) {
        error_set (ERR_UNAVAILABLE, "mapping the source: %s", nbd_get_error ());
        goto out;
      }
      continue;
    }
    if (map_apply (sh, &r->a, r->start, r->end, have_alloc, dirty, &covered) == -1)
      goto out;
    if (r->start + covered < r->end) {
      if (map_issue (h, r, r->start + covered, r->end, dirty) == -1)
        goto out;
      continue;
    }
    map_req_clear (r);
    head = (head + 1) % MAP_DEPTH;
    n--;
  }
  ret = 0;

 out:
  /* Requests still in flight would write into ring: closing the handle
   * abandons them (no callback runs after nbd_close). */
  if (ret == -1 && nbd_aio_in_flight (*hp) > 0) {
    nbd_close (*hp);
    *hp = NULL;
  }
  for (i = 0; i < MAP_DEPTH; i++)
    map_req_clear (&ring[i]);
  return ret;
}

/* ----------------------------------------------------------- copying --- */

enum { S_FREE, S_READING, S_READ_DONE, S_WRITING, S_DONE };

struct slot {
  char *buf;
  uint64_t off;
  uint32_t len;
  int state, err;
  int kind;                   /* what the pending write is: K_DATA/K_ZERO */
};

struct worker {
  struct shared *sh;
  pthread_t thread;
  struct nbd_handle *src, *dst;
  struct slot *slots;
  int ok;
  uint64_t wb_off, wb_len;    /* file target: the range under writeback */
};

static int
read_done_cb (void *opaque, int *error)
{
  struct slot *sl = opaque;
  sl->err = *error;
  sl->state = S_READ_DONE;
  return 1;
}

static int
write_done_cb (void *opaque, int *error)
{
  struct slot *sl = opaque;
  sl->err = *error;
  sl->state = S_DONE;
  return 1;
}

/* Every byte of b is zero: the first 16 bytes are, and each byte equals
 * the one 16 bytes before it. */
static bool
is_zero (const char *b, size_t n)
{
  size_t i, head = n < 16 ? n : 16;
  for (i = 0; i < head; i++)
    if (b[i])
      return false;
  return n <= 16 || memcmp (b, b + 16, n - 16) == 0;
}

/* Take the next piece of the plan.  Returns false when none is left. */
static bool
take_piece (struct shared *sh, uint64_t *off, uint32_t *len, int *kind)
{
  SCOPED_LOCK (&sh->lock);
  while (sh->next < sh->plan.n) {
    struct item *it = &sh->plan.v[sh->next];
    uint64_t left = it->len - sh->next_off;
    uint64_t max = it->kind == K_DATA ? sh->req_size : ZERO_MAX;
    uint64_t take = left < max ? left : max;

    *off = it->off + sh->next_off;
    *len = (uint32_t) take;
    *kind = it->kind;
    sh->next_off += take;
    if (sh->next_off == it->len) {
      sh->next++;
      sh->next_off = 0;
    }
    return true;
  }
  return false;
}

static void
piece_done (struct shared *sh, uint32_t len)
{
  if (sh->p)
    sh->p->bytes_done += len;
}

/* Write a slot's data (or zeroes) to the target.  Returns -1 on error
 * (recorded in sh). */
static int
start_write (struct worker *w, struct slot *sl, int kind)
{
  struct shared *sh = w->sh;
  const struct copy_spec *s = sh->s;
  nbd_completion_callback cb = { .callback = write_done_cb, .user_data = sl };

  sl->kind = kind;
  if (w->dst) {
    int64_t r = kind == K_DATA
      ? nbd_aio_pwrite (w->dst, sl->buf, sl->len, sl->off, cb, 0)
      : nbd_aio_zero (w->dst, sl->len, sl->off, cb, 0);
    if (r == -1) {
      fail_copy (sh, ERR_UNAVAILABLE, "writing the target at %" PRIu64 ": %s",
                 sl->off, nbd_get_error ());
      return -1;
    }
    sl->state = S_WRITING;
    return 0;
  }

  /* A local file: synchronous. */
  if (kind == K_DATA) {
    size_t done = 0;
    while (done < sl->len) {
      ssize_t n = pwrite (s->dst_fd, sl->buf + done, sl->len - done, sl->off + done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        fail_copy (sh, errno == ENOSPC ? ERR_NO_SPACE : ERR_INTERNAL,
                   "writing the output at %" PRIu64 ": %s", sl->off + done,
                   strerror (n < 0 ? errno : EIO));
        return -1;
      }
      done += n;
    }
    /* Like nbdcopy: start writing this range back now, and wait for the
     * previous one and drop it from the page cache, so that a large
     * restore neither piles up dirty pages nor gets throttled on them. */
    sync_file_range (s->dst_fd, sl->off, sl->len, SYNC_FILE_RANGE_WRITE);
    if (w->wb_len) {
      sync_file_range (s->dst_fd, w->wb_off, w->wb_len,
                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                       SYNC_FILE_RANGE_WAIT_AFTER);
      posix_fadvise (s->dst_fd, w->wb_off, w->wb_len, POSIX_FADV_DONTNEED);
    }
    w->wb_off = sl->off;
    w->wb_len = sl->len;
  }
  else if (fallocate (s->dst_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      sl->off, sl->len) == -1) {
    fail_copy (sh, ERR_INTERNAL, "zeroing the output at %" PRIu64 ": %s",
               sl->off, strerror (errno));
    return -1;
  }
  sl->err = 0;
  sl->state = S_DONE;
  return 0;
}

static void
add_poll (struct pollfd *pfd, int *n, struct nbd_handle *h)
{
  unsigned dir;
  if (h == NULL)
    return;
  dir = nbd_aio_get_direction (h);
  pfd[*n].fd = nbd_aio_get_fd (h);
  pfd[*n].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                   ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
  pfd[*n].revents = 0;
  (*n)++;
}

static int
notify (struct pollfd *pfd, struct nbd_handle *h)
{
  if (pfd->revents & (POLLIN | POLLHUP))
    return nbd_aio_notify_read (h);
  if (pfd->revents & POLLOUT)
    return nbd_aio_notify_write (h);
  if (pfd->revents & (POLLERR | POLLNVAL)) {
    errno = EIO;
    return -1;
  }
  return 0;
}

static void *
worker_run (void *opaque)
{
  struct worker *w = opaque;
  struct shared *sh = w->sh;
  const struct copy_spec *s = sh->s;
  int nslots = sh->t.requests, i;
  bool exhausted = false;

  for (;;) {
    int busy = 0, progress = 0;

    if (sh->failed)
      return NULL;
    if (sh->p && sh->p->cancel) {
      fail_copy (sh, ERR_UNAVAILABLE, "cancelled");
      return NULL;
    }

    /* Completions first. */
    for (i = 0; i < nslots; i++) {
      struct slot *sl = &w->slots[i];
      if (sl->state == S_READ_DONE) {
        progress = 1;
        if (sl->err) {
          fail_copy (sh, ERR_UNAVAILABLE, "reading the source at %" PRIu64 ": %s",
                     sl->off, strerror (sl->err));
          return NULL;
        }
        sh->bytes_read += sl->len;
        if (s->hashes && mf_map_put_buffer (s->hashes, sl->off, sl->buf, sl->len) == -1) {
          fail_copy (sh, error_category (), "hashing the source at %" PRIu64 ": %s",
                     sl->off, error_message ());
          return NULL;
        }
        if (!sh->write) {
          piece_done (sh, sl->len);
          sl->state = S_FREE;
        }
        else if (!is_zero (sl->buf, sl->len)) {
          if (start_write (w, sl, K_DATA) == -1)
            return NULL;
        }
        else if (s->zero_holes) {
          if (start_write (w, sl, K_ZERO) == -1)
            return NULL;
        }
        else {
          piece_done (sh, sl->len);
          sl->state = S_FREE;
        }
      }
      if (sl->state == S_DONE) {
        progress = 1;
        if (sl->err) {
          fail_copy (sh, sl->err == ENOSPC ? ERR_NO_SPACE : ERR_UNAVAILABLE,
                     "writing the target at %" PRIu64 ": %s", sl->off,
                     strerror (sl->err));
          return NULL;
        }
        if (sl->kind == K_DATA)
          sh->bytes_written += sl->len;
        else
          sh->bytes_zero += sl->len;
        piece_done (sh, sl->len);
        sl->state = S_FREE;
      }
    }

    /* Then new requests into the free slots. */
    for (i = 0; i < nslots && !exhausted; i++) {
      struct slot *sl = &w->slots[i];
      int kind;
      if (sl->state != S_FREE)
        continue;
      if (!take_piece (sh, &sl->off, &sl->len, &kind)) {
        exhausted = true;
        break;
      }
      progress = 1;
      if (kind == K_DATA) {
        if (nbd_aio_pread (w->src, sl->buf, sl->len, sl->off,
                           (nbd_completion_callback) { .callback = read_done_cb,
                                                       .user_data = sl }, 0) == -1) {
          fail_copy (sh, ERR_UNAVAILABLE, "reading the source at %" PRIu64 ": %s",
                     sl->off, nbd_get_error ());
          return NULL;
        }
        sl->state = S_READING;
        continue;
      }
      if (s->hashes && mf_map_put_zero (s->hashes, sl->off, sl->len) == -1) {
        fail_copy (sh, error_category (), "hashing the source at %" PRIu64 ": %s",
                   sl->off, error_message ());
        return NULL;
      }
      if (!sh->write)
        piece_done (sh, sl->len);
      else if (start_write (w, sl, K_ZERO) == -1)
        return NULL;
    }

    for (i = 0; i < nslots; i++)
      if (w->slots[i].state != S_FREE)
        busy++;
    if (busy == 0 && exhausted)
      break;
    if (progress)
      continue;

    /* Wait for the connections. */
    {
      struct pollfd pfd[2];
      int n = 0, r;
      add_poll (pfd, &n, w->src);
      add_poll (pfd, &n, w->dst);
      r = poll (pfd, n, 500);
      if (r == -1 && errno != EINTR) {
        fail_copy (sh, ERR_INTERNAL, "poll: %s", strerror (errno));
        return NULL;
      }
      if (r <= 0)
        continue;
      if (notify (&pfd[0], w->src) == -1) {
        fail_copy (sh, ERR_UNAVAILABLE, "source connection: %s", nbd_get_error ());
        return NULL;
      }
      if (w->dst && notify (&pfd[1], w->dst) == -1) {
        fail_copy (sh, ERR_UNAVAILABLE, "target connection: %s", nbd_get_error ());
        return NULL;
      }
    }
  }

  /* Durability of this connection's writes. */
  if (w->dst && nbd_flush (w->dst, 0) == -1) {
    fail_copy (sh, ERR_UNAVAILABLE, "flushing the target: %s", nbd_get_error ());
    return NULL;
  }
  w->ok = 1;
  return NULL;
}

static void
worker_close (struct worker *w)
{
  int i;
  if (w->src) {
    nbd_shutdown (w->src, 0);
    nbd_close (w->src);
  }
  if (w->dst) {
    if (w->ok)
      nbd_shutdown (w->dst, 0);
    nbd_close (w->dst);
  }
  for (i = 0; w->slots && i < w->sh->t.requests; i++)
    free (w->slots[i].buf);
  free (w->slots);
}

int
copy_run (const struct copy_spec *s, struct engine_progress *p, struct copy_stats *st)
{
  struct shared sh = { .s = s, .p = p };
  struct worker *ws = NULL;
  struct nbd_handle *map = NULL;
  const char *ctxs[3] = { LIBNBD_CONTEXT_BASE_ALLOCATION, s->dirty_context, NULL };
  const char *dirty = NULL;
  int64_t size, dst_size;
  int nw = 0, started = 0, i, ret = -1;
  bool have_alloc;

  memset (st, 0, sizeof *st);
  sh.write = s->dst_uri != NULL || s->dst_fd >= 0;
  pthread_mutex_init (&sh.lock, NULL);
  copy_tuning_get (&sh.t);
  if (p && p->started_ns == 0)
    p->started_ns = clock_mono_ns ();

  map = copy_connect (s->src_uri, s->src_psk, true, ctxs);
  if (map == NULL) {
    error_prefix ("opening the source");
    goto out;
  }
  size = nbd_get_size (map);
  if (size < 0) {
    error_set (ERR_UNAVAILABLE, "source size: %s", nbd_get_error ());
    goto out;
  }
  st->size = size;
  have_alloc = nbd_can_meta_context (map, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (s->dirty_context) {
    if (nbd_can_meta_context (map, s->dirty_context) == 1)
      dirty = s->dirty_context;
    else if (asprintf (&st->full_reason, "the source does not offer %s",
                       s->dirty_context) == -1)
      st->full_reason = NULL;
  }
  st->incremental = dirty != NULL;

  /* The request size the source allows (NBD: at most 32 MiB); whole
   * blocks when hashing. */
  sh.req_size = sh.t.request_size;
  {
    int64_t mx = nbd_get_block_size (map, LIBNBD_SIZE_MAXIMUM);
    if (s->hashes)
      sh.req_size = (sh.req_size + MF_BLOCK_SIZE - 1) / MF_BLOCK_SIZE * MF_BLOCK_SIZE;
    if (mx > 0 && (uint64_t) mx < sh.req_size)
      sh.req_size = s->hashes ? mx / MF_BLOCK_SIZE * MF_BLOCK_SIZE : mx;
    if (sh.req_size == 0) {
      error_set (ERR_UNAVAILABLE, "the source reads at most %" PRIi64 " bytes a request, "
                 "less than a %u-byte block", mx, MF_BLOCK_SIZE);
      goto out;
    }
  }
  if (s->hashes && mf_map_virtual_size (s->hashes) != size) {
    error_set (ERR_CONFLICT, "the source holds %" PRIi64 " bytes, its hash map %" PRIi64,
               size, mf_map_virtual_size (s->hashes));
    goto out;
  }

  if (s->ranges) {
    if (plan_ranges (&sh.plan, s->ranges, s->n_ranges, size) == -1)
      goto out;
  }
  else if (map_source (&sh, &map, size, have_alloc, dirty) == -1)
    goto out;
  if (s->hashes && !s->ranges && plan_widen (&sh.plan, size) == -1)
    goto out;
  nbd_shutdown (map, 0);
  nbd_close (map);
  map = NULL;
  if (p)
    p->bytes_total = sh.plan.bytes;
  if (s->dst_uri == NULL && s->dst_fd >= 0 && ftruncate (s->dst_fd, size) == -1) {
    error_set_errno (errno == ENOSPC || errno == EFBIG ? ERR_NO_SPACE : ERR_INTERNAL,
                     errno, "sizing the output to %" PRIi64 " bytes", size);
    goto out;
  }

  /* As many workers as there are pieces, up to the connection count. */
  nw = sh.t.connections;
  if ((uint64_t) sh.plan.bytes / sh.req_size + 1 < (uint64_t) nw)
    nw = (int) ((uint64_t) sh.plan.bytes / sh.req_size + 1);
  ws = calloc (nw, sizeof *ws);
  if (ws == NULL) {
    error_set_errno (ERR_INTERNAL, errno, "copy workers");
    goto out;
  }
  for (i = 0; i < nw; i++) {
    struct worker *w = &ws[i];
    int j;
    w->sh = &sh;
    w->slots = calloc (sh.t.requests, sizeof *w->slots);
    if (w->slots == NULL) {
      error_set_errno (ERR_INTERNAL, errno, "copy buffers");
      goto out;
    }
    for (j = 0; j < sh.t.requests; j++) {
      w->slots[j].buf = malloc (sh.req_size);
      if (w->slots[j].buf == NULL) {
        error_set_errno (ERR_INTERNAL, errno, "copy buffers");
        goto out;
      }
    }
    w->src = copy_connect (s->src_uri, s->src_psk, true, NULL);
    if (w->src == NULL) {
      error_prefix ("opening the source");
      goto out;
    }
    if (s->dst_uri) {
      w->dst = copy_connect (s->dst_uri, s->dst_psk, false, NULL);
      if (w->dst == NULL) {
        error_prefix ("opening the target");
        goto out;
      }
      dst_size = nbd_get_size (w->dst);
      if (dst_size < size) {
        error_set (ERR_CONFLICT, "the target holds %" PRIi64 " bytes, the source %" PRIi64,
                   dst_size, size);
        goto out;
      }
    }
  }

  for (started = 0; started < nw; started++) {
    int r = pthread_create (&ws[started].thread, NULL, worker_run, &ws[started]);
    if (r) {
      fail_copy (&sh, ERR_INTERNAL, "starting a copy thread: %s", strerror (r));
      break;
    }
  }
  for (i = 0; i < started; i++)
    pthread_join (ws[i].thread, NULL);
  if (sh.failed) {
    error_set (sh.err_cat, "%s", sh.err);
    goto out;
  }
  if (s->dst_uri == NULL && s->dst_fd >= 0 && fsync (s->dst_fd) == -1) {
    error_set_errno (ERR_INTERNAL, errno, "fsync of the output");
    goto out;
  }
  st->bytes_read = sh.bytes_read;
  st->bytes_written = sh.bytes_written;
  st->bytes_zero = sh.bytes_zero;
  ret = 0;

 out:
  if (map)
    nbd_close (map);
  for (i = 0; ws && i < nw; i++)
    worker_close (&ws[i]);
  free (ws);
  free (sh.plan.v);
  pthread_mutex_destroy (&sh.lock);
  if (ret == -1) {
    free (st->full_reason);
    st->full_reason = NULL;
  }
  return ret;
}

int64_t
engine_progress_rate (const struct engine_progress *p)
{
  int64_t started = atomic_load (&p->started_ns);
  int64_t elapsed_ns = clock_mono_ns () - started;

  if (started <= 0 || elapsed_ns <= 0)
    return 0;
  return (int64_t) ((double) atomic_load (&p->bytes_done) * 1e9 / elapsed_ns);
}
