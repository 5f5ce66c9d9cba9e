# Shared by the benchmark scripts: build ftl, start a fast S3 server on loopback.
# Source it; it sets FTL, S3_ENDPOINT, S3_ROOT and the AWS variables, and stops
# the server on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
unset AWS_CA_BUNDLE AWS_PROFILE AWS_SESSION_TOKEN || true
export AWS_EC2_METADATA_DISABLED=true

cargo build --release --quiet --bin ftl --example s3_server
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
# BENCH_FTL: another ftl binary to measure (an earlier commit's build, for a before/after).
FTL=${BENCH_FTL:-$TARGET/release/ftl}
# s3s-fs with SigV4, serving object bodies in 256 KiB reads (benches/s3_server.rs).
S3_SERVER=$TARGET/release/examples/s3_server

BENCH_TMP=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ftl-bench.XXXXXX")
S3_ROOT=$BENCH_TMP/s3
mkdir -p "$S3_ROOT"
export AWS_ACCESS_KEY_ID=AKIAFTLBENCH00000001 AWS_SECRET_ACCESS_KEY=ftl-bench-secret AWS_REGION=us-east-1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# s3s logs one "req:" line per request at debug level: benches count requests there.
RUST_LOG=${S3S_LOG:-s3s::service=debug} "$S3_SERVER" --host 127.0.0.1 --port "$port" \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3_ROOT" >"$BENCH_TMP/s3s.log" 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true; rm -rf "$BENCH_TMP"' EXIT
export S3_ENDPOINT=http://127.0.0.1:$port AWS_ENDPOINT_URL=http://127.0.0.1:$port
for _ in $(seq 1 100); do
  curl -s -o /dev/null "$S3_ENDPOINT/" && break
  sleep 0.1
done

# Requests the server has answered so far.
s3_requests() { grep -cE 's3s::service: req[:=]' "$BENCH_TMP/s3s.log" || true; }
# The same, of the server behind the modelled link (start_wan).
wan_requests() { grep -cE 's3s::service: req[:=]' "$BENCH_TMP/wan.log" || true; }

# A fresh bucket (s3s-fs keeps a bucket as a directory).
new_bucket() {
  local b=bench-$RANDOM$RANDOM
  mkdir -p "$S3_ROOT/$b"
  echo "$b"
}

# Peak RSS in MiB and wall seconds of a command: "rss_mib seconds".
measure() {
  local out=$BENCH_TMP/time.$RANDOM
  /usr/bin/time -v "$@" >/dev/null 2>"$out" || { cat "$out" >&2; return 1; }
  awk -F': ' '/Maximum resident/ {rss=$2/1024} /Elapsed \(wall/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]} END {printf "%.1f %.2f\n", rss, s}' "$out"
}

# The modelled wide-area link (the wan and delta sections): a second server
# on the same files that paces each connection to WAN_RATE bytes a second
# and answers each request WAN_DELAY_MS late; sets WAN_PID and WAN_ENDPOINT.
WAN_RATE=${WAN_RATE:-10000000}
WAN_DELAY_MS=${WAN_DELAY_MS:-20}
start_wan() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  RUST_LOG=${S3S_LOG:-s3s::service=debug} "$S3_SERVER" --host 127.0.0.1 --port "$port" --rate "$WAN_RATE" --delay-ms "$WAN_DELAY_MS" \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3_ROOT" >"$BENCH_TMP/wan.log" 2>&1 &
  WAN_PID=$!
  WAN_ENDPOINT=http://127.0.0.1:$port
  export RCLONE_CONFIG_WAN_ENDPOINT=$WAN_ENDPOINT
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$WAN_ENDPOINT/" && break
    sleep 0.1
  done
}
