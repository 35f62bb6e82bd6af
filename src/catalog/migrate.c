/* catalog/migrate.c - applying the schema migrations of a catalog's
 * dialect, and the raw access of maintenance tools (catalog-int.h).
 */
#include <stdarg.h>
#include <string.h>

#include "catalog/core-int.h"
#include "util/cleanup.h"
#include "util/id.h"
#include "util/log.h"

/* ------------------------------------------------------------------------
 * Migrations
 */

/* Apply migration m unless it is already applied: with its
 * schema_migrations row in one write transaction where the dialect's DDL
 * is transactional (the "already applied?" check inside it, so that two
 * processes opening a new database cannot both apply it); else, under the
 * driver's migration lock, statement by statement, recording the version
 * last (every such migration is re-runnable). */
static int
migrate_one (struct catalog *cat, const struct catalog_migration *m)
{
  bool tx = cat->drv->ddl_in_tx;
  char now[32];
  int64_t one;
  int f;

  if (tx && cat->drv->begin (cat, true) == -1) {
    cat->drv->rollback (cat);
    return -1;
  }
  f = db_int (cat, &one, "SELECT 1 FROM schema_migrations WHERE version = ?", "s", m->version);
  if (f == 0) {
    log_info ("catalog: applying migration %s", m->version);
    id_now (now, sizeof now);
    if (cat->drv->script (cat, m) == -1 ||
        db_exec (cat, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                 "ss", m->version, now) == -1)
      f = -1;
  }
  if (!tx)
    return f == -1 ? -1 : 0;
  return core_tx_end (cat, f == -1 ? -1 : 0);
}

/* Warn about applied migrations this binary does not carry: the database
 * was migrated by a newer strata, and this one may misread it. */
static int
migrate_check_unknown (struct catalog *cat)
{
  CLEANUP_STMT struct db_stmt *st =
    db_prepare (cat, "SELECT version FROM schema_migrations ORDER BY version", "");
  int r;

  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    const char *v;
    bool known = false;

    if (st->drv->column (st, 0, &v) == -1)
      v = NULL;
    for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
      known |= v && strcmp (m->dialect, cat->drv->name) == 0 && strcmp (m->version, v) == 0;
    if (!known)
      log_warn ("catalog: the database has migration %s, which this strata does not"
                " know: it was made by a newer version", v ? v : "?");
  }
  return r;
}

/* Make sure schema_migrations exists, then apply, in order, each migration
 * of the catalog's dialect that the database has not seen.  Versions are
 * file names ("0003_finishing"), the same in every dialect. */
int
catalog_migrate (struct catalog *cat)
{
  int r = -1;
  SCOPED_LOCK (&cat->lock);

  if (cat->drv->migrate_enter (cat) == -1)
    return -1;
  if (db_exec (cat, cat->drv->migrations_ddl, "") == -1)
    goto out;
  for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
    if (strcmp (m->dialect, cat->drv->name) == 0 && migrate_one (cat, m) == -1)
      goto out;
  r = migrate_check_unknown (cat);
 out:
  cat->drv->migrate_leave (cat);
  return r;
}

/* ------------------------------------------------------------------------
 * Raw access for maintenance tools (catalog-int.h)
 */

int
catalog_raw_migrate (struct catalog *cat)
{
  return catalog_migrate (cat);
}

int
catalog_raw_exec (struct catalog *cat, const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  SCOPED_LOCK (&cat->lock);

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  return st ? (int) core_stmt_run (st) : -1;
}

int
catalog_raw_query (struct catalog *cat, catalog_row_fn fn, void *opaque,
                   const char *sql, const char *types, ...)
{
  CLEANUP_STMT struct db_stmt *st = NULL;
  va_list ap;
  int r, n;
  SCOPED_LOCK (&cat->lock);

  va_start (ap, types);
  st = core_stmt_vprepare (cat, sql, types, ap);
  va_end (ap);
  if (st == NULL)
    return -1;
  while ((r = db_step (st)) == 1) {
    n = st->drv->ncols (st);
    char *vals[n > 0 ? n : 1];
    for (int i = 0; i < n; i++)
      if (st->drv->column (st, i, (const char **) &vals[i]) == -1) {
        catalog_oom ();
        return -1;
      }
    if (fn (opaque, n, vals) == -1)
      return -1;
  }
  return r;
}

int
catalog_raw_tx (struct catalog *cat, enum catalog_tx what)
{
  SCOPED_LOCK (&cat->lock);

  switch (what) {
  case CATALOG_TX_BEGIN:
    if (cat->drv->begin (cat, true) == -1) {
      cat->drv->rollback (cat);
      return -1;
    }
    return 0;
  case CATALOG_TX_COMMIT: return cat->drv->commit (cat);
  default: cat->drv->rollback (cat); return 0;
  }
}
