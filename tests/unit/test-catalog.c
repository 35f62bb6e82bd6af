/* tests/unit/test-catalog.c - the catalog's contract (catalog/catalog.h),
 * checked against a real catalog of the backend that STRATA_TEST_DB names:
 * "sqlite" (the default; a file in a temporary directory) or "mariadb" (a
 * database of its own, created and dropped by this test, in the private
 * server that tests/mariadb-server.sh runs; its STRATA_TEST_MARIADB_*
 * variables say where).
 *
 * What the catalog says is checked through its own functions and, where a
 * user would look at the database itself (row counts after a cascade, the
 * schema's own guarantees), through a second, raw connection: sqlite3, or
 * libmariadb as the server's root.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <mysql.h>
#include <mysqld_error.h>

#include "catalog/catalog.h"
#include "catalog/catalog-int.h"
#include "tap.h"
#include "util/cleanup.h"
#include "util/error.h"
#include "util/id.h"

static char tmpdir[] = "/tmp/test-catalog.XXXXXX";
static char dbpath[PATH_MAX], url[PATH_MAX + 16];
static sqlite3 *raw;                  /* a second connection, for counts */
static bool mariadb;                  /* STRATA_TEST_DB=mariadb */
static MYSQL *raw_my;                 /* the raw connection there */
static char my_db[64];                /* this run's database */
static const char *my_pwfile;         /* the password of the test user */

/* Open the catalog under test (the password, for MariaDB, from its file). */
static struct catalog *
cat_open (void)
{
  return catalog_open_auth (url, my_pwfile);
}

/* Check that r is a failure of category want; show the message if not. */
#define fails_with(r, want, ...)                                        \
  do {                                                                  \
    int r_ = (r);                                                       \
    enum error_category c_ = r_ == -1 ? error_category () : ERR_NONE;   \
    if (!ok (r_ == -1 && c_ == (want), __VA_ARGS__))                    \
      diag ("returned %d, category %s, message: %s", r_,                \
            r_ == -1 ? error_code (c_) : "-", error_message ());        \
  } while (0)

/* Check that r succeeded; show the error if not. */
#define succeeds(r, ...)                                                \
  do {                                                                  \
    int r_ = (r);                                                       \
    if (!ok (r_ == 0, __VA_ARGS__))                                     \
      diag ("error: %s", error_message ());                             \
  } while (0)

/* strdup that cannot fail quietly; NULL stays NULL. */
static char *
xstrdup (const char *s)
{
  char *r = s ? strdup (s) : NULL;
  if (s && !r)
    abort ();
  return r;
}

/* One integer from the raw connection: sql with one optional text
 * parameter.  -1 when the query fails or has no row. */
static int64_t
raw_int (const char *sql, const char *param)
{
  sqlite3_stmt *s = NULL;
  int64_t v = -1;

  if (mariadb) {
    /* The one '?' becomes the escaped, quoted parameter. */
    char q[4096], esc[1024];
    const char *mark = strchr (sql, '?');
    MYSQL_RES *res;
    MYSQL_ROW row;

    if (param && mark) {
      mysql_real_escape_string (raw_my, esc, param, strlen (param));
      snprintf (q, sizeof q, "%.*s'%s'%s", (int) (mark - sql), sql, esc, mark + 1);
    }
    else
      snprintf (q, sizeof q, "%s", sql);
    if (mysql_query (raw_my, q) != 0 || (res = mysql_store_result (raw_my)) == NULL) {
      diag ("raw query failed: %s", mysql_error (raw_my));
      return -1;
    }
    if ((row = mysql_fetch_row (res)) != NULL && row[0])
      v = strtoll (row[0], NULL, 10);
    mysql_free_result (res);
    return v;
  }
  if (sqlite3_prepare_v2 (raw, sql, -1, &s, NULL) != SQLITE_OK) {
    diag ("raw query failed: %s", sqlite3_errmsg (raw));
    return -1;
  }
  if (param)
    sqlite3_bind_text (s, 1, param, -1, SQLITE_TRANSIENT);
  if (sqlite3_step (s) == SQLITE_ROW)
    v = sqlite3_column_int64 (s, 0);
  sqlite3_finalize (s);
  return v;
}

/* A VM for the inventory and for the contexts' descriptive fields. */
static void
vm_init (struct cat_vm *vm, const char *name, size_t n_disks)
{
  memset (vm, 0, sizeof *vm);
  vm->vm_name = xstrdup (name);
  vm->vmware_vm_id = xstrdup ("vm-4242");
  vm->vm_path = xstrdup ("[ds1] vm/vm.vmx");
  vm->vcenter_host = xstrdup ("vcenter.example");
  vm->datacenter = xstrdup ("dc1");
  vm->n_disks = n_disks;
  vm->disks = calloc (n_disks, sizeof *vm->disks);
  /* Given in reverse order: the catalog sorts by disk_index. */
  for (size_t i = 0; i < n_disks; i++) {
    struct cat_vm_disk *d = &vm->disks[n_disks - 1 - i];
    d->disk_index = (int) i;
    d->size_bytes = ((int64_t) i + 1) << 30;
    d->vmware_disk_key = 2000 + (int64_t) i;
    d->unit_number = (int64_t) i;
    d->source = i == 0 ? xstrdup ("[ds1] vm/vm.vmdk") : NULL;
  }
}

/* A new running job of n disks as the hub would build it; parents[i] is
 * disk i's parent_disk_id (-1 for a full), or parents is NULL for a full.
 * Everything is malloc'd: cat_job_clear frees it. */
static void
job_init (struct cat_job *j, const char *id, const char *vm, const char *repo,
          const char *created_at, size_t n, const int64_t *parents)
{
  bool incremental = false;

  memset (j, 0, sizeof *j);
  j->id = xstrdup (id);
  j->vm_name = xstrdup (vm);
  j->repository_id = xstrdup (repo);
  j->status = JOB_RUNNING;
  j->created_at = xstrdup (created_at);
  j->n_disks = n;
  j->disks = calloc (n, sizeof *j->disks);
  for (size_t i = 0; i < n; i++) {
    struct cat_disk *d = &j->disks[i];
    int64_t parent = parents ? parents[i] : -1;

    incremental |= parent >= 0;
    d->disk_index = (int) i;
    d->size_bytes = ((int64_t) i + 1) << 30;
    d->vmware_disk_key = 2000 + (int64_t) i;
    d->unit_number = (int64_t) i;
    d->backup_type = parent >= 0 ? BACKUP_INCREMENTAL : BACKUP_FULL;
    if (asprintf (&d->qcow2_path, "%s/%s/disk%zu.qcow2", vm, id, i) == -1)
      abort ();
    d->parent_disk_id = parent;
    d->nbd_export = id_export_name ();
    d->status = DISK_RUNNING;
    d->created_at = xstrdup (created_at);
  }
  j->backup_type = incremental ? BACKUP_INCREMENTAL : BACKUP_FULL;
}

/* Insert a job and complete all its disks; returns the inserted job's disk
 * ids in ids (n of them). */
static int
run_backup (struct catalog *cat, const char *id, const char *vm, const char *repo,
            const char *created_at, size_t n, const int64_t *parents, int64_t *ids)
{
  struct cat_job j;
  int r;

  job_init (&j, id, vm, repo, created_at, n, parents);
  r = catalog_backup_insert (cat, &j, NULL);
  for (size_t i = 0; r == 0 && i < n; i++) {
    struct cat_job after;
    char cid[64];

    ids[i] = j.disks[i].id;
    snprintf (cid, sizeof cid, "cid-%s-%zu", id, i);
    r = catalog_disk_complete (cat, id, (int) i, cid, 1000 * ((int64_t) i + 1), NULL, &after);
    if (r == 0)
      cat_job_clear (&after);
  }
  cat_job_clear (&j);
  if (r == -1)
    diag ("run_backup %s: %s", id, error_message ());
  return r;
}

/* MariaDB: a database of this run's own, made (and later dropped) as
 * root, and the root connection for the raw checks. */
