#!/usr/bin/env python3
"""Issue 7 benchmark: `transplant batch -j 2` on 8 exported guests (OVAs holding a
streamOptimized VMDK and a SHA256 manifest) against a shell loop over the same OVAs, in
one run: total wall time and peak RSS, and the ratio (peer / transplant, above 1 =
transplant faster).

The peer named by the issue is `virt-v2v -i ova` (--peer virt-v2v). virt-v2v converts
only a guest it can inspect and rewrite, so with it the guests are "debian" guests: an
ext4 root holding the host's linux-image-cloud-amd64 kernel, initramfs and modules, its
dpkg record, a grub.cfg, initramfs-tools and modprobe config, busybox, and stand-in
dpkg/update-initramfs/grub-mkconfig scripts (the appliance runs them; a real Debian would
do real work there, so virt-v2v's time here is a lower bound). Needs virt-v2v, nbdkit,
libnbd-bin, linux-image-cloud-amd64, busybox-static. The libguestfs appliance is forced to
TCG (LIBGUESTFS_BACKEND_SETTINGS=force_tcg): KVM inside this workplace's VMs fails with
emulation errors; on a host with working KVM the appliance starts faster.

Without virt-v2v, the stand-in peer (--peer stand-in, clearly labelled) is what
virt-v2v does for the disks of an OVA minus the appliance and the guest rewrite: a shell
loop of `tar -xf`, `sha256sum -c` of the manifest, and `qemu-img convert -O qcow2`.
Both sides end with synced outputs (transplant fsyncs; the loops run `sync`).

Usage: bench/batch.py [--size-mib N] [--guests 8] [--workdir DIR]
                      [--peer stand-in|virt-v2v] [--guest data|debian] [--keep]
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, build_release, measure, table, warm  # noqa: E402

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="{name}-disk1.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="{cap}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="{name}"><Info>vm</Info><Name>{name}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:00:10:{idx:02x}</rasd:Address><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


DEBIAN_STUBS = {
    "usr/sbin/update-initramfs": "#!/bin/sh\nexit 0\n",
    "usr/sbin/update-grub": "#!/bin/sh\nexit 0\n",
    "usr/sbin/grub-mkconfig": "#!/bin/sh\nexit 0\n",
    "usr/sbin/grub-probe": "#!/bin/sh\nexit 0\n",
    "usr/sbin/grub-install": "#!/bin/sh\nexit 0\n",
    "usr/bin/dpkg": ("#!/bin/sh\ncase \"$1\" in\n  -L|--listfiles) cat \"/var/lib/dpkg/info/$2.list\" ;;\n"
                     "  --print-architecture) echo amd64 ;;\n  *) exit 0 ;;\nesac\n"),
}


def debian_root(root, name):
    """A guest virt-v2v can inspect and convert, from the host's cloud kernel."""
    import glob
    kernels = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
    if not kernels or not os.path.exists("/bin/busybox"):
        sys.exit("--guest debian needs linux-image-cloud-amd64 and busybox-static installed")
    ver = os.path.basename(kernels[-1])[len("vmlinuz-"):]
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/modprobe.d", "etc/initramfs-tools",
              "boot/grub", "var/lib/dpkg/info", "lib/modules", "proc", "sys", "dev", "tmp"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    for a in ["sh", "ls", "cat", "grep", "sed", "mount", "mkdir", "rm", "cp", "mv", "ln"]:
        os.symlink("busybox", os.path.join(root, "bin", a))
    for f in ["vmlinuz", "initrd.img", "config", "System.map"]:
        shutil.copy(f"/boot/{f}-{ver}", os.path.join(root, "boot"))
    subprocess.run(["cp", "-a", f"/lib/modules/{ver}", os.path.join(root, "lib/modules/")], check=True)
    pkg = f"linux-image-{ver}"
    with open("/var/lib/dpkg/status") as f:
        stanza = [s for s in f.read().split("\n\n") if s.startswith(f"Package: {pkg}\n")]
    with open(os.path.join(root, "var/lib/dpkg/status"), "w") as f:
        f.write("\n\n".join(stanza) + "\n\n")
    shutil.copy(f"/var/lib/dpkg/info/{pkg}.list", os.path.join(root, "var/lib/dpkg/info"))
    files = {
        "etc/fstab": "/dev/sda1\t/\text4\terrors=remount-ro\t0\t1\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                          'ID=debian\nVERSION_ID="12"\nVERSION="12 (bookworm)"\n',
        "etc/debian_version": "12.5\n",
        "etc/hostname": name + "\n",
        "etc/modprobe.d/local.conf": "# options\n",
        "etc/initramfs-tools/modules": "# modules\n",
        "boot/grub/grub.cfg": (f"set default=0\nmenuentry 'Debian GNU/Linux' {{\n"
                               f"    linux /boot/vmlinuz-{ver} root=/dev/sda1 ro quiet\n"
                               f"    initrd /boot/initrd.img-{ver}\n}}\n"),
        **DEBIAN_STUBS,
    }
    for rel, text in files.items():
        p = os.path.join(root, rel)
        with open(p, "w") as f:
            f.write(text)
        if rel.startswith("usr/"):
            os.chmod(p, 0o755)


