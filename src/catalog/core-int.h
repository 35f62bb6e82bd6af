/* catalog/core-int.h - the machinery of the catalog's SQL core (core.c)
 * that its domain files (inventory.c, backups.c, recovery.c, lifecycle.c,
 * migrate.c) share: statements with bound parameters, reading rows and
 * whole records, transactions, and the checks every operation makes.  Not
 * for the drivers, which see only catalog-int.h; the design notes
 * (transactions, portable SQL, the latest completed disk) are at the top
 * of core.c.
 */
#ifndef STRATA_CATALOG_CORE_INT_H
#define STRATA_CATALOG_CORE_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/catalog-int.h"

/* --- Statements ------------------------------------------------------- */

/* Parameters are given by types, one character each (see struct db_arg). */

/* For CLEANUP_STMT: finalize a statement (NULL is harmless). */
void core_stmt_cleanup (struct db_stmt **st);
#define CLEANUP_STMT __attribute__((cleanup (core_stmt_cleanup)))

/* Prepare sql with the parameters in ap. */
struct db_stmt *core_stmt_vprepare (struct catalog *cat, const char *sql, const char *types,
                               va_list ap);
/* Prepare sql with its parameters; the caller steps and finalizes. */
struct db_stmt *db_prepare (struct catalog *cat, const char *sql, const char *types, ...);
/* 1 for a row, 0 when done, -1 on error. */
int db_step (struct db_stmt *st);
/* Step st to its end: the rows it changed, or -1. */
int64_t core_stmt_run (struct db_stmt *st);
/* Run a statement whose rows nobody wants: the rows it changed, or -1. */
int64_t db_exec (struct catalog *cat, const char *sql, const char *types, ...);
/* Run an INSERT; *id is the id it gave its row. */
int db_insert (struct catalog *cat, int64_t *id, const char *sql, const char *types, ...);
/* One integer (NULL reads as -1) into *out: 1, 0 when no row, -1. */
int db_int (struct catalog *cat, int64_t *out, const char *sql, const char *types, ...);
/* One string (malloc'd, the caller's) into *out: 1, 0 when no row, -1. */
int db_text (struct catalog *cat, char **out, const char *sql, const char *types, ...);

/* --- Rows ------------------------------------------------------------- */

/* Reading the columns of a row.  A failed copy sets oom, checked once per
 * row rather than after each column; so is a word that does not parse
 * (bad, with its error already set). */
struct row {
  struct db_stmt *st;
  bool oom, bad;
};

/* Fail on a word of a vocabulary that this strata does not know. */
int core_bad_word (const char *column, const char *value);
/* Column col as text, not copied (NULL for SQL NULL or when out of memory). */
const char *core_row_peek (struct row *r, int col);
/* A text column, copied (the caller owns it); NULL for SQL NULL. */
char *core_row_text (struct row *r, int col);
/* An integer column: NULL reads as -1. */
int64_t core_row_int (struct row *r, int col);
/* After reading a row: -1 with the error set if a column failed. */
int core_row_done (struct row *r);

/* Read column col, which holds a word of a vocabulary, into *out with
 * parse (job_status_parse, ...); column names it for bad_word. */
#define ROW_WORD(r, col, column, parse, out)                            \
  do {                                                                  \
    const char *w_ = core_row_peek ((r), (col));                             \
    if (!(r)->oom && parse (w_, (out)) == -1) {                         \
      core_bad_word ((column), w_);                                          \
      (r)->bad = true;                                                  \
    }                                                                   \
  } while (0)

/* A kind of record that the core reads whole: its size, how to read one
 * from the current row into a zeroed record (cat is for readers that query
 * more, such as a job's disks; on failure the error is set and the caller
 * clears the record), and how to free what one owns. */
struct kind {
  size_t size;
  int (*read) (struct catalog *cat, struct row *r, void *rec);
  void (*clear) (void *rec);
};

/* Clear the n records of array a, then free it. */
void core_kind_free (const struct kind *k, void *a, size_t n);
/* Read every row of st into a new array of k's records (*out untouched on failure). */
int core_collect_rows (struct catalog *cat, struct db_stmt *st, const struct kind *k,
                  void **out, size_t *n);
/* Free a NULL-terminated vector of strings. */
void core_strv_free (char **v);
/* The first column of every row of st, as a new NULL-terminated vector. */
int core_collect_strings (struct db_stmt *st, char ***out);

/* A set of disk row ids (or of anything numbered so), in insertion order. */
struct idset {
  int64_t *v;
  size_t n, cap;
};

/* Empty s (for CLEANUP_IDSET). */
void core_idset_clear (struct idset *s);
/* Whether id is in s. */
bool core_idset_has (const struct idset *s, int64_t id);
/* Add id unless it is there: 0, or -1 when memory ran out. */
int core_idset_add (struct idset *s, int64_t id);
#define CLEANUP_IDSET __attribute__((cleanup (core_idset_clear)))
/* Add the first column of every row of st, an integer, to s. */
int core_collect_ids (struct db_stmt *st, struct idset *s);

/* --- Transactions ----------------------------------------------------- */

/* Commit, or roll back when the body's result r is -1. */
int core_tx_end (struct catalog *cat, int r);

/* Run body (an expression that returns 0 or -1) as one transaction, again
 * if the driver allows; cleanup (a statement) undoes what a failed
 * attempt left in the caller's locals.  The value is 0 or -1. */