static void
mariadb_setup (void)
{
  const char *sock = getenv ("STRATA_TEST_MARIADB_SOCKET");
  const char *user = getenv ("STRATA_TEST_MARIADB_USER");
  char q[256];

  my_pwfile = getenv ("STRATA_TEST_MARIADB_PWFILE");
  if (sock == NULL || user == NULL || my_pwfile == NULL)
    skip_all ("STRATA_TEST_DB=mariadb without a server (run it through"
              " tests/mariadb-server.sh)");
  mariadb = true;
  snprintf (my_db, sizeof my_db, "strata_ut_%d", (int) getpid ());
  snprintf (url, sizeof url, "mariadb://%s@localhost/%s?socket=%s", user, my_db, sock);
  raw_my = mysql_init (NULL);
  mysql_options (raw_my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  if (mysql_real_connect (raw_my, NULL, "root", NULL, NULL, 0, sock, 0) == NULL) {
    diag ("root connection: %s", mysql_error (raw_my));
    exit (1);
  }
  snprintf (q, sizeof q, "CREATE DATABASE %s", my_db);
  if (mysql_query (raw_my, q) != 0 || mysql_select_db (raw_my, my_db) != 0) {
    diag ("%s: %s", q, mysql_error (raw_my));
    exit (1);
  }
}

static void
mariadb_teardown (void)
{
  char q[128];

  snprintf (q, sizeof q, "DROP DATABASE %s", my_db);
  if (mysql_query (raw_my, q) != 0)
    diag ("%s: %s", q, mysql_error (raw_my));
  mysql_close (raw_my);
}

/* URLs, migrations applied once; WAL and a relative path for SQLite;
 * InnoDB, utf8mb4 and a password that never shows for MariaDB. */
static void
test_open (void)
{
  struct catalog *cat;
  char reldb[PATH_MAX + 16], cwd[PATH_MAX];
  const char *dialect = mariadb ? "mariadb" : "sqlite";
  int64_t n_migrations = 0;

  error_clear ();
  ok (catalog_open ("mysql://admin:s3cret@127.0.0.1:1/strata") == NULL &&
      error_category () == ERR_UNAVAILABLE,
      "a mysql:// URL to a server that is not there fails as unavailable");
  ok (strstr (error_message (), "s3cret") == NULL &&
      strstr (error_message (), "strata") != NULL,
      "the error names the database but not the password: %s", error_message ());
  setenv ("STRATA_DB_PASSWORD", "env-s3cret", 1);
  ok (catalog_open ("mariadb://admin@[::1]:1/strata") == NULL &&
      strstr (error_message (), "env-s3cret") == NULL,
      "nor the password from the environment: %s", error_message ());
  unsetenv ("STRATA_DB_PASSWORD");
  ok (catalog_open ("mysql://admin@localhost") == NULL && error_category () == ERR_INVALID,
      "a mysql:// URL without a database is refused");
  ok (catalog_open ("mysql://admin@localhost:99999/db") == NULL &&
      error_category () == ERR_INVALID, "a port out of range is refused");
  ok (catalog_open ("mysql://admin@localhost/db?socket=rel.sock") == NULL &&
      error_category () == ERR_INVALID, "a relative socket path is refused");
  ok (catalog_open ("mysql://ad%zzmin@localhost/db") == NULL &&
      error_category () == ERR_INVALID, "a bad %%-escape is refused");
  ok (catalog_open_auth ("mysql://admin@localhost/db", "/nonexistent/pw") == NULL &&
      error_category () == ERR_INVALID, "a missing password file is refused");
  ok (catalog_open ("postgres://admin@localhost/db") == NULL &&
      error_category () == ERR_INVALID && strstr (error_message (), "postgres"),
      "an unknown scheme is refused by name");
  ok (catalog_open ("/var/lib/strata.db") == NULL && error_category () == ERR_INVALID,
      "a bare path is refused");
  ok (catalog_open ("sqlite://") == NULL && error_category () == ERR_INVALID,
      "sqlite:// with no path is refused");
  ok (catalog_open ("") == NULL && error_category () == ERR_INVALID,
      "an empty URL is refused");

  cat = cat_open ();
  if (!ok (cat != NULL, "open %s", url))
    diag ("%s", error_message ());
  if (cat == NULL)
    exit (done_testing ());
  is_str (catalog_backend_name (cat), mariadb ? "mariadb" : "sqlite", "backend name");
  catalog_close (cat);

  if (!mariadb) {
    if (sqlite3_open_v2 (dbpath, &raw, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
      abort ();
    sqlite3_busy_timeout (raw, 5000);
  }
  for (const struct catalog_migration *m = catalog_migrations; m->version; m++)
    n_migrations += strcmp (m->dialect, dialect) == 0;
  ok (n_migrations >= 2, "the %s migrations are embedded", dialect);
  is_int (raw_int ("SELECT count(*) FROM schema_migrations", NULL), n_migrations,
          "every %s migration is recorded in schema_migrations", dialect);
  if (mariadb) {
    is_int (raw_int ("SELECT count(*) FROM information_schema.tables"
                     " WHERE table_schema = DATABASE() AND engine = 'InnoDB'"
                     " AND table_collation = 'utf8mb4_nopad_bin' AND table_name IN"
                     " ('backup_repositories', 'vms', 'vm_disks', 'vm_backup_contexts',"
                     " 'backup_jobs', 'backup_disks')", NULL), 6,
            "the six tables exist, InnoDB, utf8mb4 byte-exact");
    is_int (raw_int ("SELECT count(*) FROM information_schema.referential_constraints"
                     " WHERE constraint_schema = DATABASE() AND delete_rule = 'CASCADE'",
                     NULL), 5, "five foreign keys cascade on delete (file_intents': 0007)");
    is_int (raw_int ("SELECT count(*) FROM information_schema.check_constraints"
                     " WHERE constraint_schema = DATABASE()", NULL) >= 15, 1,
            "the CHECK constraints are there");
    is_int (raw_int ("SELECT count(*) FROM information_schema.referential_constraints"
                     " WHERE constraint_schema = DATABASE() AND delete_rule = 'RESTRICT'"
                     " AND constraint_name IN ('policies_repository', 'vms_policy')", NULL), 2,
            "a policy's repository and a VM's policy cannot be deleted while used");
  }
  else {
    is_int (raw_int ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                     " ('backup_repositories', 'vms', 'vm_disks', 'vm_backup_contexts',"
                     " 'backup_jobs', 'backup_disks')", NULL), 6, "the six tables exist");
    is_int (raw_int ("SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'",
                     NULL), 1, "the database is in WAL mode");
  }

  /* Re-opening applies nothing: the same rows, applied at the same time. */
  {
    int64_t before = raw_int ("SELECT count(*) FROM schema_migrations"
                              " WHERE applied_at = (SELECT min(applied_at)"
                              " FROM schema_migrations)", NULL);
    usleep (5000);
    cat = cat_open ();
    ok (cat != NULL, "re-open");
    catalog_close (cat);
    is_int (raw_int ("SELECT count(*) FROM schema_migrations", NULL), n_migrations,
            "re-open adds no migration row");
    is_int (raw_int ("SELECT count(*) FROM schema_migrations"
                     " WHERE applied_at = (SELECT min(applied_at)"
                     " FROM schema_migrations)", NULL), before,
            "re-open re-applied nothing (applied_at unchanged)");
  }

  if (mariadb) {
    /* A migration stopped halfway runs again, whole, over what it did
     * (its tables, columns and indexes already there). */
    static const char *const again[] = { "0004_lifecycle", "0005_integrity", "0006_lease",
                                           "0007_two_hubs" };
    for (size_t i = 0; i < sizeof again / sizeof again[0]; i++) {
      char q[128];
      snprintf (q, sizeof q, "DELETE FROM schema_migrations WHERE version = '%s'", again[i]);
      ok (mysql_query (raw_my, q) == 0, "forget migration %s", again[i]);
      cat = cat_open ();
      if (!ok (cat != NULL, "re-open: %s runs again over what it made", again[i]))
        diag ("%s", error_message ());
      catalog_close (cat);
      snprintf (q, sizeof q, "SELECT count(*) FROM schema_migrations WHERE version = '%s'",
                again[i]);
      is_int (raw_int (q, NULL), 1, "and is recorded");
    }
    return;
  }
  /* A relative URL is relative to the working directory. */
  if (getcwd (cwd, sizeof cwd) == NULL || chdir (tmpdir) == -1)
    abort ();
  cat = catalog_open ("sqlite://rel.db");
  ok (cat != NULL, "open sqlite://rel.db");
  catalog_close (cat);
  if (chdir (cwd) == -1)
    abort ();
  snprintf (reldb, sizeof reldb, "%s/rel.db", tmpdir);
  ok (access (reldb, F_OK) == 0, "sqlite://rel.db made rel.db in the working directory");
}

/* Insert, conflicts on id and path, the type CHECK, get and list. */
static void
test_repositories (struct catalog *cat)
{
  struct cat_repository r1 = { "repo-1", "first", "local", "/srv/backups/one", NULL };
  struct cat_repository r2 = { "repo-2", "second", "local", "/srv/backups/two",
                               "2025-01-01T00:00:00.000Z" };
  struct cat_repository dup_id = { "repo-1", "again", "local", "/srv/elsewhere", NULL };
  struct cat_repository dup_path = { "repo-3", "same", "local", "/srv/backups/one", NULL };
  struct cat_repository bad_type = { "repo-4", "smb", "smb", "/srv/smb", NULL };
  struct cat_repository got = { 0 }, *list = NULL;
  size_t n = 0;

  succeeds (catalog_repo_insert (cat, &r1), "insert repository repo-1");
  succeeds (catalog_repo_insert (cat, &r2), "insert repository repo-2");
  fails_with (catalog_repo_insert (cat, &dup_id), ERR_CONFLICT, "a taken id is a conflict");
  fails_with (catalog_repo_insert (cat, &dup_path), ERR_CONFLICT,
              "a taken path is a conflict");
  ok (strstr (error_message (), "repo-1") != NULL,
      "the conflict names the repository that has the path: %s", error_message ());
  fails_with (catalog_repo_insert (cat, &bad_type), ERR_CONFLICT,
              "type 'smb' (not local, nfs or cifs) is refused by the schema's CHECK");

  succeeds (catalog_repo_get (cat, "repo-1", &got), "get repo-1");
  is_str (got.path, "/srv/backups/one", "repo-1 path");
  is_str (got.type, "local", "repo-1 type");
  ok (got.created_at && strlen (got.created_at) == 24 && got.created_at[23] == 'Z',
      "created_at is filled in, UTC with milliseconds: %s", got.created_at);
  cat_repository_clear (&got);
  fails_with (catalog_repo_get (cat, "repo-9", &got), ERR_NOT_FOUND, "get unknown repository");

  succeeds (catalog_repo_list (cat, &list, &n), "list repositories");
  is_int ((int64_t) n, 2, "two repositories");
  cat_repository_free_array (list, n);
}

/* SQLite: migrations 0003 and 0004 rebuild backup_jobs (0003 also
 * backup_repositories: a CHECK changes only so), 0005 tasks, on a catalog
 * that has rows, and lose none: not a backup_disks row by cascade, not a
 * chain link, not an index, not a task or a policy.  upto is the first migration not yet applied. */
static void
test_migration_rebuild (const char *upto)
{
  char path[PATH_MAX], u[PATH_MAX + 16];
  sqlite3 *db = NULL;
  struct catalog *cat;
  struct cat_job got = { 0 };
  struct cat_vm vm = { 0 };
  bool ok_exec;

  snprintf (path, sizeof path, "%s/old-%s.db", tmpdir, upto);
  snprintf (u, sizeof u, "sqlite://%s", path);
  ok_exec = sqlite3_open (path, &db) == SQLITE_OK &&
    sqlite3_exec (db, "PRAGMA foreign_keys = ON; CREATE TABLE schema_migrations ("
                  " version TEXT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)",
                  NULL, NULL, NULL) == SQLITE_OK;
  for (const struct catalog_migration *m = catalog_migrations; ok_exec && m->version; m++) {
    char ins[256];
    if (strcmp (m->dialect, "sqlite") != 0 || strcmp (m->version, upto) >= 0)
      continue;
    snprintf (ins, sizeof ins, "INSERT INTO schema_migrations VALUES ('%s', 'then')",
              m->version);
    ok_exec = sqlite3_exec (db, m->sql, NULL, NULL, NULL) == SQLITE_OK &&
              sqlite3_exec (db, ins, NULL, NULL, NULL) == SQLITE_OK;
  }
  ok_exec = ok_exec && sqlite3_exec (db,
    "INSERT INTO backup_repositories VALUES ('r', 'r', 'local', '/r', 't');"
    "INSERT INTO vm_backup_contexts (context_id, vm_name, repository_id, created_at,"
    " updated_at) VALUES ('ctx-old', 'old01', 'r', 't', 't');"
    "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name, repository_id,"
    " backup_type, status, created_at, driver) VALUES"
    " ('backup-o1', 'ctx-old', 'old01', 'r', 'full', 'completed', 't', 'hub'),"
    " ('backup-o2', 'ctx-old', 'old01', 'r', 'incremental', 'running', 't', 'agent');"
    "INSERT INTO backup_disks (id, vm_backup_context_id, backup_job_id, disk_index,"
    " size_bytes, backup_type, parent_disk_id, status, created_at) VALUES"
    " (1, 'ctx-old', 'backup-o1', 0, 1, 'full', NULL, 'completed', 't'),"
    " (2, 'ctx-old', 'backup-o2', 0, 1, 'incremental', 1, 'running', 't');"
    "INSERT INTO vms (vm_name, created_at, updated_at) VALUES ('old01', 't', 't');",
    NULL, NULL, NULL) == SQLITE_OK;
  /* From 0004 on there are tasks and policies to keep as well. */
  if (ok_exec && strcmp (upto, "0005") >= 0)
    ok_exec = sqlite3_exec (db,
      "INSERT INTO tasks (id, kind, context_id, status, steps_done, steps_total,"
      " created_at, updated_at) VALUES ('task-old', 'prune', 'ctx-old', 'completed', 2, 2,"
      " 't', 't');"
      "INSERT INTO policies (name, keep_last, has_retention, created_at, updated_at)"
      " VALUES ('pol-old', 4, 1, 't', 't');", NULL, NULL, NULL) == SQLITE_OK;
  if (!ok (ok_exec, "a catalog before migration %s, with a chain of two jobs", upto))
    diag ("%s", sqlite3_errmsg (db));
  sqlite3_close (db);

  cat = catalog_open (u);
  if (!ok (cat != NULL, "opening it applies %s and what follows", upto))
    diag ("%s", error_message ());
  if (cat == NULL)
    return;
  succeeds (catalog_backup_get (cat, "backup-o2", &got), "the running job is there");
  ok (got.n_disks == 1 && got.disks[0].parent_disk_id == 1 &&
      got.disks[0].parent_backup_id && strcmp (got.disks[0].parent_backup_id, "backup-o1") == 0,
      "with its disk, still linked to its parent");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-o1", &got), "so is the completed one");
  ok (got.n_disks == 1 && got.driver == DRIVER_HUB && !got.is_protected,
      "with its disk and its driver, not protected");
  cat_job_clear (&got);
  succeeds (catalog_vm_get (cat, "old01", &vm), "the VM is there");
  ok (vm.policy == NULL && vm.next_run_at == NULL, "with no policy and no schedule");
  cat_vm_clear (&vm);
  if (strcmp (upto, "0005") >= 0) {
    struct cat_task t = { 0 };
    struct cat_task vt = { .id = "task-new", .kind = TASK_VERIFY };
    struct cat_policy pol = { 0 };
    succeeds (catalog_task_get (cat, "task-old", &t), "the prune task is there");
    ok (t.kind == TASK_PRUNE && t.status == TASK_COMPLETED && t.steps_done == 2,
        "with its kind, status and steps");
    cat_task_clear (&t);
    succeeds (catalog_task_insert (cat, &vt), "the tasks table takes kind verify now");
    succeeds (catalog_policy_get (cat, "pol-old", &pol), "the policy is there");
    ok (pol.has_retention && pol.retention.keep_last == 4 && !pol.verify_after_backup &&
        pol.verify_every_days == -1 && pol.audit_percent == -1,
        "with its rule, and no verify settings");
    cat_policy_clear (&pol);
    succeeds (catalog_backup_get (cat, "backup-o1", &got), "backup-o1 again");
    ok (got.verify_state == VERIFY_NONE && got.verified_at == NULL &&
        got.disks[0].verify_state == VERIFY_NONE && got.disks[0].verify_error == NULL,
        "unverified, as every backup before 0005");
    cat_job_clear (&got);
  }
  catalog_close (cat);
  if (sqlite3_open (path, &db) != SQLITE_OK)
    abort ();
  {
    sqlite3_stmt *st = NULL;
    int indexes = -1;
    if (sqlite3_prepare_v2 (db, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                            " AND tbl_name = 'backup_jobs' AND (name IN"
                            " ('backup_jobs_context_created', 'backup_jobs_created') OR"
                            " (name = 'backup_jobs_one_running' AND sql LIKE '%UNIQUE%'"
                            " AND sql LIKE '%finishing%'))", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step (st) == SQLITE_ROW)
      indexes = sqlite3_column_int (st, 0);
    sqlite3_finalize (st);
    is_int (indexes, 3, "backup_jobs has its three indexes, the active-job key among them");
  }
  ok (sqlite3_exec (db, "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
                    " repository_id, backup_type, status, created_at) VALUES ('o3',"
                    " 'ctx-old', 'old01', 'r', 'full', 'finishing', 't')", NULL, NULL,
                    NULL) == SQLITE_CONSTRAINT,
      "which still refuses a second active job of the context");
  sqlite3_close (db);
}

/* vm_put creates, then replaces the whole disk list; get, list, delete. */
static void
test_vms (struct catalog *cat)
{
  struct cat_vm vm, got = { 0 }, *list = NULL;
  bool created = false;
  size_t n = 0;
  char *first_created;

  vm_init (&vm, "web01", 2);
  succeeds (catalog_vm_put (cat, &vm, &created), "put a new VM");
  ok (created, "a new VM is reported as created");
  succeeds (catalog_vm_get (cat, "web01", &got), "get it");
  is_int ((int64_t) got.n_disks, 2, "it has 2 disks");
  is_int (got.n_disks == 2 ? got.disks[0].disk_index : -9, 0, "disks sorted by index");
  is_int (got.n_disks == 2 ? got.disks[0].vmware_disk_key : -9, 2000, "disk 0 key");
  is_str (got.n_disks == 2 ? got.disks[0].source : "?", "[ds1] vm/vm.vmdk", "disk 0 source");
  is_int (got.n_disks == 2 ? got.disks[1].size_bytes : -9, (int64_t) 2 << 30,
          "disk 1 size in bytes, exact");
  is_str (got.n_disks == 2 ? got.disks[1].source : "?", NULL, "disk 1 has no source");
  first_created = xstrdup (got.created_at);
  cat_vm_clear (&got);
  cat_vm_clear (&vm);

  usleep (2000);
  vm_init (&vm, "web01", 3);
  vm.disks[0].unit_number = -1;       /* disk 2: unit number absent */
  succeeds (catalog_vm_put (cat, &vm, &created), "put the same VM again");
  ok (!created, "it is reported as replaced");
  succeeds (catalog_vm_get (cat, "web01", &got), "get it again");
  is_int ((int64_t) got.n_disks, 3, "its disk list was replaced: 3 disks");
  is_int (got.n_disks == 3 ? got.disks[2].unit_number : -9, -1,
          "an absent unit number reads back as -1");
  is_str (got.created_at, first_created, "created_at is kept");
  ok (got.updated_at && strcmp (got.updated_at, first_created) > 0, "updated_at moved on");
  cat_vm_clear (&got);
  free (first_created);
  cat_vm_clear (&vm);

  vm_init (&vm, "db01", 1);
  succeeds (catalog_vm_put (cat, &vm, NULL), "put a second VM");
  cat_vm_clear (&vm);
  succeeds (catalog_vm_list (cat, &list, &n), "list VMs");
  is_int ((int64_t) n, 2, "two VMs");
  ok (n == 2 && strcmp (list[0].vm_name, "db01") == 0 && list[1].n_disks == 3,
      "sorted by name, each with its disks");
  cat_vm_free_array (list, n);

  succeeds (catalog_vm_delete (cat, "db01"), "delete a VM");
  fails_with (catalog_vm_get (cat, "db01", &got), ERR_NOT_FOUND, "it is gone");
  is_int (raw_int ("SELECT count(*) FROM vm_disks WHERE vm_name = 'db01'", NULL), 0,
          "its disks went with it");
  fails_with (catalog_vm_delete (cat, "db01"), ERR_NOT_FOUND, "delete it again: not found");
}

/* Policies: put (insert, then replace keeping created_at), get, list, the
 * repository they name, and the VMs that use them; the scheduler's fields
 * of a VM, kept by vm_put but for next_run_at when the policy changes. */
static void
test_policies (struct catalog *cat)
{
  struct cat_repository rp = { "repo-pol", "policies", "local", "/srv/pol", NULL };
  struct cat_policy gold = { 0 }, got = { 0 }, *list = NULL;
  struct cat_vm vm, gv = { 0 };
  bool created = false;
  size_t n = 0;
  char *first_created;

  succeeds (catalog_repo_insert (cat, &rp), "a repository for the policies");
  gold.name = "gold";
  gold.repository_id = "repo-nope";
  gold.schedule = "0 3 * * *";
  gold.has_retention = true;
  gold.retention = (struct cat_retention) { 3, -1, 7, -1, -1, -1 };
  fails_with (catalog_policy_put (cat, &gold, &created), ERR_INVALID,
              "a policy naming an unknown repository is invalid");
  ok (strstr (error_message (), "repo-nope") != NULL, "the error names it: %s",
      error_message ());
  is_int (raw_int ("SELECT count(*) FROM policies", NULL), 0, "and nothing was stored");
  gold.repository_id = "repo-pol";
  gold.retention.keep_daily = -2;
  fails_with (catalog_policy_put (cat, &gold, &created), ERR_INVALID,
              "a rule below -1 is invalid");
  gold.retention.keep_daily = 7;
  succeeds (catalog_policy_put (cat, &gold, &created), "put policy gold");
  ok (created, "it is reported as created");
  succeeds (catalog_policy_get (cat, "gold", &got), "get it");
  is_str (got.repository_id, "repo-pol", "its repository");
  is_str (got.schedule, "0 3 * * *", "its schedule");
  ok (got.has_retention && got.retention.keep_last == 3 && got.retention.keep_daily == 7 &&
      got.retention.keep_hourly == -1 && got.retention.keep_weekly == -1 &&
      got.retention.keep_monthly == -1 && got.retention.keep_yearly == -1,
      "its rules, absent ones as -1");
  is_int (raw_int ("SELECT count(*) FROM policies WHERE keep_hourly IS NULL"
                   " AND keep_last = 3", NULL), 1, "an absent rule is NULL in the table");
  first_created = xstrdup (got.created_at);
  cat_policy_clear (&got);

  usleep (2000);
  gold.has_retention = false;
  gold.schedule = NULL;
  succeeds (catalog_policy_put (cat, &gold, &created), "put gold again, without retention");
  ok (!created, "it is reported as replaced");
  succeeds (catalog_policy_get (cat, "gold", &got), "get it again");
  ok (!got.has_retention && got.retention.keep_last == -1 && got.schedule == NULL,
      "no retention, no schedule now");
  is_str (got.created_at, first_created, "created_at is kept");
  ok (got.updated_at && strcmp (got.updated_at, first_created) > 0, "updated_at moved on");
  cat_policy_clear (&got);
  free (first_created);

  {
    struct cat_policy silver = { .name = "silver", .has_retention = true,
                                 .retention = { -1, -1, -1, 0, -1, -1 } };
    succeeds (catalog_policy_put (cat, &silver, NULL), "put policy silver, keep_weekly 0");
  }
  succeeds (catalog_policy_get (cat, "silver", &got), "get silver");
  ok (got.has_retention && got.retention.keep_weekly == 0 && got.repository_id == NULL,
      "a rule of 0 is a rule; no repository");
  cat_policy_clear (&got);
  succeeds (catalog_policy_list (cat, &list, &n), "list policies");
  ok (n == 2 && strcmp (list[0].name, "gold") == 0 && strcmp (list[1].name, "silver") == 0,
      "both, by name");
  cat_policy_free_array (list, n);
  fails_with (catalog_policy_get (cat, "bronze", &got), ERR_NOT_FOUND,
              "get an unknown policy: not found");

  /* A VM uses a policy. */
  vm_init (&vm, "sched01", 1);
  vm.policy = xstrdup ("bronze");
  fails_with (catalog_vm_put (cat, &vm, &created), ERR_INVALID,
              "a VM with an unknown policy is invalid");
  ok (strstr (error_message (), "bronze") != NULL, "the error names it: %s",
      error_message ());
  fails_with (catalog_vm_get (cat, "sched01", &gv), ERR_NOT_FOUND, "and the VM was not stored");
  free (vm.policy);
  vm.policy = xstrdup ("gold");
  succeeds (catalog_vm_put (cat, &vm, &created), "put VM sched01 with policy gold");
  succeeds (catalog_vm_get (cat, "sched01", &gv), "get it");
  is_str (gv.policy, "gold", "its policy");
  ok (gv.next_run_at == NULL && gv.last_run_at == NULL && gv.last_skipped_at == NULL,
      "no schedule record yet");
  cat_vm_clear (&gv);

  fails_with (catalog_vm_schedule_set (cat, "nobody", "t", NULL, NULL), ERR_NOT_FOUND,
              "the schedule of an unknown VM: not found");
  succeeds (catalog_vm_schedule_set (cat, "sched01", "2030-01-01T03:00:00.000Z",
                                     "2029-12-31T03:00:00.000Z", NULL),
            "record a run and the next one");
  succeeds (catalog_vm_schedule_set (cat, "sched01", "2030-01-02T03:00:00.000Z", NULL,
                                     "2030-01-01T03:00:00.000Z"), "record a skipped run");
  succeeds (catalog_vm_get (cat, "sched01", &gv), "get it");
  is_str (gv.next_run_at, "2030-01-02T03:00:00.000Z", "next_run_at as given last");
  is_str (gv.last_run_at, "2029-12-31T03:00:00.000Z", "last_run_at kept where NULL");
  is_str (gv.last_skipped_at, "2030-01-01T03:00:00.000Z", "last_skipped_at as given");
  cat_vm_clear (&gv);

  succeeds (catalog_vm_put (cat, &vm, &created), "put the VM again, same policy");
  succeeds (catalog_vm_get (cat, "sched01", &gv), "get it");
  ok (gv.next_run_at && strcmp (gv.next_run_at, "2030-01-02T03:00:00.000Z") == 0 &&
      gv.last_run_at != NULL && gv.last_skipped_at != NULL,
      "the scheduler's fields are kept");
  cat_vm_clear (&gv);
  free (vm.policy);
  vm.policy = xstrdup ("silver");
  succeeds (catalog_vm_put (cat, &vm, &created), "put the VM with policy silver");
  succeeds (catalog_vm_get (cat, "sched01", &gv), "get it");
  is_str (gv.policy, "silver", "its policy changed");
  ok (gv.next_run_at == NULL && gv.last_run_at != NULL && gv.last_skipped_at != NULL,
      "next_run_at was reset; the record of past runs kept");
  cat_vm_clear (&gv);
  succeeds (catalog_vm_schedule_set (cat, "sched01", "2030-02-01T00:00:00.000Z", NULL, NULL),
            "schedule the next run");
  free (vm.policy);
  vm.policy = NULL;
  succeeds (catalog_vm_put (cat, &vm, &created), "put the VM without a policy");
  succeeds (catalog_vm_get (cat, "sched01", &gv), "get it");
  ok (gv.policy == NULL && gv.next_run_at == NULL, "no policy, no next run");
  cat_vm_clear (&gv);
  succeeds (catalog_vm_schedule_set (cat, "sched01", NULL, NULL, NULL),
            "clearing next_run_at (nothing else given)");

  vm.policy = xstrdup ("gold");
  succeeds (catalog_vm_put (cat, &vm, NULL), "the VM uses gold again");
  fails_with (catalog_policy_delete (cat, "gold"), ERR_CONFLICT,
              "a policy a VM uses cannot be deleted");
  ok (strstr (error_message (), "sched01") != NULL, "the conflict names the VM: %s",
      error_message ());
  fails_with (catalog_repo_delete (cat, "repo-pol"), ERR_CONFLICT,
              "a repository a policy names cannot be deleted");
  ok (strstr (error_message (), "gold") != NULL, "the conflict names the policy: %s",
      error_message ());
  fails_with (catalog_policy_delete (cat, "bronze"), ERR_NOT_FOUND,
              "delete an unknown policy: not found");
  succeeds (catalog_vm_delete (cat, "sched01"), "delete the VM");
  succeeds (catalog_policy_delete (cat, "gold"), "then the policy can go");
  succeeds (catalog_policy_delete (cat, "silver"), "and silver");
  succeeds (catalog_repo_delete (cat, "repo-pol"), "and then the repository");
  cat_vm_clear (&vm);
}

/* Tasks: inserted running, listed newest first, updated while running,
 * ended once. */
static void
test_tasks (struct catalog *cat)
{
  struct cat_task t = { 0 }, got = { 0 }, *list = NULL;
  size_t n = 0;

  t.id = "task-1";
  t.kind = TASK_PRUNE;
  t.context_id = "ctx-somewhere";
  t.status = TASK_COMPLETED;
  t.steps_total = 3;
  t.created_at = "2025-09-01T00:00:00.000Z";
  succeeds (catalog_task_insert (cat, &t), "insert task-1");
  fails_with (catalog_task_insert (cat, &t), ERR_CONFLICT, "its id again: a conflict");
  t.steps_done = -1;
  t.id = "task-x";
  fails_with (catalog_task_insert (cat, &t), ERR_INVALID, "negative steps are invalid");
  t.steps_done = 0;
  t.id = "task-2";
  t.context_id = NULL;
  t.created_at = "2025-09-02T00:00:00.000Z";
  succeeds (catalog_task_insert (cat, &t), "insert task-2, later, without a context");
  t.id = "task-3";
  succeeds (catalog_task_insert (cat, &t), "insert task-3, at the same time");

  succeeds (catalog_task_get (cat, "task-1", &got), "get task-1");
  ok (got.kind == TASK_PRUNE && got.status == TASK_RUNNING && got.steps_done == 0 &&
      got.steps_total == 3 && got.completed_at == NULL && got.error == NULL,
      "a running prune of 0 of 3 steps (inserted as running, whatever it said)");
  is_str (got.context_id, "ctx-somewhere", "its context");
  cat_task_clear (&got);
  fails_with (catalog_task_get (cat, "task-9", &got), ERR_NOT_FOUND,
              "get an unknown task: not found");

  succeeds (catalog_task_list (cat, false, TASK_RUNNING, &list, &n), "list tasks");
  ok (n == 3 && strcmp (list[0].id, "task-3") == 0 && strcmp (list[1].id, "task-2") == 0 &&
      strcmp (list[2].id, "task-1") == 0, "newest first, then by id, descending");
  cat_task_free_array (list, n);

  succeeds (catalog_task_update (cat, "task-1", 1, 3, "waiting for backup b-1",
                                 "{\"remove\":[\"b-0\"]}"), "progress of task-1");
  succeeds (catalog_task_get (cat, "task-1", &got), "get it");
  ok (got.steps_done == 1 && got.message && strcmp (got.message, "waiting for backup b-1") == 0,
      "its steps and message");
  is_str (got.result, "{\"remove\":[\"b-0\"]}", "its result, as given");
  cat_task_clear (&got);
  succeeds (catalog_task_update (cat, "task-1", 2, 3, NULL, NULL), "more progress");
  succeeds (catalog_task_get (cat, "task-1", &got), "get it");
  ok (got.steps_done == 2 && got.message == NULL, "a NULL message clears it");
  is_str (got.result, "{\"remove\":[\"b-0\"]}", "a NULL result keeps it");
  cat_task_clear (&got);
  fails_with (catalog_task_update (cat, "task-1", -1, 3, NULL, NULL), ERR_INVALID,
              "negative steps are invalid");
  fails_with (catalog_task_update (cat, "task-9", 1, 1, NULL, NULL), ERR_NOT_FOUND,
              "progress of an unknown task: not found");

  fails_with (catalog_task_end (cat, "task-1", TASK_RUNNING, NULL, NULL), ERR_INVALID,
              "a task cannot end as running");
  succeeds (catalog_task_end (cat, "task-1", TASK_COMPLETED, NULL, NULL), "end task-1");
  succeeds (catalog_task_get (cat, "task-1", &got), "get it");
  ok (got.status == TASK_COMPLETED && got.completed_at != NULL && got.error == NULL,
      "completed, with completed_at");
  is_str (got.result, "{\"remove\":[\"b-0\"]}", "the result is kept");
  cat_task_clear (&got);
  fails_with (catalog_task_end (cat, "task-1", TASK_FAILED, "late", NULL), ERR_CONFLICT,
              "ending it again is a conflict");
  fails_with (catalog_task_update (cat, "task-1", 3, 3, NULL, NULL), ERR_CONFLICT,
              "so is progress of an ended task");
  fails_with (catalog_task_end (cat, "task-9", TASK_FAILED, NULL, NULL), ERR_NOT_FOUND,
              "ending an unknown task: not found");
  succeeds (catalog_task_end (cat, "task-2", TASK_FAILED, "disk full", "{}"),
            "task-2 fails");
  succeeds (catalog_task_get (cat, "task-2", &got), "get it");
  ok (got.status == TASK_FAILED && got.error && strcmp (got.error, "disk full") == 0 &&
      got.result && strcmp (got.result, "{}") == 0, "failed, with its error and result");
  cat_task_clear (&got);

  succeeds (catalog_task_list (cat, true, TASK_RUNNING, &list, &n), "list running tasks");
  ok (n == 1 && strcmp (list[0].id, "task-3") == 0, "task-3 only");
  cat_task_free_array (list, n);
  succeeds (catalog_task_list (cat, true, TASK_FAILED, &list, &n), "list failed tasks");
  ok (n == 1 && strcmp (list[0].id, "task-2") == 0, "task-2 only");
  cat_task_free_array (list, n);
  succeeds (catalog_task_end (cat, "task-3", TASK_COMPLETED, NULL, NULL), "end task-3");
}

/* The life of a chain: full, a failed incremental, a good incremental,
 * listing, change ids and deletion. */
static void
test_backups (struct catalog *cat)
{
  struct cat_vm vm;
  struct cat_job j1, j, got = { 0 }, after = { 0 }, *list = NULL;
  struct cat_context ctx = { 0 };
  struct cat_disk parents[3], *disks = NULL, d = { 0 };
  struct cat_job_filter f = { 0 };
  int idx[3] = { 0, 1, 5 };
  int64_t j1_ids[2], j2_ids[2], j3_ids[2], total = 0, p[2];
  size_t n = 0;
  bool running = true;
  char *ctx_id;

  vm_init (&vm, "web01", 2);

  memset (parents, 0xff, sizeof parents);
  succeeds (catalog_backup_plan (cat, "web01", "repo-1", 3, idx, parents, &running),
            "plan before any backup");
  ok (!running && parents[0].id == 0 && parents[1].id == 0 && parents[2].id == 0,
      "no context yet: nothing running, no parents");

  /* J1: a full. */
  job_init (&j1, "backup-j1", "web01", "repo-9", "2025-03-01T10:00:00.000Z", 2, NULL);
  fails_with (catalog_backup_insert (cat, &j1, &vm), ERR_NOT_FOUND,
              "a backup into an unknown repository: not found");
  is_int (raw_int ("SELECT count(*) FROM vm_backup_contexts", NULL), 0,
          "and it created no context");
  free (j1.repository_id);
  j1.repository_id = xstrdup ("repo-1");
  succeeds (catalog_backup_insert (cat, &j1, &vm), "insert full backup J1");
  ok (j1.context_id && strncmp (j1.context_id, "ctx-backup-web01-", 17) == 0,
      "the new context id is ctx-backup-<vm>-...: %s", j1.context_id);
  ok (j1.disks[0].id > 0 && j1.disks[1].id > j1.disks[0].id, "disk ids were filled in");
  is_str (j1.disks[1].context_id, j1.context_id, "and the disks' context ids");
  ctx_id = xstrdup (j1.context_id);
  j1_ids[0] = j1.disks[0].id;
  j1_ids[1] = j1.disks[1].id;

  succeeds (catalog_context_find (cat, "web01", "repo-1", &ctx), "find the context");
  is_str (ctx.context_id, ctx_id, "it is the one J1 created");
  is_str (ctx.vmware_vm_id, "vm-4242", "its descriptive fields come from the VM");
  is_int (ctx.total_backups_run, 1, "total_backups_run is 1");
  is_str (ctx.last_backup_id, NULL, "no last backup yet");
  cat_context_clear (&ctx);
  fails_with (catalog_context_find (cat, "web01", "repo-2", &ctx), ERR_NOT_FOUND,
              "no context for another repository");

  fails_with (catalog_repo_delete (cat, "repo-1"), ERR_CONFLICT,
              "a repository a context uses cannot be deleted");

  /* A second start while J1 runs. */
  job_init (&j, "backup-j1b", "web01", "repo-1", "2025-03-01T10:00:01.000Z", 2, NULL);
  fails_with (catalog_backup_insert (cat, &j, &vm), ERR_CONFLICT,
              "a second backup while one runs is a conflict");
  ok (strstr (error_message (), "backup-j1") != NULL,
      "the conflict names the running backup: %s", error_message ());
  cat_job_clear (&j);
  is_int (raw_int ("SELECT count(*) FROM vm_backup_contexts WHERE vm_name = 'web01'", NULL),
          1, "still one context for the VM");
  is_int (raw_int ("SELECT total_backups_run FROM vm_backup_contexts", NULL), 1,
          "the refused start was not counted");
  /* The schema itself refuses a second running job, whoever writes it. */
  {
    static const char sneaky[] =
      "INSERT INTO backup_jobs (id, vm_backup_context_id, vm_name,"
      " repository_id, backup_type, status, created_at)"
      " SELECT 'sneaky', context_id, vm_name, repository_id, 'full',"
      " 'running', 'x' FROM vm_backup_contexts";
    if (mariadb)
      ok (mysql_query (raw_my, sneaky) != 0 && mysql_errno (raw_my) == ER_DUP_ENTRY,
          "the UNIQUE key on running_context refuses a second running job in the"
          " database: %s", mysql_error (raw_my));
    else
      ok (sqlite3_exec (raw, sneaky, NULL, NULL, NULL) == SQLITE_CONSTRAINT,
          "the partial unique index refuses a second running job in the database");
  }

  succeeds (catalog_backup_plan (cat, "web01", "repo-1", 3, idx, parents, &running),
            "plan while J1 runs");
  ok (running && parents[0].id == 0, "running is set; a running job's disks are no parents");

  /* Completing J1 disk by disk. */
  succeeds (catalog_disk_complete (cat, "backup-j1", 0, "cid-j1-0", 111, NULL, &after),
            "complete J1 disk 0");
  is_str (job_status_name (after.status), "running", "J1 still runs with one disk left");
  is_str (after.n_disks == 2 ? disk_status_name (after.disks[0].status) : "?", "completed",
          "disk 0 completed");
  is_str (after.n_disks == 2 ? after.disks[0].disk_change_id : "?", "cid-j1-0",
          "disk 0 change id");
  is_int (after.n_disks == 2 ? after.disks[0].bytes_transferred : -9, 111,
          "disk 0 bytes_transferred");
  is_str (after.n_disks == 2 ? after.disks[0].nbd_export : "?", NULL,
          "disk 0 export cleared");
  ok (after.n_disks == 2 && after.disks[1].nbd_export != NULL, "disk 1 still exported");
  cat_job_clear (&after);

  fails_with (catalog_disk_complete (cat, "backup-j1", 0, "cid-again", 1, NULL, &after),
              ERR_CONFLICT, "completing a completed disk again is a conflict");
  fails_with (catalog_disk_complete (cat, "backup-j1", 7, "x", 1, NULL, &after), ERR_NOT_FOUND,
              "completing a disk the job does not have: not found");
  fails_with (catalog_disk_complete (cat, "backup-nope", 0, "x", 1, NULL, &after), ERR_NOT_FOUND,
              "completing a disk of an unknown backup: not found");

  succeeds (catalog_disk_complete (cat, "backup-j1", 1, "cid-j1-1", 222, NULL, &after),
            "complete J1 disk 1");
  is_str (job_status_name (after.status), "completed", "the last disk completes J1");
  ok (after.completed_at != NULL, "J1 has completed_at");
  cat_job_clear (&after);
  fails_with (catalog_disk_complete (cat, "backup-j1", 1, "x", 1, NULL, &after), ERR_CONFLICT,
              "completing a disk of a completed backup is a conflict");
  ok (strstr (error_message (), "is completed") != NULL, "which says so: %s",
      error_message ());

  succeeds (catalog_context_get (cat, ctx_id, &ctx), "get the context");
  is_int (ctx.successful_backups, 1, "successful_backups is 1");
  is_str (ctx.last_backup_id, "backup-j1", "last_backup_id is J1");
  is_str (ctx.last_backup_id ? backup_type_name (ctx.last_backup_type) : NULL, "full",
          "last_backup_type is full");
  ok (ctx.last_backup_at != NULL, "last_backup_at is set");
  cat_context_clear (&ctx);

  succeeds (catalog_backup_plan (cat, "web01", "repo-1", 3, idx, parents, &running),
            "plan after J1");
  ok (!running, "nothing runs");
  is_int (parents[0].id, j1_ids[0], "disk 0's parent is J1 disk 0");
  is_str (parents[1].disk_change_id, "cid-j1-1", "disk 1's parent has J1's change id");
  is_int (parents[2].id, 0, "disk 5 has no parent");
  for (int i = 0; i < 3; i++)
    cat_disk_clear (&parents[i]);

  /* J2: an incremental that fails on disk 1 after disk 0 completed. */
  job_init (&j, "backup-j2", "web01", "repo-1", "2025-03-02T10:00:00.000Z", 2, j1_ids);
  succeeds (catalog_backup_insert (cat, &j, &vm), "insert incremental J2 on J1");
  j2_ids[0] = j.disks[0].id;
  j2_ids[1] = j.disks[1].id;
  cat_job_clear (&j);
  succeeds (catalog_backup_get (cat, "backup-j2", &got), "get J2");
  is_str (got.n_disks == 2 ? got.disks[0].parent_backup_id : "?", "backup-j1",
          "J2 disk 0's parent_backup_id is J1 (joined)");
  is_str (got.n_disks == 2 ? got.disks[1].previous_change_id : "?", "cid-j1-1",
          "J2 disk 1's previous_change_id is J1's (joined)");
  is_int (got.n_disks == 2 ? got.disks[1].parent_disk_id : -9, j1_ids[1],
          "J2 disk 1's parent_disk_id");
  cat_job_clear (&got);

  succeeds (catalog_disk_complete (cat, "backup-j2", 0, "cid-j2-0", 5, NULL, &after),
            "complete J2 disk 0");
  cat_job_clear (&after);
  fails_with (catalog_backup_end (cat, "backup-j2", JOB_COMPLETED, -1, NULL, &disks, &n),
              ERR_INVALID, "a backup cannot be ended as completed");
  succeeds (catalog_backup_end (cat, "backup-j2", JOB_FAILED, 1, "nbd copy failed",
                                &disks, &n), "end J2 as failed on disk 1");
  is_int ((int64_t) n, 1, "one disk dropped");
  ok (n == 1 && disks[0].disk_index == 1 && disks[0].qcow2_path &&
      strcmp (disks[0].qcow2_path, "web01/backup-j2/disk1.qcow2") == 0 &&
      disks[0].nbd_export != NULL,
      "the dropped disk comes as it was: with its path and export");
  cat_disk_free_array (disks, n);
  succeeds (catalog_backup_get (cat, "backup-j2", &got), "get J2 after");
  is_str (job_status_name (got.status), "failed", "J2 failed");
  is_str (got.error, "nbd copy failed", "with the error");
  ok (got.completed_at != NULL, "J2 has completed_at");
  ok (got.n_disks == 2 && got.disks[1].status == DISK_FAILED &&
      got.disks[1].qcow2_path == NULL && got.disks[1].nbd_export == NULL,
      "disk 1 failed, path and export cleared");
  is_str (got.n_disks == 2 ? got.disks[1].error : "?", "nbd copy failed",
          "disk 1 carries the error");
  ok (got.n_disks == 2 && got.disks[0].status == DISK_COMPLETED &&
      got.disks[0].qcow2_path != NULL, "disk 0, completed before, keeps its file");
  cat_job_clear (&got);
  fails_with (catalog_backup_end (cat, "backup-j2", JOB_CANCELLED, -1, NULL, &disks, &n),
              ERR_CONFLICT, "ending a failed backup again is a conflict");

  succeeds (catalog_context_get (cat, ctx_id, &ctx), "get the context after J2");
  is_int (ctx.failed_backups, 1, "failed_backups is 1");
  is_int (ctx.total_backups_run, 2, "total_backups_run is 2");
  is_str (ctx.last_backup_id, "backup-j1", "last_backup_id is still J1");
  cat_context_clear (&ctx);

  succeeds (catalog_backup_plan (cat, "web01", "repo-1", 2, idx, parents, &running),
            "plan after the failed J2");
  ok (parents[0].id == j1_ids[0] && parents[1].id == j1_ids[1],
      "the parents are J1's: a failed job's disks are never parents,"
      " not even its completed ones");
  cat_disk_clear (&parents[0]);
  cat_disk_clear (&parents[1]);

  /* J3 planned on a stale parent. */
  p[0] = j2_ids[0];
  p[1] = j1_ids[1];
  job_init (&j, "backup-j3", "web01", "repo-1", "2025-03-03T10:00:00.000Z", 2, p);
  fails_with (catalog_backup_insert (cat, &j, &vm), ERR_CONFLICT,
              "a parent that is not the latest completed disk is a conflict");
  cat_job_clear (&j);
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE id = 'backup-j3'", NULL), 0,
          "nothing of the refused job was written");
  is_int (raw_int ("SELECT total_backups_run FROM vm_backup_contexts", NULL), 2,
          "and it was not counted");
  p[0] = -1;
  p[1] = j1_ids[1];
  job_init (&j, "backup-j3", "web01", "repo-1", "2025-03-03T10:00:00.000Z", 2, p);
  j.disks[1].backup_type = BACKUP_FULL;
  fails_with (catalog_backup_insert (cat, &j, &vm), ERR_INVALID,
              "a full disk with a parent is refused as invalid");
  cat_job_clear (&j);

  /* J3: a good incremental on J1 (disk 0 full again, disk 1 incremental). */
  succeeds (run_backup (cat, "backup-j3", "web01", "repo-1", "2025-03-03T10:00:00.000Z",
                        2, p, j3_ids), "J3: full disk 0, incremental disk 1 on J1");

  succeeds (catalog_changeid_get (cat, "web01", 1, NULL, &d), "changeid of disk 1");
  is_str (d.disk_change_id, "cid-backup-j3-1", "is J3's");
  is_int (d.id, j3_ids[1], "from J3's row");
  cat_disk_clear (&d);
  succeeds (catalog_changeid_get (cat, "web01", 1, "repo-1", &d),
            "changeid of disk 1 in repo-1");
  is_str (d.disk_change_id, "cid-backup-j3-1", "is J3's too");
  cat_disk_clear (&d);
  fails_with (catalog_changeid_get (cat, "web01", 9, NULL, &d), ERR_NOT_FOUND,
              "changeid of a disk never backed up: not found");
  fails_with (catalog_changeid_get (cat, "nobody", 0, NULL, &d), ERR_NOT_FOUND,
              "changeid of an unknown VM: not found");
  fails_with (catalog_changeid_get (cat, "web01", 0, "repo-2", &d), ERR_NOT_FOUND,
              "changeid in a repository without that VM: not found");

  /* Listing. */
  succeeds (catalog_backup_list (cat, &f, &list, &n, &total), "list all backups");
  is_int (total, 3, "total is 3");
  ok (n == 3 && strcmp (list[0].id, "backup-j3") == 0 &&
      strcmp (list[1].id, "backup-j2") == 0 && strcmp (list[2].id, "backup-j1") == 0,
      "newest first");
  ok (n == 3 && list[0].n_disks == 2 && list[1].n_disks == 2 && list[2].n_disks == 2,
      "each job once, with its disks");
  cat_job_free_array (list, n);
  f.by_status = true;
  f.status = JOB_FAILED;
  succeeds (catalog_backup_list (cat, &f, &list, &n, &total), "list failed backups");
  ok (n == 1 && total == 1 && strcmp (list[0].id, "backup-j2") == 0, "just J2");
  cat_job_free_array (list, n);
  f.by_status = false;
  f.by_type = true;
  f.backup_type = BACKUP_INCREMENTAL;
  f.vm_name = "web01";
  f.repository_id = "repo-1";
  succeeds (catalog_backup_list (cat, &f, &list, &n, &total), "list incrementals");
  is_int ((int64_t) n, 2, "J2 and J3");
  cat_job_free_array (list, n);
  f = (struct cat_job_filter) { .limit = 1, .offset = 1 };
  succeeds (catalog_backup_list (cat, &f, &list, &n, &total), "list page 2 of size 1");
  ok (n == 1 && total == 3 && strcmp (list[0].id, "backup-j2") == 0,
      "one job, J2, and the total of all matches");
  cat_job_free_array (list, n);
  f = (struct cat_job_filter) { .vm_name = "nobody" };
  succeeds (catalog_backup_list (cat, &f, &list, &n, &total), "list for an unknown VM");
  ok (n == 0 && total == 0, "nothing");
  cat_job_free_array (list, n);

  /* Deleting. */
  fails_with (catalog_backup_delete (cat, "backup-j1", false, &disks, &n), ERR_CONFLICT,
              "J1 cannot go while J2 and J3 are based on it");
  fails_with (catalog_backup_delete (cat, "backup-nope", false, &disks, &n), ERR_NOT_FOUND,
              "deleting an unknown backup: not found");
  succeeds (catalog_backup_delete (cat, "backup-j3", false, &disks, &n), "delete J3");
  ok (n == 2 && disks[0].qcow2_path && disks[1].qcow2_path &&
      strcmp (disks[1].qcow2_path, "web01/backup-j3/disk1.qcow2") == 0,
      "its deleted disks come back with their paths");
  cat_disk_free_array (disks, n);
  succeeds (catalog_context_get (cat, ctx_id, &ctx), "get the context after deleting J3");
  is_str (ctx.last_backup_id, "backup-j1", "last_backup_id went back to J1");
  is_str (ctx.last_backup_id ? backup_type_name (ctx.last_backup_type) : NULL, "full",
          "and last_backup_type with it");
  cat_context_clear (&ctx);

  succeeds (catalog_backup_delete (cat, "backup-j1", true, &disks, &n),
            "delete J1 with cascade");
  is_int ((int64_t) n, 4, "J1's and J2's disks were deleted");
  cat_disk_free_array (disks, n);
  is_int (raw_int ("SELECT count(*) FROM backup_jobs", NULL), 0, "no job is left");
  is_int (raw_int ("SELECT count(*) FROM backup_disks", NULL), 0, "no disk row is left");
  succeeds (catalog_context_get (cat, ctx_id, &ctx), "the context stays");
  is_str (ctx.last_backup_id, NULL, "with no last backup");
  is_int (ctx.successful_backups, 2, "its history counts stay");
  cat_context_clear (&ctx);

  free (ctx_id);
  cat_job_clear (&j1);
  cat_vm_clear (&vm);
}

/* A lost file fails its disk and everything built on it. */
static void
test_disk_lost (struct catalog *cat)
{
  struct cat_job k4, got = { 0 };
  struct cat_context ctx = { 0 };
  struct cat_disk *disks = NULL, d = { 0 };
  char **paths = NULL;
  int64_t k1[2], k2[2], k3[2], failed_before;
  size_t n = 0;
  bool ok_paths = true;

  succeeds (run_backup (cat, "backup-k1", "web01", "repo-2", "2025-04-01T00:00:00.000Z",
                        2, NULL, k1), "K1: full in repo-2");
  fails_with (catalog_changeid_get (cat, "web01", 0, NULL, &d), ERR_CONFLICT,
              "changeid without a repository when the VM is in two: a conflict");
  succeeds (run_backup (cat, "backup-k2", "web01", "repo-2", "2025-04-02T00:00:00.000Z",
                        2, k1, k2), "K2 on K1");
  succeeds (run_backup (cat, "backup-k3", "web01", "repo-2", "2025-04-03T00:00:00.000Z",
                        2, k2, k3), "K3 on K2");
  job_init (&k4, "backup-k4", "web01", "repo-2", "2025-04-04T00:00:00.000Z", 2, k3);
  succeeds (catalog_backup_insert (cat, &k4, NULL), "K4 on K3, left running");

  succeeds (catalog_running_disks (cat, NULL, &disks, &n), "running disks");
  ok (n == 2 && strcmp (disks[0].backup_job_id, "backup-k4") == 0 &&
      disks[0].nbd_export != NULL, "K4's two disks, with their exports");
  cat_disk_free_array (disks, n);

  succeeds (catalog_disk_files (cat, &disks, &paths, &n), "disk files");
  is_int ((int64_t) n, 8, "8 disks have files (K1..K4)");
  for (size_t i = 0; i < n; i++)
    ok_paths &= paths[i] && strcmp (paths[i], "/srv/backups/two") == 0 &&
                disks[i].qcow2_path != NULL;
  ok (ok_paths, "each with its repository's path");
  for (size_t i = 0; i < n; i++)
    free (paths[i]);
  free (paths);
  cat_disk_free_array (disks, n);

  failed_before = raw_int ("SELECT failed_backups FROM vm_backup_contexts"
                           " WHERE repository_id = 'repo-2'", NULL);
  fails_with (catalog_disk_lost (cat, 999999, "gone"), ERR_NOT_FOUND,
              "an unknown disk: not found");
  succeeds (catalog_disk_lost (cat, k2[0], "qcow2 file missing"), "K2 disk 0 is lost");

  succeeds (catalog_backup_get (cat, "backup-k2", &got), "get K2");
  is_str (job_status_name (got.status), "failed", "K2 failed");
  ok (got.n_disks == 2 && got.disks[0].status == DISK_FAILED &&
      got.disks[0].qcow2_path == NULL && got.disks[0].error &&
      strcmp (got.disks[0].error, "qcow2 file missing") == 0,
      "its disk 0 failed with the reason, path cleared");
  ok (got.n_disks == 2 && got.disks[1].status == DISK_COMPLETED &&
      got.disks[1].qcow2_path != NULL, "its disk 1 is untouched");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-k3", &got), "get K3");
  ok (got.status == JOB_FAILED && got.n_disks == 2 &&
      got.disks[0].status == DISK_FAILED && got.disks[0].qcow2_path == NULL,
      "K3, built on it, failed; its disk 0 too");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-k4", &got), "get K4");
  ok (got.status == JOB_FAILED && got.n_disks == 2 &&
      got.disks[0].status == DISK_FAILED && got.disks[0].nbd_export == NULL,
      "K4, running on it, failed; its disk 0 export cleared");
  ok (got.n_disks == 2 && got.disks[1].status == DISK_FAILED,
      "a failed job keeps no running disk");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-k1", &got), "get K1");
  is_str (job_status_name (got.status), "completed", "K1, below the lost disk, is untouched");
  cat_job_clear (&got);

  succeeds (catalog_context_find (cat, "web01", "repo-2", &ctx), "the repo-2 context");
  is_int (ctx.failed_backups, failed_before + 1, "the running K4 counted as failed");
  is_str (ctx.last_backup_id, "backup-k1", "last_backup_id fell back to K1");
  cat_context_clear (&ctx);

  succeeds (catalog_running_disks (cat, NULL, &disks, &n), "running disks after");
  is_int ((int64_t) n, 0, "none");
  cat_disk_free_array (disks, n);

  /* Context delete: refused while a job runs, unless forced. */
  job_init (&got, "backup-k5", "web01", "repo-2", "2025-04-05T00:00:00.000Z", 2, k1);
  succeeds (catalog_backup_insert (cat, &got, NULL), "K5 on K1, left running");
  fails_with (catalog_backup_delete (cat, "backup-k5", false, &disks, &n), ERR_CONFLICT,
              "a running backup cannot be deleted");
  fails_with (catalog_backup_delete (cat, "backup-k1", true, &disks, &n), ERR_CONFLICT,
              "nor can a cascade reach a running backup");
  fails_with (catalog_context_delete (cat, got.context_id, false, &disks, &n), ERR_CONFLICT,
              "a context with a running backup cannot be deleted");
  is_int (raw_int ("SELECT count(*) FROM backup_disks WHERE vm_backup_context_id = ?",
                   got.context_id), 10, "its 10 disk rows are still there");
  succeeds (catalog_context_delete (cat, got.context_id, true, &disks, &n),
            "forced, it can");
  is_int ((int64_t) n, 10, "every disk row of the context came back");
  cat_disk_free_array (disks, n);
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id = ?",
                   got.context_id), 0, "its jobs went by cascade");
  is_int (raw_int ("SELECT count(*) FROM backup_disks WHERE vm_backup_context_id = ?",
                   got.context_id), 0, "its disks went by cascade");
  fails_with (catalog_context_delete (cat, got.context_id, false, &disks, &n),
              ERR_NOT_FOUND, "deleting it again: not found");
  cat_job_clear (&got);
  cat_job_clear (&k4);

  succeeds (catalog_repo_delete (cat, "repo-2"), "repo-2, unused now, can be deleted");
  fails_with (catalog_repo_delete (cat, "repo-2"), ERR_NOT_FOUND, "and then is not found");
}

