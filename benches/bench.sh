#!/usr/bin/env bash
# ftl against its peers and against the limit of the machine, in one table of medians.
#
#   benches/bench.sh                 # everything, 5 runs per case (about 30-60 min on 2 cores)
#   RUNS=3 benches/bench.sh sync     # only some sections: sync memory noop local spool wan delta
#
# Builds the release binary, generates the workload once (cached under
# target/bench-data/), starts s3s-fs on loopback (benches/common.sh), runs every
# case RUNS times in rotating order (so that load from elsewhere spreads over all
# cases), and prints one table of medians (wall seconds; CPU = user + system of
# the whole process tree). See docs/performance.md for what bounds each figure.
#
# Environment: RUNS (default 5), BENCH_DISK (where "disk" cases unpack, default
# target/ of this repository), BENCH_SHM (tmpfs directory, default /dev/shm),
# BENCH_DATA (workload cache), BENCH_TMPDIR (the S3 server's data, default /tmp);
# for the wan section, WAN_RATE (bytes per second per connection, default 10 MB/s)
# and WAN_DELAY_MS (added to every request, default 20).
# The peers and tools the cases run, installed when missing (Debian packages; the
# AWS CLI from PyPI).
missing=()
for tool in rclone zstd curl strace bc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /usr/bin/time ] || missing+=(time)
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}" >&2
  $(command -v sudo || true) apt-get install -y -qq "${missing[@]}" >&2
fi
if ! command -v aws >/dev/null; then
  echo "bench: installing the AWS CLI" >&2
  python3 -m pip install -q awscli >&2
fi
source "$(dirname "$0")/common.sh"
[ -n "${BENCH_FTL:-}" ] && FTL=$BENCH_FTL # another binary (A/B runs)

RUNS=${RUNS:-5}
SECTIONS=${*:-sync memory noop local spool}
DATA=${BENCH_DATA:-$PWD/target/bench-data/v1}
SHM_TMP=$(mktemp -d "${BENCH_SHM:-/dev/shm}/ftl-bench.XXXXXX")
DISK_TMP=$(mktemp -d "${BENCH_DISK:-$PWD/target}/ftl-bench-disk.XXXXXX")
# When a run last deleted its trees on this disk (see discard() below): the inodes
# it freed slow file creation down for up to six minutes, so a run of the disk
# sections that starts sooner waits for them first.
DELETED_AT=${BENCH_DISK:-$PWD/target}/.ftl-bench-deleted-at
RESULTS=$BENCH_TMP/results
: >"$RESULTS"
WAN_PID=
cleanup() {
  local deleted=
  [ -d "$DISK_TMP/trash" ] && deleted=1
  kill $S3_PID $WAN_PID 2>/dev/null || true
  rm -rf "$BENCH_TMP" "$SHM_TMP" "$DISK_TMP"
  if [ -n "$deleted" ]; then
    sync
    date +%s >"$DELETED_AT"
  fi
}
trap cleanup EXIT
export AWS_DEFAULT_REGION=$AWS_REGION
# Peer B: rclone, configured through its environment (no config file).
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
  RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
  RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  RCLONE_CONFIG_BENCH_ENDPOINT=$S3_ENDPOINT RCLONE_CONFIG_BENCH_REGION=$AWS_REGION \
  RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true RCLONE_CONFIG=/dev/null
# The same for the server behind the modelled link (wan section), endpoint set there.
export RCLONE_CONFIG_WAN_TYPE=s3 RCLONE_CONFIG_WAN_PROVIDER=Other \
  RCLONE_CONFIG_WAN_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
  RCLONE_CONFIG_WAN_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  RCLONE_CONFIG_WAN_REGION=$AWS_REGION RCLONE_CONFIG_WAN_FORCE_PATH_STYLE=true
unset SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE || true

