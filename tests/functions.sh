# tests/functions.sh - shared helpers of the integration tests (bash, TAP).
#
# A test sources this file, then typically:
#
#   requires qemu-img
#   start_hub                      # temp data dir, free ports, waits for /healthz
#   api POST /api/v1/backups '{"vm_name":"x","backup_type":"full"}'
#   is "$API_STATUS" 201 "backup starts"
#   is "$(jqb .status)" running "it runs"
#   done_testing                   # stops the hub, prints the plan, exits
#
# The helpers live in tests/lib/, one file per concern; this file only
# sources them, so that a test needs one source line:
#
#   lib/tap.sh     TAP: ok, is, like, cmp_ok, diag, done_testing, requires
#   lib/setup.sh   the test's temp folder and catalog, the EXIT trap
#   lib/hub.sh     start_hub, stop_hub, kill_hub, qsd_pids, free_port, wait_for
#   lib/api.sh     api, jqb, is_error, bad (refused, nothing changed), put_vm,
#                  start_backup, start_backup_bg, complete_disk, race, prune_ok, task_status,
#                  verify_ok, verified (verify tasks and their results)
#   lib/sql.sh     sql, sql_write, catalog_counts, catalog_dump, ts_ago
#   lib/qemu.sh    qemu-io patterns, image info, bitmaps, NBD exports
#   lib/files.sh   repository listings, file modes, immutable folders
#   lib/agent.sh   strata backup / strata restore against the hub, restore_is
#   lib/points.sh  points and their reference images: take_point, checks of
#                  every completed point, repository against catalog
#
# Design notes:
# - Every test is isolated: its own mktemp -d folder ($T) holding the hub's
#   data dir ($DATA), its log ($HUB_LOG) and scratch files, and its own random
#   free ports for --listen and --nbd-listen.  The default ports are never used.
# - The plan is printed at the end (done_testing), so tests need not count.
# - Diagnostics go to stderr as "# " lines, like Test::More's diag, so that
#   prove shows them without -v.  When any test failed, the hub's log is
#   printed the same way.
# - The EXIT trap kills whatever the test started (the hub by its pid, and the
#   qemu-storage-daemon by the pids seen while the hub ran), reports any
#   daemon that outlived its hub, and removes $T.  A test must never leave a
#   process behind.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

for _lib in tap setup hub api sql qemu files agent points; do
  source "$top/tests/lib/$_lib.sh"
done
unset _lib
