/* tests/unit/test-merge.c - storage/merge.c against real qemu-img and qemu-io.
 *
 * Each case builds a chain of QCOW2 files the way the hub lays them out
 * (repo_create_image: same-folder relative backing names, sealed 0444),
 * writes data, zeros and discards into each layer with qemu-io, resizes
 * between layers, and records every point's view as raw bytes.  After a
 * merge step every kept point must show exactly those bytes, C's backing
 * must be what the step promises, and the files it must not touch are
 * byte-identical.  The crash cases run the step in a child that
 * STRATA_CRASH_AT kills with SIGKILL at each crash point, check C's view
 * right then, and run the step again.  The cost cases count allocated
 * bytes on a 1 GiB disk: a merge adds about the removed layers' data, not
 * the disk size.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "storage/merge.h"
#include "storage/repo.h"
#include "util/error.h"
#include "util/proc.h"

#define MiB (1024 * 1024LL)
#define MAX_LAYERS 8
#define MAX_OPS 64

static char tmpbuf[] = "/tmp/test-merge.XXXXXX";
static char repo[1024];

/* Run a program (argv[0] from PATH) quietly; true when it exits 0. */
static bool
run (const char *const argv[])
{
  return proc_run (argv, NULL) == 0;
}

/* One point of a chain: its file name, virtual size and the qemu-io
 * commands that write it, separated by ';'.  Layer i is backed by layer
 * i - 1 (layer 0 is a full). */
struct layer {
  const char *name;
  int64_t size;
  const char *ops;
};

struct chain {
  const char *ctx;
  struct layer layers[MAX_LAYERS];
  size_t n;
  char rels[MAX_LAYERS][128];
  char paths[MAX_LAYERS][PATH_MAX];
  char snaps[MAX_LAYERS][PATH_MAX];     /* the view before, raw */
  char files[MAX_LAYERS][PATH_MAX];     /* the file before, byte for byte */
};

