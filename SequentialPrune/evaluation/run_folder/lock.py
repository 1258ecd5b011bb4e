"""One launch at a time per run folder: ``<run dir>/seqprune.lock``.

Two launches of the same setting into one work dir would both write the same
prediction and stats files. The first launch creates the lock file atomically
(a hard link of a complete temporary file, so the lock is never seen empty)
holding its PID, host, start time and command; the second one refuses at start
and names that PID. A lock whose process is gone (same host, PID not running,
or running but started at another time) is stale: it is replaced, with a note.

Under torchrun only rank 0 takes the lock. The other ranks wait until the lock
names their own torchrun job (``MASTER_ADDR:MASTER_PORT:TORCHELASTIC_RUN_ID``)
and stop if it names another live launch.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional

LOCK_FILE = "seqprune.lock"


class LockHeld(RuntimeError):
    """Another launch is running in this run folder."""


def job_id() -> Optional[str]:
    """What all processes of one torchrun job share (None outside torchrun)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    return ":".join(os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"))


def _proc_start(pid: int) -> Optional[str]:
    """The process start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (True when that cannot be told: another host)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _proc_start(pid)
    return start is None or holder.get("proc_start") in (None, start)


def read(path: Path) -> Optional[dict]:
    try:
        rec = json.loads(Path(path).read_text())
        return rec if isinstance(rec, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


def describe(holder: dict) -> str:
    launcher = f", torchrun launcher PID {holder['launcher_pid']}" if holder.get("job") else ""
    return (f"PID {holder.get('pid')} on {holder.get('host')}{launcher}, started {holder.get('started')}: "
            f"{' '.join(holder.get('argv', []))[:200]}")


class RunLock:
    """The lock of one run folder, held by this process once :meth:`acquire` returned."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "argv": list(sys.argv), "job": job_id(), "launcher_pid": os.getppid()}

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._record(), indent=1) + "\n")
        try:
            os.link(tmp, self.path)  # atomic, fails if the lock exists
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create instead
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self, note: Callable[[str], None]) -> None:
        """Take the lock or raise :class:`LockHeld` naming the running launch."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                return
            holder = read(self.path)
            if holder is None:  # being written by a launch without hard links, or a leftover
                time.sleep(0.5)
                holder = read(self.path)
                if holder is None:
                    if time.time() - self._mtime() > 10:
                        self._unlink()
                        note(f"removed {self.path}: an unreadable lock file left by a crash")
                    continue
            if _alive(holder):
                raise LockHeld(f"{self.path.parent} is in use by another launch ({describe(holder)}). Wait for "
                               f"it to finish or stop it; if that launch is gone, delete {self.path}")
            self._unlink()
            note(f"removed {self.path}: the launch that held it is no longer running ({describe(holder)})")
        raise LockHeld(f"could not take {self.path} (it keeps reappearing); is another launch starting?")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def _unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def wait_for_job(self, timeout: float = 120.0) -> None:
        """Ranks other than 0: return once the lock names this torchrun job; raise if another launch holds it."""
        mine = job_id()
        deadline = time.time() + timeout
        while time.time() < deadline:
            holder = read(self.path)
            if holder is not None:
                if holder.get("job") == mine:
                    return
                if _alive(holder):
                    raise LockHeld(f"{self.path.parent} is in use by another launch ({describe(holder)}); "
                                   "this torchrun job stops")
            time.sleep(0.2)
        raise LockHeld(f"rank 0 did not take {self.path} within {timeout:.0f} s")

    def release(self) -> None:
        if not self.held:
            return
        holder = read(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except OSError:
                pass
        self.held = False
