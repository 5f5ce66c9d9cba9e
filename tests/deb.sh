#!/usr/bin/env bash
# The Debian package, checked as an operator would: build it with the
# documented command, look inside with dpkg-deb, run what it ships.
# Run by .ci/run (as root, with dpkg-deb, bash, zsh, fish, groff and
# systemd-analyze present); fails on the first thing that is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "deb: FAIL: $*" >&2; exit 1; }

echo "== build: pkg/deb/build"
pkg/deb/build --output "$work" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "pkg/deb/build"; }
version=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')
arch=$(dpkg --print-architecture)
deb="$work/ftl_${version}_${arch}.deb"
[ -f "$deb" ] || fail "no $deb: $(ls "$work")"
echo "$(basename "$deb"): $(du -h "$deb" | cut -f1)"

echo "== control: conffiles, no unit enabled or started"
info=$(dpkg-deb -I "$deb")
grep -qx ' Package: ftl' <<<"$info" || fail "not package ftl: $info"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles"
grep -qx '/etc/default/ftl' "$work/conffiles" || fail "/etc/default/ftl is not a conffile: $(cat "$work/conffiles")"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
# An upgrade may keep a unit the operator enabled (`was-enabled` guards it),
# or restart one that runs (try-restart); nothing else may enable or start.
if cat "$work/control"/p* | grep -E 'systemctl .*(enable|start)|deb-systemd-invoke +(start|restart)' >&2; then
  fail "a maintainer script starts a unit: enabling the timer is the operator's call"
fi
awk '/deb-systemd-helper enable/ && prev !~ /was-enabled/ {bad = 1; print} /[^ \t]/ && !/^[ \t]*#/ {prev = $0}
     END {exit bad}' "$work/control"/p* >&2 || fail "a maintainer script enables a unit the operator did not"

echo "== files"
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|; s|/$||' | sort >"$work/files"
for f in /usr/bin/ftl /usr/share/man/man1/ftl.1.gz /usr/share/man/man1/ftl-sync.1.gz \
         /usr/share/bash-completion/completions/ftl /usr/share/zsh/vendor-completions/_ftl \
         /usr/share/fish/vendor_completions.d/ftl.fish \
         /usr/lib/systemd/system/ftl-sync.service /usr/lib/systemd/system/ftl-sync.timer \
         /etc/default/ftl /usr/share/doc/ftl/README.md /usr/share/doc/ftl/LICENSE \
         /usr/share/doc/ftl/copyright /usr/share/doc/ftl/docs/operations.md; do
  grep -qx "$f" "$work/files" || fail "$f is missing; the package has: $(cat "$work/files")"
done
if grep -E '^/usr/local|^/home|^/root|^/tmp|target/' "$work/files" >&2; then
  fail "files outside the Debian layout"
fi

root="$work/root"
dpkg-deb -x "$deb" "$root"
ftl="$root/usr/bin/ftl"

echo "== ftl --version names the commit"
line=$("$ftl" --version)
echo "$line"
head=$(git rev-parse --short=12 HEAD)
[[ "$line" == "ftl $version ($head"* ]] || fail "--version is '$line', built from $head"

echo "== man: the packaged page is the binary's own, and it renders"
cmp <(zcat "$root/usr/share/man/man1/ftl.1.gz") <("$ftl" man) || fail "ftl.1.gz differs from 'ftl man'"
zcat "$root/usr/share/man/man1/ftl.1.gz" | groff -man -Tutf8 -ww >"$work/ftl.txt" 2>"$work/groff.err" ||
  fail "groff: $(cat "$work/groff.err")"
[ ! -s "$work/groff.err" ] || fail "groff warns: $(cat "$work/groff.err")"
grep -q 'Deploy software to a fleet' "$work/ftl.txt" || fail "ftl.1 renders to: $(head "$work/ftl.txt")"

echo "== completions, each through its shell"
out=$(bash -c "source '$root/usr/share/bash-completion/completions/ftl'; complete -p ftl")
[[ "$out" == *" ftl" ]] || fail "bash: no completion for ftl: $out"
# Ask bash for the subcommands after "ftl sy", as a user pressing tab would.
words=$(bash -c "source '$root/usr/share/bash-completion/completions/ftl'
  COMP_WORDS=(ftl sy); COMP_CWORD=1; COMP_LINE='ftl sy'; COMP_POINT=6
  _ftl ftl sy ftl; printf '%s\n' \"\${COMPREPLY[@]}\"")
grep -qx 'sync' <<<"$words" || fail "bash does not complete 'ftl sy' to sync: $words"
zsh -n "$root/usr/share/zsh/vendor-completions/_ftl" || fail "zsh: syntax"
fish --no-config -c "source '$root/usr/share/fish/vendor_completions.d/ftl.fish'; complete -C 'ftl sy'" |
  grep -q '^sync' || fail "fish does not complete 'ftl sy' to sync"

echo "== units: systemd-analyze verify"
mkdir "$work/units"
# verify checks that ExecStart's program exists: point it at the packaged one.
sed "s|^ExecStart=/usr/bin/ftl|ExecStart=$ftl|" "$root/usr/lib/systemd/system/ftl-sync.service" >"$work/units/ftl-sync.service"
cp "$root/usr/lib/systemd/system/ftl-sync.timer" "$work/units/"
grep -qx 'EnvironmentFile=/etc/default/ftl' "$work/units/ftl-sync.service" || fail "the service does not read /etc/default/ftl"
sed "s|^EnvironmentFile=.*|EnvironmentFile=$root/etc/default/ftl|" -i "$work/units/ftl-sync.service"
said=$(systemd-analyze verify --man=no "$work/units/ftl-sync.service" "$work/units/ftl-sync.timer" 2>&1) ||
  fail "systemd-analyze verify: $said"
if grep 'ftl-sync' <<<"$said" >&2; then fail "systemd-analyze verify warns"; fi

echo "== /etc/default/ftl: every variable commented out, the service runs with it"
if grep -Ev '^(#.*)?$' "$root/etc/default/ftl" >&2; then fail "a setting is not commented out"; fi
# Configured as an operator would (uncommenting), the service's command line
# syncs a node from a local bucket with that file as its only environment.
mkdir -p "$work/bucket" "$work/node/demo" "$work/src"
echo hello >"$work/src/index.html"
tar -czf "$work/demo.tgz" -C "$work/src" .
export FTL_BUCKET="file://$work/bucket"
rev=$("$ftl" spool "$work/demo.tgz")
"$ftl" jump --master "$rev"
unset FTL_BUCKET
sed -e "s|^#FTL_BUCKET=.*|FTL_BUCKET=file://$work/bucket|" -e "s|^#FTL_ROOT=.*|FTL_ROOT=$work/node|" \
  "$root/etc/default/ftl" >"$work/default"
exec_start=$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/ftl-sync.service" | sed "s|^/usr/bin/ftl|$ftl|; s|--splay [0-9]*|--splay 0|")
# shellcheck disable=SC2046 # one VAR=value word per line of the file
env -i PATH=/usr/bin:/bin $(grep -Ev '^(#.*)?$' "$work/default") $exec_start || fail "the service's command failed"
[ "$(cat "$work/node/demo/current/index.html")" = hello ] || fail "the sync did not install $rev"
echo "deb: all checks passed"
