#!/usr/bin/env python3
"""Seeds for the `fat` fuzz target: small mkfs.fat images (FAT12, FAT16, FAT32) filled by
mmd/mcopy with an ESP's layout, long and lower-case names and a directory of several
clusters, each cut to its non-zero start (at most 1 MiB), as the target pads it with
zeroes. Needs dosfstools and mtools. Usage: python3 fuzz/fat_seeds.py [OUT_DIR]"""
import os, subprocess, sys, tempfile

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fat")
ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")


def sh(*a):
    subprocess.run(a, check=True, env=ENV, stdout=subprocess.DEVNULL)


os.makedirs(OUT, exist_ok=True)
with tempfile.TemporaryDirectory() as t:
    src = os.path.join(t, "src")
    os.makedirs(f"{src}/EFI/BOOT")
    os.makedirs(f"{src}/EFI/redhat")
    os.makedirs(f"{src}/many")
    open(f"{src}/EFI/BOOT/BOOTX64.EFI", "wb").write(b"MZ" * 700)
    open(f"{src}/EFI/redhat/grubx64.efi", "wb").write(b"grub" * 300)
    open(f"{src}/EFI/redhat/shimx64-redhat.efi", "wb").write(b"shim" * 300)
    open(f"{src}/EFI/redhat/grubenv", "wb").write(b"# GRUB Environment Block\n".ljust(1024, b"#"))
    for k in range(40):
        open(f"{src}/many/a long entry name {k:03}.conf", "w").write(f"{k}\n")
    for fat, kib, extra in [("12", 1024, []), ("16", 4096, ["-s", "1"]), ("32", 34000, ["-s", "1", "-f", "1", "-R", "8"])]:
        img = os.path.join(t, f"fat{fat}.img")
        sh("mkfs.fat", "-C", "-F", fat, *extra, "-n", "SEED", img, str(kib))
        sh("mcopy", "-s", "-i", img, f"{src}/EFI", f"{src}/many", "::/")
        data = open(img, "rb").read()[: 1 << 20].rstrip(b"\0")
        open(os.path.join(OUT, f"fat{fat}"), "wb").write(data)
        print(f"fat{fat}: {len(data)} bytes")
