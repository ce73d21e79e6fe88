#!/usr/bin/env python3
"""FAT read and write against mtools (the peer that edits FAT images without mounting).

One GPT disk with a FAT32 partition made by mkfs.fat and filled by mcopy: /big (random
bytes) and /many (500 small files with long names). Both sides start with the image in
the page cache; each row is the best of three runs, and the image is restored between
write runs.

Rows:
- read /big: `transplant cat IMG@1:/big.bin` vs `mtype -i PART ::/big.bin`
- list /many: `transplant ls -l IMG@1:/many` vs `mdir -i PART ::/many`
- write a new file of the same size: `transplant write IMG@1:/new.bin` vs `mcopy`

mtools is given the partition as a byte offset (`-i IMG@@OFFSET`).
Usage: bench/fat.py [--big-mib 100]   (needs dosfstools, mtools, sfdisk)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TRANSPLANT, build_release, table, warm  # noqa: E402

ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")
OFF = 1 << 20


def sh(*a, **kw):
    subprocess.run(a, check=True, env=ENV, **kw)


def best(fn, n=3, reset=None):
    b = None
    for _ in range(n):
        if reset:
            reset()
        t = time.monotonic()
        fn()
        dt = time.monotonic() - t
        b = dt if b is None else min(b, dt)
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mib", type=int, default=100)
    a = ap.parse_args()
    build_release()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as d:
        part, disk, pristine = f"{d}/part.img", f"{d}/disk.img", f"{d}/pristine.img"
        size_mib = a.big_mib * 3 + 64
        sh("mkfs.fat", "-C", "-F", "32", part, str(size_mib * 1024), stdout=subprocess.DEVNULL)
        big = f"{d}/big.bin"
        with open(big, "wb") as f:
            f.write(os.urandom(a.big_mib << 20))
        os.makedirs(f"{d}/many")
        for k in range(500):
            open(f"{d}/many/a long file name number {k:04}.conf", "w").write(f"{k}\n")
        sh("mcopy", "-s", "-i", part, big, f"{d}/many", "::/")
        with open(disk, "wb") as f:
            f.truncate((size_mib + 2) << 20)
        subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk],
                       input=f"label: gpt\nstart=2048,size={size_mib}M,type=U\n".encode(), check=True)
        sh("dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc", "status=none")
        os.remove(part)
        shutil.copyfile(disk, pristine)
        warm(disk)
        mi = f"{disk}@@{OFF}"
        null = subprocess.DEVNULL
        rows = []

        def row(what, ours, theirs, reset=None):
            t = best(ours, reset=reset)
            m = best(theirs, reset=reset)
            rows.append((what, f"{t:.3f}", f"{m:.3f}", f"{m / t:.2f}x"))

        row(f"read a {a.big_mib} MiB file",
            lambda: sh(TRANSPLANT, "cat", f"{disk}@1:/big.bin", stdout=null),
            lambda: sh("mtype", "-i", mi, "::/big.bin", stdout=null))
        row("list 500 long names",
            lambda: sh(TRANSPLANT, "ls", "-l", f"{disk}@1:/many", stdout=null),
            lambda: sh("mdir", "-i", mi, "::/many", stdout=null))

        def reset():
            shutil.copyfile(pristine, disk)

        def ours_write():
            with open(big, "rb") as f:
                sh(TRANSPLANT, "write", f"{disk}@1:/new.bin", stdin=f, stdout=null)

        row(f"write a new {a.big_mib} MiB file", ours_write,
            lambda: sh("mcopy", "-i", mi, big, "::/new.bin"), reset=reset)
        table(rows, ("what", "transplant s", "mtools s", "mtools/transplant"))


if __name__ == "__main__":
    main()
