#!/usr/bin/env bash
# test-cli-listings.sh - the listing commands against a real hub with real
# backups: `strata vms`, `contexts`, `backups`, `show` and `jobs` print
# aligned tables with what the hub holds, --json prints exactly the API's
# objects, the filters filter, show walks each disk's chain by its parent
# links, jobs shows an agent's copy in progress (reported by `strata backup`
# through POST .../progress, refused with a 4xx for bad reports), and bad
# options, unknown backups and an unreachable hub give the documented exit
# statuses.

source "$(dirname "$0")/../functions.sh"
requires qemu-img qemu-io qemu-storage-daemon nbdinfo jq curl sqlite3

start_hub
HUB="http://127.0.0.1:$HUB_PORT"

# cli CMD ARGS...: run a listing command against the hub (AGENT_RC,
# AGENT_OUT, AGENT_ERR).
cli ()
{
  agent "$@"
}

# aligned [RIGHT-HEADING...]: every row of the last table has its cells
# where the headings are: a cell starts where its heading starts, or, under
# the RIGHT-HEADINGs (numbers, sizes), ends where it ends.  Characters,
# not bytes, count (a UTF-8 VM name).
aligned ()
{
  printf '%s\n' "$AGENT_OUT" | LC_ALL=C.UTF-8 gawk -v right=" $* " '
    NR == 1 {
      line = $0; off = 0
      while (match (line, /[^ ]+( [^ ]+)*/)) {
        n++; s[n] = off + RSTART; e[n] = off + RSTART + RLENGTH - 1
        r[n] = index (right, " " substr (line, RSTART, RLENGTH) " ") > 0
        off += RSTART + RLENGTH - 1; line = substr (line, RSTART + RLENGTH)
      }
      next
    }
    {
      for (k = 1; k <= n; k++)
        if (r[k] ? (substr ($0, e[k], 1) ~ /^ ?$/ || (e[k] < length ($0) && substr ($0, e[k] + 1, 1) != " ")) \
                 : (substr ($0, s[k], 1) ~ /^ ?$/ || (s[k] > 1 && substr ($0, s[k] - 1, 1) != " "))) {
          printf "row %d, column %d: %s\n", NR, k, $0 > "/dev/stderr"; bad = 1
        }
    }
    END { exit bad }'
}

# column NAME: the cells of the last table under heading NAME, one a line
# (the heading's characters; trailing blanks cut).
column ()
{
  printf '%s\n' "$AGENT_OUT" | LC_ALL=C.UTF-8 gawk -v name="$1" '
    NR == 1 { s = index ($0, name); next }
    { c = substr ($0, s); sub (/  .*/, "", c); sub (/ +$/, "", c); print c }'
}

# --- The backups: VM "db one" (2 disks) a full and an incremental by the
# agent; VM "wéb" a full and a failed attempt.
D0=$T/db0.qcow2
D1=$T/db1.qcow2
W0=$T/web0.qcow2
qemu-img create -q -f qcow2 "$D0" 64M
qemu-img create -q -f qcow2 "$D1" 32M
qemu-img create -q -f qcow2 "$W0" 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' "$D0" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x21 0 1M' "$D1" > /dev/null
qemu-io -f qcow2 -c 'write -P 0x31 0 1M' "$W0" > /dev/null

agent_ok "the full of 'db one'" backup --vm "db one" --json "$D0" "$D1"
F=$(jqa .backup_id)
unlike "$AGENT_OUT" '"seconds": [0-9]+\.[0-9]{17,}' "its --json prints the seconds as people write them (15 digits at most)"
qemu-io -f qcow2 -c 'write -P 0x12 8M 1M' "$D0" > /dev/null
agent_ok "the incremental of 'db one'" backup --vm "db one" --json "$D0" "$D1"
I=$(jqa .backup_id)
IC0=$(jqa '.disks[0].change_id')
agent_ok "the full of 'wéb'" backup --vm "wéb" --json "$W0"
W=$(jqa .backup_id)
start_backup "wéb" incremental
X=$BID
api POST "/api/v1/backups/$X/fail" '{"error":"the source went away"}'
is "$API_STATUS" 200 "an attempt of 'wéb' failed"

