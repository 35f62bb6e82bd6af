/* storage/merge.h - the file side of taking points out of a disk's chain.
 *
 * A prune removes runs of consecutive points from a chain of QCOW2 files
 * (storage/repo.h: <ctx>/disk<N>/<job>.qcow2, each backed by its parent
 * by a same-folder relative name).  Each run is taken out by one merge step
 * on the files, after which the hub records the new chain in the catalog
 * and deletes the removed files.  Both steps below keep the view of every
 * kept point bit-identical at every instant, and are safe to run again
 * after a crash at any point: they find from the files how far they got.
 *
 * Paths are relative to the repository root (repo_path), as the catalog
 * keeps them.  Both return 0, or -1 with the thread's error set (naming the
 * file and what qemu-img or qemu-nbd said).
 *
 * Crash points (util/crash.h, STRATA_CRASH_AT):
 *   merge:committed  head: C's view committed into D0 and synced, before
 *                    the rename
 *   merge:renamed    head: after D0 was renamed over C and the folder synced
 *   merge:copied     middle: after the copy into C and its fsync
 *   merge:rebased    middle: after C's backing was set to A and synced
 */
#ifndef STRATA_STORAGE_MERGE_H
#define STRATA_STORAGE_MERGE_H

#include <stdbool.h>
#include <stddef.h>

/* Head: rels[0] is the full D0 being removed, rels[1..n-2] the removed
 * incrementals above it (maybe none), rels[n-1] the kept child C, whose
 * backing chain is rels[n-2] .. rels[0].  Afterwards C's path holds a
 * standalone QCOW2 (no backing file) showing exactly C's former view (same
 * virtual size; D0 shrunk or grown to it), D0's path no longer exists, and
 * the other removed files are untouched (the caller deletes them after the
 * catalog step).  Cost: the data of rels[1..n-1], not the disk size.
 * Redo-safe: if C has no backing file any more (the rename happened),
 * returns 0 at once; otherwise it commits again. */
int merge_head (const char *repo_path, const char *const *rels, size_t n);
/* Whether a head merge into kept_rel got past its rename (the kept file
 * has no backing file any more).  false when the file can't be read. */
bool merge_head_done (const char *repo_path, const char *kept_rel);

/* Middle: rels[0] is the kept ancestor A, rels[1..n-2] the removed layers
 * (at least one), rels[n-1] the kept child C (backed by rels[n-2]).
 * Afterwards C is backed by A (name relative to C's folder, format qcow2)
 * and shows exactly its former view; A and the removed files are
 * untouched.  Cost: the data of the removed layers (plus, with resizes,
 * the region a shorter removed layer hid, written as zeros).  Redo-safe:
 * C already backed by A -> 0. */
int merge_middle (const char *repo_path, const char *const *rels, size_t n);

#endif
