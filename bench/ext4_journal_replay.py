#!/usr/bin/env python3
"""Journal replay: `transplant write IMG:/etc/hostname` on an ext4 filesystem whose journal
needs recovery (replay, then the write) against `e2fsck -E journal_only -y` (e2fsprogs'
replay alone, the same kernel recovery code), each on its own fresh copy of the image, in
one run: wall and CPU time, peak RSS, and the ratio (peer / transplant, above 1 =
transplant faster).

The dirty journal is the kernel's: a loop mount (needs root), many small files written
and a directory tree made, one fsync (which commits everything: many blocks logged),
then `xfs_io -x -c 'shutdown -f'` (commit, then nothing more written) and umount.

Usage: bench/ext4_journal_replay.py [--size-mib 2048] [--journal-mib 256]
                                    [--files 40000] [--debug] [--workdir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, build_release, measure_cpu, table, warm  # noqa: E402


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def dirty_image(path, size_mib, journal_mib, files):
    sh(f"mkfs.ext4 -q -F -t ext4 -J size={journal_mib} {path} {size_mib}M")
    mnt = path + ".mnt"
    os.makedirs(mnt, exist_ok=True)
    sh(f"mount -o loop,commit=300 {path} {mnt}")
    try:
        os.makedirs(f"{mnt}/etc")
        with open(f"{mnt}/etc/fstab", "w") as f:
            f.write("/dev/sda1 / ext4 defaults 0 1\n")
        with open(f"{mnt}/etc/os-release", "w") as f:
            f.write("ID=debian\n")
        with open(f"{mnt}/etc/hostname", "w") as f:
            f.write("dirty\n")
        for d in range(files // 1000 + 1):
            os.makedirs(f"{mnt}/d{d}")
            for i in range(min(1000, files - d * 1000)):
                with open(f"{mnt}/d{d}/f{i}", "w") as f:
                    f.write(f"{d}/{i}\n")
        sh(f"xfs_io -c fsync {mnt}/etc/hostname")
        sh(f"xfs_io -x -c 'shutdown -f' {mnt}")
    finally:
        sh(f"umount {mnt}")
    out = subprocess.run(["dumpe2fs", "-h", path], capture_output=True, text=True).stdout
    assert "needs_recovery" in out, out
    logged = subprocess.run(["debugfs", "-R", "logdump", path], capture_output=True,
                            text=True).stdout.count("descriptor block")
    return logged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--journal-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=40000)
    ap.add_argument("--debug", action="store_true", help="use target/debug (no release build)")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    exe = TRANSPLANT
    if a.debug:
        exe = os.path.join(ROOT, "target", "debug", "transplant")
    else:
        build_release()
    work = tempfile.mkdtemp(dir=a.workdir)
    try:
        img = os.path.join(work, "dirty.img")
        descriptors = dirty_image(img, a.size_mib, a.journal_mib, a.files)
        ours = os.path.join(work, "ours.img")
        peer = os.path.join(work, "peer.img")
        shutil.copyfile(img, ours)
        shutil.copyfile(img, peer)
        warm(img)
        t_peer = measure_cpu(["e2fsck", "-E", "journal_only", "-y", peer])
        with open(os.path.join(work, "hostname"), "wb") as f:
            f.write(b"replayed\n")
        with open(os.path.join(work, "hostname"), "rb") as stdin:
            t_ours = measure_cpu([exe, "write", f"{ours}:/etc/hostname"], stdin=stdin)
        sh(f"e2fsck -fn {ours} >/dev/null")
        label = "transplant write" + (" (debug build)" if a.debug else "")
        rows = [
            [label, f"{t_ours[0]:.2f}", f"{t_ours[2]:.2f}", f"{t_ours[1]:.0f}"],
            ["e2fsck -E journal_only", f"{t_peer[0]:.2f}", f"{t_peer[2]:.2f}", f"{t_peer[1]:.0f}"],
        ]
        print(f"{a.size_mib} MiB ext4, {a.journal_mib} MiB journal, {descriptors} descriptor "
              f"blocks logged ({a.files} files)")
        table(rows, ["tool", "wall s", "cpu s", "peak RSS MiB"])
        print(f"ratio (peer / transplant): wall {t_peer[0] / t_ours[0]:.2f}, "
              f"cpu {t_peer[2] / max(t_ours[2], 1e-3):.2f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
