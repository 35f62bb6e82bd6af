#!/usr/bin/env bash
# tests/ops/test-install.sh - "make install" and "make uninstall" into a
# DESTDIR, as an operator would use them: every file in its place, each man
# page renders without a warning and covers what its command's --help
# offers, every command of "strata help" has a page, the unit passes
# systemd-analyze verify, the installed config example is accepted and the
# installed binary runs a hub with it; uninstall removes all of it but an
# operator's own config.
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/tests/functions.sh"

requires make scdoc man lexgrog systemd-analyze curl jq

STRATA_BUILD=${STRATA_BUILD:-$top/build}
DEST=$T/dest

# run_make TARGET [VAR=VALUE...]: make in the source tree, against the build
# the other tests use; its output goes to $T/make.log.
run_make ()
{
  make -C "$top" --no-print-directory BUILD="$STRATA_BUILD" "$@" >> "$T/make.log" 2>&1
}

# The files "make install" puts with the default PREFIX, SYSCONFDIR and
# UNITDIR, relative to DESTDIR; the man pages follow man/*.scd.
expected=(usr/local/bin/strata usr/local/lib/systemd/system/strata.service
          etc/strata/strata.conf.example etc/strata/strata.conf)
for src in "$top"/man/*.scd; do
  page=$(basename "$src" .scd)
  expected+=("usr/local/share/man/man${page##*.}/$page")
done

ok "make install DESTDIR=... succeeds" run_make install DESTDIR="$DEST"
is "$(cd "$DEST" && find . -type f | sed 's|^\./||' | sort)" \
   "$(printf '%s\n' "${expected[@]}" | sort)" "install puts exactly the expected files"
is "$(stat -c %a "$DEST/usr/local/bin/strata")" 755 "the binary is 0755"
modes=
for f in "${expected[@]}"; do
  [ "$f" = usr/local/bin/strata ] || modes+="$f $(stat -c %a "$DEST/$f" 2>&1)"$'\n'
done
is "$(grep -v ' 644$' <<< "$modes")" "" "the other files are 0644"
ok "the config is the example until the operator changes it" \
   cmp "$DEST/etc/strata/strata.conf" "$top/dist/strata.conf.example"

# --- the installed binary -----------------------------------------------
BIN=$DEST/usr/local/bin/strata
is "$("$BIN" version)" "$("$STRATA" version)" "the installed binary runs"

# --- man pages ------------------------------------------------------------
MAN=$DEST/usr/local/share/man
for page in "$MAN"/man*/*; do
  name=$(basename "$page")
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 > "$T/rendered")
  is "$warnings" "" "man -l $name renders without warnings"
  like "$(head -n 5 "$T/rendered")" "NAME" "$name has a NAME section"
  like "$(lexgrog "$page")" ": \"${name%.*} - " "whatis finds $name by its name"
done

# help_options CMD: the options "strata CMD --help" offers: those of its
# usage lines (the first line and the indented ones right after it) and
# those that start a line of the option list (--keep-X, a pattern, is not
# one).
help_options ()
{
  "$BIN" "$1" --help | awk 'NR == 1 || (u && /^ /) { u = 1; print; next } { u = 0 } /^ +--/ { print $1 }' |
    grep -oE -- '--[a-z][a-zA-Z0-9-]*[a-zA-Z0-9]' | grep -v '[A-Z]' | sort -u
}

# The commands "strata help" lists (names indented by two spaces, from
# "Commands:" to the next heading), less help and version, which strata(1)
# describes.
commands=$("$BIN" help | sed -n '/^Commands:/,/^[A-Z]/p' |
           sed -nE 's/^  ([a-z][a-z-]*)( .*)?$/\1/p' | grep -vxE 'help|version')
cmp_ok "$(wc -w <<< "$commands")" -ge 7 "strata help lists its commands"
strata_page=$(MANWIDTH=2000 man -l "$MAN/man1/strata.1" 2>/dev/null)
for cmd in $commands; do
  page=$MAN/man1/strata-$cmd.1
  if [ ! -f "$page" ]; then
    fail "strata $cmd has a man page (no man/strata-$cmd.1.scd)"
    continue
  fi
  pass "strata $cmd has a man page"
  like "$strata_page" "strata-$cmd\(1\)" "strata(1) refers to strata-$cmd(1)"
  # Every option its --help names has an entry of its own in the page: a
  # term line, at the section's indent, naming it (rendered wide, so that
  # no line is broken or hyphenated).
  rendered=$(MANWIDTH=2000 man -l "$page" 2>/dev/null)
  missing=
  for opt in $(help_options "$cmd"); do
    grep -qE -- "^ {7}(.*[ ,])?$opt([] ,=[]|$)" <<< "$rendered" || missing+=" $opt"
  done
  is "$missing" "" "strata-$cmd(1) describes every option of strata $cmd --help"
done

# And no page for a command that is not there.
stale=
for page in "$MAN"/man1/strata-*.1; do
  cmd=$(basename "$page" .1)
  grep -qx "${cmd#strata-}" <<< "$commands" || stale+=" $cmd"
done
is "$stale" "" "every strata-COMMAND(1) page is of a command strata help lists"

# --- the config example and strata.conf(5) ---------------------------------
CONF=$DEST/etc/strata/strata.conf
checked=$("$BIN" serve --config "$CONF" --check-config 2>&1)
is "$?" 0 "strata serve --check-config accepts the installed config"
is "$(grep '^data-dir' <<< "$checked")" "data-dir = /var/lib/strata" \
   "the installed config puts the data under /var/lib/strata"
