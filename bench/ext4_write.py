#!/usr/bin/env python3
"""Issue 5 benchmark: writing inside an ext4 image, against `debugfs -w` in the same run.

1. Replace a 100 MiB file (rm + write in debugfs; one write_file through our writer).
2. Create 1,000 small files in one directory, then remove them.
Both tools run one process over the same script (debugfs -w -f SCRIPT; our
fs/examples/ext4_script.rs through an overlay committed at the end), on fresh copies of
the same image (the copy not timed), fastest of three. Prints the times and debugfs/ours (>1: we are faster).

Usage: bench/ext4_write.py [--size-mib 100] [--files 1000]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, measure, table  # noqa: E402

EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "ext4_script")


def timed(image, work, cmd, n=3):
    """Fastest of n runs of cmd, each on a fresh copy of image (the copy is not timed)."""
    best = None
    for _ in range(n):
        shutil.copyfile(image, work)
        subprocess.run(["sync"])
        t, _ = measure(cmd)
        best = t if best is None else min(best, t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--files", type=int, default=1000)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "transplant-fs",
                    "--example", "ext4_script"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        src = os.path.join(d, "src")
        os.makedirs(os.path.join(src, "dir"))
        with open(os.path.join(src, "big"), "wb") as f:
            f.write(os.urandom(1 << 20) * a.size_mib)
        base = os.path.join(d, "base.img")
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", src, base,
                        f"{a.size_mib * 3 + 64}M"], check=True, stdout=subprocess.DEVNULL)
        new_big = os.path.join(d, "new_big")
        with open(new_big, "wb") as f:
            f.write(os.urandom(1 << 20) * a.size_mib)
        small = []
        for i in range(a.files):
            p = os.path.join(d, f"s{i}")
            with open(p, "wb") as f:
                f.write(os.urandom(200 + i % 3000))
            small.append(p)
        work = os.path.join(d, "work.img")

        def fresh():
            shutil.copyfile(base, work)

        scripts = {
            f"replace a {a.size_mib} MiB file": (
                ["rm /big", f"write {new_big} /big"], [f"write {new_big} /big"]),
            f"create {a.files} small files": (
                [f"write {p} /dir/f{i}" for i, p in enumerate(small)],
                [f"write {p} /dir/f{i}" for i, p in enumerate(small)]),
        }
        for name, (dbg, ours) in scripts.items():
            sd = os.path.join(d, "dbg.script")
            so = os.path.join(d, "ours.script")
            with open(sd, "w") as f:
                f.write("\n".join(dbg) + "\n")
            with open(so, "w") as f:
                f.write("\n".join(ours) + "\n")
            t_dbg = timed(base, work, ["debugfs", "-w", "-f", sd, work])
            t_ours = timed(base, work, [EXAMPLE, work, so])
            # Check both end clean.
            fresh()
            subprocess.run([EXAMPLE, work, so], check=True)
            subprocess.run(["e2fsck", "-fn", work], check=True, stdout=subprocess.DEVNULL)
            rows.append((name, f"{t_dbg:.2f}s", f"{t_ours:.2f}s", f"{t_dbg / t_ours:.2f}"))
        # Removing the small files: from an image where they exist.
        fresh()
        sc = os.path.join(d, "create.script")
        with open(sc, "w") as f:
            f.write("\n".join(f"write {p} /dir/f{i}" for i, p in enumerate(small)) + "\n")
        subprocess.run([EXAMPLE, work, sc], check=True)
        with_files = os.path.join(d, "with_files.img")
        shutil.copyfile(work, with_files)
        sr = os.path.join(d, "rm.script")
        with open(sr, "w") as f:
            f.write("\n".join(f"rm /dir/f{i}" for i in range(a.files)) + "\n")
        t_dbg = timed(with_files, work, ["debugfs", "-w", "-f", sr, work])
        t_ours = timed(with_files, work, [EXAMPLE, work, sr])
        rows.append((f"remove {a.files} small files", f"{t_dbg:.2f}s", f"{t_ours:.2f}s",
                     f"{t_dbg / t_ours:.2f}"))
    table(rows, ("operation", "debugfs -w", "transplant", "ratio"))


if __name__ == "__main__":
    main()
