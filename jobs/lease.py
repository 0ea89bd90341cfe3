"""Which cache entries and temporary files belong to a running build: leases.

`cache prune` may run beside builds, from a cron job on another host that shares CACHE_DIR. A
lock does not protect them (NFS and Lustre do not always honour locks), and an age cutoff
alone does not either: `--older-than-hours 0` once deleted a live temporary folder and a
partly written entry got published. So every process that reads or writes the cache holds a
lease: CACHE_DIR/_leases/<host>-<pid>.json, listing every entry it has used since it
started, rewritten when it uses a new one and touched every HEARTBEAT_S by a daemon thread.
A lease is live while its process is (same host: the pid exists) or, for another host, while
it was touched within LEASE_TTL_S. Prune never removes an entry a live lease lists, nor a
temporary name whose owner (host and pid, in the name) is live.

Temporary names carry their owner: `.<name>.tmp-<host>-<pid>` (trajectory.atomic.tmp_name)
and `.<name>.tmp-<host>-<pid>-<ns>` (a cache unit's folder), so leftovers of a killed
process are told apart from a live one's files without asking anyone.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

from trajectory.atomic import atomic_write_json

LEASE_DIR = "_leases"
HEARTBEAT_S = 30.0
# Ten heartbeats: a lease of another host is taken for dead only after ten missed touches. A
# prune waits that long before it removes a killed remote build's temporary files; it never
# removes a live build's.
LEASE_TTL_S = 600.0
HOST = os.uname().nodename  # as trajectory.atomic.tmp_name spells it
# .<name>.tmp-<host>-<pid>[-<ns>]: the pid has at most 10 digits, time_ns at least 16
_TMP = re.compile(r"\.tmp-(?P<host>.+)-(?P<pid>\d{1,10})(?:-\d{16,})?$")
# leftovers that are never live data: damaged entries set aside, entries a prune is removing
ASIDE_PREFIXES = (".damaged-", ".trash-")


class Lease:
    """This process's lease on one cache directory (one per process: see `hold`)."""

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / LEASE_DIR / f"{HOST}-{os.getpid()}.json"
        self.started = time.time()
        self.entries: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="cache-lease").start()
        atexit.register(self.release)

    def hold(self, names) -> None:
        with self.lock:
            new = set(names) - self.entries
            if not new and self.path.exists():
                return
            self.entries |= new
            # written before the caller looks at the entries: a prune that reads the lease
            # after this returns keeps them
            atomic_write_json(self.path, {"host": HOST, "pid": os.getpid(),
                                          "started": self.started,
                                          "entries": sorted(self.entries)})

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # removed by a prune that took us for dead: rewrite
                self.hold(())
            except OSError:
                continue

    def release(self) -> None:
        self.stop.set()
        try:
            self.path.unlink()
        except OSError:
            pass


_LEASES: dict[tuple[str, int], Lease] = {}
_GUARD = threading.Lock()


def hold(cache_dir: Path, *names: str) -> None:
    """Record that this process uses these entries of `cache_dir` (before it reads or writes
    them). Keyed by pid too: a forked child must not write its parent's lease."""
    key = (str(cache_dir), os.getpid())
    with _GUARD:
        lease = _LEASES.get(key)
        if lease is None:
            lease = _LEASES[key] = Lease(Path(cache_dir))
    lease.hold(names)


