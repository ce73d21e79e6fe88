#!/usr/bin/env python3
"""Initramfs rewrite benchmark: inject 5 drivers (virtio_pci, virtio_blk, virtio_scsi,
sd_mod, virtio_net, with their dependencies) into a large initramfs, with each
compressor, against the equivalent shell pipeline:

    DECOMPRESS < in | cpio -id; cp the modules; depmod -b; append conf/modules;
    find . | cpio -o -H newc | COMPRESS > out

Both sides use the same compressor settings and all cores where the compressor can
(xz -T0 / liblzma MT, zstd -T0 / zstdmt, lz4 legacy blocks in parallel here; gzip, lzma
and bzip2 are single-threaded on both sides). The input is an initramfs-tools image of
Debian's cloud kernel (fixtures/initramfs/build.sh) with the kernel's whole module tree
added, minus the drivers to inject: about 110 MiB unpacked.

Usage: bench/initramfs.py [--workdir DIR] [--only gzip,zstd,...]
Prints wall time, ratio (pipeline / transplant, above 1 = transplant faster) and peak RSS.
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, best_of, table  # noqa: E402

WANTED = "virtio_pci,virtio_blk,virtio_scsi,sd_mod,virtio_net"
KINDS = [
    # name, compress (the pipeline's and the input's), decompress
    ("gzip", "gzip -6 -n", "gzip -dc"),
    ("xz", "xz -6 --check=crc32 -T0", "xz -dc"),
    ("zstd", "zstd -q -9 -T0", "zstd -qdc"),
    ("lz4", "lz4 -q -1 -l", "lz4 -qdc"),
    ("lzma", "lzma -6", "lzma -dc"),
    ("bzip2", "bzip2 -9", "bzip2 -dc"),
]
EXCLUDE = ["kernel/drivers/virtio", "kernel/drivers/block/virtio_blk.ko",
           "kernel/drivers/scsi", "kernel/drivers/net/virtio_net.ko",
           "kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko"]


def sh(cmd, **kw):
    subprocess.run(["bash", "-c", "set -euo pipefail; " + cmd], check=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "out", "initramfs"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    w = os.path.abspath(args.workdir)
    os.makedirs(w, exist_ok=True)
    cache = os.path.join(w, "fixtures")
    build = os.path.join(ROOT, "fixtures", "initramfs", "build.sh")
    kver = subprocess.check_output(["bash", build, "kernel", cache], text=True).strip()
    guest = os.path.join(cache, "kernel")
    base = os.path.join(cache, "base.gz")
    if not os.path.exists(base):
        sh(f"bash {build} mkinitramfs {cache} {base} gzip")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "transplant-rewrite",
                    "--example", "initramfs_inject"], cwd=ROOT, check=True)
    tool = os.path.join(ROOT, "target", "release", "examples", "initramfs_inject")

    # The big tree: the image plus every module of the kernel but the ones to inject.
    tree = os.path.join(w, "tree")
    if not os.path.isdir(tree):
        os.makedirs(tree)
        sh(f"cd {tree} && gzip -dc < {base} | cpio -id --quiet")
        mods = f"usr/lib/modules/{kver}"
        excl = " ".join(f"--exclude={e}" for e in EXCLUDE)
        sh(f"cd {guest}/lib/modules/{kver} && tar cf - {excl} kernel | tar xf - -C {tree}/{mods}")
        sh(f"depmod -b {tree} {kver}")
    size = int(subprocess.check_output(["du", "-sb", tree], text=True).split()[0])
    print(f"input tree: {size / 2**20:.0f} MiB unpacked, kernel {kver}")

    rows = []
    only = set(filter(None, args.only.split(",")))
    for name, comp, decomp in KINDS:
        if only and name not in only:
            continue
        img = os.path.join(w, f"in.{name}")
        if not os.path.exists(img):
            sh(f"cd {tree} && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet | {comp} > {img}")
        out_t = os.path.join(w, f"out-t.{name}")
        out_p = os.path.join(w, f"out-p.{name}")
        work = os.path.join(w, "pipe")
        ours = best_of(2, [tool, img, out_t, guest, kver, WANTED])
        # The pipeline: the module files it copies are the ones transplant found.
        mods = f"usr/lib/modules/{kver}"
        deps = ("virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci "
                "virtio_blk scsi_common scsi_mod virtio_scsi sd_mod failover net_failover "
                "virtio_net")
        script = (
            f"rm -rf {work} && mkdir {work} && cd {work} && {decomp} < {img} | cpio -id --quiet && "
            f"for m in {deps}; do p=$(modinfo -b {guest} -k {kver} -F filename $m); "
            f"r=${{p#{guest}/lib/modules/{kver}/}}; mkdir -p {mods}/$(dirname $r); "
            f"cp $p {mods}/$r; done && depmod -b {work} {kver} && "
            f"printf '%s\\n' {WANTED.replace(',', ' ')} >> conf/modules && "
            f"find . -mindepth 1 | cpio -o -H newc --quiet | {comp} > {out_p}"
        )
        theirs = best_of(2, ["bash", "-c", "set -euo pipefail; " + script])
        shutil.rmtree(work, ignore_errors=True)
        # Same listing either way.
        lt = subprocess.check_output(["bash", "-c", f"lsinitramfs {out_t} | LC_ALL=C sort"])
        lp = subprocess.check_output(["bash", "-c", f"lsinitramfs {out_p} | LC_ALL=C sort"])
        same = "yes" if lt == lp else f"no ({len(lt.splitlines())} vs {len(lp.splitlines())})"
        rows.append([name, f"{os.path.getsize(img) / 2**20:.1f}", f"{ours[0]:.2f}",
                     f"{theirs[0]:.2f}", f"{theirs[0] / ours[0]:.2f}", f"{ours[1]:.0f}",
                     f"{theirs[1]:.0f}", f"{os.path.getsize(out_t) / 2**20:.1f}",
                     f"{os.path.getsize(out_p) / 2**20:.1f}", same])
    table(rows, ["kind", "in MiB", "transplant s", "pipeline s", "ratio", "t RSS MiB",
                 "p RSS MiB", "t out MiB", "p out MiB", "same listing"])


if __name__ == "__main__":
    main()