/* The hub names the context before the first insert (its files' paths
 * hold the id): a new context takes that id, an existing one must match. */
static void
test_context_id (struct catalog *cat)
{
  struct cat_job j;
  struct cat_context ctx = { 0 };
  struct cat_disk *disks = NULL;
  int64_t ids[1];
  size_t n = 0;

  job_init (&j, "backup-a1", "app01", "repo-1", "2025-06-01T00:00:00.000Z", 1, NULL);
  j.context_id = xstrdup ("ctx-backup-app01-chosen");
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert with a chosen context id");
  is_str (j.context_id, "ctx-backup-app01-chosen", "the job keeps it");
  is_str (j.disks[0].context_id, "ctx-backup-app01-chosen", "so do its disks");
  cat_job_clear (&j);
  succeeds (catalog_context_find (cat, "app01", "repo-1", &ctx), "find app01's context");
  is_str (ctx.context_id, "ctx-backup-app01-chosen", "it has the chosen id");
  cat_context_clear (&ctx);
  succeeds (catalog_backup_end (cat, "backup-a1", JOB_CANCELLED, -1, NULL, NULL, NULL),
            "cancel it (dropped disks not wanted)");

  job_init (&j, "backup-a2", "app01", "repo-1", "2025-06-02T00:00:00.000Z", 1, NULL);
  j.context_id = xstrdup ("ctx-backup-app01-other");
  fails_with (catalog_backup_insert (cat, &j, NULL), ERR_CONFLICT,
              "a chosen id that is not the existing context's is a conflict");
  free (j.context_id);
  j.context_id = xstrdup ("../../etc");
  fails_with (catalog_backup_insert (cat, &j, NULL), ERR_INVALID,
              "a chosen id that is not an id is invalid");
  cat_job_clear (&j);
  succeeds (run_backup (cat, "backup-a2", "app01", "repo-1", "2025-06-02T00:00:00.000Z",
                        1, NULL, ids), "without a chosen id it uses the existing context");

  succeeds (catalog_context_delete (cat, "ctx-backup-app01-chosen", false, &disks, &n),
            "delete app01's context");
  ok (n == 2 && disks[0].qcow2_path == NULL && disks[1].qcow2_path != NULL,
      "both disk rows come back; the cancelled one has no file left");
  cat_disk_free_array (disks, n);
}

