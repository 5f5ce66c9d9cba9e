#!/usr/bin/env python3
"""Deterministic package trees for the benchmarks: mixed, realistic content.

Usage: workload.py DEST_DIR SEED [FILES] [SCALE]

Writes about FILES files (default 3000) in a tree of nested directories:
- ~60 % text-like (source code, HTML, JSON, CSS, Markdown), compressing ~3-5x
  with gzip;
- ~25 % incompressible binary (images, fonts, already-compressed data);
- ~15 % compressible binary (object code, bytecode: random words and zero runs,
  ~2x).
Sizes are log-normal (many small files, a few large ones), capped. SCALE
multiplies every size; the default gives a ~30 MB .tar.gz of ~65 MB of files.
The same SEED gives the same bytes.
"""

import os
import random
import sys

WORDS = (
    "the and for return if else while def class import from self none true false "
    "const let var function async await yield static public private void int char "
    "struct impl match use mod pub fn loop break continue string list dict map set "
    "value key index count total result error data buffer stream file path name id "
    "config options request response handler client server user session token cache "
    "render component props state model view controller service module package test "
    "assert expect should describe width height color margin padding border display "
    "flex grid position absolute relative font size weight line text align center "
).split()
IDENT_PARTS = WORDS + [w.capitalize() for w in WORDS]


def make_line_pool(rng, n):
    """Lines that look like code / markup, reused across files like real code."""
    pool = []
    for _ in range(n):
        indent = " " * (4 * rng.randrange(0, 5))
        kind = rng.random()
        words = [rng.choice(IDENT_PARTS) for _ in range(rng.randrange(3, 10))]
        if kind < 0.35:
            ident = "_".join(words[:2])
            line = f"{indent}{ident} = {rng.choice(words)}({', '.join(words[2:])})"
        elif kind < 0.55:
            line = f'{indent}"{words[0]}": "{" ".join(words[1:])}",'
        elif kind < 0.70:
            line = f"{indent}<div class=\"{words[0]}-{words[1]}\">{' '.join(words[2:])}</div>"
        elif kind < 0.80:
            line = f"{indent}.{words[0]}-{words[1]} {{ {words[2]}: {rng.randrange(0, 999)}px; }}"
        elif kind < 0.90:
            line = f"{indent}// {' '.join(words)} {rng.randrange(0, 1 << 20):x}"
        else:
            line = f"{indent}if ({words[0]} == {rng.randrange(0, 10000)}) {{ {words[1]}.{words[2]}(); }}"
        pool.append(line)
    return pool


def lognormal_size(rng, median, sigma, cap):
    import math

    return max(1, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def main():
    dest = sys.argv[1]
    seed = int(sys.argv[2])
    files = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    scale = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    rng = random.Random(seed)
    pool = make_line_pool(rng, 20000)

    # A tree of ~files/20 directories, up to 4 deep.
    dirs = [""]
    for i in range(max(1, files // 20)):
        parent = rng.choice(dirs)
        if parent.count("/") >= 4:
            parent = ""
        dirs.append(f"{parent}{rng.choice(WORDS)}{i}/")
    for d in dirs[1:]:
        os.makedirs(os.path.join(dest, d), exist_ok=True)

    text_ext = ["js", "py", "html", "json", "css", "md", "ts", "rs"]
    for i in range(files):
        d = rng.choice(dirs)
        r = rng.random()
        if r < 0.60:
            ext = rng.choice(text_ext)
            size = int(lognormal_size(rng, 9000, 1.1, 400_000) * scale)
            out = []
            n = 0
            while n < size:
                line = rng.choice(pool)
                out.append(line)
                n += len(line) + 1
            data = ("\n".join(out) + "\n").encode()[:size]
        elif r < 0.85:
            ext = rng.choice(["png", "jpg", "woff2", "gz"])
            size = int(lognormal_size(rng, 11000, 1.1, 2_000_000) * scale)
            data = rng.randbytes(size)
        else:
            ext = rng.choice(["so", "pyc", "wasm", "bin"])
            size = int(lognormal_size(rng, 14000, 1.1, 1_000_000) * scale)
            parts = []
            n = 0
            while n < size:
                k = rng.randrange(8, 64)
                parts.append(rng.randbytes(k))
                z = rng.randrange(0, 48)
                parts.append(b"\0" * z)
                n += k + z
            data = b"".join(parts)[:size]
        with open(os.path.join(dest, f"{d}f{i}.{ext}"), "wb") as f:
            f.write(data)
        # A few executables, like real packages.
        if ext in ("py", "so") and rng.random() < 0.2:
            os.chmod(os.path.join(dest, f"{d}f{i}.{ext}"), 0o755)


if __name__ == "__main__":
    main()