/* Write the layers' files and record each view and file. */
static bool
chain_build (struct chain *ch)
{
  for (size_t i = 0; i < ch->n; i++) {
    const struct layer *l = &ch->layers[i];
    const char *argv[2 * MAX_OPS + 5] = { "qemu-io", "-f", "qcow2" };
    char ops[MAX_OPS][64];
    const char *p = l->ops;
    size_t k = 3, nops = 0;

    snprintf (ch->rels[i], sizeof ch->rels[i], "%s/disk0/%s.qcow2", ch->ctx, l->name);
    snprintf (ch->paths[i], sizeof ch->paths[i], "%s/%s", repo, ch->rels[i]);
    snprintf (ch->snaps[i], sizeof ch->snaps[i], "%s/snap-%s-%s.raw", tmpbuf,
              ch->ctx, l->name);
    snprintf (ch->files[i], sizeof ch->files[i], "%s/file-%s-%s.qcow2", tmpbuf,
              ch->ctx, l->name);
    if (repo_create_image (repo, ch->rels[i], l->size,
                           i ? ch->rels[i - 1] : NULL) == -1) {
      diag ("creating %s: %s", ch->rels[i], error_message ());
      return false;
    }
    while (p && *p && nops < MAX_OPS) {
      size_t len = strcspn (p, ";");
      snprintf (ops[nops], sizeof ops[nops], "%.*s", (int) len, p);
      argv[k++] = "-c";
      argv[k++] = ops[nops++];
      p += len + (p[len] == ';');
    }
    argv[k++] = ch->paths[i];
    if (l->ops && !run (argv)) {
      diag ("writing %s failed", ch->rels[i]);
      return false;
    }
    if (repo_seal_image (repo, ch->rels[i]) == -1)
      return false;
  }
  for (size_t i = 0; i < ch->n; i++)
    if (!run ((const char *[]) { "qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                                 ch->paths[i], ch->snaps[i], NULL }) ||
        !run ((const char *[]) { "cp", ch->paths[i], ch->files[i], NULL }))
      return false;
  return true;
}

/* Whether layer i still shows the bytes it showed when built. */
static bool
same_view (const struct chain *ch, size_t i)
{
  char now[PATH_MAX + 8];

  snprintf (now, sizeof now, "%s.now", ch->snaps[i]);
  return run ((const char *[]) { "qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                                 ch->paths[i], now, NULL }) &&
         run ((const char *[]) { "cmp", "-s", ch->snaps[i], now, NULL });
}

static bool
same_file (const struct chain *ch, size_t i)
{
  return run ((const char *[]) { "cmp", "-s", ch->paths[i], ch->files[i], NULL });
}

/* The backing file name recorded in the image at path ("" for none), in
 * a static buffer; NULL when qemu-img cannot read it. */
static const char *
backing_of (const char *path)
{
  static char name[256];
  const char *argv[] = { "qemu-img", "info", "--output=json", "-f", "qcow2",
                         path, NULL };
  char *out = NULL;
  json_t *root, *b;

  if (proc_run (argv, &out) == -1) {
    free (out);
    return NULL;
  }
  root = json_loads (out, 0, NULL);
  free (out);
  b = json_object_get (root, "backing-filename");
  snprintf (name, sizeof name, "%s", json_is_string (b) ? json_string_value (b) : "");
  json_decref (root);
  return name;
}

static bool
is_sealed (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 && (st.st_mode & 0777) == 0444;
}

static bool
exists (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0;
}

/* A merge of ch->layers[first..last]: head when head, else middle. */
struct step {
  bool head;
  size_t first, last;
};

static int
step_run (const struct chain *ch, const struct step *s)
{
  const char *rels[MAX_LAYERS];
  size_t n = s->last - s->first + 1;

  for (size_t i = 0; i < n; i++)
    rels[i] = ch->rels[s->first + i];
  return s->head ? merge_head (repo, rels, n) : merge_middle (repo, rels, n);
}

/* Removed: the layers strictly between A and C (middle), or D0 and those
 * above it below C (head). */
static bool
is_removed (const struct step *s, size_t i)
{
  return i < s->last && (s->head ? i >= s->first : i > s->first);
}

/* Everything a finished step promises. */
static void
check_result (const char *what, const struct chain *ch, const struct step *s)
{
  const char *c = ch->paths[s->last];
  const char *backing = backing_of (c);
  char want[256];
  bool views = true, files = true;

  for (size_t i = 0; i < ch->n; i++) {
    if (is_removed (s, i)) {
      if (s->head && i == s->first)
        ok (!exists (ch->paths[i]), "%s: D0's path is gone", what);
      else if (!same_file (ch, i)) {
        diag ("%s changed", ch->rels[i]);
        files = false;
      }
    }
    else if (!same_view (ch, i)) {
      diag ("%s shows other bytes", ch->rels[i]);
      views = false;
    }
  }
  ok (views, "%s: every kept point shows the same bytes", what);
  if (!s->head)
    files = files && same_file (ch, s->first);
  ok (files, "%s: %s untouched", what, s->head ? "removed files" : "A and removed files");
  snprintf (want, sizeof want, "%s", s->head ? "" : strrchr (ch->rels[s->first], '/') + 1);
  is_str (backing, want, "%s: C's backing file", what);
  ok (is_sealed (c), "%s: C is sealed 0444", what);
  ok (run ((const char *[]) { "qemu-img", "check", "-q", "-f", "qcow2", c, NULL }),
      "%s: qemu-img check finds C clean", what);
}

/* Build the chain, merge, check; then run the step again (a redo after it
 * finished) and check that nothing changed. */
static void
test_step (const char *what, struct chain *ch, struct step s)
{
  if (!ok (chain_build (ch), "%s: chain built", what))
    return;
  if (!ok (step_run (ch, &s) == 0, "%s: merge", what))
    diag ("%s", error_message ());
  check_result (what, ch, &s);
  ok (step_run (ch, &s) == 0 && same_view (ch, s.last),
      "%s: running it again changes nothing", what);
}

/* Kill the step at a crash point, check C's view there, then redo. */
static void
test_crash (const char *what, struct chain *ch, struct step s, const char *point)
{
  char title[256];
  bool views = true;
  pid_t pid;
  int st;

  snprintf (title, sizeof title, "%s, crash at %s", what, point);
  if (!ok (chain_build (ch), "%s: chain built", title))
    return;
  fflush (stdout);
  pid = fork ();
  if (pid == 0) {
    setenv ("STRATA_CRASH_AT", point, 1);
    _exit (step_run (ch, &s) == 0 ? 0 : 1);
  }
  ok (pid > 0 && waitpid (pid, &st, 0) == pid && WIFSIGNALED (st) &&
      WTERMSIG (st) == SIGKILL, "%s: the step died there", title);
  for (size_t i = s.last; i < ch->n; i++)
    views = views && same_view (ch, i);
  ok (views, "%s: C and its children show the same bytes right after", title);
  if (!ok (step_run (ch, &s) == 0, "%s: the step runs again", title))
    diag ("%s", error_message ());
  check_result (title, ch, &s);
}

/* ------------------------------------------------------------ cases --- */

#define FULL8 "write -P 0x11 0 8M"

/* A full (or kept ancestor) named base, three incrementals of writes,
 * zeros and discards, then c and its child g. */
#define THREE_INCREMENTALS(base)                                            \
  { base, 8 * MiB, FULL8 },                                                 \
  { "r1", 8 * MiB, "write -P 0x21 1M 64k;write -z 2M 128k;write -P 0x22 7M 1M" }, \
  { "r2", 8 * MiB, "discard 1M 64k;write -P 0x23 3M 200k;write -z 7M 64k" }, \
  { "r3", 8 * MiB, "write -z 0 64k;write -P 0x24 6M 5k" },                   \
  { "c", 8 * MiB, "write -P 0x31 3100k 64k;discard 6M 64k" },               \
  { "g", 8 * MiB, "write -P 0x41 5M 64k" }

/* base, r1 shrunk (hiding base's data beyond 4M), r2 grown again, c
 * smaller than base, g. */
#define RESIZED(base)                                                       \
  { base, 8 * MiB, FULL8 },                                                 \
  { "r1", 4 * MiB, "write -P 0x21 1M 64k;write -z 2M 64k" },                \
  { "r2", 8 * MiB, "write -P 0x22 6M 64k;discard 3M 64k" },                 \
  { "c", 6 * MiB, "write -P 0x31 5M 64k" },                                 \
  { "g", 8 * MiB, "write -P 0x41 7M 64k" }

static void
test_head (void)
{
  struct chain h0 = { .ctx = "ctx-h0", .layers = {
      { "d0", 8 * MiB, FULL8 },
      { "c", 8 * MiB, "write -P 0x31 1M 64k;write -z 2M 128k;discard 3M 64k;"
                      "write -P 0x32 4100k 3k" },
      { "g", 8 * MiB, "write -P 0x41 5M 64k" } }, .n = 3 };
  test_step ("head, no removed incremental", &h0, (struct step) { true, 0, 1 });

  struct chain h1 = { .ctx = "ctx-h1", .layers = {
      THREE_INCREMENTALS ("d0"), { "g2", 8 * MiB, "write -P 0x42 0 4k" } }, .n = 7 };
  test_step ("head, three removed incrementals", &h1, (struct step) { true, 0, 4 });

  /* D0's data beyond r1's end is hidden from c: the commit must not let
   * it show again; c is smaller than d0, g grows beyond c. */
  struct chain h2 = { .ctx = "ctx-h2", .layers = {
      { "d0", 8 * MiB, FULL8 },
      { "r1", 4 * MiB, "write -P 0x21 1M 64k" },
      { "r2", 8 * MiB, "write -P 0x22 6M 64k;write -z 0 64k" },
      { "c", 6 * MiB + 512, "write -P 0x31 6M 512" },
      { "g", 10 * MiB, "write -P 0x41 9M 64k" } }, .n = 5 };
  test_step ("head, shrink then grow, c smaller than d0", &h2, (struct step) { true, 0, 3 });

  struct chain h3 = { .ctx = "ctx-h3", .layers = {
      { "d0", 4 * MiB, "write -P 0x11 0 4M" },
      { "r1", 6 * MiB, "write -P 0x21 5M 64k" },
      { "c", 9 * MiB, "write -P 0x31 8M 64k" },
      { "g", 9 * MiB, "write -P 0x41 1M 64k" } }, .n = 4 };
  test_step ("head, c larger than d0", &h3, (struct step) { true, 0, 2 });
}

static void
test_middle (void)
{
  struct chain m1 = { .ctx = "ctx-m1", .layers = {
      { "f", 8 * MiB, FULL8 },
      { "a", 8 * MiB, "write -P 0x12 2M 1M" },
      { "r1", 8 * MiB, "write -P 0x21 1M 64k;write -z 2M 128k;discard 2560k 64k;"
                       "write -P 0x22 7M 3k" },
      { "c", 8 * MiB, "write -P 0x31 1M 4k" },
      { "g", 8 * MiB, "write -P 0x41 5M 64k" } }, .n = 5 };
  test_step ("middle, one removed layer", &m1, (struct step) { false, 1, 3 });

  struct chain m2 = { .ctx = "ctx-m2", .layers = { THREE_INCREMENTALS ("a") }, .n = 6 };
  test_step ("middle, three removed layers", &m2, (struct step) { false, 0, 4 });

  /* r1 shrinks and hides a's data beyond 4M; r2 grows again: c must go
   * on showing zeros there once it is backed by a. */
  struct chain m3 = { .ctx = "ctx-m3", .layers = {
      { "a", 8 * MiB, FULL8 },
      { "r1", 4 * MiB, "write -P 0x21 1M 64k" },
      { "r2", 8 * MiB, "write -P 0x22 5M 64k;write -P 0x23 4M 1k" },
      { "c", 8 * MiB, "write -P 0x31 7M 64k" },
      { "g", 8 * MiB, "write -P 0x41 6M 64k" } }, .n = 5 };
  test_step ("middle, shrink then grow hides a's data", &m3, (struct step) { false, 0, 3 });

  /* The case QEMU 7.2.0's safe rebase never finished: c larger than its
   * old backing file, the new base in the old chain. */
  struct chain m4 = { .ctx = "ctx-m4", .layers = {
      { "a", 8 * MiB, FULL8 },
      { "r1", 4 * MiB + 512, "write -P 0x21 4M 512" },
      { "c", 8 * MiB, "write -P 0x31 7M 64k" } }, .n = 3 };
  test_step ("middle, c larger than its old backing", &m4, (struct step) { false, 0, 2 });

  /* a shorter than c, r1 longer than c, c shrunk. */
  struct chain m5 = { .ctx = "ctx-m5", .layers = {
      { "a", 4 * MiB, "write -P 0x11 0 4M" },
      { "r1", 10 * MiB, "write -P 0x21 5M 64k;write -P 0x22 9M 64k" },
      { "c", 6 * MiB, "write -P 0x31 1M 64k" },
      { "g", 8 * MiB, "write -P 0x41 7M 64k" } }, .n = 4 };
  test_step ("middle, a shorter and c shrunk", &m5, (struct step) { false, 0, 2 });
}

static void
test_crashes (void)
{
  static const char *head_points[] = { "merge:committed", "merge:renamed" };
  static const char *middle_points[] = { "merge:copied", "merge:rebased" };

  static const char *head_ctx[] = { "ctx-hc0", "ctx-hc1" };
  static const char *middle_ctx[] = { "ctx-mc0", "ctx-mc1" };

  for (size_t i = 0; i < 2; i++) {
    struct chain h = { .ctx = head_ctx[i], .layers = { RESIZED ("d0") }, .n = 5 };
    test_crash ("head with resizes", &h, (struct step) { true, 0, 3 }, head_points[i]);

    struct chain m = { .ctx = middle_ctx[i], .layers = { RESIZED ("a") }, .n = 5 };
    test_crash ("middle with resizes", &m, (struct step) { false, 0, 3 }, middle_points[i]);
  }
}

/* Wrong input: nothing changes and the error says why. */
static void
test_bad_input (void)
{
  struct chain b = { .ctx = "ctx-bad", .layers = {
      { "a", 8 * MiB, FULL8 },
      { "r1", 8 * MiB, "write -P 0x21 1M 64k" },
      { "r2", 8 * MiB, "write -P 0x22 2M 64k" },
      { "c", 8 * MiB, "write -P 0x31 3M 64k" } }, .n = 4 };
  const char *skip[] = { b.rels[0], b.rels[2], b.rels[3] };

  if (!ok (chain_build (&b), "bad input: chain built"))
    return;
  ok (merge_middle (repo, skip, 3) == -1 && error_category () == ERR_CONFLICT &&
      strstr (error_message (), "r2.qcow2 is backed by r1.qcow2, not by a.qcow2"),
      "a middle merge over a gap in the chain is refused, naming the file");
  diag ("%s", error_message ());
  ok (merge_head (repo, skip, 3) == -1 && error_category () == ERR_CONFLICT,
      "a head merge over a gap in the chain is refused");
  ok (merge_middle (repo, skip, 2) == -1 && error_category () == ERR_INVALID,
      "a middle merge without a removed layer is refused");
  ok (same_file (&b, 0) && same_file (&b, 1) && same_file (&b, 2) && same_file (&b, 3),
      "the refused merges changed no file");
}

/* A step whose file another QEMU process holds fails with QEMU's reason,
 * leaves the files sealed and the views as they were, and works once the
 * file is free. */
static void
test_busy (const char *what, struct chain *ch, struct step s)
{
  const char *argv[] = { "qemu-io", "-r", "-f", "qcow2", "-c", "sleep 600000",
                         ch->paths[s.last], NULL };
  bool sealed = true;
  pid_t holder;
  int t;

  if (!ok (chain_build (ch), "%s: chain built", what) ||
      !ok (proc_spawn (argv, NULL, &holder) == 0, "%s: qemu-io holds c", what))
    return;
  for (t = 0; t < 1000 && !repo_image_in_use (repo, ch->rels[s.last]); t++)
    usleep (10000);
  /* Reading c holds its whole chain: head names d0, the first it checks. */
  ok (step_run (ch, &s) == -1 && error_category () == ERR_CONFLICT &&
      strstr (error_message (), ch->rels[s.head ? s.first : s.last]) &&
      strstr (error_message (), "in use"),
      "%s: the step is refused as a conflict naming the file", what);
  diag ("%s", error_message ());
  for (size_t i = s.first; i <= s.last; i++)
    sealed = sealed && is_sealed (ch->paths[i]);
  ok (sealed, "%s: the files are sealed again", what);
  ok (same_view (ch, s.last), "%s: c shows the same bytes", what);
  proc_stop (holder);
  ok (step_run (ch, &s) == 0, "%s: the step works once c is free", what);
  check_result (what, ch, &s);
}

/* ------------------------------------------------------------- cost --- */

/* Bytes the file takes on disk. */
static int64_t
allocated (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? (int64_t) st.st_blocks * 512 : -1;
}

/* qemu-io commands writing count 64k blocks every stride bytes from start. */
static char *
scattered (int pattern, int64_t start, int64_t stride, int count)
{
  char *s = calloc (count, 48);
  for (int i = 0; i < count; i++)
    sprintf (s + strlen (s), "%swrite -P 0x%x %lld 64k", i ? ";" : "", pattern,
             (long long) (start + i * stride));
  return s;
}

/* Views of 1 GiB disks: qemu-img compare skips what both leave sparse. */
static bool
same_big_view (const struct chain *ch, size_t i)
{
  return run ((const char *[]) { "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw",
                                 ch->paths[i], ch->snaps[i], NULL });
}

/* Merge a 4-layer chain of 1 GiB disks whole (head: rels 0..3 with C at
 * 3; middle: A 0, removed 1 and 2, C 3) and check that the file that ends
 * at C's path grew by [lo, hi] bytes over the file the data went into. */
static void
cost_case (const char *what, struct chain *ch, bool head, int64_t lo, int64_t hi)
{
  struct step s = { head, 0, 3 };
  int64_t before, grown;

  if (!ok (chain_build (ch), "%s: chain built", what))
    return;
  before = allocated (ch->paths[head ? 0 : 3]);
  ok (step_run (ch, &s) == 0, "%s: merge", what);
  grown = allocated (ch->paths[3]) - before;
  ok (grown >= lo && grown <= hi, "%s: grew by %lld bytes, in [%lld, %lld]", what,
      (long long) grown, (long long) lo, (long long) hi);
  ok (same_big_view (ch, 3), "%s: c shows the same bytes", what);
}

static void
test_cost (void)
{
  char *full = scattered (0x11, 0, 16 * MiB, 64);            /* 4 MiB */
  char *w1 = scattered (0x21, 1 * MiB, 64 * MiB, 16);        /* 1 MiB each */
  char *w2 = scattered (0x22, 2 * MiB, 64 * MiB, 16);
  char *w1_short = scattered (0x21, 1 * MiB, 32 * MiB, 16);
  char *wc = scattered (0x31, 3 * MiB, 256 * MiB, 4);        /* 256 KiB */

  struct chain m = { .ctx = "ctx-cost-m", .layers = {
      { "a", 1024 * MiB, full }, { "r1", 1024 * MiB, w1 }, { "r2", 1024 * MiB, w2 },
      { "c", 1024 * MiB, wc } }, .n = 4 };
  cost_case ("cost, middle: c takes the removed 2 MiB, not the disk", &m, false,
             3 * MiB / 2, 3 * MiB);

  /* r1 shrinks to 512 MiB: a's 2 MiB beyond that are hidden, and the merge
   * writes the hidden half as zeros, which cost no data. */
  struct chain z = { .ctx = "ctx-cost-z", .layers = {
      { "a", 1024 * MiB, full }, { "r1", 512 * MiB, w1_short }, { "r2", 1024 * MiB, w2 },
      { "c", 1024 * MiB, wc } }, .n = 4 };
  cost_case ("cost, hidden region: zeros cost no data", &z, false, 3 * MiB / 2, 3 * MiB);

  struct chain h = { .ctx = "ctx-cost-h", .layers = {
      { "d0", 1024 * MiB, full }, { "r1", 1024 * MiB, w1 }, { "r2", 1024 * MiB, w2 },
      { "c", 1024 * MiB, wc } }, .n = 4 };
  cost_case ("cost, head: d0 takes the 2.25 MiB above it", &h, true, 3 * MiB / 2, 3 * MiB);

  /* The commit zeroes d0's 2 MiB hidden beyond r1's end (metadata, freeing
   * them) and adds about as much: nowhere near the 512 MiB hidden. */
  struct chain hz = { .ctx = "ctx-cost-hz", .layers = {
      { "d0", 1024 * MiB, full }, { "r1", 512 * MiB, w1_short }, { "r2", 1024 * MiB, w2 },
      { "c", 1024 * MiB, wc } }, .n = 4 };
  cost_case ("cost, head over a hidden region: zeros cost no data", &hz, true,
             -3 * MiB, 3 * MiB);

  free (full);
  free (w1);
  free (w1_short);
  free (w2);
  free (wc);
}

int
main (void)
{
  char real[PATH_MAX];

  if (!run ((const char *[]) { "qemu-io", "--version", NULL }) ||
      !run ((const char *[]) { "qemu-img", "--version", NULL }) ||
      !run ((const char *[]) { "qemu-nbd", "--version", NULL }))
    skip_all ("qemu-io, qemu-img or qemu-nbd is missing");
  if (mkdtemp (tmpbuf) == NULL || realpath (tmpbuf, real) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (repo, sizeof repo, "%.900s/repo", real);
  mkdir (repo, 0750);

  test_head ();
  test_middle ();
  test_crashes ();
  test_bad_input ();
  {
    struct chain h = { .ctx = "ctx-busy-h", .layers = { RESIZED ("d0") }, .n = 5 };
    struct chain m = { .ctx = "ctx-busy-m", .layers = { RESIZED ("a") }, .n = 5 };
    test_busy ("head, c in use", &h, (struct step) { true, 0, 3 });
    test_busy ("middle, c in use", &m, (struct step) { false, 0, 3 });
  }
  test_cost ();

  run ((const char *[]) { "rm", "-rf", tmpbuf, NULL });
  return done_testing ();
}