/* A hub-driven job whose last disk completes owes its source work: it is
 * "finishing", active like a running job, until catalog_backup_finish
 * completes it and counts it.  An agent job completes at once (see
 * test_backups). */
static void
test_finishing (struct catalog *cat)
{
  struct cat_repository nfs = { "repo-nfs", "nfs share", "nfs", "/mnt/nfs-backups", NULL };
  struct cat_repository cifs = { "repo-cifs", "cifs share", "cifs", "/mnt/cifs", NULL };
  struct cat_job j, after = { 0 };
  struct cat_context ctx = { 0 };
  struct cat_disk *disks = NULL, parents[1] = { { 0 } };
  char **plan = NULL;
  int idx[1] = { 0 };
  int64_t h1[1], h2[1];
  size_t n = 0;
  bool running = false;

  succeeds (catalog_repo_insert (cat, &nfs), "a repository of type nfs");
  succeeds (catalog_repo_insert (cat, &cifs), "a repository of type cifs");

  job_init (&j, "backup-h1", "hub01", "repo-nfs", "2025-07-01T00:00:00.000Z", 1, NULL);
  j.driver = DRIVER_HUB;
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert hub-driven H1");
  h1[0] = j.disks[0].id;
  cat_job_clear (&j);
  succeeds (catalog_disk_complete (cat, "backup-h1", 0, "cid-h1", 10, NULL, &after),
            "complete H1's only disk");
  is_str (job_status_name (after.status), "finishing",
          "the hub-driven job is finishing, not completed");
  ok (after.completed_at == NULL, "with no completed_at yet");
  ok (after.n_disks == 1 && after.disks[0].status == DISK_COMPLETED,
      "its disk is completed");
  cat_job_clear (&after);
  succeeds (catalog_context_find (cat, "hub01", "repo-nfs", &ctx), "H1's context");
  ok (ctx.successful_backups == 0 && ctx.last_backup_id == NULL,
      "the context does not count it yet");
  cat_context_clear (&ctx);

  succeeds (catalog_backup_plan (cat, "hub01", "repo-nfs", 1, idx, parents, &running),
            "plan while H1 finishes");
  ok (running && parents[0].id == 0,
      "a finishing job counts as running; its disk is no parent yet");
  cat_disk_clear (&parents[0]);
  job_init (&j, "backup-h2", "hub01", "repo-nfs", "2025-07-02T00:00:00.000Z", 1, NULL);
  fails_with (catalog_backup_insert (cat, &j, NULL), ERR_CONFLICT,
              "no second job while one finishes");
  cat_job_clear (&j);
  fails_with (catalog_backup_end (cat, "backup-h1", JOB_FAILED, -1, "x", NULL, NULL),
              ERR_CONFLICT, "a finishing job cannot fail: its data is recorded");
  fails_with (catalog_backup_delete (cat, "backup-h1", false, &disks, &n), ERR_CONFLICT,
              "a finishing job cannot be deleted");
  fails_with (catalog_backup_delete_plan (cat, "backup-h1", true, &plan), ERR_CONFLICT,
              "nor planned for deletion");
  succeeds (catalog_context_find (cat, "hub01", "repo-nfs", &ctx), "H1's context again");
  fails_with (catalog_context_delete (cat, ctx.context_id, false, &disks, &n), ERR_CONFLICT,
              "its context cannot be deleted without force");
  cat_context_clear (&ctx);

  succeeds (catalog_backup_finish (cat, "backup-h1", &after), "finish H1");
  is_str (job_status_name (after.status), "completed", "H1 is completed");
  ok (after.completed_at != NULL, "with completed_at");
  cat_job_clear (&after);
  fails_with (catalog_backup_finish (cat, "backup-h1", NULL), ERR_CONFLICT,
              "finishing a completed job is a conflict");
  fails_with (catalog_backup_finish (cat, "backup-nope", NULL), ERR_NOT_FOUND,
              "finishing an unknown job: not found");
  succeeds (catalog_context_find (cat, "hub01", "repo-nfs", &ctx), "H1's context after");
  ok (ctx.successful_backups == 1 && ctx.last_backup_id &&
      strcmp (ctx.last_backup_id, "backup-h1") == 0 && ctx.last_backup_at != NULL,
      "the context counts H1 now, as its last backup");
  cat_context_clear (&ctx);

  /* H2 on H1, H3 on H2: the delete plan is the delete's own set. */
  job_init (&j, "backup-h2", "hub01", "repo-nfs", "2025-07-02T00:00:00.000Z", 1, h1);
  j.driver = DRIVER_HUB;
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert hub-driven H2 on H1");
  h2[0] = j.disks[0].id;
  cat_job_clear (&j);
  succeeds (catalog_disk_complete (cat, "backup-h2", 0, "cid-h2", 10, NULL, NULL),
            "complete H2's disk");
  succeeds (catalog_disk_lost (cat, h2[0], "gone"), "H2's disk is lost while finishing");
  succeeds (catalog_backup_get (cat, "backup-h2", &after), "get H2");
  is_str (job_status_name (after.status), "failed", "a finishing job whose disk is lost fails");
  cat_job_clear (&after);
  succeeds (catalog_context_find (cat, "hub01", "repo-nfs", &ctx), "the context after H2");
  ok (ctx.failed_backups == 1 && ctx.successful_backups == 1,
      "and counts as failed, once");
  cat_context_clear (&ctx);
  succeeds (run_backup (cat, "backup-h3", "hub01", "repo-nfs", "2025-07-03T00:00:00.000Z",
                        1, h1, h2), "agent job H3 on H1");
  fails_with (catalog_backup_delete_plan (cat, "backup-h1", false, &plan), ERR_CONFLICT,
              "planning H1's delete without cascade: H3 depends on it");
  fails_with (catalog_backup_delete_plan (cat, "backup-nope", true, &plan), ERR_NOT_FOUND,
              "planning an unknown job's delete: not found");
  succeeds (catalog_backup_delete_plan (cat, "backup-h1", true, &plan),
            "plan H1's delete with cascade");
  ok (plan && plan[0] && strcmp (plan[0], "backup-h1") == 0 && plan[1] &&
      strcmp (plan[1], "backup-h2") == 0 && plan[2] && strcmp (plan[2], "backup-h3") == 0 &&
      plan[3] == NULL, "H1 first, then H2 (no file left) and H3");
  for (size_t i = 0; plan && plan[i]; i++)
    free (plan[i]);
  free (plan);
  succeeds (catalog_backup_delete (cat, "backup-h1", true, &disks, &n),
            "delete H1 with cascade");
  ok (n == 3, "the three jobs' disks go, as planned");
  cat_disk_free_array (disks, n);
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE vm_name = 'hub01'", NULL), 0,
          "no job of hub01 is left");
}

