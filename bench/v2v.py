#!/usr/bin/env python3
"""Issue 6 benchmark: `transplant convert --to kvm` against `virt-v2v -i disk IN -o local
-of qcow2` (libguestfs backend direct) on the same guest, in one run: wall time and peak
RSS, and the ratio (virt-v2v / transplant: above 1 = transplant faster).

The guest is the boot tests' VMware-era Debian 12 (fixtures/out/guest-debian/vmware.qcow2,
built by `fixtures/build.sh guest-debian`: a real debootstrap with Debian's kernel, an
initramfs made by its own mkinitramfs without virtio, /dev/sda names, a udev MAC binding).
Rows: transplant writing the whole converted disk (qcow2), transplant writing a thin
overlay over the input (--backing), and virt-v2v. virt-v2v boots the libguestfs appliance
(forced to TCG: KVM in this workplace's VMs does not run guests) and runs the guest's own
update-initramfs inside it. The fixture's GRUB boot code is installed without the
grub2-common package, whose grub-mkconfig virt-v2v insists on running: stand-ins that
succeed are added to virt-v2v's copy of the input (with `transplant write`, not timed).

Usage: bench/v2v.py [--image PATH] [--workdir DIR] [--keep]
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, build_release, measure, table, warm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=os.path.join(ROOT, "fixtures", "out", "guest-debian",
                                                    "vmware.qcow2"))
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "out", "v2v"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.image):
        subprocess.run([os.path.join(ROOT, "fixtures", "build.sh"), "guest-debian"], check=True)
    if shutil.which("virt-v2v") is None:
        sys.exit("virt-v2v is not installed (apt-get install virt-v2v)")
    build_release()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    src = os.path.join(a.workdir, "web01.qcow2")
    shutil.copy(a.image, src)
    warm(src)
    rows = []
    full = os.path.join(a.workdir, "full.qcow2")
    t, rss = measure([TRANSPLANT, "convert", src, full, "-O", "qcow2", "--to", "kvm", "-q"],
                     env=dict(os.environ))
    rows.append(("transplant convert --to kvm (full qcow2)", t, rss,
                 os.path.getsize(full)))
    thin = os.path.join(a.workdir, "thin.qcow2")
    t2, rss2 = measure([TRANSPLANT, "convert", src, thin, "-O", "qcow2", "--to", "kvm",
                        "--backing", src, "-q"])
    rows.append(("transplant convert --to kvm --backing (overlay)", t2, rss2,
                 os.path.getsize(thin)))
    out = os.path.join(a.workdir, "v2v")
    os.makedirs(out)
    # virt-v2v insists on running the guest's grub-mkconfig; the fixture installs GRUB's
    # boot code by hand (grub-mkimage), without the grub2-common package. Stand-ins that
    # succeed are written into virt-v2v's own copy with `transplant write` (not timed).
    v2v_src = os.path.join(a.workdir, "web01-v2v.qcow2")
    shutil.copy(a.image, v2v_src)
    for tool in ["grub-mkconfig", "grub-probe", "update-grub"]:
        subprocess.run([TRANSPLANT, "write", f"{v2v_src}:/usr/sbin/{tool}", "--mode", "755"],
                       input=b"#!/bin/sh\nexit 0\n", check=True)
    warm(v2v_src)
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    t3, rss3 = measure(["virt-v2v", "-q", "-i", "disk", v2v_src, "-o", "local", "-os", out, "-of",
                        "qcow2", "-on", "web01v2v"], env=env)
    size3 = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                if not f.endswith(".xml"))
    rows.append(("virt-v2v -i disk -o local -of qcow2", t3, rss3, size3))
    table([(n, f"{t:.2f}", f"{r:.0f}", f"{s >> 20}", f"{t3 / t:.1f}x") for n, t, r, s in rows],
          ("conversion", "seconds", "peak RSS MiB", "output MiB", "virt-v2v / this"))
    if not a.keep:
        shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