# --- vms
cli vms
is "$AGENT_RC" 0 "strata vms exits 0"
is "$(printf '%s\n' "$AGENT_OUT" | head -1 | tr -s ' ')" "VM POLICY DISKS SIZE NEXT RUN LAST RUN" "its headings"
is "$(column VM | sort | tr '\n' '|')" "db one|wéb|" "a row per VM, names whole (with a blank, with UTF-8)"
like "$(printf '%s\n' "$AGENT_OUT" | grep '^db one')" "  2  +96.0 MiB  " "'db one': 2 disks, 96.0 MiB"
ok "the columns are aligned (by characters: wéb is 3)" aligned DISKS SIZE
cli vms --json
api GET /api/v1/vms
is "$(jqa -S .)" "$(jqb -S .vms)" "vms --json is the API's vms array"

# --- contexts
cli contexts
is "$AGENT_RC" 0 "strata contexts exits 0"
ok "aligned" aligned POINTS USED
like "$(printf '%s\n' "$AGENT_OUT" | grep '^db one')" "^db one +default +2 " "'db one' in default: 2 points"
like "$(printf '%s\n' "$AGENT_OUT" | grep '^wéb')" "^wéb +default +1 " "'wéb': 1 point"
like "$(printf '%s\n' "$AGENT_OUT" | grep '^db one')" "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} \\([0-9]+s ago\\)" \
  "the last backup in local time with its age"
is "$(column "LAST STATUS" | tr '\n' ' ')" "completed failed " "the newest attempt's status: 'wéb' failed last"
is "$(column VERIFY | tr '\n' ' ')/$(column OVERDUE | tr '\n' ' ')" "none none /no no " "never verified, not overdue (no schedule)"
api GET "/api/v1/contexts?vm_name=$(urlencode "db one")"
USED=$(jqb '.contexts[0].summary.bytes_used')
cmp_ok "$USED" -gt 0 "the hub counts the bytes 'db one' uses"
like "$(printf '%s\n' "$AGENT_OUT" | grep '^db one')" " $(awk -v b="$USED" 'BEGIN { split ("B KiB MiB GiB", u); i = 1; while (b >= 1024 && i < 4) { b /= 1024; i++ } printf (i > 1 ? "%.1f %s" : "%d %s", b, u[i]) }') " \
  "and the table shows them in binary units"
cli contexts --vm "wéb" --json
api GET "/api/v1/contexts?vm_name=$(urlencode "wéb")"
is "$(jqa -S .)" "$(jqb -S .contexts)" "contexts --vm --json is the API's answer"
is "$(jqa 'length')" 1 "one context for 'wéb'"

# An overdue VM stands out: 'wéb' on a yearly schedule whose last run
# (made to be now) completed no backup.
api_is PUT /api/v1/policies/yearly '{"schedule":"0 0 1 1 *"}' 201 "a yearly policy"
api_is PUT "/api/v1/vms/$(urlencode "wéb")" "$(jq -cn --arg a "$W0" \
  '{policy:"yearly", disks:[{disk_index:0,size_bytes:16777216,source:$a}]}')" 200 "'wéb' uses it"
sql_write "UPDATE vms SET last_run_at = '$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)' WHERE vm_name = 'wéb'"
cli contexts
like "$(column OVERDUE | tail -1)" "^overdue: .*did not complete a backup" "'wéb' is overdue, and the table says why"
is "$(column OVERDUE | head -1)" "no" "'db one' is not"
ok "aligned" aligned POINTS USED
cli vms
is "$(column POLICY | tr '\n' ' ')" "- yearly " "strata vms shows the policy"
like "$(column "NEXT RUN" | tail -1)" "^20[0-9]{2}-01-01 00:00$" "and the next run: the 1st of January"

