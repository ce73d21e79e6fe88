#!/usr/bin/env python3
"""Seeds for the `xfs` fuzz target: small mkfs.xfs images (v5 defaults, 1 KiB blocks,
64 KiB directory blocks, reflink+rmapbt, v4 by protofile, a dirty log) filled with
every directory, fork, symlink and attribute form, each written as the target reads
it: records of a 4-byte big-endian block number and the 4 KiB block, non-zero blocks
only. Needs root (loop mounts). Usage: python3 fuzz/xfs_seeds.py [OUT_DIR]"""
import os, subprocess, sys, tempfile

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "xfs")
ENV = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")
B = 4096


def sh(*a, **kw):
    subprocess.run(a, check=True, env=ENV, **kw)


def fill(m, big):
    os.makedirs(f"{m}/etc")
    open(f"{m}/etc/fstab", "w").write("UUID=x / xfs defaults 0 0\n")
    sh("setfattr", "-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0", f"{m}/etc/fstab")
    for name, n in [("sf", 3), ("blk", 40), ("leaf", 300), ("node", 1200 if big else 0)]:
        os.makedirs(f"{m}/{name}")
        for k in range(n):
            open(f"{m}/{name}/entry-{k:05}", "w").close()  # no data blocks
    with open(f"{m}/frag", "wb") as f:
        for k in range(60):
            f.seek(k * 8192)
            f.write(bytes([k]) * 4096)
            f.flush()
            os.fsync(f.fileno())
    sh("cp", "--reflink=auto", f"{m}/frag", f"{m}/frag.clone")
    os.symlink("etc/fstab", f"{m}/short")
    os.symlink("/" + "x" * 900, f"{m}/long")
    open(f"{m}/attrs", "w").write("a")
    for k in range(30):
        os.setxattr(f"{m}/attrs", f"user.k{k}", b"v" * 50)
    os.setxattr(f"{m}/attrs", "user.remote", b"R" * 5000)


def log_range(img):
    """Byte range of the internal log (AG-encoded start made linear)."""
    out = subprocess.run(["xfs_db", "-r", "-c", "sb 0", "-c",
                          "print logstart logblocks agblocks agblklog blocksize", img],
                         check=True, capture_output=True, text=True).stdout
    v = {k.strip(): int(x) for k, x in (l.split("=") for l in out.splitlines())}
    ag, agb = v["logstart"] >> v["agblklog"], v["logstart"] & ((1 << v["agblklog"]) - 1)
    start = (ag * v["agblocks"] + agb) * v["blocksize"]
    return start, start + v["logblocks"] * v["blocksize"]


def encode(img, out, keep_log):
    """A clean log is left out: all zero, it reads as never written, so clean."""
    lo, hi = log_range(img)
    data = b""
    with open(img, "rb") as f:
        i = 0
        while True:
            blk = f.read(B)
            if not blk:
                break
            in_log = lo <= i * B < hi
            if blk.strip(b"\0") and (keep_log or not in_log):
                data += i.to_bytes(4, "big") + blk
            i += 1
    open(out, "wb").write(data)
    print(out, len(data))


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        img, m = f"{t}/x.img", f"{t}/m"
        os.makedirs(m)
        for name, opts, dirty in [
            ("v5", [], False),
            ("v5-1k", ["-b", "size=1024"], False),
            ("v5-dir64k", ["-n", "size=65536"], False),
            ("v5-reflink", ["-m", "reflink=1,rmapbt=1"], False),
            ("v5-dirty", [], True),
        ]:
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            sh("mkfs.xfs", "-q", "-f", *opts, img)
            sh("mount", "-o", "loop", img, m)
            try:
                fill(m, name == "v5")
                if dirty:
                    sh("xfs_io", "-x", "-c", "shutdown -f", m)
            finally:
                sh("umount", m)
            encode(img, f"{OUT}/{name}", dirty)
        src = f"{t}/src"
        os.makedirs(f"{src}/d")
        for k in range(200):
            open(f"{src}/d/f{k}", "w").write(str(k))
        proto = f"{t}/proto"
        open(proto, "w").write(
            f"x\n0 0\nd--755 0 0\n d d--755 0 0\n"
            + "".join(f"  f{k} ---644 0 0 {src}/d/f{k}\n" for k in range(200))
            + "  $\n l l--777 0 0 " + "/y" * 200 + "\n$\n")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        sh("mkfs.xfs", "-q", "-f", "-m", "crc=0", "-p", proto, img)
        encode(img, f"{OUT}/v4", True)


main()