class building:
    """`with building(cache_dir):` around a whole build in its driver: when the last build
    of this process ends, its lease is given up (entries a finished version refers to are
    kept by that reference instead). Worker and array-task processes keep theirs until they
    exit: they cannot know when the build they serve ends."""

    _depth: dict[tuple[str, int], int] = {}

    def __init__(self, cache_dir: Path):
        self.key = (str(cache_dir), os.getpid())

    def __enter__(self):
        with _GUARD:
            self._depth[self.key] = self._depth.get(self.key, 0) + 1
        return self

    def __exit__(self, *exc):
        with _GUARD:
            self._depth[self.key] -= 1
            if self._depth[self.key]:
                return
            lease = _LEASES.pop(self.key, None)
        if lease is not None:
            lease.release()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:  # a killed worker whose parent died too stays a zombie where nothing reaps it
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_alive(host: str, pid: int, mtime: float, cache_dir: Path | None,
                now: float | None = None) -> bool:
    """Whether the process that owns a temporary name or lease may still be running."""
    if host == HOST:
        return pid_alive(pid)
    now = time.time() if now is None else now
    if cache_dir is not None:
        lease = Path(cache_dir) / LEASE_DIR / f"{host}-{pid}.json"
        try:
            return now - lease.stat().st_mtime < LEASE_TTL_S
        except FileNotFoundError:
            pass
    return now - mtime < LEASE_TTL_S  # no lease to ask: young files are given the benefit


def live_leases(cache_dir: Path) -> list[dict]:
    """The leases of processes that may be running; a dead process's lease is removed."""
    out = []
    folder = Path(cache_dir) / LEASE_DIR
    if not folder.is_dir():
        return out
    now = time.time()
    for path in folder.glob("*.json"):
        try:
            lease = json.loads(path.read_text())
            mtime = path.stat().st_mtime
            host, pid = lease["host"], int(lease["pid"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # being rewritten, or damaged: neither kept nor trusted
        alive = (pid_alive(pid) if host == HOST else now - mtime < LEASE_TTL_S)
        if alive:
            out.append(lease)
        else:
            try:
                path.unlink()
            except OSError:
                pass
    return out


def held(cache_dir: Path) -> set[str]:
    return {name for lease in live_leases(cache_dir) for name in lease.get("entries", ())}


def aside_name(path: Path, why: str) -> Path:
    """`path` renamed out of the way: `.<why>-<name>.tmp-<host>-<pid>-<ns>` beside it, an
    owned temporary name (why: "damaged", "trash"), removed once its owner is gone."""
    return path.with_name(f".{why}-{path.name}.tmp-{HOST}-{os.getpid()}-{time.time_ns()}")


def owner_of(path: Path) -> tuple[str, int] | None:
    """(host, pid) of a temporary name, or None for any other name."""
    m = _TMP.search(path.name)
    return (m["host"], int(m["pid"])) if m else None


def leftovers(root: Path, cache_dir: Path | None, depth: int = 3) -> list[dict]:
    """Temporary files and folders under `root` (to `depth` levels) whose owner is not
    running, and entries set aside as damaged or being pruned by a dead process:
    [{"path", "bytes", "owner", "why"}]. Nothing live is listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    found, now = [], time.time()

    def walk(folder: Path, level: int):
        try:
            children = list(os.scandir(folder))
        except OSError:
            return
        for d in children:
            path = Path(d.path)
            name = d.name
            if name.startswith(ASIDE_PREFIXES) or (name.startswith(".") and ".tmp" in name):
                owner = owner_of(path)
                try:
                    mtime = d.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if owner is None:  # an older release's name: age decides
                    dead = now - mtime >= LEASE_TTL_S
                else:
                    dead = not owner_alive(*owner, mtime, cache_dir, now)
                if dead:
                    found.append({"path": path, "bytes": size(path),
                                  "owner": "-".join(map(str, owner)) if owner else "?",
                                  "why": ("damaged, set aside" if name.startswith(".damaged-")
                                          else "left by a killed build")})
            elif d.is_dir(follow_symlinks=False) and level < depth and name != LEASE_DIR:
                walk(path, level + 1)

    walk(root, 1)
    return found


def remove(paths) -> None:
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass


def size(path: Path) -> int:
    """Bytes under `path`; files removed meanwhile (a build renaming its folder) count 0."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:
                continue
    if not total and os.path.isfile(path):
        try:
            return os.stat(path).st_size
        except OSError:
            return 0
    return total