say() { echo "bench: $*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
deleted_at=$(cat "$DELETED_AT" 2>/dev/null || true)
[[ $deleted_at =~ ^[0-9]+$ ]] || deleted_at=0
wait_s=$((360 - ($(date +%s) - deleted_at)))
if { has sync || has memory; } && ((wait_s > 0)); then
  say "waiting ${wait_s} s: the last run deleted its trees on this disk less than 6 minutes ago"
  sleep "$wait_s"
fi

# ---------------------------------------------------------------------------
# Workload (cached: generating it costs minutes on a loaded machine)

prepare_data() {
  mkdir -p "$DATA"
  local gen=$PWD/benches/workload.py w i j
  for i in 1 2 3 4; do
    [ -s "$DATA/pkg$i.tar.zst" ] && continue
    say "generating package $i of 4 (~3,000 files, ~30 MB .tar.gz)"
    w=$BENCH_TMP/tree$i
    python3 "$gen" "$w" "$i" 3000 0.88
    tar -czf "$DATA/pkg$i.tar.gz" -C "$w" .
    tar -cf - -C "$w" . | zstd -q -3 -o "$DATA/pkg$i.tar.zst.part"
    mv "$DATA/pkg$i.tar.zst.part" "$DATA/pkg$i.tar.zst"
    rm -rf "$w"
  done
  if has memory && [ ! -s "$DATA/small.tar.gz" ]; then
    say "generating the 10 MiB package"
    w=$BENCH_TMP/small
    python3 "$gen" "$w" 100 1000 1.05
    tar -czf "$DATA/small.tar.gz" -C "$w" .
    rm -rf "$w"
  fi
  if { has memory || has spool; } && [ ! -s "$DATA/big.tar.gz" ]; then
    # Mostly already-compressed media (incompressible): 1 GiB compressed.
    say "generating the 1 GiB package"
    w=$BENCH_TMP/big
    python3 "$gen" "$w" 200 3000 0.88
    for j in 1 2 3 4 5 6 7; do head -c $((140 << 20)) /dev/urandom >"$w/media$j.bin"; done
    tar -cf - -C "$w" . | gzip -1 >"$DATA/big.tar.gz.part"
    mv "$DATA/big.tar.gz.part" "$DATA/big.tar.gz"
    rm -rf "$w"
  fi
  if has wan && [ ! -s "$DATA/large.tar.zst" ]; then
    # Mixed large files of 1-16 MiB, half random (incompressible), half hex text
    # (about 2:1): ~330 MB of tar, ~250 MB of .tar.zst.
    say "generating the 250 MB package"
    w=$BENCH_TMP/large
    python3 - "$w" <<'PY'
import os, random, sys
out = sys.argv[1]
os.makedirs(out)
rng = random.Random(13)
raw = hexed = i = 0
while raw < 163 << 20 or hexed < 163 << 20:
    size = rng.randint(1 << 20, 16 << 20)
    with open(os.path.join(out, f"f{i:03}.bin"), "wb") as f:
        if raw <= hexed:
            f.write(rng.randbytes(size))
            raw += size
        else:
            f.write(rng.randbytes(size // 2).hex().encode())
            hexed += size
    i += 1
PY
    tar -cf - -C "$w" . | zstd -q -3 -T0 -o "$DATA/large.tar.zst.part"
    mv "$DATA/large.tar.zst.part" "$DATA/large.tar.zst"
    rm -rf "$w"
  fi
  if [ ! -s "$DATA/tiny.tar.gz" ]; then
    w=$BENCH_TMP/tiny
    python3 "$gen" "$w" 300 20 0.2
    tar -czf "$DATA/tiny.tar.gz" -C "$w" .
    rm -rf "$w"
  fi
}

# ---------------------------------------------------------------------------
# Measuring

# CPU seconds the S3 server has used so far (user + system).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$S3_PID/stat"; }

# timed CASE CMD...: runs CMD, appends "CASE wall user sys rss_kib server_cpu" to the
# results (server_cpu: what the S3 server spent meanwhile, on the same 2 cores).
timed() {
  local name=$1 out=$BENCH_TMP/time.out s0 s1
  shift
  s0=$(server_cpu)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >/dev/null 2>"$BENCH_TMP/case.err"; then
    say "$name failed:"
    tail -5 "$BENCH_TMP/case.err" >&2
    cat "$out" >&2
    return 1
  fi
  s1=$(server_cpu)
  echo "$name $(tail -1 "$out") $(echo "$s1 - $s0" | bc)" >>"$RESULTS"
}

# Microseconds since the epoch, from bash itself (no fork).
now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

# Spool FILE into BUCKET under NAME (a copy, so the package is named NAME) and bless it.
spool_bless() {
  local bucket=$1 file=$2 name=$3 rev
  cp "$file" "$BENCH_TMP/$name"
  rev=$(FTL_BUCKET=$bucket "$FTL" spool -q "$BENCH_TMP/$name")
  FTL_BUCKET=$bucket "$FTL" jump -q --master "$rev"
  rm -f "$BENCH_TMP/$name"
  echo "$rev"
}

# The object keys of a bucket matching a glob (s3s-fs keeps objects as files).
keys_of() { (cd "$S3_ROOT/$1" && ls $2); }

fresh_dir() { # disk|shm
  if [ "$1" = shm ]; then mktemp -d "$SHM_TMP/d.XXXXXX"; else mktemp -d "$DISK_TMP/d.XXXXXX"; fi
}

# Nothing the cases unpack onto the disk is deleted while the bench runs: on a
# journal-less ext4 (this VM's), creating a file scans past the free inodes of its
# block group that were deleted in the last minutes, so deleting a round's trees
# (~150,000 files) costs the next round's first disk case seconds of system time,
# whichever case it is (docs/performance.md, "Measuring on ext4"). The trees are
# moved aside and deleted when the bench ends, unless the disk runs short.
discard() { # dir
  case $1 in
  "$SHM_TMP"/*) rm -rf "$1" ;;
  *) mkdir -p "$DISK_TMP/trash" && mv "$1" "$DISK_TMP/trash/" ;;
  esac
}
# Free space (KiB) that a round needs at most: a sync round unpacks 12 x ~250 MB.
ROUND_KIB=$((4 << 20))
settle() {
  if (($(df -Pk "$DISK_TMP" | awk 'NR == 2 { print $4 }') < 2 * ROUND_KIB)); then
    # Short of space: delete, then wait and take the hit with a throwaway extraction.
    say "disk short of space: deleting the earlier rounds' trees (the next disk case pays for it)"
    rm -rf "$DISK_TMP/trash"
    sync
    sleep 6
    local d
    d=$(fresh_dir disk)
    tar -xzf "$DATA/pkg1.tar.gz" -C "$d"
    discard "$d"
  fi
  sync
}

# ---------------------------------------------------------------------------
# Sync: 4 packages x 1 new revision, from empty nodes, against the peers and the limit

declare -A BUCKET
setup_sync() {
  for fmt in gz zst; do
    BUCKET[$fmt]=$(new_bucket)
    for i in 1 2 3 4; do
      spool_bless "${BUCKET[$fmt]}" "$DATA/pkg$i.tar.$fmt" "pkg$i.tar.$fmt" >/dev/null
    done
  done
  cat "$S3_ROOT"/*/pkg* >/dev/null # in the page cache, like a warm server
}

tar_flag() { [ "$1" = gz ] && echo -z || echo --zstd; }

case_sync() { # fmt fs
  local root i
  root=$(fresh_dir "$2")
  mkdir "$root"/pkg{1,2,3,4}
  FTL_BUCKET=${BUCKET[$1]} FTL_ROOT=$root timed "sync.$1.$2.ftl" "$FTL" sync -q
  for i in 1 2 3 4; do
    [ -d "$root/pkg$i/current/" ] || { say "sync left pkg$i without current"; exit 1; }
  done
  discard "$root"
}

case_peer() { # fmt fs aws|rclone
  local fmt=$1 fs=$2 tool=$3 b=${BUCKET[$1]} root
  root=$(fresh_dir "$fs")
  local fetch
  if [ "$tool" = aws ]; then
    fetch="aws s3 cp --quiet s3://$b/\$k \$r/\$k"
  else
    fetch="rclone copy --quiet bench:$b/\$k \$r"
  fi
  keys_of "$b" "pkg*.tar.$fmt" >"$root/.keys"
  timed "sync.$fmt.$fs.$tool" xargs -P4 -n1 -a "$root/.keys" bash -c \
    "r=\$0 k=\$1; $fetch && mkdir \$r/\${k%%.*} && tar $(tar_flag "$fmt") -xf \$r/\$k -C \$r/\${k%%.*}" "$root"
  discard "$root"
}

case_get() { # fmt
  local b=${BUCKET[$1]}
  keys_of "$b" "pkg*.tar.$1" >"$BENCH_TMP/keys"
  timed "sync.$1.get" xargs -P4 -n1 -a "$BENCH_TMP/keys" bash -c \
    "curl -sf -o /dev/null --aws-sigv4 aws:amz:$AWS_REGION:s3 --user $AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY \
     -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' $S3_ENDPOINT/$b/\$1" _
}

case_tar() { # fmt fs parallelism [sync]
  local fmt=$1 fs=$2 p=$3 b=${BUCKET[$1]} root then=true
  root=$(fresh_dir "$fs")
  keys_of "$b" "pkg*.tar.$fmt" >"$root/.keys"
  # With "sync": then flush the file system (syncfs), as a durable install must.
  [ "${4:-}" = sync ] && then="sync -f $root"
  timed "sync.$fmt.$fs.tar$p${4:-}" bash -c "xargs -P$p -n1 -a $root/.keys bash -c \
    'mkdir \$0/\$1.d && tar $(tar_flag "$fmt") -xf $S3_ROOT/$b/\$1 -C \$0/\$1.d' $root && $then"
  discard "$root"
}

run_sync() {
  say "sync: setting up (load $(loadavg))"
  setup_sync
  local cases=() fmt fs
  for fmt in gz zst; do
    cases+=("case_get $fmt")
    for fs in disk shm; do
      cases+=("case_sync $fmt $fs" "case_peer $fmt $fs aws" "case_peer $fmt $fs rclone"
        "case_tar $fmt $fs 2" "case_tar $fmt $fs 4")
      [ "$fs" = disk ] && cases+=("case_tar $fmt $fs 4 sync")
    done
  done
  local n=${#cases[@]} r i c
  for ((r = 0; r < RUNS; r++)); do
    settle
    echo "load.sync.$r $(loadavg)" >>"$RESULTS"
    say "sync: run $((r + 1)) of $RUNS (load $(loadavg))"
    for ((i = 0; i < n; i++)); do
      c=${cases[$(((i + r * 7) % n))]}
      sync # flush what the previous case left dirty: each case starts clean
      $c
    done
  done
}

# ---------------------------------------------------------------------------
# Memory: peak RSS of a sync of one 1 GiB and one 10 MiB package (onto the disk)

run_memory() {
  say "memory: setting up (load $(loadavg))"
  local b root pkg
  b=$(new_bucket)
  spool_bless "$b" "$DATA/big.tar.gz" big.tar.gz >/dev/null
  spool_bless "$b" "$DATA/small.tar.gz" small.tar.gz >/dev/null
  local r runs=$((RUNS < 3 ? RUNS : 3))
  for ((r = 0; r < runs; r++)); do
    settle
    for pkg in small big; do
      root=$(fresh_dir disk)
      mkdir "$root/$pkg"
      sync
      FTL_BUCKET=$b FTL_ROOT=$root timed "memory.$pkg" "$FTL" sync -q
      discard "$root"
    done
  done
  echo "size.big $(stat -c %s "$DATA/big.tar.gz")" >>"$RESULTS"
  echo "size.small $(stat -c %s "$DATA/small.tar.gz")" >>"$RESULTS"
  rm -rf "${S3_ROOT:?}/$b"
}

# ---------------------------------------------------------------------------
# No-op sync: 20 packages already up to date; wall time and S3 requests

NOOP_BUCKET=
run_noop() {
  say "noop: setting up (load $(loadavg))"
  local b root r i before after t0 t1
  b=$(new_bucket)
  NOOP_BUCKET=$b
  root=$(fresh_dir disk)
  for i in $(seq -w 1 20); do
    spool_bless "$b" "$DATA/tiny.tar.gz" "n$i.tar.gz" >/dev/null
    mkdir "$root/n$i"
  done
  FTL_BUCKET=$b FTL_ROOT=$root "$FTL" sync -q
  for ((r = 0; r < RUNS * 2; r++)); do
    before=$(s3_requests)
    t0=$(now_us)
    FTL_BUCKET=$b FTL_ROOT=$root "$FTL" sync -q
    t1=$(now_us)
    after=$(s3_requests)
    echo "noop.wall $((t1 - t0)) $((after - before))" >>"$RESULTS"
  done
  rm -rf "$root"
}

# ---------------------------------------------------------------------------
# Local commands: jump between two revisions (no hooks), list

run_local() {
  say "local: setting up (load $(loadavg))"
  local b root r1 r2 r t0 t1
  b=$(new_bucket)
  root=$(fresh_dir disk)
  mkdir "$root/loc"
  r1=$(spool_bless "$b" "$DATA/tiny.tar.gz" loc.tar.gz)
  sleep 1 # a different id
  r2=$(spool_bless "$b" "$DATA/tiny.tar.gz" loc.tar.gz)
  FTL_BUCKET=$b FTL_ROOT=$root "$FTL" sync -q
  # No bucket and no AWS configuration at all: these commands must not need them.
  # Unset in a subshell rather than through env(1), whose own exec would be timed.
  local env=(env -u FTL_BUCKET -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_ENDPOINT_URL
    -u AWS_REGION -u AWS_DEFAULT_REGION FTL_ROOT="$root")
  (
    unset FTL_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL AWS_REGION AWS_DEFAULT_REGION
    export FTL_ROOT=$root
    for ((r = 0; r < RUNS * 4; r++)); do
      t0=$(now_us)
      "$FTL" jump -q "$r1" >/dev/null
      t1=$(now_us)
      echo "local.jump $((t1 - t0))" >>"$RESULTS"
      "$FTL" jump -q "$r2" >/dev/null
      t0=$(now_us)
      "$FTL" list loc >/dev/null
      t1=$(now_us)
      echo "local.list $((t1 - t0))" >>"$RESULTS"
    done
  )
  # What they open: no AWS configuration file, no socket.
  local opened
  opened=$(strace -f -e trace=openat,connect "${env[@]}" HOME="$root" "$FTL" list loc 2>&1 >/dev/null |
    grep -c -e '\.aws' -e 'connect(' || true)
  echo "local.aws_files $opened" >>"$RESULTS"
  rm -rf "$root" "${S3_ROOT:?}/$b"
}

# ---------------------------------------------------------------------------
# Spool: a 1 GiB file, against a raw multipart upload (aws s3 cp) of the same file

run_spool() {
  say "spool: (load $(loadavg))"
  local r b c runs=$((RUNS < 3 ? RUNS : 3)) file=$DATA/big.tar.gz
  cat "$file" >/dev/null
  for ((r = 0; r < runs; r++)); do
    for c in ftl aws; do
      b=$(new_bucket)
      sync
      if [ "$c" = ftl ]; then
        FTL_BUCKET=$b timed spool.ftl "$FTL" spool -q "$file"
      else
        timed spool.aws aws s3 cp --quiet "$file" "s3://$b/raw.tar.gz"
      fi
      rm -rf "${S3_ROOT:?}/$b"
    done
  done
  echo "size.spool $(stat -c %s "$file")" >>"$RESULTS"
}

# ---------------------------------------------------------------------------
# WAN: the same server and files behind a modelled link (benches/s3_server.rs
# --rate --delay-ms): each connection's answers paced to WAN_RATE bytes/s, every
# request answered WAN_DELAY_MS late. One 250 MB package, the sync workload, a
# no-op sync of 20 packages and a spool, all through it, onto tmpfs.

# Through the link: CMD... with the AWS endpoint of the modelled server.
wan() { AWS_ENDPOINT_URL=$WAN_ENDPOINT "$@"; }

LARGE_BUCKET= LARGE_KEY=
case_wan_large() { # ftl|aws|rclone|curl|untar
  local root b=$LARGE_BUCKET k=$LARGE_KEY
  root=$(fresh_dir shm)
  mkdir "$root/large" "$root/x"
  case $1 in
  ftl) FTL_BUCKET=$b FTL_ROOT=$root wan timed wan.large.ftl "$FTL" sync -q ;;
  aws) wan timed wan.large.aws bash -c "aws s3 cp --quiet s3://$b/$k $root/$k && tar --zstd -xf $root/$k -C $root/x" ;;
  rclone) timed wan.large.rclone bash -c "rclone copyto --quiet wan:$b/$k $root/$k && tar --zstd -xf $root/$k -C $root/x" ;;
  curl) timed wan.large.curl bash -c "set -o pipefail; curl -sf --aws-sigv4 aws:amz:$AWS_REGION:s3 \
    --user $AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    $WAN_ENDPOINT/$b/$k | tar --zstd -xf - -C $root/x" ;;
  untar) timed wan.large.untar tar --zstd -xf "$S3_ROOT/$b/$k" -C "$root/x" ;;
  esac
  discard "$root"
}

