#!/usr/bin/env bash
# Fleet scale: many node roots syncing against one S3 server, every request
# counted by kind through a proxy in front of it (benches/count_proxy.py).
#
# Prints one table: requests by kind and bytes per node for a first sync, an
# idle sync (the change marker) and the same with --full-every 0 (a listing on
# every sync, as before the marker), a bless and the fleet converging on it
# (bounded parallelism like -P machines at once, all nodes at once, and with
# --splay when the binary has it), and an idle sync on a bucket without
# markers (written by ftl 0.2.x). With node reports on (FTL_REPORT=1): the
# first reporting sync, an idle one, a bless and the fleet converging, then
# `ftl fleet` and `jump --master --wait` on the deploy box, and `ftl fleet`
# over a synthetic listing of FLEET_REPORTS (10,000) reports. After every
# fleet pass it checks that every node's <package>/current is the blessed
# revision, and fails loudly if not.
#
# Usage: benches/fleet.sh
# Knobs (environment): FLEET_NODES=200 FLEET_PACKAGES=5 FLEET_PARALLEL=8
#   FLEET_SPLAY=20 (seconds) FLEET_PKG_KIB=64 (size of a package)
#   FLEET_FTL=/path/to/ftl (another build; default: this tree's release build)
#   FLEET_REPORTS=10000 (reports in the synthetic listing)
# The nodes and the server's files live under BENCH_TMPDIR, /dev/shm by
# default: the bench measures requests, not this machine's disk.
if [ -z "${BENCH_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export BENCH_TMPDIR=/dev/shm
fi
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

FTL=${FLEET_FTL:-$FTL}
nodes=${FLEET_NODES:-200}
npkg=${FLEET_PACKAGES:-5}
par=${FLEET_PARALLEL:-8}
splay=${FLEET_SPLAY:-20}
pkg_kib=${FLEET_PKG_KIB:-64}
proxy_py=$PWD/benches/count_proxy.py

die() {
  echo "fleet.sh: FAILED: $*" >&2
  exit 1
}
say() { echo "fleet.sh: $*" >&2; }

# The counting proxy, in front of the server common.sh started.
port_file=$BENCH_TMP/proxy.port
python3 "$proxy_py" serve "${S3_ENDPOINT#http://}" "$port_file" 2>"$BENCH_TMP/proxy.log" &
PROXY_PID=$!
# The proxy writes its counts on SIGTERM: wait for it before removing the files.
trap 'kill "$PROXY_PID" "$S3_PID" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$BENCH_TMP"' EXIT
for _ in $(seq 1 100); do
  [ -s "$port_file" ] && break
  sleep 0.1
done
[ -s "$port_file" ] || die "the counting proxy did not start: $(cat "$BENCH_TMP/proxy.log")"
PROXY=http://127.0.0.1:$(cat "$port_file")
export AWS_ENDPOINT_URL=$PROXY
FTL_BUCKET=$(new_bucket)
export FTL_BUCKET FTL

snap() { curl -sf "$PROXY/__counts" >"$BENCH_TMP/snap.$1.json" || die "cannot read the proxy's counts"; }
now() { date +%s.%N; }

# The fleet: node roots n0001…, each with the same package directories.
packages=()
for i in $(seq 1 "$npkg"); do packages+=("pkg$i"); done
roots=()
for n in $(seq -f '%04g' 1 "$nodes"); do
  r=$BENCH_TMP/nodes/n$n
  for p in "${packages[@]}"; do mkdir -p "$r/$p"; done
  roots+=("$r")
done

# A new revision of a package: a tarball of pkg_kib KiB of incompressible data.
declare -A blessed
spool_and_bless() {
  local p=$1 src=$BENCH_TMP/src/$1 rev
  rm -rf "$src" && mkdir -p "$src/tree"
  head -c "$((pkg_kib * 1024))" /dev/urandom >"$src/tree/payload.bin"
  date +%s%N >"$src/tree/VERSION"
  tar -czf "$src/$p.tgz" -C "$src/tree" .
  rev=$("$FTL" spool -q "$src/$p.tgz") || die "spool $p"
  "$FTL" jump -q --master "$rev" || die "bless $rev"
  blessed[$p]=${rev#*.}
}

# One node's sync, as cron would run it; its output goes to <root>.log.
node_sync() {
  local root=$1
  shift
  # The node's name in its reports (read only with FTL_REPORT=1).
  if ! FTL_ROOT=$root FTL_NODE_ID=${root##*/} "$FTL" sync -q "$@" >>"$root.log" 2>&1; then
    echo "fleet.sh: sync failed on $root:" >&2
    tail -n 5 "$root.log" >&2
    return 1
  fi
}
export -f node_sync

# Every node once, at most $1 at a time.
sync_fleet() {
  local p=$1
  shift
  printf '%s\n' "${roots[@]}" | xargs -P "$p" -I{} bash -c 'node_sync "$@"' _ {} "$@" ||
    die "some node syncs failed (see above)"
}

# Every node's current is the blessed revision of every package.
check_fleet() {
  local r p got bad=0
  for r in "${roots[@]}"; do
    for p in "${packages[@]}"; do
      got=$(readlink "$r/$p/current" || echo "(missing)")
      if [ "${got##*/}" != "${blessed[$p]}" ] || [ ! -d "$r/$p/current" ]; then
        [ "$bad" -lt 10 ] && echo "fleet.sh: $r/$p/current -> $got, expected revs/${blessed[$p]}" >&2
        bad=$((bad + 1))
      fi
    done
  done
  [ "$bad" -eq 0 ] || die "$bad of $((nodes * npkg)) package links are not on the blessed revision after: $1"
  say "checked: all $nodes nodes on the blessed revision of all $npkg packages ($1)"
}

# Run a step, then add its row to the table: LABEL DIVISOR COMMAND...
rows=()
step() {
  local label=$1 div=$2 t0 t1
  shift 2
  say "$label..."
  snap before
  t0=$(now)
  "$@"
  t1=$(now)
  snap after
  rows+=("$(python3 "$proxy_py" row "$label" "$div" "$(awk "BEGIN {print $t1 - $t0}")" \
    "$BENCH_TMP/snap.before.json" "$BENCH_TMP/snap.after.json")")
}

say "$nodes nodes x $npkg packages of $pkg_kib KiB, $par syncs at a time, through $PROXY"
spool_all() { for p in "${packages[@]}"; do spool_and_bless "$p"; done; }
step "operator: spool + bless $npkg packages" 1 spool_all

step "first sync (empty nodes)" "$nodes" sync_fleet "$par"
check_fleet "first sync"

step "idle sync (change marker, default)" "$nodes" sync_fleet "$par"
check_fleet "idle sync"

if "$FTL" sync --help | grep -q -- --full-every; then
  step "idle sync --full-every 0 (lists every time)" "$nodes" sync_fleet "$par" --full-every 0
  check_fleet "idle sync --full-every 0"
else
  say "this ftl has no sync --full-every (no change marker): skipping that row"
fi

step "operator: spool + bless 1 package" 1 spool_and_bless pkg1
step "converge after bless, -P $par" "$nodes" sync_fleet "$par"
check_fleet "converge, -P $par"

step "operator: spool + bless 1 package" 1 spool_and_bless pkg2
step "converge after bless, all at once" "$nodes" sync_fleet "$nodes"
check_fleet "converge, all at once"

if "$FTL" sync --help | grep -q -- --splay; then
  step "operator: spool + bless 1 package" 1 spool_and_bless pkg3
  # Each process sleeps its random delay first: a slot of a bounded xargs would
  # be held by a sleeping node, which no real fleet does; so all start at once.
  step "converge after bless, all at once, --splay $splay" "$nodes" sync_fleet "$nodes" --splay "$splay"
  check_fleet "converge, --splay $splay"
else
  say "this ftl has no sync --splay: skipping that row"
fi

# Node reports: every node reports its packages once, then only what changes.
if "$FTL" sync --help | grep -q -- --report; then
  export FTL_REPORT=1
  step "reports on: first reporting sync" "$nodes" sync_fleet "$par"
  check_fleet "first reporting sync"
  step "reports on: idle sync" "$nodes" sync_fleet "$par"
  check_fleet "idle sync, reports on"
  step "operator: spool + bless 1 package" 1 spool_and_bless pkg4
  step "reports on: converge after bless, -P $par" "$nodes" sync_fleet "$par"
  check_fleet "converge, reports on"
  unset FTL_REPORT
  fleet_view() {
    local code=0
    "$FTL" fleet "$@" >"$BENCH_TMP/fleet.out" 2>"$BENCH_TMP/fleet.err" || code=$?
    [ "$code" -eq 0 ] || die "ftl fleet $* exited $code: $(tail -n 3 "$BENCH_TMP/fleet.out" "$BENCH_TMP/fleet.err")"
  }
  step "operator: ftl fleet ($((nodes * npkg)) reports, $npkg packages)" 1 fleet_view
  step "operator: ftl fleet pkg4 ($nodes reports)" 1 fleet_view pkg4
  step "operator: jump --master --wait (fleet there)" 1 \
    "$FTL" jump -q --master "pkg4.${blessed[pkg4]}" --wait --wait-timeout 1m
  # A synthetic listing: FLEET_REPORTS reports of one package, written as the
  # server's files (s3s-fs keeps an object as a file of its key's name).
  nrep=${FLEET_REPORTS:-10000}
  say "writing $nrep synthetic reports of package synth..."
  python3 - "$S3_ROOT/$FTL_BUCKET" "$nrep" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
t = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
for i in range(n):
    with open(os.path.join(d, f"!report!synth!node{i:05d}!2026120643200Ab!ok!!{t}!0~3~0"), "w") as f:
        f.write("{}")
PY
  synth_view() {
    local code=0
    "$FTL" fleet synth >"$BENCH_TMP/fleet.out" 2>"$BENCH_TMP/fleet.err" || code=$?
    # Nothing is blessed in package synth: every report is behind (exit 3).
    [ "$code" -eq 3 ] || die "ftl fleet synth exited $code: $(tail -n 3 "$BENCH_TMP/fleet.err")"
    [ "$(grep -c '^node' "$BENCH_TMP/fleet.out")" -eq "$nrep" ] || die "ftl fleet synth: not $nrep lines"
  }
  step "operator: ftl fleet synth ($nrep synthetic reports)" 1 synth_view
else
  say "this ftl has no sync --report: skipping the report rows"
fi

# A bucket that ftl 0.2.x wrote: no change markers, and the blessed revision
# in <package>.current instead of <package>.rev (s3s-fs keeps an object as a
# file of the same name, so this is a rename).
for p in "${packages[@]}"; do
  rm -f "$S3_ROOT/$FTL_BUCKET/$p.changed"
  mv "$S3_ROOT/$FTL_BUCKET/$p.rev" "$S3_ROOT/$FTL_BUCKET/$p.current"
done
step "idle sync, bucket of ftl 0.2.x (no marker)" "$nodes" sync_fleet "$par"
check_fleet "idle sync, bucket of ftl 0.2.x"

echo
python3 "$proxy_py" header
printf '%s\n' "${rows[@]}"
echo
echo "Per node and sync unless the case says operator; GET includes the (304) Not Modified answers;"
echo "LIST = a GET on the bucket; KiB on the wire (headers and bodies) as the proxy saw them;"
echo "peak req/s = requests in the busiest wall-clock second. ftl: $("$FTL" --version)."
