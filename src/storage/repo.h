/* storage/repo.h - the layout and files of a local repository.
 *
 * A repository is a directory holding one folder per backup context, one
 * folder per disk in it, and one QCOW2 file per backup of that disk:
 *
 *     <repository>/<context_id>/disk<N>/<backup_id>.qcow2
 *
 * Paths kept in the catalog are relative to the repository root, and an
 * incremental's backing file is recorded relative to the overlay, so a
 * repository can be moved or copied whole.  Only ids ever become path
 * components.
 *
 * Ordering rule that keeps catalog and files consistent across a crash:
 * files are created before the rows that own them and deleted after the
 * rows are gone, so a crash can only leave a file that no row owns, which
 * repo_scan finds at the next start.
 */
#ifndef STRATA_STORAGE_REPO_H
#define STRATA_STORAGE_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "<context_id>/disk<N>/<backup_id>.qcow2".  Caller frees. */
char *repo_disk_relpath (const char *context_id, int disk_index, const char *backup_id);
/* repo_path + "/" + rel.  Caller frees. */
char *repo_abspath (const char *repo_path, const char *rel);
/* The folder part of path ("." when it has none).  Caller frees; NULL when
 * out of memory. */
char *repo_dir_of (const char *path);
/* fsync a folder, so that a create, rename or unlink in it is durable. */
int repo_sync_dir (const char *dir);

/* Check a path offered for a new repository: absolute, no "." or ".."
 * components, a directory (created when only its last component is missing)
 * and writable.  *created tells whether it was made here.  On success
 * *canonical receives the resolved path (caller frees). */
int repo_prepare (const char *path, char **canonical, bool *created);

/* Space taken by the files under the repository, and space its file system
 * still offers. */
int repo_usage (const char *repo_path, int64_t *used, int64_t *available);

/* Create a fresh QCOW2 of size bytes at rel, or an overlay of size bytes
 * backed by parent_rel (same repository), recorded relative to the overlay.
 * Creates the folders it needs.  A failure leaves no file. */
int repo_create_image (const char *repo_path, const char *rel, int64_t size,
                       const char *parent_rel);

/* The identity file at a repository's root ({"id","name","type",
 * "created_at"}, written by the hub): rebuild-catalog reads it.  The start-up
 * scan never touches it. */
#define REPO_IDENTITY_FILE "strata-repository.json"

/* Replace the file at path with len bytes of data, crash-safe: a
 * temporary file in the same folder, fsynced, renamed over path, and the
 * folder fsynced.  A reader sees the old file or the new one, whole. */
int repo_write_atomic (const char *path, const void *data, size_t len);

/* Make a finished image durable: fsync the file and its folder. */
int repo_sync_image (const char *repo_path, const char *rel);
/* Make a finished image read-only (0444), once the catalog says it is
 * complete; an image that is already read-only is left as it is. */
int repo_seal_image (const char *repo_path, const char *rel);

/* An image's manifest is "<image>.qcow2" REPO_MANIFEST_SUFFIX (the same as
 * integrity/manifest.h's MF_SUFFIX); while it is written, its block part
 * is that name plus ".part". */
#define REPO_MANIFEST_SUFFIX ".manifest"

/* Delete an image with its manifest (and manifest part), then its disk and
 * context folders if they are empty. */
int repo_remove_image (const char *repo_path, const char *rel);
/* Delete only an image's manifest and manifest part.  Deleting several
 * images, delete every manifest first: at start-up an image that no row
 * owns is deleted only when it has no manifest (one with a manifest was a
 * completed backup, which a lost or older catalog may not know). */
int repo_remove_manifest (const char *repo_path, const char *rel);
/* Whether a QEMU process (a storage daemon, qemu-nbd) has the image open:
 * QEMU takes open-file-description locks on bytes 100 to 299 of the
 * images it opens.  false when the file cannot be opened. */
bool repo_image_in_use (const char *repo_path, const char *rel);

/* Delete a context's folder with everything strata made in it. */
int repo_remove_context (const char *repo_path, const char *context_id);

/* Walk the repository for image files laid out as above and call fn with
 * each one's relative path.  Folders strata did not make are skipped. */
int repo_scan (const char *repo_path, int (*fn) (const char *rel, void *opaque),
               void *opaque);

/* The same walk for the manifest files ("...qcow2.manifest" and
 * "...qcow2.manifest.part"): fn gets each one's relative path. */
int repo_scan_manifests (const char *repo_path, int (*fn) (const char *rel, void *opaque),
                         void *opaque);

/* Remove empty disk and context folders that no longer hold anything. */
void repo_prune (const char *repo_path);

/* Relative path from the folder of `from` to `to`, both relative to the
 * same root ("a/b/x", "a/c/y" -> "../c/y").  Caller frees. */
char *repo_relative (const char *from, const char *to);

#endif
