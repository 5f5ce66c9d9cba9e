#!/usr/bin/env bash
# Spool of a large file: peak RSS and time, against a raw multipart upload of
# the same file by the same SDK settings (aws cli, when installed).
# Usage: benches/spool.sh [SIZE_MIB]   (default 1024)
source "$(dirname "$0")/common.sh"
size_mib=${1:-1024}
file=$BENCH_TMP/big.bin
head -c "$((size_mib << 20))" /dev/urandom > "$file"

bucket=$(new_bucket)
read -r rss secs < <(FTL_BUCKET=$bucket measure "$FTL" spool "$file")
printf '%-28s %8s %10s %10s\n' case "MiB" "seconds" "peak RSS"
printf '%-28s %8d %10.2f %9.1fM\n' "ftl spool" "$size_mib" "$secs" "$rss"
if command -v aws >/dev/null; then
  bucket=$(new_bucket)
  read -r rss2 secs2 < <(measure aws s3 cp --quiet "$file" "s3://$bucket/raw.bin")
  printf '%-28s %8d %10.2f %9.1fM\n' "aws s3 cp (raw multipart)" "$size_mib" "$secs2" "$rss2"
fi
