#!/usr/bin/env python3
"""Issue 8 benchmark: creating a file in a large XFS directory, against the kernel in
the same run. The image holds a 300-entry leaf directory (/etc) and a 5000-entry node
directory of long names (/usr/lib/modules/k/kernel), filled on a loop mount. Kernel:
loop mount, write the file, sync, unmount (timed from the mount to the end of the
unmount). Ours: `transplant write IMAGE:/PATH < DATA` (raw image changed in place).
Each on a fresh copy of the same image (the copy not timed), fastest of three; both
results are checked with `xfs_repair -n` and read back by the kernel. Prints the times
and kernel/ours (>1: we are faster). Needs root.

Usage: bench/xfs_dir.py
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TRANSPLANT, build_release, measure, table  # noqa: E402

ENV = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")
DATA = b"add_drivers+=\" virtio_blk virtio_scsi \"\n"


def sh(*a, **kw):
    subprocess.run(a, check=True, env=ENV, **kw)


def check(work, mnt, path):
    out = subprocess.run(["xfs_repair", "-n", "-f", work], capture_output=True, text=True)
    if out.returncode != 0 or "would" in out.stdout or "counted" in out.stdout:
        sys.exit(f"xfs_repair -n found problems:\n{out.stdout}")
    sh("mount", "-o", "loop,ro", work, mnt)
    try:
        with open(mnt + path, "rb") as f:
            if f.read() != DATA:
                sys.exit(f"{path}: the kernel reads other bytes")
    finally:
        sh("umount", mnt)


def main():
    build_release()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        base = os.path.join(d, "base.img")
        with open(base, "wb") as f:
            f.truncate(400 << 20)
        sh("mkfs.xfs", "-q", "-f", base)
        mnt = os.path.join(d, "mnt")
        os.makedirs(mnt)
        sh("mount", "-o", "loop", base, mnt)
        dirs = [("/etc", 300, "conf-{:04}"),
                ("/usr/lib/modules/k/kernel", 5000,
                 "module-{:05}-with-a-rather-long-file-name.ko.xz")]
        for path, n, fmt in dirs:
            os.makedirs(mnt + path)
            for i in range(n):
                open(os.path.join(mnt + path, fmt.format(i)), "w").close()
        # What makes it a guest's root for `transplant write`.
        with open(os.path.join(mnt, "etc", "fstab"), "w") as f:
            f.write("/dev/sda2 / xfs defaults 0 0\n")
        with open(os.path.join(mnt, "etc", "os-release"), "w") as f:
            f.write("ID=rocky\nVERSION_ID=9.4\n")
        sh("umount", mnt)
        src = os.path.join(d, "data")
        with open(src, "wb") as f:
            f.write(DATA)
        work = os.path.join(d, "work.img")
        rows = []
        for path, n, _ in dirs:
            new = path + "/transplant-new.conf"
            best_k = best_t = None
            for _ in range(3):
                shutil.copyfile(base, work)
                sh("sync")
                t, _ = measure(["sh", "-c", 'mount -o loop "$1" "$2" && cp "$3" "$2$4" '
                                '&& sync && umount "$2"', "sh", work, mnt, src, new])
                best_k = t if best_k is None else min(best_k, t)
            check(work, mnt, new)
            for _ in range(3):
                shutil.copyfile(base, work)
                sh("sync")
                with open(src, "rb") as stdin:
                    t, _ = measure([TRANSPLANT, "write", f"{work}:{new}"], stdin=stdin)
                best_t = t if best_t is None else min(best_t, t)
            check(work, mnt, new)
            rows.append((f"create a file in a {n}-entry directory", f"{best_k:.3f}s",
                         f"{best_t:.3f}s", f"{best_k / best_t:.2f}"))
        table(rows, ("operation", "kernel (mount, cp, sync, umount)", "transplant write",
                     "ratio"))


if __name__ == "__main__":
    main()
