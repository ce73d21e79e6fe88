#!/usr/bin/env python3
"""Issue 4 benchmark: transplant's writers against `qemu-img convert` on the same
multi-GiB inputs, in one run: VMDK streamOptimized -> qcow2, raw -> qcow2 -c (zlib and
zstd), qcow2 -> raw, VHDX -> qcow2, raw -> VMDK streamOptimized, and qcow2 -> raw with
--verify against qemu-img convert + qemu-img compare. Best of two runs each. Prints wall
time, ratio (qemu / transplant, above 1 = transplant faster) and peak RSS, plus the
machine's disk write bandwidth measured with dd in the same run.

Both tools' outputs are synced before the clock stops (transplant fsyncs by design;
qemu-img is followed by `sync --data`), so the comparison is at equal durability.

Usage: bench/convert_formats.py [--size-gib N] [--workdir DIR] [--keep]
Reuses the inputs convert_raw.py leaves with --keep.
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TRANSPLANT, best_of, build_release, measure_cpu, table, warm  # noqa: E402

ROWS = [
    # name, input subdir (made by convert_raw.py), qemu out opts, transplant out opts
    ("vmdk stream -> qcow2", "vmdk-streamOptimized", ["-O", "qcow2"], ["-O", "qcow2"]),
    ("raw -> qcow2 -c zlib", "raw", ["-c", "-O", "qcow2"], ["-O", "qcow2", "-c"]),
    ("raw -> qcow2 -c zstd", "raw", ["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
     ["-O", "qcow2", "-c", "-o", "compression_type=zstd"]),
    ("qcow2 -> raw", "qcow2", ["-O", "raw"], ["-O", "raw"]),
    ("vhdx -> qcow2", "vhdx-dynamic", ["-O", "qcow2"], ["-O", "qcow2"]),
    ("raw -> vmdk stream", "raw", ["-O", "vmdk", "-o", "subformat=streamOptimized"],
     ["-O", "vmdk", "-c"]),
    ("qcow2 -> raw + verify", "qcow2", ["-O", "raw"], ["-O", "raw"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.workdir, "qcow2", "in.img")):
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "convert_raw.py"),
                        "--size-gib", str(a.size_gib), "--workdir", a.workdir, "--keep"], check=True)
    build_release()
    base = os.path.join(a.workdir, f"data-{a.size_gib}g.raw")
    # Disk bandwidth: dd of the raw data, synced.
    dd_out = os.path.join(a.workdir, "dd.out")
    warm(base)
    dt, _ = best_of(2, ["dd", f"if={base}", f"of={dd_out}", "bs=4M", "conv=fsync", "status=none"],
                    lambda: os.remove(dd_out))
    size = os.path.getsize(base)
    rows = []
    for name, sub, qopts, topts in ROWS:
        src = base if sub == "raw" else os.path.join(a.workdir, sub, "in.img")
        q_out = os.path.join(a.workdir, "q.out")
        t_out = os.path.join(a.workdir, "t.out")
        qcmd = "qemu-img convert " + " ".join(qopts) + ' "$0" "$1" && sync --data "$1"'
        tflags = list(topts)
        if name.endswith("+ verify"):
            # The peer of --verify is qemu-img compare after the convert.
            fmt = qopts[qopts.index("-O") + 1]
            qcmd += f' && qemu-img compare -F {fmt} "$0" "$1"'
            tflags.append("--verify")
        best = {}
        # Best of two, the tools alternating, each after a sync: the shared machine's
        # noise and the writeback of a previous output then fall on both alike.
        for _ in range(2):
            for tool, cmd in (("q", ["sh", "-c", qcmd, src, q_out]),
                              ("t", [TRANSPLANT, "convert", "-q", *tflags, src, t_out])):
                out = q_out if tool == "q" else t_out
                if os.path.exists(out):
                    os.remove(out)
                subprocess.run(["sync"])
                warm(src)
                t, rss, cpu = measure_cpu(cmd)
                out_mib = os.stat(out).st_blocks * 512 >> 20
                os.remove(out)
                if tool not in best or t < best[tool][0]:
                    best[tool] = (t, rss, out_mib, cpu)
        (qt, qrss, qs, qc), (tt, trss, ts, tc) = best["q"], best["t"]
        rows.append([name, f"{qt:.2f}", f"{tt:.2f}", f"{qt / tt:.2f}x", f"{qc:.2f}", f"{tc:.2f}",
                     f"{qc / tc:.2f}x", f"{qrss:.0f}", f"{trss:.0f}", f"{qs}", f"{ts}"])
    print()
    print(f"{a.size_gib} GiB virtual, {os.cpu_count()} cores; disk write bandwidth (dd, fsync): "
          f"{size / dt / (1 << 20):.0f} MiB/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine "
          "skews wall times; CPU seconds are steadier)")
    table(rows, ["conversion", "qemu-img s", "transplant s", "ratio", "qemu CPU s",
                 "transplant CPU s", "CPU ratio", "qemu RSS MiB", "transplant RSS MiB",
                 "qemu out MiB", "transplant out MiB"])
    if not a.keep:
        shutil.rmtree(a.workdir)


if __name__ == "__main__":
    main()
