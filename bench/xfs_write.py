#!/usr/bin/env python3
"""Issue 8 benchmark: replacing a 60 MiB file (an initramfs) inside an XFS image, against
the kernel in the same run: loop mount, `cp` over the file, `sync`, unmount (timed from
the mount to the end of the unmount), and `transplant write IMAGE:/PATH < DATA` (raw
image changed in place). Each on a fresh copy of the same image (the copy not timed),
fastest of three; both results are checked with `xfs_repair -n` and read back by the
kernel. Prints the times and kernel/ours (>1: we are faster). Needs root.

Usage: bench/xfs_write.py [--size-mib 60] [--also OTHER_TRANSPLANT_BINARY]
(--also times a second build the same way in the same run, e.g. one from before a change:
on a shared machine only ratios taken together compare.)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TRANSPLANT, build_release, measure, table  # noqa: E402

ENV = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")


def sh(*a, **kw):
    subprocess.run(a, check=True, env=ENV, **kw)


def check(work, mnt, data):
    out = subprocess.run(["xfs_repair", "-n", "-f", work], capture_output=True, text=True)
    if out.returncode != 0 or "would" in out.stdout or "counted" in out.stdout:
        sys.exit(f"xfs_repair -n found problems:\n{out.stdout}")
    sh("mount", "-o", "loop,ro", work, mnt)
    try:
        sh("cmp", "-s", os.path.join(mnt, "initramfs.img"), data)
    finally:
        sh("umount", mnt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=60)
    ap.add_argument("--also", help="another transplant binary to time alongside")
    a = ap.parse_args()
    build_release()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        base = os.path.join(d, "base.img")
        with open(base, "wb") as f:
            f.truncate((a.size_mib * 3 + 300) << 20)
        sh("mkfs.xfs", "-q", "-f", base)
        mnt = os.path.join(d, "mnt")
        os.makedirs(mnt)
        sh("mount", "-o", "loop", base, mnt)
        os.makedirs(os.path.join(mnt, "etc"))
        with open(os.path.join(mnt, "etc", "fstab"), "w") as f:
            f.write("/dev/sda2 / xfs defaults 0 0\n")
        with open(os.path.join(mnt, "etc", "os-release"), "w") as f:
            f.write("ID=rocky\nVERSION_ID=9.4\n")
        with open(os.path.join(mnt, "initramfs.img"), "wb") as f:
            f.write(os.urandom(a.size_mib << 20))
        sh("umount", mnt)
        data = os.path.join(d, "new.img")
        with open(data, "wb") as f:
            f.write(os.urandom(a.size_mib << 20))
        work = os.path.join(d, "work.img")
        best_k = best_t = None
        for _ in range(3):
            shutil.copyfile(base, work)
            sh("sync")
            t, _ = measure(["sh", "-c", 'mount -o loop "$1" "$2" && cp "$3" "$2/initramfs.img" '
                            '&& sync && umount "$2"', "sh", work, mnt, data])
            best_k = t if best_k is None else min(best_k, t)
        check(work, mnt, data)
        rows = []
        for binary in [TRANSPLANT] + ([a.also] if a.also else []):
            best_t = None
            for _ in range(3):
                shutil.copyfile(base, work)
                sh("sync")
                with open(data, "rb") as stdin:
                    t, _ = measure([binary, "write", f"{work}:/initramfs.img"], stdin=stdin)
                best_t = t if best_t is None else min(best_t, t)
            check(work, mnt, data)
            name = f"replace a {a.size_mib} MiB file" + ("" if binary == TRANSPLANT else f" ({binary})")
            rows.append((name, f"{best_k:.3f}s", f"{best_t:.3f}s", f"{best_k / best_t:.2f}"))
        table(rows, ("operation", "kernel (mount, cp, sync, umount)", "transplant write", "ratio"))


if __name__ == "__main__":
    main()