case_wan_sync() { # ftl|aws|rclone: the sync section's 4 .tar.zst packages
  local root b=${BUCKET[zst]} fetch
  root=$(fresh_dir shm)
  if [ "$1" = ftl ]; then
    mkdir "$root"/pkg{1,2,3,4}
    FTL_BUCKET=$b FTL_ROOT=$root wan timed wan.sync.ftl "$FTL" sync -q
  else
    if [ "$1" = aws ]; then
      fetch="aws s3 cp --quiet s3://$b/\$k \$r/\$k"
    else
      fetch="rclone copy --quiet wan:$b/\$k \$r"
    fi
    keys_of "$b" "pkg*.tar.zst" >"$root/.keys"
    wan timed "wan.sync.$1" xargs -P4 -n1 -a "$root/.keys" bash -c \
      "r=\$0 k=\$1; $fetch && mkdir \$r/\${k%%.*} && tar --zstd -xf \$r/\$k -C \$r/\${k%%.*}" "$root"
  fi
  discard "$root"
}

case_wan_spool() { # ftl|aws
  local b
  b=$(new_bucket)
  if [ "$1" = ftl ]; then
    cp "$DATA/large.tar.zst" "$SHM_TMP/large.tar.zst"
    FTL_BUCKET=$b wan timed wan.spool.ftl "$FTL" spool -q "$SHM_TMP/large.tar.zst"
    rm -f "$SHM_TMP/large.tar.zst"
  else
    wan timed wan.spool.aws aws s3 cp --quiet "$DATA/large.tar.zst" "s3://$b/raw.tar.zst"
  fi
  rm -rf "${S3_ROOT:?}/$b"
}