/* Several threads on two handles (two connections, like two processes)
 * start a backup of the same VM at once: exactly one wins. */
#define RACERS 8
static pthread_barrier_t race_barrier;

struct racer {
  struct catalog *cat;
  int n, result;
  enum error_category err;
};

/* One racer: build a job, wait for the others, try to start it. */
static void *
racer_run (void *arg)
{
  struct racer *r = arg;
  struct cat_job j;
  char id[32];

  snprintf (id, sizeof id, "backup-race-%d", r->n);
  job_init (&j, id, "race01", "repo-1", "2025-05-01T00:00:00.000Z", 3, NULL);
  pthread_barrier_wait (&race_barrier);
  r->result = catalog_backup_insert (r->cat, &j, NULL);
  r->err = r->result == -1 ? error_category () : ERR_NONE;
  cat_job_clear (&j);
  return NULL;
}

/* Start the racers, half on each handle, and count the winners. */
static void
strv_free (char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* Leases: recorded at insert, renewed only while running and leased, the
 * lapsed listed by time with the next lapse; change ids live or not. */
static void
test_lease (struct catalog *cat)
{
  struct cat_job j, got = { 0 };
  char **ids = NULL, *next = NULL;
  const char *names[] = { "backup-l1", "backup-l2", "cid-l3", "backup-nope" };
  bool live[4];

  job_init (&j, "backup-l1", "lease01", "repo-nfs", "2025-08-01T00:00:00.000Z", 1, NULL);
  j.lease_seconds = 60;
  j.lease_expires_at = xstrdup ("2025-08-01T00:01:00.000Z");
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert L1 with a lease");
  cat_job_clear (&j);
  job_init (&j, "backup-l2", "lease02", "repo-nfs", "2025-08-01T00:00:00.000Z", 1, NULL);
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert L2 without a lease");
  cat_job_clear (&j);
  succeeds (catalog_backup_get (cat, "backup-l1", &got), "get L1");
  ok (got.lease_seconds == 60 && got.lease_expires_at &&
      strcmp (got.lease_expires_at, "2025-08-01T00:01:00.000Z") == 0, "L1 has its lease");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-l2", &got), "get L2");
  ok (got.lease_seconds == 0 && got.lease_expires_at == NULL, "L2 has none");
  cat_job_clear (&got);

  succeeds (catalog_backup_lease_lapsed (cat, NULL, "2025-08-01T00:00:30.000Z", &ids, &next),
            "lapsed at 00:00:30");
  ok (ids && ids[0] == NULL, "none yet");
  is_str (next, "2025-08-01T00:01:00.000Z", "the next lapse is L1's");
  strv_free (ids);
  free (next);
  succeeds (catalog_backup_lease_renew (cat, "backup-l1", "2025-08-01T00:02:00.000Z"),
            "renew L1");
  succeeds (catalog_backup_lease_renew (cat, "backup-l2", "2025-08-01T00:02:00.000Z"),
            "renewing L2 succeeds");
  succeeds (catalog_backup_get (cat, "backup-l2", &got), "get L2 again");
  ok (got.lease_expires_at == NULL, "but gives a job without a lease none");
  cat_job_clear (&got);
  succeeds (catalog_backup_lease_lapsed (cat, NULL, "2025-08-01T00:01:30.000Z", &ids, &next),
            "lapsed at 00:01:30");
  ok (ids && ids[0] == NULL, "none: L1 was renewed");
  strv_free (ids);
  free (next);
  succeeds (catalog_backup_lease_lapsed (cat, NULL, "2025-08-01T00:02:01.000Z", &ids, &next),
            "lapsed at 00:02:01");
  ok (ids && ids[0] && strcmp (ids[0], "backup-l1") == 0 && ids[1] == NULL,
      "L1 lapsed, L2 never does");
  ok (next == NULL, "and no other lease is pending");
  strv_free (ids);
  free (next);

  succeeds (catalog_disk_complete (cat, "backup-l2", 0, "cid-l3", 1, NULL, NULL),
            "complete L2 with change id cid-l3");
  succeeds (catalog_backup_end (cat, "backup-l1", JOB_FAILED, -1, "lapsed", NULL, NULL),
            "fail L1");
  succeeds (catalog_backup_lease_renew (cat, "backup-l1", "2025-08-01T00:09:00.000Z"),
            "renewing a failed job succeeds");
  succeeds (catalog_backup_get (cat, "backup-l1", &got), "get L1 again");
  is_str (got.lease_expires_at, "2025-08-01T00:02:00.000Z", "but changes nothing");
  cat_job_clear (&got);
  succeeds (catalog_backup_lease_lapsed (cat, NULL, "2025-08-01T00:10:00.000Z", &ids, NULL),
            "lapsed later");
  ok (ids && ids[0] == NULL, "an ended job is never listed");
  strv_free (ids);

  succeeds (catalog_change_ids_live (cat, 4, names, live), "which change ids are live");
  ok (!live[0] && live[1] && live[2] && !live[3],
      "a failed job's is not, a completed job's id and recorded change id are, an unknown is not");
}

/* Several hubs: owners recorded and claimed, lists by owner, file intents
 * (migration 0007). */
static void
test_owners (struct catalog *cat)
{
  struct cat_job j, got = { 0 };
  struct cat_disk *disks = NULL;
  char **ids = NULL, *hub = NULL, *job = NULL;
  size_t n = 0;
  int64_t claimed = -1;

  job_init (&j, "backup-o1", "owner01", "repo-nfs", "2025-09-01T00:00:00.000Z", 1, NULL);
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert O1, owned by no hub");
  cat_job_clear (&j);
  job_init (&j, "backup-o2", "owner02", "repo-nfs", "2025-09-01T00:00:00.000Z", 2, NULL);
  j.owner_hub = xstrdup ("hub-aaaaaaaaaaaaaaaa");
  j.lease_seconds = 60;
  j.lease_expires_at = xstrdup ("2025-09-01T00:01:00.000Z");
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert O2, owned by hub A, leased");
  cat_job_clear (&j);
  succeeds (catalog_backup_get (cat, "backup-o2", &got), "get O2");
  is_str (got.owner_hub, "hub-aaaaaaaaaaaaaaaa", "O2 records its owner");
  cat_job_clear (&got);

  succeeds (catalog_hub_claim (cat, "hub-bbbbbbbbbbbbbbbb", &claimed), "hub B claims");
  ok (claimed >= 1, "hub B took the running rows no hub owned (%lld)", (long long) claimed);
  succeeds (catalog_backup_get (cat, "backup-o1", &got), "get O1");
  is_str (got.owner_hub, "hub-bbbbbbbbbbbbbbbb", "O1 is hub B's now");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-o2", &got), "get O2 again");
  is_str (got.owner_hub, "hub-aaaaaaaaaaaaaaaa", "O2 stays hub A's");
  cat_job_clear (&got);
  succeeds (catalog_hub_claim (cat, "hub-cccccccccccccccc", &claimed), "hub C claims");
  is_int (claimed, 0, "and finds nothing left: the first hub won");
  is_int (raw_int ("SELECT count(*) FROM tasks WHERE status = 'running'"
                   " AND owner_hub IS NULL", NULL), 0, "no running task is nobody's");

  succeeds (catalog_running_disks (cat, "hub-aaaaaaaaaaaaaaaa", &disks, &n),
            "hub A's running disks");
  ok (n == 2 && strcmp (disks[0].backup_job_id, "backup-o2") == 0 &&
      strcmp (disks[1].backup_job_id, "backup-o2") == 0, "are O2's two");
  cat_disk_free_array (disks, n);
  succeeds (catalog_backup_lease_lapsed (cat, "hub-bbbbbbbbbbbbbbbb",
                                         "2025-09-01T00:05:00.000Z", &ids, NULL),
            "hub B's lapsed leases");
  ok (ids && ids[0] == NULL, "none: O2's lease is hub A's to reap");
  strv_free (ids);
  succeeds (catalog_backup_lease_lapsed (cat, "hub-aaaaaaaaaaaaaaaa",
                                         "2025-09-01T00:05:00.000Z", &ids, NULL),
            "hub A's lapsed leases");
  ok (ids && ids[0] && strcmp (ids[0], "backup-o2") == 0 && ids[1] == NULL, "O2's");
  strv_free (ids);

  /* Intents. */
  succeeds (catalog_intent_add (cat, "repo-nfs", "ctx-x/disk0/new.qcow2",
                                "hub-aaaaaaaaaaaaaaaa", "backup-new"), "hub A intends a file");
  fails_with (catalog_intent_add (cat, "repo-nfs", "ctx-x/disk0/new.qcow2",
                                  "hub-bbbbbbbbbbbbbbbb", NULL), ERR_CONFLICT,
              "hub B cannot intend the same path");
  is_int (catalog_intent_orphan (cat, "repo-nfs", "ctx-x/disk0/new.qcow2",
                                 "hub-bbbbbbbbbbbbbbbb", &hub, &job), CAT_FILE_INTENDED,
          "hub B's file check finds hub A's intent");
  ok (hub && strcmp (hub, "hub-aaaaaaaaaaaaaaaa") == 0 && job &&
      strcmp (job, "backup-new") == 0, "naming hub A and its job");
  free (hub);
  free (job);
  is_int (catalog_intent_orphan (cat, "repo-nfs", "ctx-x/disk0/new.qcow2",
                                 "hub-aaaaaaaaaaaaaaaa", &hub, &job), CAT_FILE_ORPHAN,
          "hub A's own intent is its to clean up");
  ok (hub == NULL && job == NULL, "with no other owner");
  is_int (catalog_intent_orphan (cat, "repo-nfs", "owner02/backup-o2/disk1.qcow2",
                                 "hub-bbbbbbbbbbbbbbbb", &hub, &job), CAT_FILE_OWNED,
          "a file a disk row owns is owned, whatever a listing said");
  is_int (catalog_intent_orphan (cat, "repo-nfs", "ctx-x/disk0/old.qcow2",
                                 "hub-bbbbbbbbbbbbbbbb", &hub, &job), CAT_FILE_ORPHAN,
          "an unknown file is an orphan, now under hub B's intent");
  fails_with (catalog_intent_add (cat, "repo-nfs", "ctx-x/disk0/old.qcow2",
                                  "hub-aaaaaaaaaaaaaaaa", NULL), ERR_CONFLICT,
              "so no hub starts a file of that name while it goes");
  succeeds (catalog_intent_clear_hub (cat, "hub-bbbbbbbbbbbbbbbb", &claimed),
            "hub B forgets its intents");
  is_int (claimed, 1, "one");
  succeeds (catalog_intent_remove (cat, "repo-nfs", "ctx-x/disk0/new.qcow2"),
            "hub A drops its intent");
  succeeds (catalog_intent_remove (cat, "repo-nfs", "ctx-x/disk0/new.qcow2"),
            "dropping a missing intent is no error");

  succeeds (catalog_intent_add (cat, "repo-nfs", "owner03/backup-o3/disk0.qcow2",
                                "hub-aaaaaaaaaaaaaaaa", "backup-o3"), "hub A intends O3's file");
  job_init (&j, "backup-o3", "owner03", "repo-nfs", "2025-09-01T00:00:00.000Z", 1, NULL);
  j.owner_hub = xstrdup ("hub-aaaaaaaaaaaaaaaa");
  succeeds (catalog_backup_insert (cat, &j, NULL), "insert O3");
  cat_job_clear (&j);
  is_int (raw_int ("SELECT count(*) FROM file_intents", NULL), 0,
          "the insert took the intent of its file away");
}

static void
test_race (struct catalog *cat)
{
  struct catalog *other = cat_open ();
  struct racer racers[RACERS];
  pthread_t th[RACERS];
  int wins = 0, conflicts = 0;

  if (!ok (other != NULL, "a second handle on the same file"))
    return;
  pthread_barrier_init (&race_barrier, NULL, RACERS);
  for (int i = 0; i < RACERS; i++) {
    racers[i] = (struct racer) { i % 2 ? other : cat, i, 0, ERR_NONE };
    pthread_create (&th[i], NULL, racer_run, &racers[i]);
  }
  for (int i = 0; i < RACERS; i++) {
    pthread_join (th[i], NULL);
    wins += racers[i].result == 0;
    conflicts += racers[i].result == -1 && racers[i].err == ERR_CONFLICT;
  }
  pthread_barrier_destroy (&race_barrier);
  is_int (wins, 1, "%d simultaneous starts: exactly one wins", RACERS);
  is_int (conflicts, RACERS - 1, "the others get a conflict");
  is_int (raw_int ("SELECT count(*) FROM vm_backup_contexts WHERE vm_name = 'race01'",
                   NULL), 1, "one context was created");
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE vm_name = 'race01'", NULL), 1,
          "one job was written");
  is_int (raw_int ("SELECT total_backups_run FROM vm_backup_contexts"
                   " WHERE vm_name = 'race01'", NULL), 1, "and counted");
  catalog_close (other);
}

