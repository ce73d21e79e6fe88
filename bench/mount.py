#!/usr/bin/env python3
"""Issue 3 benchmark: the FUSE views.

1. Time from the mount command to the first successful `cat /etc/fstab` of a guest, for
   `transplant mount` and, when installed, `guestmount -i --ro` (libguestfs).
2. Sequential read throughput of the whole virtual disk through the raw view: `transplant
   mount --raw` against `qemu-storage-daemon --export fuse` on the same qcow2 image.

Usage: bench/mount.py [--image QCOW2]   (default: bench/out/qcow2/in.img from
convert_raw.py --keep, and the committed demo guest for the fstab timing)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, build_release, table, warm  # noqa: E402


def until(pred, timeout=120):
    t = time.monotonic()
    while not pred():
        if time.monotonic() - t > timeout:
            raise SystemExit("timed out")
        time.sleep(0.005)


def read_all(path):
    t = time.monotonic()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                break
            n += len(b)
    return n, time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=os.path.join(ROOT, "bench", "out", "qcow2", "in.img"))
    a = ap.parse_args()
    build_release()
    demo = os.path.join(ROOT, "fixtures", "demo", "guest.qcow2")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        mnt = os.path.join(d, "m")
        os.mkdir(mnt)
        # The appliance is forced to TCG: KVM inside this workplace's VMs does not run
        # guests (on a host with working KVM the appliance starts faster).
        env = dict(os.environ, LIBGUESTFS_BACKEND="direct",
                   LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
        real = os.path.join(ROOT, "fixtures", "out", "guest-debian", "vmware.qcow2")
        # The demo is too bare for libguestfs' inspection (-i), so guestmount is told the
        # root there; the boot tests' debootstrapped guest is inspected by both.
        cases = [("demo guest", demo, ["-m", "/dev/sda1"])]
        if os.path.exists(real):
            cases.append(("debootstrapped Debian 12 guest", real, ["-i"]))
        for label, img, gargs in cases:
            t = time.monotonic()
            subprocess.run([TRANSPLANT, "mount", img, mnt], check=True)
            with open(os.path.join(mnt, "etc", "fstab")) as f:
                f.read()
            ready = time.monotonic() - t
            subprocess.run(["fusermount3", "-u", mnt], check=True)
            g, ratio = "not installed", ""
            if shutil.which("guestmount"):
                t = time.monotonic()
                r = subprocess.run(["guestmount", "-a", img, *gargs, "--ro", mnt],
                                   capture_output=True, env=env)
                if r.returncode == 0:
                    with open(os.path.join(mnt, "etc", "fstab")) as f:
                        f.read()
                    gt = time.monotonic() - t
                    g = f"{gt:.2f} s (guestmount {' '.join(gargs)} --ro)"
                    ratio = f"{gt / ready:.0f}x"
                    subprocess.run(["guestunmount", mnt])
                else:
                    g = "failed: " + r.stderr.decode(errors="replace").strip().splitlines()[-1]
            rows.append([f"mount -> first cat /etc/fstab ({label})", f"{ready * 1000:.0f} ms",
                         g, ratio])

        if os.path.exists(a.image):
            warm(a.image)
            subprocess.run([TRANSPLANT, "mount", "--raw", a.image, mnt], check=True)
            n, tt = read_all(os.path.join(mnt, "disk"))
            subprocess.run(["fusermount3", "-u", mnt], check=True)
            target = os.path.join(d, "qsd-disk")
            open(target, "w").close()
            warm(a.image)
            qsd = subprocess.Popen([
                "qemu-storage-daemon",
                "--blockdev", f"driver=file,filename={a.image},node-name=file,read-only=on",
                "--blockdev", "driver=qcow2,file=file,node-name=disk,read-only=on",
                "--export", f"type=fuse,id=exp,node-name=disk,mountpoint={target}",
            ])
            until(lambda: os.path.getsize(target) > 0)
            n2, tq = read_all(target)
            qsd.terminate()
            qsd.wait()
            mib = n / (1 << 20)
            rows.append([f"raw view sequential read, {mib:.0f} MiB qcow2", f"{mib / tt:.0f} MiB/s",
                         f"{n2 / (1 << 20) / tq:.0f} MiB/s (qemu-storage-daemon)", f"{tq / tt:.2f}x"])
    print()
    table(rows, ["measure", "transplant", "peer", "ratio"])


if __name__ == "__main__":
    main()