# --- backups
cli backups
is "$AGENT_RC" 0 "strata backups exits 0"
ok "aligned" aligned DISKS WRITTEN
is "$(column BACKUP | tr '\n' ' ')" "$X $W $I $F " "newest first, every backup"
is "$(column STATUS | tr '\n' ' ')" "failed completed completed completed " "with their status"
is "$(column TYPE | tr '\n' ' ')" "incremental full incremental full " "and type"
cli backups --json
api GET /api/v1/backups
is "$(jqa -S .)" "$(jqb -S .backups)" "backups --json is the API's backups array"
cli backups --vm "db one"
is "$(column BACKUP | tr '\n' ' ')" "$I $F " "--vm filters"
cli backups --status failed
is "$(column BACKUP | tr '\n' ' ')" "$X " "--status failed filters"
cli backups --limit 1 --repository default
is "$(column BACKUP | tr '\n' ' ')" "$X " "--limit 1 --repository default: the newest only"
like "$AGENT_ERR" "1 of 4 backups shown" "and says there are more (on stderr)"
cli backups --repository nowhere
is "$AGENT_RC/$(printf '%s\n' "$AGENT_OUT" | wc -l)" "0/1" "an unknown repository lists nothing (the headings only)"

# --- show
cli show "$I"
is "$AGENT_RC" 0 "strata show exits 0"
like "$AGENT_OUT" "backup: +$I" "names the backup"
like "$AGENT_OUT" "vm: +db one" "its VM"
like "$AGENT_OUT" "disk 0: incremental completed" "disk 0"
like "$AGENT_OUT" "change id: +$IC0" "disk 0's change id"
like "$AGENT_OUT" "parent: +$F" "its parent"
is "$(printf '%s\n' "$AGENT_OUT" | grep -c "chain: $F (full) <- $I (incremental)")" 2 \
   "each disk's chain from its full, by parent links"
api GET "/api/v1/backups/$I"
like "$AGENT_OUT" "file: +$(jqb '.disks[1].qcow2_path')" "disk 1's file"
cli show "$I" --json
is "$(jqa -S .)" "$(jqb -S .)" "show --json is the API's backup object"
cli show "$X"
like "$AGENT_OUT" "status: +failed" "a failed backup"
like "$AGENT_OUT" "error: +the source went away" "with its error"

# --- jobs: an agent's copy, read slowly through a throttled NBD server.
truncate -s 64M "$T/slow.raw"
qemu-io -f raw -c 'write -P 0x44 0 64M' "$T/slow.raw" > /dev/null
throttled_source "$T/slow.raw" "$T/slow.sock" $((2 * MiB))
is "$?" 0 "a throttled NBD source (2 MiB/s: the copy takes half a minute)"
"$STRATA" backup --hub "$HUB" --vm slow --json "nbd+unix:///src?socket=$T/slow.sock" \
  > "$T/slow.out" 2> "$T/slow.err" &
SLOW_AGENT=$!
reported ()
{
  "$STRATA" jobs --hub "$HUB" --json > "$T/jobs.json" 2>/dev/null &&
    [ "$(jq -r '[.[] | select(.vm_name == "slow") | .disks[0].progress.bytes_done // 0][0] // 0' "$T/jobs.json")" -gt 0 ]
}
ok "strata jobs shows the agent's progress (reported within seconds)" wait_for 30 reported
SB=$(jq -r '.[] | select(.vm_name == "slow") | .backup_id' "$T/jobs.json")
is "$(jq -r '.[0].disks[0].progress.bytes_total' "$T/jobs.json")" $((64 * MiB)) "bytes_total: the whole raw disk"
cli jobs
is "$AGENT_RC" 0 "strata jobs exits 0"
ok "aligned" aligned DISK DONE TOTAL % RATE ETA
ROW=$(printf '%s\n' "$AGENT_OUT" | grep "^$SB ")
like "$ROW" "^$SB +slow +agent +0 +running +[0-9.]+ [KMG]?i?B +64.0 MiB +[0-9]+ +[0-9.]+ [KMG]?i?B/s +[0-9]+:[0-9]{2} " \
  "its row: agent, disk 0, running, done / 64.0 MiB, percent, rate, ETA"
api GET "/api/v1/backups/$SB"
cmp_ok "$(jqb '.disks[0].progress.bytes_done')" -gt 0 "GET /backups/{id} shows disks[].progress for an agent's job"
cli show "$SB"
like "$AGENT_OUT" "progress: +[0-9.]+ [KMG]?i?B of 64.0 MiB \([0-9]+%\), [0-9.]+ [KMG]?i?B/s, [0-9]+:[0-9]{2} left" \
  "strata show shows a running disk's progress"

