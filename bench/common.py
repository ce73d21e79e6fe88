"""Helpers for side-by-side benchmarks: run a command, measure wall time and peak RSS of
the child (wait4), and print a table. The machine is shared and noisy: compare the ratio
within one run, not absolute times across runs."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSPLANT = os.path.join(ROOT, "target", "release", "transplant")


def build_release():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def measure(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS MiB)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, rusage = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err}")
    return dt, rusage.ru_maxrss / 1024.0


def measure_cpu(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS MiB, CPU seconds user+system of it and its
    children). On a shared machine the CPU time is the steadier measure of work done."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, rusage = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err}")
    return dt, rusage.ru_maxrss / 1024.0, rusage.ru_utime + rusage.ru_stime


def warm(path):
    """Reads a file (and its siblings for multi-file images) so both tools start warm."""
    d = os.path.dirname(path) or "."
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def best_of(n, cmd, cleanup=None):
    """Runs cmd n times (syncing first, removing outputs after) and keeps the fastest:
    the disk's writeback of a previous run's deleted output otherwise lands on whoever
    runs next."""
    import subprocess as sp
    best = None
    for _ in range(n):
        sp.run(["sync"])
        t, rss = measure(cmd)
        if cleanup:
            cleanup()
        if best is None or t < best[0]:
            best = (t, rss)
    return best