def debian_disk(d, name, size_mib, raw):
    root = os.path.join(d, "root")
    debian_root(root, name)
    part = os.path.join(d, "part.img")
    subprocess.run(["truncate", "-s", f"{size_mib - 1}M", part], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", f"{name}-root", "-E", "root_owner=0:0",
                    "-d", root, part], check=True)
    subprocess.run(["truncate", "-s", f"{size_mib}M", raw], check=True)
    subprocess.run(["sfdisk", "-q", raw], input=b"start=2048, type=83, bootable\n", check=True)
    subprocess.run(["dd", f"if={part}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse",
                    "status=none"], check=True)
    os.remove(part)
    shutil.rmtree(root)


def make_inputs(work, n, size_mib, guest="data"):
    inputs = []
    src = os.path.join(work, "src-" + guest)
    os.makedirs(src, exist_ok=True)
    for i in range(n):
        name = f"guest{i + 1:02d}"
        ova = os.path.join(src, f"{name}.ova")
        inputs.append(ova)
        if os.path.exists(ova):
            continue
        d = os.path.join(work, "build", name)
        os.makedirs(d, exist_ok=True)
        raw = os.path.join(d, "disk.raw")
        if guest == "debian":
            debian_disk(d, name, size_mib, raw)
        else:
            subprocess.run([sys.executable, os.path.join(ROOT, "fixtures", "gen-data.py"),
                            str(size_mib), raw, str(i + 1)], check=True)
        vmdk = os.path.join(d, f"{name}-disk1.vmdk")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                        "subformat=streamOptimized", raw, vmdk], check=True)
        os.remove(raw)
        ovf = os.path.join(d, f"{name}.ovf")
        with open(ovf, "w") as f:
            f.write(OVF.format(name=name, cap=size_mib << 20, idx=i + 1))
        with open(os.path.join(d, f"{name}.mf"), "w") as f:
            for p in (ovf, vmdk):
                f.write(f"SHA256({os.path.basename(p)})= {sha256(p)}\n")
        subprocess.run(["tar", "--format=ustar", "-cf", ova, "-C", d, f"{name}.ovf",
                        f"{name}.mf", f"{name}-disk1.vmdk"], check=True)
        shutil.rmtree(d)
    return inputs


STAND_IN = r"""
set -e
out="$1"; shift
for ova in "$@"; do
  name=$(basename "$ova" .ova)
  d="$out/$name"; mkdir -p "$d/x"
  tar -xf "$ova" -C "$d/x"
  (cd "$d/x" && sed -E 's/^SHA256\((.*)\)= (.*)$/\2  \1/' "$name.mf" | sha256sum -c --quiet)
  for v in "$d"/x/*.vmdk; do
    qemu-img convert -f vmdk -O qcow2 "$v" "$d/$(basename "$v" .vmdk).qcow2"
  done
  rm -rf "$d/x"
done
sync
"""

V2V = r"""
set -e
out="$1"; shift
for ova in "$@"; do
  name=$(basename "$ova" .ova)
  mkdir -p "$out/$name"
  virt-v2v -i ova "$ova" -o local -os "$out/$name" -of qcow2
done
sync
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--guests", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "out", "batch"))
    ap.add_argument("--peer", choices=["stand-in", "virt-v2v"], default="stand-in")
    ap.add_argument("--guest", choices=["data", "debian"], default=None,
                    help="guest disks: generated data, or a Debian-like root virt-v2v converts "
                         "(default: debian with --peer virt-v2v, else data)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    build_release()
    os.makedirs(a.workdir, exist_ok=True)
    guest = a.guest or ("debian" if a.peer == "virt-v2v" else "data")
    inputs = make_inputs(a.workdir, a.guests, a.size_mib, guest)
    for p in inputs:
        warm(p)
    rows = []

    t_out = os.path.join(a.workdir, "out-transplant")
    shutil.rmtree(t_out, ignore_errors=True)
    subprocess.run(["sync"])
    t, rss = measure([TRANSPLANT, "batch", *inputs, "--out", t_out, "-j", str(a.jobs),
                      "--to", "kvm", "-q", "--report", os.path.join(a.workdir, "report.json")])
    rows.append([f"transplant batch -j {a.jobs} --to kvm", f"{t:.2f}", f"{rss:.0f}", "1.00"])

    p_out = os.path.join(a.workdir, "out-peer")
    shutil.rmtree(p_out, ignore_errors=True)
    os.makedirs(p_out)
    subprocess.run(["sync"])
    script = V2V if a.peer == "virt-v2v" else STAND_IN
    label = ("shell loop of virt-v2v -i ova" if a.peer == "virt-v2v" else
             "STAND-IN: loop of tar -x + sha256sum -c + qemu-img convert")
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    pt, prss = measure(["bash", "-c", script, "bench", p_out, *inputs], env=env)
    rows.append([label, f"{pt:.2f}", f"{prss:.0f}", f"{pt / t:.2f}"])

    print(f"{a.guests} {guest} guests x {a.size_mib} MiB virtual (streamOptimized VMDK in OVA, "
          f"SHA256 manifest), outputs qcow2, synced")
    table(rows, ["command", "wall s", "peak RSS MiB", "ratio (peer/transplant)"])
    if not a.keep:
        shutil.rmtree(t_out, ignore_errors=True)
        shutil.rmtree(p_out, ignore_errors=True)


if __name__ == "__main__":
    main()
