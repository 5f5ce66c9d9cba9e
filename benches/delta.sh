#!/usr/bin/env bash
# Delta deploys: a 250 MB / 3,000-file package (mixed sizes, half
# incompressible) and a second revision with 1 % of its files changed,
# spread across the archive. For the second revision's sync: bytes moved,
# requests, wall time and peak memory, delta against full (FTL_DELTA=0 on a
# node that holds the first revision), on loopback and through the `wan`
# link model (benches/s3_server.rs --rate --delay-ms); and spool time with
# and without --delta. One run of each (RUNS repeats them); the load of the
# machine is printed with every figure. `benches/bench.sh delta` runs this.
#
# Environment: RUNS (default 1), BENCH_DATA (workload cache), BENCH_SHM
# (where nodes unpack, default /dev/shm), WAN_RATE (bytes/s per connection,
# default 10 MB/s), WAN_DELAY_MS (default 20).
source "$(dirname "$0")/common.sh"

RUNS=${RUNS:-1}
DATA=${BENCH_DATA:-$PWD/target/bench-data/v1}/delta
SHM_TMP=$(mktemp -d "${BENCH_SHM:-/dev/shm}/ftl-delta.XXXXXX")
WAN_PID=
trap 'kill $S3_PID $WAN_PID 2>/dev/null || true; rm -rf "$BENCH_TMP" "$SHM_TMP"' EXIT
say() { echo "delta: $*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Two trees and their .tar.zst: 100 files of 1-3 MiB and 2,900 of 1-32 KiB,
# alternately random bytes and hex text; the second changes every 100th file
# (29 small ones, 1 large), in place, same size.
if [ ! -s "$DATA/v2/pkg.tar.zst" ]; then
  say "generating the two revisions (~250 MB each)"
  mkdir -p "$DATA"
  python3 - "$BENCH_TMP/t1" "$BENCH_TMP/t2" <<'PY'
import os, random, sys, shutil
one, two = sys.argv[1], sys.argv[2]
rng = random.Random(20)
def content(size, i, salt):
    r = random.Random(i * 7919 + salt)
    raw = r.randbytes(size if i % 2 else size // 2)
    return raw if i % 2 else raw.hex().encode()[:size]
files = []
for i in range(3000):
    big = i % 30 == 7
    size = rng.randint(1 << 20, 3 << 20) if big else rng.randint(1 << 10, 32 << 10)
    files.append((f"d{i % 37:02}/f{i:04}.bin", size))
for root in (one, two):
    os.makedirs(root)
for i, (path, size) in enumerate(files):
    data = content(size, i, 0)
    for root in (one, two):
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
changed = [i for i in range(50, 3000, 100)][:29] + [7 + 30 * 50]
for i in changed:
    path, size = files[i]
    with open(os.path.join(two, path), "wb") as f:
        f.write(content(size, i, 1))
PY
  for v in 1 2; do
    mkdir -p "$DATA/v$v"
    tar -cf - -C "$BENCH_TMP/t$v" . | zstd -q -3 -o "$DATA/v$v/pkg.tar.zst"
  done
  rm -rf "$BENCH_TMP/t1" "$BENCH_TMP/t2"
fi
SIZE=$(stat -c %s "$DATA/v2/pkg.tar.zst")

# spool [--delta] FILE BUCKET: prints "seconds revision".
spool() {
  local flag=$1 file=$2 b=$3 t0 t1 rev
  t0=$(date +%s.%N)
  rev=$(FTL_BUCKET=$b "$FTL" spool -q $flag "$file")
  t1=$(date +%s.%N)
  FTL_BUCKET=$b "$FTL" jump -q --master "$rev"
  echo "$(echo "$t1 - $t0" | bc) $rev"
}

# A node holding the first revision of bucket B.
node_with_first() {
  local b=$1 root
  root=$(mktemp -d "$SHM_TMP/node.XXXXXX")
  mkdir "$root/pkg"
  FTL_BUCKET=$b FTL_ROOT=$root "$FTL" sync -q
  echo "$root"
}

# sync ENDPOINT ROOT BUCKET DELTA: prints "seconds rss_mib requests bytes reused".
second_sync() {
  local endpoint=$1 root=$2 b=$3 delta=$4 before after m st count=s3_requests
  [ "$endpoint" = "$S3_ENDPOINT" ] || count=wan_requests
  before=$($count)
  m=$(AWS_ENDPOINT_URL=$endpoint FTL_DELTA=$delta FTL_BUCKET=$b FTL_ROOT=$root measure "$FTL" sync -q)
  after=$($count)
  st=$(FTL_BUCKET=$b FTL_ROOT=$root "$FTL" status --json pkg | python3 -c \
    'import json,sys; l=json.load(sys.stdin)["packages"][0]["last_install"]; print(l["moved_bytes"], l["reused_bytes"])')
  echo "${m#* } ${m%% *} $((after - before)) $st"
}

start_wan
printf '%-34s %10s %8s %9s %12s %12s  %s\n' case seconds rss_MiB requests moved_bytes reused_bytes load
row() { printf '%-34s %10s %8s %9s %12s %12s  %s\n' "$@" "$(loadavg)"; }
for ((r = 0; r < RUNS; r++)); do
  # Spool time, with and without --delta, of the same file, each to its own bucket.
  plain=$(new_bucket)
  read -r t _ < <(spool "" "$DATA/v1/pkg.tar.zst" "$plain")
  row "spool (upload as it is)" "$t" - - "$SIZE" -
  b=$(new_bucket)
  read -r t _ < <(spool --delta "$DATA/v1/pkg.tar.zst" "$b")
  row "spool --delta (rewrite + upload)" "$t" - - - -
  n1=$(node_with_first "$b")
  n2=$(node_with_first "$b")
  n3=$(node_with_first "$b")
  n4=$(node_with_first "$b")
  read -r t _ < <(spool --delta "$DATA/v2/pkg.tar.zst" "$b")
  row "spool --delta, second revision" "$t" - - - -
  cat "$S3_ROOT/$b"/* >/dev/null # in the page cache, like a warm server
  read -r s rss q moved reused < <(second_sync "$S3_ENDPOINT" "$n1" "$b" 1)
  row "loopback: second revision, delta" "$s" "$rss" "$q" "$moved" "$reused"
  read -r s rss q moved reused < <(second_sync "$S3_ENDPOINT" "$n2" "$b" 0)
  row "loopback: second revision, full" "$s" "$rss" "$q" "$moved" "$reused"
  # On loopback a full download is one GET while the unpack keeps up with one
  # connection; through the link it is cut into ranges, as over a network.
  read -r s rss q moved reused < <(second_sync "$WAN_ENDPOINT" "$n3" "$b" 1)
  row "wan: second revision, delta" "$s" "$rss" "$q" "$moved" "$reused"
  read -r s rss q moved reused < <(second_sync "$WAN_ENDPOINT" "$n4" "$b" 0)
  row "wan: second revision, full" "$s" "$rss" "$q" "$moved" "$reused"
  rm -rf "$n1" "$n2" "$n3" "$n4" "${S3_ROOT:?}/$b" "${S3_ROOT:?}/$plain"
done
echo "object: $SIZE bytes; wan link: $WAN_RATE bytes/s per connection, $WAN_DELAY_MS ms per request; $(nproc) cores"
