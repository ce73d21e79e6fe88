#!/usr/bin/env python3
"""Issue 8 benchmark: XFS read against the kernel.

One raw image made by mkfs.xfs and filled on a loop mount: /etc (so inspection finds
a root), /many (10,000 files of 2 KiB, a node-form directory) and /big (a large file of
random bytes). The image file is read once first, so both sides start with it in the
page cache; the kernel side is a fresh read-only loop mount per run (its own inode and
page caches start empty, like ours).

Rows:
- list /many with owners and sizes: `transplant ls -l` vs mount + `ls -l` + umount
- read every file of /many: `transplant mount` (FUSE) + `tar -cf /dev/null` vs the
  kernel mount + `tar -cf /dev/null`
- read /big: `transplant cat IMG:/big` vs `cat MNT/big` on the kernel mount, and
  `xfs_io -c 'pread'`-free `xfs_db` has no bulk read, so it is not a peer here

Usage: sudo bench/xfs_read.py [--big-mib 1024]    (needs root, xfsprogs, fuse3)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TRANSPLANT, build_release, table, warm  # noqa: E402


def sh(*a):
    subprocess.run(a, check=True)


def timed(fn, n=3):
    best = None
    for _ in range(n):
        t = time.monotonic()
        fn()
        dt = time.monotonic() - t
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mib", type=int, default=1024)
    a = ap.parse_args()
    build_release()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as d:
        img, km, fm = f"{d}/x.img", f"{d}/k", f"{d}/f"
        os.mkdir(km)
        os.mkdir(fm)
        with open(img, "wb") as f:
            f.truncate((a.big_mib + 512) << 20)
        sh("mkfs.xfs", "-q", "-f", img)
        sh("mount", "-o", "loop", img, km)
        try:
            os.makedirs(f"{km}/etc")
            open(f"{km}/etc/fstab", "w").write("/dev/sda1 / xfs defaults 0 0\n")
            open(f"{km}/etc/os-release", "w").write("ID=rocky\n")
            os.makedirs(f"{km}/many")
            blob = os.urandom(2048)
            for k in range(10000):
                open(f"{km}/many/file-{k:05}", "wb").write(blob)
            with open(f"{km}/big", "wb") as f:
                for _ in range(a.big_mib):
                    f.write(os.urandom(1 << 20))
        finally:
            sh("umount", km)
        warm(img)
        null = subprocess.DEVNULL

        def kernel(cmd):
            def run():
                sh("mount", "-o", "loop,ro", img, km)
                try:
                    subprocess.run(cmd, check=True, stdout=null, shell=True)
                finally:
                    sh("umount", km)
            return run

        def fuse(cmd):
            def run():
                sh(TRANSPLANT, "mount", img, fm)
                try:
                    subprocess.run(cmd, check=True, stdout=null, shell=True)
                finally:
                    sh("fusermount3", "-u", fm)
            return run

        rows = []
        for what, ours, theirs in [
            ("ls -l /many (10,000 entries)",
             lambda: subprocess.run([TRANSPLANT, "ls", "-l", f"{img}:/many"], check=True, stdout=null),
             kernel(f"ls -l {km}/many")),
            ("read all of /many (FUSE vs kernel)",
             fuse(f"tar -cf /dev/null -C {fm} many"),
             kernel(f"tar -cf /dev/null -C {km} many")),
            (f"read /big ({a.big_mib} MiB)",
             lambda: subprocess.run([TRANSPLANT, "cat", f"{img}:/big"], check=True, stdout=null),
             kernel(f"cat {km}/big")),
            (f"read /big through FUSE",
             fuse(f"cat {fm}/big"),
             kernel(f"cat {km}/big")),
        ]:
            t_ours = timed(ours)
            t_k = timed(theirs)
            rows.append((what, f"{t_ours:.3f}", f"{t_k:.3f}", f"{t_k / t_ours:.2f}"))
        table(rows, ("task", "transplant s", "kernel s", "ratio (kernel/ours, >1 = we are faster)"))


main()
