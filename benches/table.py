#!/usr/bin/env python3
"""Prints the table of benches/bench.sh from its results file.

Lines of the results file:
  <case> <wall s> <user s> <sys s> <peak rss KiB>   (from /usr/bin/time)
  noop.wall <µs> <requests>      local.jump|local.list <µs>
  local.aws_files <n>            size.<what> <bytes>      load.<when> <1> <5> <15>
  wan.link <bytes/s per connection> <ms per request>      wan.noop <µs>
"""

import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    path = sys.argv[1]
    ftl = sys.argv[2] if len(sys.argv) > 2 else None
    timed = defaultdict(list)  # case -> [(wall, cpu, rss_mib)]
    other = defaultdict(list)
    loads = []
    for line in open(path):
        f = line.split()
        if not f:
            continue
        key = f[0]
        if key.startswith("load."):
            loads.append((key[5:], " ".join(f[1:])))
        elif key.startswith(("noop.", "local.", "size.", "wan.link", "wan.noop")):
            other[key].append([float(x) for x in f[1:]])
        else:
            wall, user, sys_, rss = (float(x) for x in f[1:5])
            server = float(f[5]) if len(f) > 5 else float("nan")
            timed[key].append((wall, user + sys_, rss / 1024, server))

    def stat(case):
        runs = timed.get(case)
        if not runs:
            return None
        walls = [r[0] for r in runs]
        return {
            "wall": median(walls),
            "min": min(walls),
            "max": max(walls),
            "cpu": median([r[1] for r in runs]),
            "rss": max(r[2] for r in runs),
            "server": median([r[3] for r in runs]),
            "n": len(runs),
        }

    out = []
    w = out.append
    w(f"{'case':<52} {'median s':>9} {'min-max s':>12} {'CPU s':>7} {'server':>7} {'RSS MiB':>8}  ratio")

    def row(label, st, ratio=""):
        if st is None:
            return
        server = "" if st["server"] != st["server"] or st["server"] < 0.005 else f"{st['server']:.2f}"
        w(
            f"{label:<52} {st['wall']:>9.2f} {st['min']:>5.2f}-{st['max']:<6.2f}"
            f" {st['cpu']:>7.2f} {server:>7} {st['rss']:>8.1f}  {ratio}"
        )

    checks = []
    for fmt, name, flag in (("gz", ".tar.gz", "-xzf"), ("zst", ".tar.zst", "--zstd -xf")):
        get = stat(f"sync.{fmt}.get")
        for fs, fsname in (("disk", "disk (ext4)"), ("shm", "tmpfs")):
            ftl_ = stat(f"sync.{fmt}.{fs}.ftl")
            if ftl_ is None:
                continue
            aws = stat(f"sync.{fmt}.{fs}.aws")
            rcl = stat(f"sync.{fmt}.{fs}.rclone")
            t2 = stat(f"sync.{fmt}.{fs}.tar2")
            t4 = stat(f"sync.{fmt}.{fs}.tar4")
            tar_best = min((t for t in (t2, t4) if t), key=lambda t: t["wall"])
            limit = max(get["wall"], tar_best["wall"])
            peers = [p for p in (aws, rcl) if p]
            best_peer = min(p["wall"] for p in peers)
            w(f"-- sync, 4 packages x ~30 MB {name} (~3,000 files each), onto {fsname}")
            row(
                "ftl sync",
                ftl_,
                f"{ftl_['wall'] / limit:.2f} x limit; best peer / ftl = {best_peer / ftl_['wall']:.2f}",
            )
            row(f"peer A: aws s3 cp + tar {flag}, 4 at a time", aws)
            row(f"peer B: rclone copy + tar {flag}, 4 at a time", rcl)
            row("limit: 4 parallel GETs to /dev/null (curl)", get)
            row(f"limit: GNU tar {flag} from page cache, 2 at a time", t2)
            row(f"limit: GNU tar {flag} from page cache, 4 at a time", t4)
            w(f"{'limit = max(GET, faster tar)':<52} {limit:>9.2f}")
            durable = stat(f"sync.{fmt}.{fs}.tar4sync")
            if durable:
                row(
                    f"reference: tar {flag}, 4 at a time, then syncfs",
                    durable,
                    f"ftl / this = {ftl_['wall'] / durable['wall']:.2f}",
                )
            cell = f"{name} on {fsname}"
            if fs == "disk" and durable:
                # ftl makes a revision durable before it is visible: on disk it is
                # held to the durable reference; the plain tar is for information.
                checks.append((f"sync {cell}: <= 0.9 x tar then syncfs",
                               ftl_["wall"] <= 0.9 * durable["wall"],
                               f"{ftl_['wall'] / durable['wall']:.2f}"))
            else:
                checks.append((f"sync {cell}: <= 1.1 x limit", ftl_["wall"] <= 1.1 * limit,
                               f"{ftl_['wall'] / limit:.2f}"))
            need = 1.5 if fs == "shm" else 1.0
            checks.append((f"sync {cell}: faster than best peer" + (" by 1.5x" if need > 1 else ""),
                           best_peer / ftl_["wall"] >= need if need > 1 else ftl_["wall"] < best_peer,
                           f"{best_peer / ftl_['wall']:.2f}x"))
            if fmt == "gz" and fs == "shm":
                checks.append((f"sync {cell}: <= GNU tar + gzip", ftl_["wall"] <= tar_best["wall"],
                               f"{ftl_['wall']:.2f} vs {tar_best['wall']:.2f}"))

    mem = [(k, stat(f"memory.{k}")) for k in ("big", "small")]
    if any(m for _, m in mem):
        w("-- memory: ftl sync of one package (onto disk)")
        for k, st in mem:
            size = other.get(f"size.{k}", [[0]])[0][0] / 2**20
            row(f"ftl sync, one {size:.0f} MiB .tar.gz", st)
            if st:
                checks.append((f"peak RSS, {size:.0f} MiB package <= 64 MiB", st["rss"] <= 64,
                               f"{st['rss']:.1f} MiB"))

    if other.get("noop.wall"):
        runs = other["noop.wall"]
        ms = median([r[0] / 1000 for r in runs])
        reqs = median([r[1] for r in runs])
        w("-- no-op sync, 20 packages up to date (requests counted at the server)")
        w(f"{'ftl sync':<52} {ms / 1000:>9.3f}  {reqs:.0f} requests = {reqs / 20:.2f} per package"
          f" (min-max {min(r[0] for r in runs) / 1000:.0f}-{max(r[0] for r in runs) / 1000:.0f} ms)")
        checks.append(("no-op sync of 20 packages < 150 ms", ms < 150, f"{ms:.0f} ms"))
        checks.append(("no-op sync <= 3 requests per package", reqs / 20 <= 3, f"{reqs / 20:.2f}"))

    if other.get("local.jump"):
        w("-- local commands (no bucket, no AWS variables)")
        for k in ("jump", "list"):
            runs = [r[0] / 1000 for r in other[f"local.{k}"]]
            ms = median(runs)
            label = "ftl jump REV (between two revisions, no hooks)" if k == "jump" else "ftl list PKG"
            w(f"{label:<52} {ms / 1000:>9.4f}  ({ms:.1f} ms; min-max {min(runs):.1f}-{max(runs):.1f} ms)")
            checks.append((f"local {k} < 10 ms", ms < 10, f"{ms:.1f} ms"))
        files = other.get("local.aws_files", [[float('nan')]])[0][0]
        w(f"{'  AWS config files opened / sockets connected by list':<52} {files:>9.0f}")

    sp, raw = stat("spool.ftl"), stat("spool.aws")
    if sp:
        size = other.get("size.spool", [[0]])[0][0] / 2**20
        w(f"-- spool of a {size:.0f} MiB file")
        ratio = f"throughput {raw['wall'] / sp['wall']:.2f} x raw" if raw else ""
        row("ftl spool", sp, ratio)
        row("raw multipart upload: aws s3 cp", raw)
        if raw:
            checks.append(("spool >= 0.9 x raw multipart upload", raw["wall"] / sp["wall"] >= 0.9,
                           f"{raw['wall'] / sp['wall']:.2f}"))
        checks.append(("spool peak RSS < 100 MiB", sp["rss"] < 100, f"{sp['rss']:.1f} MiB"))

    if other.get("wan.link"):
        rate, delay_ms = other["wan.link"][0]
        mbs = rate / 1e6
        w(f"-- wan: through a link of {mbs:.0f} MB/s per connection and +{delay_ms:.0f} ms per request, onto tmpfs")
        big = other.get("size.large", [[0]])[0][0]
        ftl_, untar = stat("wan.large.ftl"), stat("wan.large.untar")
        aws, rcl, curl = stat("wan.large.aws"), stat("wan.large.rclone"), stat("wan.large.curl")
        if ftl_ and untar:
            ref = max(big / (8 * rate), untar["wall"])
            peers = [p for p in (aws, rcl) if p]
            best = min(p["wall"] for p in peers) if peers else float("nan")
            w(f"   one package, one {big / 1e6:.0f} MB .tar.zst (mixed 1-16 MiB files, half incompressible)")
            row("ftl sync", ftl_, f"{ftl_['wall'] / ref:.2f} x reference; best peer / ftl = {best / ftl_['wall']:.2f}")
            row("peer A: aws s3 cp + tar --zstd -xf", aws)
            row("peer B: rclone copyto + tar --zstd -xf", rcl)
            row("one stream: curl | tar --zstd -xf -", curl)
            row("GNU tar --zstd -xf from page cache", untar)
            w(f"{'reference = max(size / (8 x rate), untar)':<52} {ref:>9.2f}")
            checks.append(("wan, large package: >= 1.5x faster than the best peer", best / ftl_["wall"] >= 1.5,
                           f"{best / ftl_['wall']:.2f}x"))
            checks.append(("wan, large package: <= 1.3 x reference", ftl_["wall"] <= 1.3 * ref,
                           f"{ftl_['wall'] / ref:.2f}"))
            checks.append(("wan, large package: peak RSS <= 96 MiB", ftl_["rss"] <= 96, f"{ftl_['rss']:.1f} MiB"))
        sy = stat("wan.sync.ftl")
        if sy:
            sa, sr = stat("wan.sync.aws"), stat("wan.sync.rclone")
            peers = [p for p in (sa, sr) if p]
            best = min(p["wall"] for p in peers) if peers else float("nan")
            w("   sync, 4 packages x ~30 MB .tar.zst (~3,000 files each)")
            row("ftl sync", sy, f"best peer / ftl = {best / sy['wall']:.2f}")
            row("peer A: aws s3 cp + tar --zstd -xf, 4 at a time", sa)
            row("peer B: rclone copy + tar --zstd -xf, 4 at a time", sr)
            checks.append(("wan, 4 x 3,000 files: faster than both peers", sy["wall"] < best,
                           f"{best / sy['wall']:.2f}x"))
        if other.get("wan.noop"):
            runs = [r[0] / 1000 for r in other["wan.noop"]]
            ms = median(runs)
            trips = ms / delay_ms
            w(f"{'   no-op sync of 20 packages up to date':<52} {ms / 1000:>9.3f}  = {trips:.1f} round trips"
              f" (min-max {min(runs):.0f}-{max(runs):.0f} ms)")
            checks.append(("wan, no-op sync of 20 packages: <= 3 round trips", trips <= 3, f"{trips:.1f}"))
        sp, raw = stat("wan.spool.ftl"), stat("wan.spool.aws")
        if sp and raw:
            w(f"   spool of the {big / 1e6:.0f} MB file (uploads are not paced: the delay only)")
            row("ftl spool", sp, f"{sp['wall'] / raw['wall']:.2f} x aws")
            row("aws s3 cp (multipart upload)", raw)
            checks.append(("wan, spool: <= 1.2 x aws s3 cp", sp["wall"] <= 1.2 * raw["wall"],
                           f"{sp['wall'] / raw['wall']:.2f}"))

    w("")
    w("targets:")
    for label, ok, value in checks:
        w(f"  [{'ok' if ok else 'MISSED'}] {label}: {value}")
    w("")
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    w(f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}")
    w("load averages (1/5/15 min): " + "; ".join(f"{k} {v}" for k, v in loads))
    if ftl:
        try:
            v = subprocess.run([ftl, "--version"], capture_output=True, text=True).stdout.strip()
            w(f"binary: {v}, runs per case: {max((s['n'] for s in map(stat, timed)), default=0)}")
        except OSError:
            pass
    print("\n".join(out))


if __name__ == "__main__":
    main()