#define RUN_TX(cat, write, body, cleanup)                               \
  ({                                                                    \
    int r_;                                                             \
    for (int attempt_ = 0; ; attempt_++) {                              \
      r_ = (cat)->drv->begin ((cat), (write)) == -1                     \
        ? ((cat)->drv->rollback (cat), -1) : core_tx_end ((cat), (body));    \
      if (r_ == 0 || !(cat)->drv->again ((cat), attempt_))              \
        break;                                                          \
      cleanup;                                                          \
    }                                                                   \
    r_;                                                                 \
  })

/* --- Records ---------------------------------------------------------- */

#define REPO_SELECT \
  "SELECT id, name, type, path, created_at FROM backup_repositories"

#define CONTEXT_SELECT \
  "SELECT context_id, vm_name, repository_id, vmware_vm_id, vm_path," \
  " vcenter_host, datacenter, total_backups_run, successful_backups," \
  " failed_backups, last_backup_id, last_backup_type, last_backup_at," \
  " created_at, updated_at FROM vm_backup_contexts"

/* Every disk query selects these columns, the parent row joined in as p. */
#define DISK_SELECT \
  "SELECT d.id, d.backup_job_id, d.vm_backup_context_id, d.disk_index," \
  " d.vmware_disk_key, d.unit_number, d.size_bytes, d.backup_type," \
  " d.disk_change_id, d.qcow2_path, d.parent_disk_id, p.backup_job_id," \
  " p.disk_change_id, d.nbd_export, d.bytes_transferred, d.status, d.error," \
  " d.created_at, d.completed_at, d.full_reason, d.verify_state, d.verified_at," \
  " d.verify_error"
#define DISK_FROM \
  " FROM backup_disks d LEFT JOIN backup_disks p ON p.id = d.parent_disk_id"

#define JOB_SELECT \
  "SELECT j.id, j.vm_backup_context_id, j.vm_name, j.repository_id," \
  " j.backup_type, j.status, j.error, j.created_at, j.completed_at, j.driver," \
  " j.protected, j.verify_state, j.verified_at, j.lease_seconds, j.lease_expires_at," \
  " j.owner_hub FROM backup_jobs j"

/* The latest completed disk of a context and disk index (see the top of
 * core.c).  Selected by d.id; ?1 is the context, ?2 the disk index. */
#define LATEST_WHERE \
  " WHERE d.vm_backup_context_id = ?1 AND d.disk_index = ?2" \
  " AND d.status = 'completed'" \
  " AND EXISTS (SELECT 1 FROM backup_jobs lj" \
  "             WHERE lj.id = d.backup_job_id AND lj.status = 'completed')" \
  " ORDER BY d.id DESC LIMIT 1"

/* The kinds of the REPO_, CONTEXT_, DISK_ and JOB_SELECT rows (a job with
 * its disks). */
extern const struct kind core_repo_kind, core_context_kind, core_disk_kind, core_job_kind;

/* Read the first row of st into *out, a zeroed record of kind k: 1, 0, -1. */
int core_first_row (struct catalog *cat, struct db_stmt *st, const struct kind *k, void *out);
/* collect_rows of what sql selects with one text parameter (types "s" or ""). */
int core_query_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
               const char *sql, const char *types, const char *param);
/* The disks that sql (a DISK_SELECT...) selects with one text parameter. */
int core_disks_query (struct catalog *cat, const char *sql, const char *param,
                 struct cat_disk **out, size_t *n);
/* Load one job with its disks into *out: 1, 0 when not found, -1. */
int core_job_load (struct catalog *cat, const char *id, struct cat_job *out);
/* A get: one record in one read transaction, ERR_NOT_FOUND when none. */
int core_read_one (struct catalog *cat, const struct kind *k, void *out, const char *what,
              const char *sql, const char *types, const char *a, const char *b);
/* A list: every record sql selects, in one read transaction. */
int core_read_all (struct catalog *cat, const struct kind *k, void **out, size_t *n,
              const char *sql, const char *types, const char *param);
/* The status of job id into *out; ERR_NOT_FOUND when there is no such job. */
int core_job_status (struct catalog *cat, const char *id, enum job_status *out);
/* The latest completed disk of (context, disk_index) into *out: 1, 0, -1. */
int core_latest_disk (struct catalog *cat, const char *ctx, int disk_index, struct cat_disk *out);

/* --- What operations share -------------------------------------------- */

/* Repoint a context's last_backup_* after some of its jobs went. */
int core_context_refresh_last (struct catalog *cat, const char *ctx, const char *now);
/* Hand a finished write's disk rows over to *out (if wanted); l is emptied. */
void core_disks_hand_over (struct cat_disk_list *l, struct cat_disk **out, size_t *n_out);
/* Delete the disk rows of a (sorted by id) newest first. */
int core_disks_delete (struct catalog *cat, const struct cat_disk *a, size_t n);
/* Refuse a call with a missing argument (ERR_INVALID); what names it. */
int core_missing (const char *what);
/* 0 when sql finds the row of key; else -1, ERR_NOT_FOUND when none. */
int core_must_exist (struct catalog *cat, const char *sql, const char *key, const char *what);

/* The body of an insert-or-replace operation: writes rec, says whether it
 * created it. */
typedef int (*put_tx_fn) (struct catalog *cat, const void *rec, const char *now,
                          bool *created);
/* Run tx on rec as one write transaction; *created (may be NULL) after COMMIT. */
int core_put_record (struct catalog *cat, put_tx_fn tx, const void *rec, bool *created);

#endif
