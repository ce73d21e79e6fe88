#!/usr/bin/env python3
"""transplant inspect against virt-inspector (libguestfs) on the same image: wall time and
peak RSS, and the ratio (virt-inspector time / transplant time; above 1 means transplant
is faster). virt-inspector boots the libguestfs appliance (a small VM); transplant reads
the image in user space.

    python3 bench/inspect.py [IMAGE]     (default: the demo guest)
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    image = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        common.ROOT, "fixtures", "demo", "guest.qcow2")
    common.build_release()
    common.warm(image)
    rows = []
    t, rss = common.best_of(3, [common.TRANSPLANT, "inspect", "--json", image])
    rows.append(["transplant inspect --json", f"{t:.3f}", f"{rss:.0f}"])
    peer = shutil.which("virt-inspector")
    if peer:
        pt, prss = common.best_of(2, [peer, "-a", image])
        rows.append(["virt-inspector -a", f"{pt:.3f}", f"{prss:.0f}"])
    common.table(rows, ["command", "seconds", "peak RSS MiB"])
    if peer:
        print(f"ratio (virt-inspector / transplant): {pt / t:.1f}")
    else:
        print("virt-inspector not installed (apt-get install libguestfs-tools): no ratio")


if __name__ == "__main__":
    main()
