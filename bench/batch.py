#!/usr/bin/env python3
"""Issue 7 benchmark: `transplant batch -j 2` on 8 exported guests (OVAs holding a
streamOptimized VMDK and a SHA256 manifest) against a shell loop over the same OVAs, in
one run: total wall time and peak RSS, and the ratio (peer / transplant, above 1 =
transplant faster).

The peer named by the issue is `virt-v2v -i ova`. When it is installed AND can convert
the inputs (it needs a bootable guest with a kernel and a working libguestfs appliance),
pass --peer virt-v2v. Otherwise the stand-in peer, clearly labelled, is what virt-v2v
itself does for the disks of an OVA minus the guest inspection: a shell loop of
`tar -xf` (unpack), `sha256sum -c`-style manifest check, and `qemu-img convert -O qcow2`.
Both sides end with synced outputs (transplant fsyncs; the loop runs `sync`).

Usage: bench/batch.py [--size-mib N] [--guests 8] [--workdir DIR] [--peer stand-in|virt-v2v] [--keep]
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


def make_inputs(work, n, size_mib):
    inputs = []
    src = os.path.join(work, "src")
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
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    build_release()
    os.makedirs(a.workdir, exist_ok=True)
    inputs = make_inputs(a.workdir, a.guests, a.size_mib)
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
    pt, prss = measure(["bash", "-c", script, "bench", p_out, *inputs])
    rows.append([label, f"{pt:.2f}", f"{prss:.0f}", f"{pt / t:.2f}"])

    print(f"{a.guests} guests x {a.size_mib} MiB virtual (streamOptimized VMDK in OVA, "
          f"SHA256 manifest), outputs qcow2, synced")
    table(rows, ["command", "wall s", "peak RSS MiB", "ratio (peer/transplant)"])
    if not a.keep:
        shutil.rmtree(t_out, ignore_errors=True)
        shutil.rmtree(p_out, ignore_errors=True)


if __name__ == "__main__":
    main()
