# tests/lib/sql.sh - the catalog under the hub, on SQLite or MariaDB alike:
# read it (sql), change it behind the hub's back (sql_write), count its
# rows, and the timestamp text it stores.

# sql QUERY: run QUERY on the catalog, read-only ("|"-separated, no header,
# NULL as an empty field, on either backend).
sql ()
{
  if [ "$TEST_DB" = mariadb ]; then
    _mariadb_sql "$1"
  else
    sqlite3 -readonly -batch -noheader -cmd '.timeout 5000' "$CATALOG" "$1"
  fi
}

_mariadb_sql ()
{
  $STRATA_TEST_MARIADB_ROOT --batch --raw --skip-column-names "$CATALOG_DB" -e "$1" |
    awk 'BEGIN { FS = "\t"; OFS = "|" }
         { for (i = 1; i <= NF; i++) if ($i == "NULL") $i = ""; $1 = $1; print }'
  return "${PIPESTATUS[0]}"
}

# sql_write QUERY: change the catalog under the hub (tests of the seed 3.4 kind).
sql_write ()
{
  if [ "$TEST_DB" = mariadb ]; then
    _mariadb_sql "$1"
  else
    sqlite3 -batch -noheader -cmd '.timeout 5000' "$CATALOG" "$1"
  fi
}

# sql_join SEP: the lines of stdin joined with SEP (for lists that SQLite's
# group_concat would make; portable to MariaDB).
sql_join ()
{
  paste -sd "$1"
}

# Every table of the catalog.
CATALOG_TABLES="backup_repositories vms vm_disks vm_backup_contexts backup_jobs backup_disks
                schema_migrations policies tasks file_intents"

# catalog_counts: one line with the row count of every table (for
# "nothing changed" checks).
catalog_counts ()
{
  local t out=""
  for t in $CATALOG_TABLES; do
    out+="$t=$(sql "SELECT count(*) FROM $t" 2>&1) "
  done
  echo "$out"
}

# catalog_dump: every row of every table, table by table (for "nothing
# changed" checks that look at every field).
catalog_dump ()
{
  local t
  for t in $CATALOG_TABLES; do
    echo "== $t"
    sql "SELECT * FROM $t ORDER BY 1, 2"
  done
}

# ts_ago SPAN: the catalog's timestamp text (UTC, milliseconds) for SPAN
# ago, e.g. ts_ago '2 hours'.
ts_ago ()
{
  date -u -d "$1 ago" +%Y-%m-%dT%H:%M:%S.%3NZ
}

# hours_between T1 T2: whole hours (rounded) from catalog timestamp T1 to T2.
hours_between ()
{
  local a b
  a=$(date -u -d "$1" +%s) && b=$(date -u -d "$2" +%s) || return 1
  echo $(( (b - a + 1800) / 3600 ))
}
