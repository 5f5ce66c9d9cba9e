#!/usr/bin/env bash
# The main job end to end on this machine, no AWS account needed:
# spool a package into a local-directory bucket, bless it, sync two nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
ftl=$PWD/target/release/ftl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bucket" "$work/node1/my_site" "$work/node2/my_site" "$work/src"
export FTL_BUCKET="file://$work/bucket"

echo "<h1>hello from ftl</h1>" > "$work/src/index.html"
printf '#!/bin/sh\necho "activated $FTL_REVISION"\n' > "$work/src/post-jump.sh"
chmod +x "$work/src/post-jump.sh"
tar -czf "$work/my_site.tgz" -C "$work/src" .

echo "\$ ftl spool my_site.tgz"
rev=$("$ftl" spool "$work/my_site.tgz")
echo "$rev"
echo "\$ ftl jump --master $rev"
"$ftl" jump --master "$rev"
for node in node1 node2; do
  echo "\$ FTL_ROOT=$node ftl sync"
  FTL_ROOT="$work/$node" "$ftl" sync
done
echo "\$ FTL_ROOT=node1 ftl list my_site"
FTL_ROOT="$work/node1" "$ftl" list my_site
echo "\$ cat node2/my_site/current/index.html"
cat "$work/node2/my_site/current/index.html"