/* MariaDB only: a raw root query that returns nothing we want. */
static int
raw_do (const char *fmt, ...)
{
  char q[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (q, sizeof q, fmt, ap);
  va_end (ap);
  if (mysql_query (raw_my, q) != 0) {
    diag ("%s: %s", q, mysql_error (raw_my));
    return -1;
  }
  if (mysql_field_count (raw_my) > 0)
    mysql_free_result (mysql_store_result (raw_my));
  return 0;
}

/* Wait (bounded) for the catalog's connection to run a statement that
 * starts with prefix; its id, or -1. */
static int64_t
wait_for_statement (const char *prefix)
{
  char sql[512];

  snprintf (sql, sizeof sql, "SELECT id FROM information_schema.processlist"
            " WHERE user = 'strata' AND db = '%s' AND info LIKE '%s%%'", my_db, prefix);
  for (int i = 0; i < 800; i++) {
    int64_t id = raw_int (sql, NULL);
    if (id > 0)
      return id;
    usleep (10000);
  }
  {
    MYSQL_RES *res;
    MYSQL_ROW row;
    if (mysql_query (raw_my, "SELECT id, user, db, state, info FROM"
                     " information_schema.processlist") == 0 &&
        (res = mysql_store_result (raw_my)) != NULL) {
      while ((row = mysql_fetch_row (res)) != NULL)
        diag ("processlist: %s %s %s %s %s", row[0], row[1], row[2] ? row[2] : "-",
              row[3] ? row[3] : "-", row[4] ? row[4] : "-");
      mysql_free_result (res);
    }
  }
  return -1;
}

/* Poll until the count that the query (printf format) gives is want.
 * 0, or -1 after 8 s with what it last saw in the diagnostics. */
static int wait_for_count (int64_t want, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
static int
wait_for_count (int64_t want, const char *fmt, ...)
{
  char sql[512];
  int64_t got = -1;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (sql, sizeof sql, fmt, ap);
  va_end (ap);
  for (int i = 0; i < 800; i++) {
    if ((got = raw_int (sql, NULL)) == want)
      return 0;
    usleep (10000);
  }
  diag ("waited 8 s for %s to be %" PRId64 ", last got %" PRId64, sql, want, got);
  return -1;
}

struct completer {
  struct catalog *cat;
  int result;
  enum error_category err;
};

static void *
completer_run (void *arg)
{
  struct completer *c = arg;
  struct cat_job after = { 0 };

  c->result = catalog_disk_complete (c->cat, "backup-lost-1", 0, "cid-lost", 7, NULL, &after);
  c->err = c->result == -1 ? error_category () : ERR_NONE;
  cat_job_clear (&after);
  return NULL;
}

/* catalog_row_fn: the first column of the first row as an integer. */
static int
first_int (void *opaque, int ncols, char **vals)
{
  int64_t *v = opaque;

  if (*v == -1 && ncols > 0 && vals[0])
    *v = strtoll (vals[0], NULL, 10);
  return 0;
}

/* MariaDB: the server drops the connection.  Between operations, the next
 * one reconnects and succeeds; in the middle of a transaction, after some
 * of its writes, with no way back in, the operation fails as unavailable
 * and none of its writes stay; once the server lets it in again, the next
 * operation works. */
static void
test_lost_connection (struct catalog *cat)
{
  struct cat_repository r = { "repo-lost", "lost", "local", "/srv/lost", NULL };
  struct cat_job j;
  struct completer c = { cat, 0, ERR_NONE };
  pthread_t th;
  int64_t conn;

  if (!mariadb)
    return;
  /* The catalog's own connection, asked through it: the processlist may
   * still show connections of handles closed a moment ago. */
  conn = -1;
  catalog_raw_query (cat, first_int, &conn, "SELECT CONNECTION_ID()", "");
  ok (conn > 0 && raw_do ("KILL CONNECTION %" PRId64, conn) == 0,
      "the server drops the catalog's connection");
  succeeds (catalog_repo_insert (cat, &r), "the next operation reconnects and succeeds");
  is_int (raw_int ("SELECT count(*) FROM backup_repositories WHERE id = 'repo-lost'", NULL), 1,
          "and its write is there, once");

  job_init (&j, "backup-lost-1", "lost01", "repo-1", "2025-07-01T00:00:00.000Z", 1, NULL);
  succeeds (catalog_backup_insert (cat, &j, NULL), "a running job to complete");
  cat_job_clear (&j);
  /* No new connection from now on; the catalog's own stays.  (Before the
   * transaction below: ALTER USER commits an open transaction implicitly,
   * which would let go of the job's row.) */
  raw_do ("ALTER USER 'strata'@'localhost' ACCOUNT LOCK");
  /* Hold the job's row: disk_complete writes the disk, then waits there to
   * complete the job. */
  raw_do ("START TRANSACTION");
  raw_do ("SELECT * FROM backup_jobs WHERE id = 'backup-lost-1' FOR UPDATE");
  pthread_create (&th, NULL, completer_run, &c);
  conn = wait_for_statement ("UPDATE backup_jobs");
  ok (conn > 0 && wait_for_count (1, "SELECT count(*) FROM information_schema.innodb_trx"
                                   " WHERE trx_mysql_thread_id = %" PRId64
                                   " AND trx_state = 'LOCK WAIT'", conn) == 0,
      "the completion waits on the job's row, the disk's row written");
  /* KILL only marks the connection: let it end before the row is let go,
   * or its UPDATE and even its COMMIT may still run (an outcome the catalog
   * reports as unknown, not the one this test is about). */
  if (conn > 0) {
    raw_do ("KILL CONNECTION %" PRId64, conn);
    wait_for_count (0, "SELECT count(*) FROM information_schema.processlist WHERE id = %"
                    PRId64, conn);
  }
  raw_do ("ROLLBACK");
  pthread_join (th, NULL);
  ok (c.result == -1 && c.err == ERR_UNAVAILABLE,
      "killed there and unable to reconnect, it fails as unavailable");
  is_int (raw_int ("SELECT count(*) FROM backup_disks WHERE backup_job_id = 'backup-lost-1'"
                   " AND status = 'running' AND disk_change_id IS NULL", NULL), 1,
          "the disk's update was rolled back");
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE id = 'backup-lost-1'"
                   " AND status = 'running'", NULL), 1, "the job still runs");
  raw_do ("ALTER USER 'strata'@'localhost' ACCOUNT UNLOCK");
  completer_run (&c);
  ok (c.result == 0, "with the server reachable again, the completion works");
  is_int (raw_int ("SELECT successful_backups FROM vm_backup_contexts WHERE vm_name = 'lost01'",
                   NULL), 1, "and is counted once");
}

/* Run sql, which writes what the schema's CHECKs refuse, on the raw
 * connection with the checks off: a damaged catalog, or one written by a
 * newer strata. */
static int
raw_unchecked (const char *sql)
{
  char *err = NULL;
  int r;

  if (mariadb) {
    r = raw_do ("SET SESSION check_constraint_checks = 0") == -1 ? -1 : raw_do ("%s", sql);
    raw_do ("SET SESSION check_constraint_checks = 1");
    return r;
  }
  r = sqlite3_exec (raw, "PRAGMA ignore_check_constraints = ON", NULL, NULL, &err);
  if (r == SQLITE_OK)
    r = sqlite3_exec (raw, sql, NULL, NULL, &err);
  sqlite3_exec (raw, "PRAGMA ignore_check_constraints = OFF", NULL, NULL, NULL);
  if (r != SQLITE_OK)
    diag ("%s: %s", sql, err ? err : "?");
  sqlite3_free (err);
  return r == SQLITE_OK ? 0 : -1;
}

/* A status the catalog reads back but does not know is an internal error
 * naming the column and the word: never a guess, never a crash. */
static void
test_unknown_word (struct catalog *cat)
{
  struct cat_job j, got = { 0 };

  job_init (&j, "backup-w1", "word01", "repo-1", "2025-08-01T00:00:00.000Z", 1, NULL);
  succeeds (catalog_backup_insert (cat, &j, NULL), "a job to damage");
  cat_job_clear (&j);
  ok (raw_unchecked ("UPDATE backup_jobs SET status = 'paused' WHERE id = 'backup-w1'") == 0,
      "its status becomes a word strata does not know");
  fails_with (catalog_backup_get (cat, "backup-w1", &got), ERR_INTERNAL,
              "reading it is an internal error");
  ok (strstr (error_message (), "backup_jobs.status") && strstr (error_message (), "paused"),
      "which names the column and the word: %s", error_message ());
  fails_with (catalog_backup_delete (cat, "backup-w1", false, NULL, NULL), ERR_INTERNAL,
              "deleting it too");
  fails_with (catalog_backup_end (cat, "backup-w1", JOB_CANCELLED, -1, NULL, NULL, NULL),
              ERR_INTERNAL, "ending it too");
  ok (raw_unchecked ("UPDATE backup_jobs SET status = 'running' WHERE id = 'backup-w1'") == 0,
      "repaired");
  succeeds (catalog_backup_end (cat, "backup-w1", JOB_CANCELLED, -1, NULL, NULL, NULL),
            "it can be ended again");
}

/* A job of two disks that fails on disk 1 after disk 0 completed. */
static int
failed_backup (struct catalog *cat, const char *id, const char *vm, const char *at,
               const int64_t *parents, int64_t *ids)
{
  struct cat_job j;
  int r;

  job_init (&j, id, vm, "repo-1", at, 2, parents);
  r = catalog_backup_insert (cat, &j, NULL);
  if (r == 0) {
    ids[0] = j.disks[0].id;
    ids[1] = j.disks[1].id;
    r = catalog_disk_complete (cat, id, 0, "cid-f", 1, NULL, NULL);
  }
  if (r == 0)
    r = catalog_backup_end (cat, id, JOB_FAILED, 1, "copy failed", NULL, NULL);
  cat_job_clear (&j);
  if (r == -1)
    diag ("failed_backup %s: %s", id, error_message ());
  return r;
}

/* Row counts of a context that a refused operation must leave alone. */
static int64_t
ctx_rows (const char *ctx)
{
  return raw_int ("SELECT count(*) FROM backup_disks WHERE vm_backup_context_id = ?", ctx) *
         1000 + raw_int ("SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id = ?", ctx);
}

/* One merge step; its deleted rows' ids (sorted) in want, n_want of them. */
static void
merge_ok (struct catalog *cat, int64_t kept, int64_t parent, const int64_t *removed,
          size_t n_removed, const int64_t *want, size_t n_want, const char *what)
{
  struct cat_disk *deleted = NULL;
  size_t n = 0;
  bool same;

  succeeds (catalog_merge_commit (cat, kept, parent, removed, n_removed, &deleted, &n),
            "merge step: %s", what);
  same = n == n_want;
  for (size_t i = 0; same && i < n; i++)
    same = deleted[i].id == want[i];
  if (!ok (same, "it deletes the %zu rows expected, sorted by id", n_want))
    for (size_t i = 0; i < n; i++)
      diag ("deleted %" PRId64 " (%s)", deleted[i].id, deleted[i].backup_job_id);
  cat_disk_free_array (deleted, n);
}

/* A prune: the jobs it may remove, the guards while they are removing,
 * each kind of merge step (head, middle, tail) and the failed jobs that
 * go with the rows they hang on, and the steps it refuses. */
