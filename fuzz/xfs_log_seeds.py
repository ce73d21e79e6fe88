#!/usr/bin/env python3
"""Seeds for the `xfs_log` fuzz target: small mkfs.xfs images (v5 defaults,
reflink+rmapbt, 256 KiB log buffers) changed on a loop mount and shut down with the log
flushed but the metadata not written back (`xfs_io -x -c 'shutdown -f'`), so the log
needs recovery; each written as the target reads it: records of a 4-byte big-endian
block number and the 4 KiB block, non-zero blocks only. Needs root (loop mounts).
Usage: python3 fuzz/xfs_log_seeds.py [OUT_DIR]"""
import os, subprocess, sys, tempfile

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "xfs_log")
ENV = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")
B = 4096


def sh(*a):
    subprocess.run(a, check=True, env=ENV)


def work(m):
    os.makedirs(f"{m}/d")
    for k in range(120):
        open(f"{m}/d/f{k}", "w").write(str(k))
    sh("sync")
    for k in range(0, 120, 3):
        os.rename(f"{m}/d/f{k}", f"{m}/d/g{k}")
    for k in range(1, 120, 3):
        os.unlink(f"{m}/d/f{k}")
    os.makedirs(f"{m}/new/deep")
    with open(f"{m}/new/frag", "wb") as f:
        for k in range(40):
            f.seek(k * 8192)
            f.write(bytes([k]) * 4096)
        os.fsync(f.fileno())
    os.symlink("../d/f2", f"{m}/new/link")
    os.setxattr(f"{m}/new/frag", "user.a", b"v" * 300)
    sh("xfs_io", "-x", "-c", "shutdown -f", m)


def empty_records(blk):
    """A block of the empty records mkfs fills the log with (zeros serve as well)."""
    return all(blk[o:o + 4] == b"\xfe\xed\xba\xbe" and blk[o + 12:o + 16] == bytes(4)
               for o in range(0, B, 512))


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        img, m = f"{t}/x.img", f"{t}/m"
        os.makedirs(m)
        for name, mkfs, mount in [
            ("v5", [], "rw"),
            ("v5-reflink", ["-m", "reflink=1,rmapbt=1"], "rw"),
            ("v5-logbsize256k", [], "logbsize=256k"),
        ]:
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            sh("mkfs.xfs", "-q", "-f", *mkfs, img)
            sh("mount", "-o", f"loop,{mount}", img, m)
            try:
                work(m)
            finally:
                sh("umount", m)
            data = b""
            with open(img, "rb") as f:
                i = 0
                while blk := f.read(B):
                    if blk.strip(b"\0") and not empty_records(blk):
                        data += i.to_bytes(4, "big") + blk
                    i += 1
            open(f"{OUT}/{name}", "wb").write(data)
            print(f"{OUT}/{name}", len(data))


main()
