#!/usr/bin/env python3
"""Issue 2 benchmark: `qemu-img convert -O raw` against `transplant convert -O raw` on
the same multi-GiB inputs with realistic data (random, text-like, patterns, written
zeroes, holes), for each input format. Each timing is the best of two runs, each after a sync. Prints wall time, the ratio (qemu / transplant:
above 1 means transplant is faster) and the peak RSS of each.

transplant fsyncs its output before renaming it into place (an interrupted conversion
must never leave a half image under the final name); qemu-img convert does not sync by
default, leaving gigabytes of dirty page cache. The headline ratio therefore compares
with `qemu-img convert && sync --data OUT` (same durability); the ratio against plain
qemu-img is printed too.

Usage: bench/convert_raw.py [--size-gib N] [--workdir DIR] [--keep]
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, best_of, build_release, measure, table, warm  # noqa: E402

INPUTS = [
    # name, qemu-img convert options to make it from the raw data
    ("raw", None),
    ("qcow2", ["-O", "qcow2"]),
    ("qcow2 zlib", ["-c", "-O", "qcow2"]),
    ("qcow2 zstd", ["-c", "-O", "qcow2", "-o", "compression_type=zstd"]),
    ("vmdk monolithicSparse", ["-O", "vmdk", "-o", "subformat=monolithicSparse"]),
    ("vmdk streamOptimized", ["-O", "vmdk", "-o", "subformat=streamOptimized"]),
    ("vhdx dynamic", ["-O", "vhdx", "-o", "subformat=dynamic"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--keep", action="store_true", help="keep inputs for the next run")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    build_release()
    base = os.path.join(a.workdir, f"data-{a.size_gib}g.raw")
    if not os.path.exists(base):
        print(f"generating {a.size_gib} GiB of disk-like data...", flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "fixtures", "gen-data.py"),
                        str(a.size_gib * 1024), base, "7"], check=True)
    rows = []
    for name, opts in INPUTS:
        d = os.path.join(a.workdir, name.replace(" ", "-"))
        os.makedirs(d, exist_ok=True)
        src = base
        if opts is not None:
            src = os.path.join(d, "in.img")
            if not os.path.exists(src):
                print(f"making {name} input...", flush=True)
                subprocess.run(["qemu-img", "convert"] + opts + [base, src], check=True)
        q_out = os.path.join(d, "qemu.raw")
        t_out = os.path.join(d, "transplant.raw")
        for p in (q_out, t_out):
            if os.path.exists(p):
                os.remove(p)
        def rm(*paths):
            return lambda: [os.remove(p) for p in paths if os.path.exists(p)]

        warm(src)
        qt, qrss = best_of(2, ["qemu-img", "convert", "-O", "raw", src, q_out], rm(q_out))
        qst, _ = best_of(2, ["sh", "-c", 'qemu-img convert -O raw "$0" "$1" && sync --data "$1"',
                             src, q_out], rm(q_out))
        tt, trss = best_of(2, [TRANSPLANT, "convert", "-q", "-O", "raw", src, t_out], rm(t_out))
        # One more of each, kept, to compare the bytes.
        subprocess.run(["qemu-img", "convert", "-O", "raw", src, q_out], check=True)
        subprocess.run([TRANSPLANT, "convert", "-q", "-O", "raw", src, t_out], check=True)
        same = subprocess.run(["cmp", "-s", q_out, t_out]).returncode == 0
        rows.append([name, f"{qt:.2f}", f"{qst:.2f}", f"{tt:.2f}", f"{qst / tt:.2f}x",
                     f"{qt / tt:.2f}x", f"{qrss:.0f}", f"{trss:.0f}", "yes" if same else "NO"])
        os.remove(q_out)
        os.remove(t_out)
    print()
    print(f"convert -O raw, {a.size_gib} GiB virtual, {os.cpu_count()} cores")
    table(rows, ["input", "qemu-img s", "qemu-img+sync s", "transplant s",
                 "ratio vs +sync", "ratio vs plain", "qemu RSS MiB", "transplant RSS MiB",
                 "identical"])
    if not a.keep:
        shutil.rmtree(a.workdir)


if __name__ == "__main__":
    main()
