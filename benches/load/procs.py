"""Processes the benchmark starts: spawned so they die with it, measured through /proc.

Every child gets PR_SET_PDEATHSIG(SIGKILL), so it dies even if the orchestrator is killed
with SIGKILL; `Procs.stop_all()` (run from `finally` and signal handlers) ends the rest,
each by its own pid, including the children they started themselves (nginx workers, LiteLLM's
uvicorn workers).
"""

import ctypes
import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def children_of(pid):
    """Direct and indirect children of `pid` (by scanning /proc), not `pid` itself."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) comes after the parenthesized command, which may contain spaces.
        rest = stat[stat.rfind(b")") + 2:].split()
        parents.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def tree(pid):
    return [pid] + children_of(pid)


def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid):
    """Current resident set of the process tree, in KiB (sum over processes)."""
    return sum(_status_kb(p, "VmRSS") for p in tree(pid))


def hwm_kb(pid):
    """Peak resident set (VmHWM) of the process tree, in KiB (sum over processes)."""
    return sum(_status_kb(p, "VmHWM") for p in tree(pid))


def fd_count(pid):
    """Open file descriptors of the process tree (sum over processes)."""
    total = 0
    for p in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return total


def cpu_seconds(pid):
    """utime + stime of the process tree (live processes), in seconds."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        # Fields 14 and 15 of stat are utime and stime; `rest` starts at field 3.
        total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


def host_ticks():
    """(steal, total) clock ticks of all CPUs since boot (/proc/stat). Steal is time the
    hypervisor gave this VM's CPUs to someone else: a run with steal was measured on a busy
    host, and its throughput and CPU per request are not comparable with a quiet run's."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal (guest time is inside user and nice)
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def cpu_ns(pid):
    """Time on CPU of the process tree's live threads, in nanoseconds (schedstat: precise where
    utime/stime count in clock ticks, which a few hundred light requests barely move)."""
    total = 0
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


class Procs:
    """Every process this run started, so they can all be ended by pid."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.running = []  # (name, Popen)

    def spawn(self, name, argv, env=None, cwd=None):
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, preexec_fn=_die_with_parent)
        log.close()
        self.running.append((name, p))
        return p

    def stop(self, p, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds; the same for children left behind."""
        kids = children_of(p.pid)
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=grace)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for k in kids:
            while _alive(k) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(k):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.running = [(n, q) for (n, q) in self.running if q is not p]

    def stop_all(self):
        for _, p in list(reversed(self.running)):
            try:
                self.stop(p, grace=2.0)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # A zombie child of someone else counts as gone.
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"
