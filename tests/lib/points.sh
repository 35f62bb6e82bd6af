# tests/lib/points.sh - restore points and what they must keep showing:
# take a backup of QCOW2 sources with `strata backup` and keep each disk's
# content at that moment as a raw reference image, then check the points
# against their references (through the hub with strata restore, or straight
# from the repository's files while the hub is down), that the repository's
# images are exactly the catalog's, and that qemu-img check passes on them.
#
# References live in $T/refs/BACKUP-ID.DISK-INDEX.raw; the repository is
# $POINTS_REPO (default: the default repository, $DATA/repository).

# ref_of BID IDX: the reference image of disk IDX of backup BID.
ref_of ()
{
  echo "$T/refs/$1.$2.raw"
}

_points_repo ()
{
  echo "${POINTS_REPO:-$DATA/repository}"
}

# take_point VM DISK...: `strata backup --vm VM DISK...` (type auto), then
# save each DISK as it is now as the point's reference.  One test that the
# backup succeeds; sets BID.
take_point ()
{
  local vm=$1 i=0 d
  shift
  agent backup --vm "$vm" --json "$@"
  if [ "$AGENT_RC" != 0 ]; then
    fail "backup of $vm" "  strata backup exited $AGENT_RC: $AGENT_ERR"
    BID=
    return 1
  fi
  BID=$(jqa .backup_id)
  mkdir -p "$T/refs"
  for d in "$@"; do
    snapshot "$d" "$(ref_of "$BID" $i)" || { fail "backup of $vm: saving disk $i"; return 1; }
    i=$((i + 1))
  done
  pass "backup $BID of $vm ($(jqa '[.disks[].mode] | join(",")'))"
}

# points_restore_ok BID...: every disk of each backup restores (strata
# restore --output, raw) bit-identical to its reference; one test a disk.
points_restore_ok ()
{
  local bid ref idx
  for bid in "$@"; do
    for ref in "$T/refs/$bid".*.raw; do
      [ -e "$ref" ] || { fail "$bid has reference images"; continue; }
      idx=${ref%.raw}
      idx=${idx##*.}
      restore_is "$bid" "$idx" "$ref" "$bid disk $idx restores bit-identical"
    done
  done
}

# completed_points_read_back DESC: straight from the repository's files (the
# hub may be down), every disk of every backup the catalog lists completed
# reads, through its backing chain, exactly as its reference.  One test.
completed_points_read_back ()
{
  local desc=$1 repo bad="" n=0 bid idx path out
  repo=$(_points_repo)
  out=$T/readback.raw
  while IFS='|' read -r bid idx path; do
    [ -n "$bid" ] || continue
    n=$((n + 1))
    if [ -z "$path" ] || [ ! -f "$repo/$path" ]; then
      bad+=" $bid/disk$idx:no-file"
    elif [ ! -e "$(ref_of "$bid" "$idx")" ]; then
      bad+=" $bid/disk$idx:no-reference"
    elif ! qemu-img convert -U -O raw "$repo/$path" "$out" 2> "$T/readback.err"; then
      bad+=" $bid/disk$idx:unreadable($(head -c 200 "$T/readback.err"))"
    elif ! cmp -s "$out" "$(ref_of "$bid" "$idx")"; then
      bad+=" $bid/disk$idx:differs($(cmp "$out" "$(ref_of "$bid" "$idx")" 2>&1 | head -c 200))"
    fi
    rm -f "$out"
  done < <(sql "SELECT j.id, d.disk_index, d.qcow2_path FROM backup_jobs j
                JOIN backup_disks d ON d.backup_job_id = j.id
                WHERE j.status = 'completed' ORDER BY j.id, d.disk_index")
  if [ -z "$bad" ] && [ "$n" -gt 0 ]; then
    pass "$desc: the $n completed disk point(s) read back as before"
  else
    fail "$desc: every completed point reads back as before" "  read $n:$bad"
  fi
}

# repo_is_catalog DESC: the repository's image files are exactly the
# catalog's qcow2_path values (no file without a row, no row without its
# file).  One test.
repo_is_catalog ()
{
  local files rows
  files=$(cd "$(_points_repo)" && find . -name '*.qcow2' | sed 's|^\./||' | sort)
  rows=$(sql "SELECT qcow2_path FROM backup_disks WHERE qcow2_path IS NOT NULL" | sort)
  is "$files" "$rows" "$1: the repository's images are exactly the catalog's"
}

# completed_rows_have_files DESC: every disk row of a completed backup has
# its file (rows of backups being removed may lack theirs while a merge is
# cut off half-way).  One test.
completed_rows_have_files ()
{
  local repo bad="" path
  repo=$(_points_repo)
  for path in $(sql "SELECT d.qcow2_path FROM backup_disks d JOIN backup_jobs j
                     ON j.id = d.backup_job_id WHERE j.status = 'completed'"); do
    [ -f "$repo/$path" ] || bad+=" $path"
  done
  is "$bad" "" "$1: every disk of a completed backup has its file"
}

# repo_images_check DESC: qemu-img check passes on every image of the
# repository.  One test.
repo_images_check ()
{
  local f bad=""
  while IFS= read -r f; do
    qemu-img check -U -q "$f" > "$T/check.out" 2>&1 || bad+=" $f: $(head -c 300 "$T/check.out")"
  done < <(find "$(_points_repo)" -name '*.qcow2' | sort)
  is "$bad" "" "$1: qemu-img check passes on every image"
}