# Reports the hub refuses, changing nothing.
api GET "/api/v1/backups/$SB"; BEFORE=$(jqb -c '.disks[0].progress.bytes_total')
api POST "/api/v1/backups/$SB/progress" '{"disks":[{"disk_index":0,"bytes_done":9,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 400 "bytes_done > bytes_total: 400"
api POST "/api/v1/backups/$SB/progress" "{\"disks\":[{\"disk_index\":0,\"bytes_done\":0,\"bytes_total\":$((128 * MiB)),\"rate_bytes_per_sec\":1}]}"
is "$API_STATUS" 400 "bytes_total past the disk's size: 400"
api POST "/api/v1/backups/$SB/progress" '{"disks":[{"disk_index":0,"bytes_done":-1,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 400 "a negative number: 400"
api POST "/api/v1/backups/$SB/progress" '{"disks":[{"disk_index":0,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1,"eta":3}]}'
is "$API_STATUS" 400 "an unknown field: 400"
api POST "/api/v1/backups/$SB/progress" '{"disks":[]}'
is "$API_STATUS" 204 "no disks: 204 (the agent lives: it renews a lease)"
api POST "/api/v1/backups/$SB/progress" '{}'
is "$API_STATUS" 400 "no disks field: 400"
api POST "/api/v1/backups/$SB/progress" '{"disks":[{"disk_index":0,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1},{"disk_index":0,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 400 "a disk twice: 400"
api POST "/api/v1/backups/$SB/progress" '{"disks":[{"disk_index":1,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 404 "a disk the job does not have: 404"
api POST "/api/v1/backups/backup-nope/progress" '{"disks":[{"disk_index":0,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 404 "an unknown backup: 404"
api POST "/api/v1/backups/$I/progress" '{"disks":[{"disk_index":0,"bytes_done":1,"bytes_total":8,"rate_bytes_per_sec":1}]}'
is "$API_STATUS" 409 "a completed backup: 409"
api GET "/api/v1/backups/$SB"
is "$(jqb -c '.disks[0].progress.bytes_total')" "$BEFORE" "the refused reports changed nothing"

wait "$SLOW_AGENT"
is "$?" 0 "the slow backup completes"
kill "$SRC_QSD_PID"
wait "$SRC_QSD_PID" 2>/dev/null
api GET "/api/v1/backups/$SB"
is "$(jqb -c '.disks[0].progress')" null "a completed disk shows no progress"
cli jobs --json
is "$AGENT_OUT" "[]" "no job runs: jobs --json is []"

# --- Exit statuses.
cli backups --status bogus
is "$AGENT_RC" 2 "an unknown --status: exit 2"
like "$AGENT_ERR" "bogus" "naming it"
cli backups --limit 0
is "$AGENT_RC" 2 "--limit 0: exit 2"
cli vms --vm x
is "$AGENT_RC" 2 "an option the command does not take: exit 2"
cli show
is "$AGENT_RC" 2 "show without a BACKUP: exit 2"
cli jobs extra
is "$AGENT_RC" 2 "an extra argument: exit 2"
cli show backup-nope
is "$AGENT_RC" 3 "an unknown backup: exit 3"
like "$AGENT_ERR" "404" "the hub's 404 is said"
"$STRATA" vms --hub "http://127.0.0.1:$(free_port)" > /dev/null 2> "$T/unreach.err"
is "$?" 3 "an unreachable hub: exit 3"
like "$(cat "$T/unreach.err")" "does not answer" "saying so"
"$STRATA" backups --help > "$T/help.out"
is "$?" 0 "--help exits 0"
like "$(cat "$T/help.out")" "Exit status: 0" "and documents the exit statuses"

# --- A hub with an API token: the listings send it from --token-file.
stop_hub
echo "tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > "$T/token"
start_hub --api-token-file "$T/token"
cli backups --vm "db one"
is "$AGENT_RC" 3 "without --token-file a token hub refuses: exit 3"
like "$AGENT_ERR" "401" "the hub's 401 is said"
cli backups --vm "db one" --token-file "$T/token"
is "$AGENT_RC/$(column BACKUP | tr '\n' ' ')" "0/$I $F " "with --token-file it lists"

done_testing