static void
test_prune (struct catalog *cat)
{
  int64_t p1[2] = { 0 }, p2[2] = { 0 }, f[2] = { 0 }, p3[2] = { 0 }, p4[2] = { 0 },
    g[2] = { 0 }, g2[2] = { 0 }, p5[2] = { 0 }, q1[2] = { 0 }, p6[2] = { 0 }, p7[2] = { 0 };
  int64_t before, successful, total;
  struct cat_context ctx = { 0 };
  struct cat_task t = { 0 }, gt = { 0 };
  struct cat_job got = { 0 }, *list = NULL;
  struct cat_job_filter filt = { .vm_name = "prune01", .by_status = true };
  struct cat_disk *disks = NULL, parents[2];
  int idx[2] = { 0, 1 };
  bool running = true;
  size_t n = 0;
  char *cid;

  succeeds (run_backup (cat, "backup-p1", "prune01", "repo-1", "2025-10-01T00:00:00.000Z",
                        2, NULL, p1), "P1: full");
  succeeds (run_backup (cat, "backup-p2", "prune01", "repo-1", "2025-10-02T00:00:00.000Z",
                        2, p1, p2), "P2 on P1");
  succeeds (failed_backup (cat, "backup-pf", "prune01", "2025-10-02T12:00:00.000Z", p2, f),
            "F on P2, failed with its disk 0 completed");
  succeeds (run_backup (cat, "backup-p3", "prune01", "repo-1", "2025-10-03T00:00:00.000Z",
                        2, p2, p3), "P3 on P2");
  succeeds (run_backup (cat, "backup-p4", "prune01", "repo-1", "2025-10-04T00:00:00.000Z",
                        2, p3, p4), "P4 on P3");
  succeeds (run_backup (cat, "backup-pg", "prune01", "repo-1", "2025-10-04T06:00:00.000Z",
                        2, p4, g), "G on P4");
  succeeds (run_backup (cat, "backup-pg2", "prune01", "repo-1", "2025-10-04T12:00:00.000Z",
                        2, g, g2), "G2 on G");
  succeeds (catalog_disk_lost (cat, g[0], "gone"), "G's disk 0 is lost: G and G2 fail");
  succeeds (run_backup (cat, "backup-p5", "prune01", "repo-1", "2025-10-05T00:00:00.000Z",
                        2, p4, p5), "P5 on P4");
  succeeds (run_backup (cat, "backup-q1", "prune02", "repo-1", "2025-10-05T00:00:00.000Z",
                        2, NULL, q1), "Q1, another VM's");
  succeeds (catalog_context_find (cat, "prune01", "repo-1", &ctx), "prune01's context");
  cid = xstrdup (ctx.context_id);
  successful = ctx.successful_backups;
  total = ctx.total_backups_run;
  cat_context_clear (&ctx);

  /* Protection: completed jobs only. */
  fails_with (catalog_backup_protect (cat, "backup-pf", true), ERR_CONFLICT,
              "a failed job cannot be protected");
  fails_with (catalog_backup_protect (cat, "backup-none", true), ERR_NOT_FOUND,
              "an unknown one: not found");
  succeeds (catalog_backup_protect (cat, "backup-p2", true), "protect P2");
  succeeds (catalog_backup_get (cat, "backup-p2", &got), "get P2");
  ok (got.is_protected, "P2 is protected");
  cat_job_clear (&got);
  filt.status = JOB_COMPLETED;
  succeeds (catalog_backup_list (cat, &filt, &list, &n, NULL), "list prune01's points");
  ok (n == 5 && strcmp (list[3].id, "backup-p2") == 0 && list[3].is_protected &&
      !list[0].is_protected, "the list says which is protected");
  cat_job_free_array (list, n);

  /* prune_begin refuses what it may not remove, and changes nothing. */
  t.id = "task-prune-1";
  t.kind = TASK_PRUNE;
  t.context_id = cid;
  t.steps_total = 6;
  before = ctx_rows (cid);
  {
    char *newest[] = { "backup-p1", "backup-p5", NULL };
    char *prot[] = { "backup-p1", "backup-p2", NULL };
    char *failed[] = { "backup-pf", NULL };
    char *other[] = { "backup-q1", NULL };
    char *unknown[] = { "backup-none", NULL };

    fails_with (catalog_prune_begin (cat, &t, newest), ERR_CONFLICT,
                "the newest completed job cannot be removed");
    ok (strstr (error_message (), "backup-p5") && strstr (error_message (), "newest"),
        "which it says: %s", error_message ());
    fails_with (catalog_prune_begin (cat, &t, prot), ERR_CONFLICT,
                "a protected job cannot be removed");
    ok (strstr (error_message (), "protected") != NULL, "which it says: %s", error_message ());
    fails_with (catalog_prune_begin (cat, &t, failed), ERR_CONFLICT,
                "a failed job is no point to remove");
    fails_with (catalog_prune_begin (cat, &t, other), ERR_CONFLICT,
                "nor is another context's job");
    fails_with (catalog_prune_begin (cat, &t, unknown), ERR_CONFLICT,
                "nor an unknown one");
  }
  is_int (raw_int ("SELECT count(*) FROM tasks WHERE id = 'task-prune-1'", NULL), 0,
          "no task was recorded");
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE status = 'removing'", NULL), 0,
          "no job was marked");
  is_int (ctx_rows (cid), before, "no row changed");
  succeeds (catalog_backup_protect (cat, "backup-p2", false), "unprotect P2");

  {
    char *remove[] = { "backup-p1", "backup-p2", "backup-p4", NULL };
    succeeds (catalog_prune_begin (cat, &t, remove), "begin the prune of P1, P2 and P4");
  }
  succeeds (catalog_task_get (cat, "task-prune-1", &gt), "its task");
  ok (gt.status == TASK_RUNNING && gt.context_id && strcmp (gt.context_id, cid) == 0 &&
      gt.steps_total == 6, "is running, on the context");
  cat_task_clear (&gt);
  filt.status = JOB_REMOVING;
  succeeds (catalog_backup_list (cat, &filt, &list, &n, NULL), "list removing jobs");
  ok (n == 3 && strcmp (list[0].id, "backup-p4") == 0, "P4, P2 and P1 are removing");
  cat_job_free_array (list, n);
  filt.status = JOB_COMPLETED;
  succeeds (catalog_backup_list (cat, &filt, &list, &n, NULL), "list completed jobs");
  ok (n == 2 && strcmp (list[0].id, "backup-p5") == 0 && strcmp (list[1].id, "backup-p3") == 0,
      "only P5 and P3 are points now");
  cat_job_free_array (list, n);

  /* Removing jobs are the task's. */
  t.id = "task-prune-2";
  {
    char *again[] = { "backup-p4", NULL };
    fails_with (catalog_prune_begin (cat, &t, again), ERR_CONFLICT,
                "a removing job cannot be chosen again");
  }
  is_int (raw_int ("SELECT count(*) FROM tasks WHERE id = 'task-prune-2'", NULL), 0,
          "and that task was not recorded");
  fails_with (catalog_backup_delete (cat, "backup-p2", false, &disks, &n), ERR_CONFLICT,
              "a removing job cannot be deleted");
  ok (strstr (error_message (), "prune") != NULL, "which says why: %s", error_message ());
  fails_with (catalog_backup_delete (cat, "backup-p3", true, &disks, &n), ERR_CONFLICT,
              "nor reached by a cascade");
  ok (strstr (error_message (), "backup-p4") && strstr (error_message (), "prune"),
      "which names it: %s", error_message ());
  fails_with (catalog_context_delete (cat, cid, true, &disks, &n), ERR_CONFLICT,
              "the context cannot be deleted, even with force");
  ok (strstr (error_message (), "prune") != NULL, "which says why: %s", error_message ());
  fails_with (catalog_backup_protect (cat, "backup-p4", true), ERR_CONFLICT,
              "a removing job cannot be protected");
  before = ctx_rows (cid);
  succeeds (catalog_disk_lost (cat, p4[0], "gone"), "a removing job's disk reported lost");
  succeeds (catalog_backup_get (cat, "backup-p4", &got), "get P4");
  ok (got.status == JOB_REMOVING && got.n_disks == 2 && got.disks[0].status == DISK_COMPLETED &&
      got.disks[0].qcow2_path != NULL, "it is untouched: its file is the task's");
  cat_job_clear (&got);
  succeeds (catalog_disk_lost (cat, p3[1], "gone"), "... and a kept disk below one");
  succeeds (catalog_backup_get (cat, "backup-p4", &got), "get P4");
  ok (got.status == JOB_REMOVING && got.disks[1].status == DISK_COMPLETED &&
      got.disks[1].qcow2_path != NULL, "the removing job built on it is left alone");
  cat_job_clear (&got);
  succeeds (catalog_backup_get (cat, "backup-p5", &got), "get P5");
  ok (got.status == JOB_FAILED && got.disks[1].status == DISK_FAILED,
      "the point built on both fails");
  cat_job_clear (&got);
  /* Undo that by hand, as if it never happened, for the steps below. */
  ok (raw_unchecked ("UPDATE backup_disks SET status = 'completed', error = NULL,"
                     " qcow2_path = 'x.qcow2' WHERE backup_job_id IN"
                     " ('backup-p3', 'backup-p5')") == 0 &&
      raw_unchecked ("UPDATE backup_jobs SET status = 'completed', error = NULL"
                     " WHERE id IN ('backup-p3', 'backup-p5')") == 0 &&
      raw_unchecked ("UPDATE vm_backup_contexts SET last_backup_id = 'backup-p5',"
                     " last_backup_type = 'incremental' WHERE vm_name = 'prune01'") == 0,
      "repaired by hand");
  is_int (ctx_rows (cid), before, "lost disks delete no row");
  succeeds (catalog_backup_plan (cat, "prune01", "repo-1", 2, idx, parents, &running),
            "plan the next backup");
  ok (!running && parents[0].id == p5[0] && parents[1].id == p5[1],
      "its parents are P5's: a prune does not block a backup");
  cat_disk_clear (&parents[0]);
  cat_disk_clear (&parents[1]);

  /* merge_commit refuses a step that does not fit, and changes nothing. */
  {
    int64_t completed[] = { p3[0] }, head[] = { p1[0] }, mid[] = { p4[0] },
      below[] = { p2[0] }, none[] = { 999999 };

    fails_with (catalog_merge_commit (cat, p5[0], p3[0], completed, 1, NULL, NULL),
                ERR_CONFLICT, "a completed row cannot be removed");
    fails_with (catalog_merge_commit (cat, p2[0], -1, head, 1, NULL, NULL), ERR_CONFLICT,
                "a removing row cannot be kept");
    fails_with (catalog_merge_commit (cat, p5[0], -1, head, 1, NULL, NULL), ERR_CONFLICT,
                "the kept row must be based on a removed row");
    fails_with (catalog_merge_commit (cat, p5[0], p3[1], mid, 1, NULL, NULL), ERR_CONFLICT,
                "the new parent must be of the kept row's disk");
    fails_with (catalog_merge_commit (cat, p5[0], q1[0], mid, 1, NULL, NULL), ERR_CONFLICT,
                "and of its context");
    fails_with (catalog_merge_commit (cat, -1, -1, head, 1, NULL, NULL), ERR_CONFLICT,
                "a removing row outside the step cannot lose its parent");
    fails_with (catalog_merge_commit (cat, -1, -1, below, 1, NULL, NULL), ERR_CONFLICT,
                "nor can a point that is not the kept row");
    ok (strstr (error_message (), "backup-p3") != NULL, "which names it: %s",
        error_message ());
    fails_with (catalog_merge_commit (cat, -1, -1, none, 1, NULL, NULL), ERR_CONFLICT,
                "an unknown row: a conflict (plan again)");
    fails_with (catalog_merge_commit (cat, -1, p3[0], head, 1, NULL, NULL), ERR_INVALID,
                "a new parent without a kept row is invalid");
    fails_with (catalog_merge_commit (cat, p3[0], -1, head, 0, NULL, NULL), ERR_INVALID,
                "a step that removes nothing is invalid");
  }
  is_int (ctx_rows (cid), before, "no row changed");
  is_int (raw_int ("SELECT count(*) FROM backup_disks WHERE parent_disk_id IS NOT NULL"
                   " AND backup_job_id = 'backup-p3'", NULL), 2, "P3 is still based on P2");

  /* Head: P1 and P2's disk 0 go into P3's, which becomes a full; F, whose
   * disk 0 is based on P2's, goes whole. */
  {
    int64_t removed[] = { p1[0], p2[0] }, want[] = { p1[0], p2[0], f[0], f[1] };
    merge_ok (cat, p3[0], -1, removed, 2, want, 4, "head of disk 0");
  }
  succeeds (catalog_backup_get (cat, "backup-p3", &got), "get P3");
  ok (got.disks[0].backup_type == BACKUP_FULL && got.disks[0].parent_disk_id == -1 &&
      got.disks[0].parent_backup_id == NULL, "its disk 0 is a full now");
  ok (got.disks[1].backup_type == BACKUP_INCREMENTAL && got.disks[1].parent_disk_id == p2[1],
      "its disk 1 is still based on P2's");
  ok (got.backup_type == BACKUP_INCREMENTAL, "so the job is still an incremental");
  cat_job_clear (&got);
  fails_with (catalog_backup_get (cat, "backup-pf", &got), ERR_NOT_FOUND, "F is gone");
  succeeds (catalog_backup_get (cat, "backup-p1", &got), "P1 is still there");
  ok (got.status == JOB_REMOVING && got.n_disks == 1 && got.disks[0].disk_index == 1,
      "removing, with its disk 1 only");
  cat_job_clear (&got);
  {
    int64_t removed[] = { p1[1], p2[1] };
    merge_ok (cat, p3[1], -1, removed, 2, removed, 2, "head of disk 1");
  }
  succeeds (catalog_backup_get (cat, "backup-p3", &got), "get P3 again");
  ok (got.backup_type == BACKUP_FULL, "with both disks fulls, P3 is a full job");
  cat_job_clear (&got);
  fails_with (catalog_backup_get (cat, "backup-p1", &got), ERR_NOT_FOUND,
              "P1, without disks, is gone");
  fails_with (catalog_backup_get (cat, "backup-p2", &got), ERR_NOT_FOUND, "so is P2");

  /* Middle: P5 is based on P3 instead of P4; G and G2 (through G) hang on
   * P4 and go whole. */
  {
    int64_t removed[] = { p4[0] }, want[] = { p4[0], g[0], g[1], g2[0], g2[1] };
    merge_ok (cat, p5[0], p3[0], removed, 1, want, 5, "middle of disk 0");
  }
  fails_with (catalog_backup_get (cat, "backup-pg", &got), ERR_NOT_FOUND, "G is gone");
  fails_with (catalog_backup_get (cat, "backup-pg2", &got), ERR_NOT_FOUND, "G2 too");
  {
    int64_t removed[] = { p4[1] };
    merge_ok (cat, p5[1], p3[1], removed, 1, removed, 1, "middle of disk 1");
  }
  succeeds (catalog_backup_get (cat, "backup-p5", &got), "get P5");
  ok (got.status == JOB_COMPLETED && got.disks[0].parent_disk_id == p3[0] &&
      got.disks[1].parent_disk_id == p3[1] && got.disks[0].parent_backup_id &&
      strcmp (got.disks[0].parent_backup_id, "backup-p3") == 0 &&
      got.disks[0].backup_type == BACKUP_INCREMENTAL, "P5 is based on P3 now");
  cat_job_clear (&got);
  fails_with (catalog_backup_get (cat, "backup-p4", &got), ERR_NOT_FOUND, "P4 is gone");
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE status = 'removing'", NULL), 0,
          "no removing job is left");
  succeeds (catalog_task_end (cat, "task-prune-1", TASK_COMPLETED, NULL, "{}"), "the task ends");
  succeeds (catalog_context_get (cat, cid, &ctx), "the context after the prune");
  ok (ctx.last_backup_id && strcmp (ctx.last_backup_id, "backup-p5") == 0 &&
      ctx.successful_backups == successful && ctx.total_backups_run == total,
      "names P5 as its last backup; its counters are history, unchanged");
  cat_context_clear (&ctx);

  /* Tail: a whole older chain, P3 then P5, once a new chain began. */
  succeeds (run_backup (cat, "backup-p6", "prune01", "repo-1", "2025-10-06T00:00:00.000Z",
                        2, NULL, p6), "P6: a full again");
  succeeds (run_backup (cat, "backup-p7", "prune01", "repo-1", "2025-10-07T00:00:00.000Z",
                        2, p6, p7), "P7 on P6");
  t.id = "task-prune-3";
  {
    char *remove[] = { "backup-p3", "backup-p5", NULL };
    succeeds (catalog_prune_begin (cat, &t, remove), "begin the prune of P3 and P5");
  }
  {
    int64_t removed0[] = { p3[0], p5[0] }, removed1[] = { p5[1], p3[1] },
      sorted1[] = { p3[1], p5[1] };
    merge_ok (cat, -1, -1, removed0, 2, removed0, 2, "tail of disk 0");
    merge_ok (cat, -1, -1, removed1, 2, sorted1, 2, "tail of disk 1, given in any order");
  }
  is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE vm_backup_context_id = ?", cid), 2,
          "P6 and P7 are left");
  succeeds (catalog_task_end (cat, "task-prune-3", TASK_COMPLETED, NULL, NULL), "that task ends");
  succeeds (catalog_context_delete (cat, cid, false, &disks, &n), "the context can go now");
  cat_disk_free_array (disks, n);
  free (cid);
}

/* A job's verify state and time, as the catalog reads them back. */
static void
job_verify_is (struct catalog *cat, const char *id, enum verify_state want,
               const char *want_at, const char *what)
{
  struct cat_job j = { 0 };

  if (catalog_backup_get (cat, id, &j) == -1) {
    ok (false, "%s: get %s: %s", what, id, error_message ());
    return;
  }
  ok (j.verify_state == want &&
      (want_at ? j.verified_at && strcmp (j.verified_at, want_at) == 0 : true),
      "%s: %s is %s (verified_at %s)", what, id, verify_state_name (j.verify_state),
      j.verified_at ? j.verified_at : "NULL");
  cat_job_clear (&j);
}

/* Plan ver01's two disks into p (cleared by the caller). */
static int
plan2 (struct catalog *cat, struct cat_disk *p)
{
  static const int idx[] = { 0, 1 };
  bool running;

  return catalog_backup_plan (cat, "ver01", "repo-1", 2, idx, p, &running);
}

/* Verify records (disk states and the job's from them), the parent rule
 * (a corrupt row anywhere in the latest point's chain: a full, with the
 * reason), points due by their policy's verify_every_days, the verify
 * settings of a policy, and a task of kind verify. */