case_wan_noop() {
  local t0 t1
  t0=$(now_us)
  FTL_BUCKET=$WAN_NOOP_BUCKET FTL_ROOT=$WAN_NOOP_ROOT wan "$FTL" sync -q
  t1=$(now_us)
  echo "wan.noop $((t1 - t0))" >>"$RESULTS"
}

run_wan() {
  say "wan: setting up (load $(loadavg))"
  start_wan
  echo "wan.link $WAN_RATE $WAN_DELAY_MS" >>"$RESULTS"
  LARGE_BUCKET=$(new_bucket)
  spool_bless "$LARGE_BUCKET" "$DATA/large.tar.zst" large.tar.zst >/dev/null
  LARGE_KEY=$(keys_of "$LARGE_BUCKET" "large.*.tar.zst")
  echo "size.large $(stat -c %s "$DATA/large.tar.zst")" >>"$RESULTS"
  [ -n "${BUCKET[zst]:-}" ] || setup_sync
  local i
  WAN_NOOP_BUCKET=$(new_bucket)
  WAN_NOOP_ROOT=$(fresh_dir shm)
  for i in $(seq -w 1 20); do
    spool_bless "$WAN_NOOP_BUCKET" "$DATA/tiny.tar.gz" "w$i.tar.gz" >/dev/null
    mkdir "$WAN_NOOP_ROOT/w$i"
  done
  FTL_BUCKET=$WAN_NOOP_BUCKET FTL_ROOT=$WAN_NOOP_ROOT "$FTL" sync -q
  cat "$S3_ROOT"/*/* >/dev/null 2>&1 || true # in the page cache, like a warm server
  local cases=("case_wan_large ftl" "case_wan_large aws" "case_wan_large rclone" "case_wan_large curl"
    "case_wan_large untar" "case_wan_sync ftl" "case_wan_sync aws" "case_wan_sync rclone"
    "case_wan_spool ftl" "case_wan_spool aws" "case_wan_noop" "case_wan_noop" "case_wan_noop")
  local n=${#cases[@]} r c
  for ((r = 0; r < RUNS; r++)); do
    echo "load.wan.$r $(loadavg)" >>"$RESULTS"
    say "wan: run $((r + 1)) of $RUNS (load $(loadavg))"
    for ((i = 0; i < n; i++)); do
      c=${cases[$(((i + r * 5) % n))]}
      $c
    done
  done
  rm -rf "$WAN_NOOP_ROOT" "${S3_ROOT:?}/$WAN_NOOP_BUCKET" "${S3_ROOT:?}/$LARGE_BUCKET"
}

# ---------------------------------------------------------------------------

# Delta deploys: benches/delta.sh, with its own table (on stderr here).
run_delta() { RUNS=$RUNS bash "$PWD/benches/delta.sh" >&2; }

prepare_data
echo "load.start $(loadavg)" >>"$RESULTS"
for s in sync memory noop local spool wan delta; do
  has "$s" && "run_$s"
done
echo "load.end $(loadavg)" >>"$RESULTS"
cp "$RESULTS" "${BENCH_RESULTS:-$PWD/target/bench-results.txt}"
python3 "$PWD/benches/table.py" "$RESULTS" "$FTL"