# The keys the hub knows, from its own --check-config listing.
keys=$("$BIN" serve --check-config | sed -E 's/^# //; s/[ :=].*//')
cmp_ok "$(wc -w <<< "$keys")" -ge 10 "--check-config lists every key"
conf_page=$(MANWIDTH=2000 man -l "$MAN/man5/strata.conf.5" 2>/dev/null)
missing=
for key in $keys; do
  grep -qE "^#?$key = " "$CONF" || missing+=" example:$key"
  grep -qE "^ +$key$" <<< "$conf_page" || missing+=" strata.conf(5):$key"
done
is "$missing" "" "the example and strata.conf(5) cover every key"
# Every commented example line, uncommented, is a valid setting too.
sed -E 's/^#([a-z-]+ = )/\1/' "$CONF" > "$T/all.conf"
is "$(grep -cE '^[a-z-]+ = ' "$T/all.conf")" "$(wc -w <<< "$keys")" \
   "uncommented, the example sets every key"
ok "and --check-config accepts it" "$BIN" serve --config "$T/all.conf" --check-config
# What --check-config prints is itself a config that means the same.
"$BIN" serve --config "$T/all.conf" --check-config > "$T/printed.conf"
is "$("$BIN" serve --config "$T/printed.conf" --check-config)" "$(cat "$T/printed.conf")" \
   "--check-config prints a config file that reads back the same"
printf 'data-dir = /var/lib/strata\nlisten = localhost\n' > "$T/bad.conf"
out=$("$BIN" serve --config "$T/bad.conf" --check-config 2>&1)
is "$?" 2 "--check-config refuses a bad value with status 2"
like "$out" "bad.conf:2" "naming the file and line"
printf 'data-dir = /var/lib/strata\nworker = 3\n' > "$T/bad.conf"
out=$("$BIN" serve --config "$T/bad.conf" --check-config 2>&1)
is "$?" 2 "--check-config refuses an unknown key with status 2"
like "$out" "unknown key 'worker'" "naming the key"

# The installed binary, with the installed config, runs a hub (the test's
# own data folder and ports given on the command line win over the file).
STRATA=$BIN
start_hub --config "$CONF"
is "$(curl -s "http://127.0.0.1:$HUB_PORT/healthz" | jq -r .storage_daemon)" up \
   "the installed hub runs its storage daemon"
stop_hub

# --- the systemd unit --------------------------------------------------------
UNIT=$DEST/usr/local/lib/systemd/system/strata.service
is "$(sed -n 's/^ExecStart=//p' "$UNIT")" \
   "/usr/local/bin/strata serve --config /etc/strata/strata.conf" \
   "the unit runs the installed binary with the installed config"
unlike "$(cat "$UNIT")" "@[A-Z]+@" "no placeholder is left in the unit"
# systemd-analyze checks that ExecStart's binary exists and that the
# Documentation= pages are found: point it at the DESTDIR's.
mkdir -p "$T/unit"
sed "s|^ExecStart=/usr/local/bin/strata|ExecStart=$BIN|" "$UNIT" > "$T/unit/strata.service"
out=$(MANPATH=$MAN systemd-analyze verify "$T/unit/strata.service" 2>&1)
is "$?" 0 "systemd-analyze verify passes"
is "$out" "" "with nothing to say"
exposure=$(systemd-analyze security --offline=yes "$T/unit/strata.service" 2>/dev/null |
           sed -nE 's/.*Overall exposure level for strata.service: ([0-9.]+).*/\1/p')
note "systemd-analyze security: exposure $exposure"
ok "the unit is hardened (exposure $exposure below 4.0, 'OK')" \
   awk -v e="$exposure" 'BEGIN { exit !(e != "" && e < 4.0) }'

# --- uninstall -----------------------------------------------------------------
ok "make uninstall succeeds" run_make uninstall DESTDIR="$DEST"
is "$(find "$DEST" -type f -o -type l)" "" "uninstall leaves no file in DESTDIR"
ok "nor /etc/strata" test ! -e "$DEST/etc/strata"

# An operator's config is never overwritten nor removed.
run_make install DESTDIR="$DEST"
echo 'workers = 4' >> "$CONF"
cp "$CONF" "$T/operator.conf"
ok "install again over a changed config" run_make install DESTDIR="$DEST"
ok "leaves the operator's config as it was" cmp "$CONF" "$T/operator.conf"
ok "uninstall" run_make uninstall DESTDIR="$DEST"
is "$(cd "$DEST" && find . -type f)" "./etc/strata/strata.conf" \
   "uninstall keeps the operator's config, and only it"
ok "as it was" cmp "$CONF" "$T/operator.conf"
rm -rf "$DEST"

# Other places: PREFIX, SYSCONFDIR and UNITDIR.
vars=(DESTDIR="$DEST" PREFIX=/usr SYSCONFDIR=/etc/opt UNITDIR=/lib/systemd/system)
ok "make install PREFIX=/usr SYSCONFDIR=/etc/opt UNITDIR=/lib/systemd/system" \
   run_make install "${vars[@]}"
ok "the binary is in PREFIX" test -x "$DEST/usr/bin/strata"
ok "the pages in PREFIX/share/man" test -f "$DEST/usr/share/man/man1/strata-serve.1"
ok "the config in SYSCONFDIR" test -f "$DEST/etc/opt/strata/strata.conf"
is "$(sed -n 's/^ExecStart=//p' "$DEST/lib/systemd/system/strata.service")" \
   "/usr/bin/strata serve --config /etc/opt/strata/strata.conf" \
   "the unit in UNITDIR names them"
ok "make uninstall with the same variables" run_make uninstall "${vars[@]}"
is "$(find "$DEST" -type f -o -type l)" "" "leaves no file"

done_testing