static void
test_verify (struct catalog *cat)
{
  static const int d0[] = { 0 }, d1[] = { 1 }, d01[] = { 0, 1 }, d07[] = { 0, 7 };
  static const enum verify_state ok1[] = { VERIFY_OK };
  static const enum verify_state bad1[] = { VERIFY_CORRUPT };
  const char *const why[] = { "block at offset 0 differs" };
  int64_t a[2], b[2], c[2];
  struct cat_disk p[2] = { { 0 } };
  struct cat_job j;
  struct cat_vm vm;
  struct cat_disk got = { 0 };
  char **due = NULL;

  if (run_backup (cat, "b-v1", "ver01", "repo-1", "2025-01-01T00:00:00.000Z", 2, NULL, a) == -1 ||
      run_backup (cat, "b-v2", "ver01", "repo-1", "2025-01-02T00:00:00.000Z", 2, a, b) == -1) {
    ok (false, "two backups of ver01");
    return;
  }
  job_verify_is (cat, "b-v2", VERIFY_NONE, NULL, "a new backup");
  is_int (raw_int ("SELECT count(*) FROM backup_disks WHERE backup_job_id = 'b-v2'"
                   " AND verify_state = 'none' AND verified_at IS NULL", NULL), 2,
          "its disks are unverified: 'none' in the table");

  succeeds (catalog_verify_record (cat, "b-v2", 1, d0, ok1, NULL, "2025-01-09T00:00:00.000Z"),
            "record disk 0 of b-v2 ok");
  job_verify_is (cat, "b-v2", VERIFY_NONE, "2025-01-09T00:00:00.000Z",
                 "one of two disks ok: the job is not ok yet");
  succeeds (catalog_verify_record (cat, "b-v2", 1, d1, ok1, NULL, "2025-01-09T00:00:00.000Z"),
            "record disk 1 ok");
  job_verify_is (cat, "b-v2", VERIFY_OK, "2025-01-09T00:00:00.000Z", "both disks ok");
  fails_with (catalog_verify_record (cat, "b-v9", 1, d0, ok1, NULL, "2025-01-09T00:00:00.000Z"),
              ERR_NOT_FOUND, "an unknown backup is not found");
  fails_with (catalog_verify_record (cat, "b-v2", 2, d07, (const enum verify_state[]) {
                VERIFY_CORRUPT, VERIFY_CORRUPT }, NULL, "2025-01-10T00:00:00.000Z"),
              ERR_NOT_FOUND, "an unknown disk is not found");
  job_verify_is (cat, "b-v2", VERIFY_OK, "2025-01-09T00:00:00.000Z",
                 "and nothing of that record was kept");
  fails_with (catalog_verify_record (cat, "b-v2", 0, d0, ok1, NULL, "t"), ERR_INVALID,
              "an empty disk list is invalid");

  succeeds (plan2 (cat, p), "plan ver01 with a verified chain");
  ok (p[0].id == b[0] && p[1].id == b[1] && !p[0].full_reason && !p[1].full_reason,
      "the parents are b-v2's disks, no reason to copy in full");
  cat_disk_clear (&p[0]);
  cat_disk_clear (&p[1]);

  /* A running job is no point to verify. */
  job_init (&j, "b-vrun", "ver01", "repo-1", "2025-01-03T00:00:00.000Z", 2, b);
  succeeds (catalog_backup_insert (cat, &j, NULL), "start a third backup");
  fails_with (catalog_verify_record (cat, "b-vrun", 1, d0, ok1, NULL, "t"), ERR_CONFLICT,
              "a running backup cannot be recorded as verified");
  succeeds (catalog_backup_end (cat, "b-vrun", JOB_CANCELLED, -1, "test", NULL, NULL),
            "cancel it");
  cat_job_clear (&j);

  /* An ancestor found corrupt: no parent for disk 0, with the reason. */
  succeeds (catalog_verify_record (cat, "b-v1", 1, d0, bad1, why, "2025-01-01T12:00:00.000Z"),
            "record disk 0 of b-v1 corrupt");
  job_verify_is (cat, "b-v1", VERIFY_CORRUPT, "2025-01-01T12:00:00.000Z",
                 "one corrupt disk makes the job corrupt");
  succeeds (plan2 (cat, p), "plan ver01 again");
  ok (p[0].id == 0, "disk 0 has no parent: its chain holds a corrupt row (parent %" PRId64 ")",
      p[0].id);
  is_str (p[0].full_reason, "the latest point's chain failed verification (backup b-v1"
          " disk 0: block at offset 0 differs)", "the plan says why");
  ok (p[1].id == b[1] && p[1].full_reason == NULL, "disk 1's chain is fine: its parent stays");
  cat_disk_clear (&p[0]);
  cat_disk_clear (&p[1]);
  job_init (&j, "b-vstale", "ver01", "repo-1", "2025-01-03T00:00:00.000Z", 2, b);
  fails_with (catalog_backup_insert (cat, &j, NULL), ERR_CONFLICT,
              "an insert that still builds on the corrupt chain is refused");
  ok (strstr (error_message (), "failed verification") != NULL, "saying why: %s",
      error_message ());
  cat_job_clear (&j);
  if (run_backup (cat, "b-v3", "ver01", "repo-1", "2025-01-04T00:00:00.000Z", 2,
                  (const int64_t[]) { -1, b[1] }, c) == -1)
    ok (false, "a backup with a new full of disk 0");
  succeeds (plan2 (cat, p), "plan after the new full");
  ok (p[0].id == c[0] && p[1].id == c[1], "the new full and b-v3's disk 1 are the parents");
  cat_disk_clear (&p[0]);
  cat_disk_clear (&p[1]);

  /* The latest point itself found corrupt. */
  succeeds (catalog_verify_record (cat, "b-v3", 2, d01,
                                   (const enum verify_state[]) { VERIFY_OK, VERIFY_CORRUPT },
                                   NULL, "2025-01-10T00:00:00.000Z"),
            "record b-v3: disk 0 ok, disk 1 corrupt with no error text");
  job_verify_is (cat, "b-v3", VERIFY_CORRUPT, "2025-01-10T00:00:00.000Z", "b-v3");
  succeeds (plan2 (cat, p), "plan again");
  ok (p[0].id == c[0] && p[1].id == 0, "disk 0 builds on b-v3, disk 1 is a full");
  is_str (p[1].full_reason, "the latest point's chain failed verification (backup b-v3"
          " disk 1)", "with the reason");
  cat_disk_clear (&p[0]);
  cat_disk_clear (&p[1]);
  succeeds (catalog_changeid_get (cat, "ver01", 1, "repo-1", &got),
            "the change id of disk 1 is still reported");
  ok (got.id == c[1], "as b-v3's");
  cat_disk_clear (&got);

  /* Policies: the verify settings, and the points due. */
  {
    struct cat_policy vp = { .name = "vpol", .verify_after_backup = true,
                             .verify_every_days = 7, .audit_percent = 101 }, gp = { 0 };
    fails_with (catalog_policy_put (cat, &vp, NULL), ERR_INVALID, "audit_percent 101 is invalid");
    vp.audit_percent = 25;
    succeeds (catalog_policy_put (cat, &vp, NULL), "put policy vpol with verify settings");
    succeeds (catalog_policy_get (cat, "vpol", &gp), "get it");
    ok (gp.verify_after_backup && gp.verify_every_days == 7 && gp.audit_percent == 25,
        "its verify settings read back");
    cat_policy_clear (&gp);
    vp.name = "vnone";
    vp.verify_after_backup = false;
    vp.verify_every_days = vp.audit_percent = -1;
    succeeds (catalog_policy_put (cat, &vp, NULL), "put policy vnone without");
    succeeds (catalog_policy_get (cat, "vnone", &gp), "get it");
    ok (!gp.verify_after_backup && gp.verify_every_days == -1 && gp.audit_percent == -1,
        "absent settings read as -1");
    cat_policy_clear (&gp);
  }
  vm_init (&vm, "ver01", 2);
  vm.policy = xstrdup ("vpol");
  succeeds (catalog_vm_put (cat, &vm, NULL), "ver01 uses vpol");
  succeeds (catalog_verify_due (cat, "2025-01-12T00:00:00.000Z", &due),
            "points due on 2025-01-12");
  ok (due && due[0] && strcmp (due[0], "b-v1") == 0 && due[1] == NULL,
      "only b-v1, verified more than 7 days before (%s)", due && due[0] ? due[0] : "none");
  cleanup_strv (&due);
  due = NULL;
  succeeds (catalog_verify_due (cat, "2025-01-20T00:00:00.000Z", &due),
            "points due on 2025-01-20");
  ok (due && due[0] && due[1] && due[2] && !due[3] && strcmp (due[0], "b-v1") == 0 &&
      strcmp (due[1], "b-v2") == 0 && strcmp (due[2], "b-v3") == 0,
      "all three completed ones, oldest first; not the cancelled one");
  cleanup_strv (&due);
  due = NULL;
  free (vm.policy);
  vm.policy = xstrdup ("vnone");
  succeeds (catalog_vm_put (cat, &vm, NULL), "ver01 uses vnone");
  succeeds (catalog_verify_due (cat, "2025-01-20T00:00:00.000Z", &due), "points due");
  ok (due && due[0] == NULL, "none: vnone has no verify_every_days");
  cleanup_strv (&due);
  due = NULL;
  fails_with (catalog_verify_due (cat, "yesterday", &due), ERR_INVALID,
              "a time that is no timestamp is invalid");
  free (vm.policy);
  vm.policy = NULL;
  succeeds (catalog_vm_put (cat, &vm, NULL), "ver01 without policy");
  cat_vm_clear (&vm);
  succeeds (catalog_policy_delete (cat, "vpol"), "delete vpol");
  succeeds (catalog_policy_delete (cat, "vnone"), "delete vnone");

  {
    struct cat_task t = { .id = "task-verify-1", .kind = TASK_VERIFY, .steps_total = 2 };
    struct cat_task tg = { 0 };
    succeeds (catalog_task_insert (cat, &t), "a task of kind verify");
    succeeds (catalog_task_get (cat, "task-verify-1", &tg), "get it");
    ok (tg.kind == TASK_VERIFY, "its kind reads back");
    cat_task_clear (&tg);
    succeeds (catalog_task_end (cat, "task-verify-1", TASK_COMPLETED, NULL, NULL), "end it");
  }
}

/* Rebuild: ver01's context, taken as the catalog lists it, deleted, then
 * inserted back job by job as rebuild-catalog does (parents first, the
 * parents' new ids as each disk's parent): the same ids, links, change
 * ids, paths, times and counts. */
static void
test_rebuild (struct catalog *cat)
{
  struct cat_job_filter f = { .vm_name = "ver01", .by_status = true,
                              .status = JOB_COMPLETED };
  CLEANUP_CAT_JOB_LIST struct cat_job_list before = { 0 }, after = { 0 };
  CLEANUP_CAT_DISK_LIST struct cat_disk_list gone = { 0 };
  struct cat_repository repo = { 0 };
  struct cat_context ctx = { 0 }, ctx2 = { 0 };
  int64_t map_old[8], map_new[8];
  size_t n_map = 0;
  bool same = true;

  if (catalog_backup_list (cat, &f, &before.v, &before.n, NULL) == -1 ||
      catalog_context_find (cat, "ver01", "repo-1", &ctx) == -1 ||
      catalog_repo_get (cat, "repo-1", &repo) == -1) {
    ok (false, "read ver01: %s", error_message ());
    return;
  }
  ok (before.n == 3, "ver01 has three completed backups");
  succeeds (catalog_context_delete (cat, ctx.context_id, true, &gone.v, &gone.n),
            "delete its context");
  /* The list is newest first: insert oldest first. */
  for (size_t k = before.n; k-- > 0; ) {
    struct cat_job *j = &before.v[k];
    for (size_t i = 0; i < j->n_disks; i++) {
      struct cat_disk *d = &j->disks[i];
      int64_t parent = d->parent_disk_id;
      d->parent_disk_id = -1;
      for (size_t m = 0; m < n_map; m++)
        if (map_old[m] == parent)
          d->parent_disk_id = map_new[m];
      map_old[n_map] = d->id;
      d->id = 0;
      n_map++;
    }
    if (catalog_rebuild_insert (cat, &repo, &ctx, j) == -1) {
      ok (false, "rebuild %s: %s", j->id, error_message ());
      goto out;
    }
    for (size_t i = 0; i < j->n_disks; i++)
      map_new[n_map - j->n_disks + i] = j->disks[i].id;
  }
  ok (true, "the three backups were inserted back");
  fails_with (catalog_rebuild_insert (cat, &repo, &ctx, &before.v[0]), ERR_CONFLICT,
              "inserting one again is a conflict");
  {
    struct cat_job orphan = before.v[0];
    struct cat_disk dd[2];
    memcpy (dd, orphan.disks, sizeof dd);
    orphan.id = "b-orphan";
    orphan.disks = dd;
    dd[1].parent_disk_id = 999999;
    dd[1].backup_type = BACKUP_INCREMENTAL;
    fails_with (catalog_rebuild_insert (cat, &repo, &ctx, &orphan), ERR_INVALID,
                "a parent that is not there is invalid");
    is_int (raw_int ("SELECT count(*) FROM backup_jobs WHERE id = 'b-orphan'", NULL), 0,
            "and nothing of that job was kept");
  }
  succeeds (catalog_backup_list (cat, &f, &after.v, &after.n, NULL), "list ver01 again");
  same = after.n == before.n;
  for (size_t k = 0; same && k < after.n; k++) {
    const struct cat_job *x = &before.v[k], *y = &after.v[k];
    same = strcmp (x->id, y->id) == 0 && strcmp (x->context_id, y->context_id) == 0 &&
      x->backup_type == y->backup_type && y->status == JOB_COMPLETED &&
      strcmp (x->created_at, y->created_at) == 0 &&
      strcmp (x->completed_at, y->completed_at) == 0 && x->n_disks == y->n_disks;
    for (size_t i = 0; same && i < x->n_disks; i++) {
      const struct cat_disk *dx = &x->disks[i], *dy = &y->disks[i];
      same = dx->backup_type == dy->backup_type &&
        strcmp (dx->disk_change_id, dy->disk_change_id) == 0 &&
        strcmp (dx->qcow2_path, dy->qcow2_path) == 0 &&
        (dx->parent_backup_id == NULL) == (dy->parent_backup_id == NULL) &&
        (!dx->parent_backup_id || strcmp (dx->parent_backup_id, dy->parent_backup_id) == 0) &&
        (!dx->previous_change_id ||
         strcmp (dx->previous_change_id, dy->previous_change_id) == 0) &&
        dx->bytes_transferred == dy->bytes_transferred && dy->status == DISK_COMPLETED &&
        dy->verify_state == VERIFY_NONE;
    }
  }
  ok (same, "the listing is the same: ids, links, change ids, paths, times");
  succeeds (catalog_context_get (cat, ctx.context_id, &ctx2), "the context is back");
  ok (strcmp (ctx2.vm_name, "ver01") == 0 && ctx2.total_backups_run == ctx.total_backups_run &&
      ctx2.successful_backups == ctx.successful_backups && ctx2.last_backup_id &&
      strcmp (ctx2.last_backup_id, ctx.last_backup_id) == 0,
      "with its counts and its last backup as given");
  cat_context_clear (&ctx2);
 out:
  cat_context_clear (&ctx);
  cat_repository_clear (&repo);
}

/* One temporary catalog for the whole run, removed at the end. */
int
main (void)
{
  struct catalog *cat;
  char cmd[PATH_MAX + 16];

  if (mkdtemp (tmpdir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (dbpath, sizeof dbpath, "%s/catalog.db", tmpdir);
  snprintf (url, sizeof url, "sqlite://%s", dbpath);
  if (getenv ("STRATA_TEST_DB") && strcmp (getenv ("STRATA_TEST_DB"), "mariadb") == 0)
    mariadb_setup ();

  test_open ();
  if (!mariadb) {
    test_migration_rebuild ("0003");
    test_migration_rebuild ("0004");
    test_migration_rebuild ("0005");
  }
  cat = cat_open ();
  if (cat == NULL) {
    diag ("open: %s", error_message ());
    return 1;
  }
  test_repositories (cat);
  test_vms (cat);
  test_policies (cat);
  test_tasks (cat);
  test_backups (cat);
  test_disk_lost (cat);
  test_context_id (cat);
  test_finishing (cat);
  test_lease (cat);
  test_owners (cat);
  test_verify (cat);
  test_rebuild (cat);
  test_unknown_word (cat);
  test_prune (cat);
  test_race (cat);
  test_lost_connection (cat);
  catalog_close (cat);
  catalog_close (NULL);
  sqlite3_close (raw);
  if (mariadb)
    mariadb_teardown ();

  snprintf (cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system (cmd) != 0)
    diag ("could not remove %s", tmpdir);
  return done_testing ();
}
