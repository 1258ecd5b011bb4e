"""Helpers for the evaluation-layer tests: launching run.py and reading what it wrote."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from paths import EVAL_DIR, REPO, RUN_PY  # noqa: F401  (re-exported for the tests)
COMBINATION_FAILED = "combination failed"


@dataclass
class Launch:
    rc: int
    out: str
    seconds: float

    def __str__(self) -> str:  # assertions pass str(launch): pytest shortens a non-string message
        return f"rc={self.rc} after {self.seconds:.1f}s\n{self.out[-6000:]}"


def subprocess_env(lmudata: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LMUData=str(lmudata), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("MMEVAL_ROOT", None)  # would override --work-dir
    env.pop("OPENAI_API_KEY", None)  # the launcher must pick exact matching by itself
    return env


def command(args: Sequence[str], nproc: int = 1, run_py: Path = RUN_PY) -> List[str]:
    """The command line of run.py, through torchrun when nproc > 1."""
    if nproc > 1:
        # --standalone: torchrun binds a free port itself, so parallel test workers never race for one
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                str(run_py), *args]
    return [sys.executable, str(run_py), *args]


def launch(args: Sequence[str], env: Dict[str, str], nproc: int = 1, cwd: Path = REPO, timeout: int = 300,
           run_py: Path = RUN_PY) -> Launch:
    """Run run.py (through torchrun when nproc > 1); stdout and stderr together."""
    cmd = command(args, nproc, run_py)
    t0 = time.time()
    p = subprocess.run(cmd, env=env, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return Launch(p.returncode, p.stdout, time.time() - t0)


def stats_lines(run_dir: Path) -> List[dict]:
    out = []
    for f in sorted((run_dir / "seqprune_stats").glob("*.jsonl")):
        out += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return out


def tsv_indices(lmudata: Path, dataset: str) -> List[int]:
    import pandas as pd
    return sorted(pd.read_csv(lmudata / f"{dataset}.tsv", sep="\t")["index"].tolist())


def predictions(run_dir: Path, dataset: str):
    import pandas as pd
    return pd.read_excel(run_dir / f"{run_dir.name}_{dataset}.xlsx")


class Background:
    """run.py started in the background, in its own session (so a signal can reach the whole process group).

    Output goes to a file, not a pipe: a full pipe would block the processes being watched.
    """

    def __init__(self, args: Sequence[str], env: Dict[str, str], log: Path, nproc: int = 1, cwd: Path = REPO):
        self.log = Path(log)
        self._out = open(self.log, "w")
        self.t0 = time.time()
        self.proc = subprocess.Popen(command(args, nproc), env=env, cwd=str(cwd), stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, sig: int) -> None:
        """Signal the launched process and all its descendants (torchrun starts each worker in its own session)."""
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float = 300) -> Launch:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
        return Launch(rc, self.log.read_text(errors="replace"), time.time() - self.t0)

    def kill(self) -> Launch:
        """SIGKILL the process and its descendants (stopped ones die too) and collect the output."""
        procs = [self.proc.pid] + descendants(self.proc.pid)
        self.signal_group(signal.SIGKILL)
        out = self.wait(60)
        wait_until(lambda: all(pid_gone(p) for p in procs), 30, "the killed processes to be gone")
        return out


def wait_until(pred: Callable[[], object], timeout: float, what: str, proc: Optional[Background] = None,
               interval: float = 0.02):
    """Poll ``pred`` until it returns something true; fail (with the process output) after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}:\n{proc.log.read_text(errors='replace')[-4000:]}")
        time.sleep(interval)
    out = proc.log.read_text(errors="replace")[-4000:] if proc is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{out}")


def count_lines(folder: Path, pattern: str = "*.jsonl") -> int:
    """Complete lines in the files of ``folder`` matching ``pattern`` (0 if none)."""
    n = 0
    for f in Path(folder).glob(pattern):
        try:
            n += f.read_bytes().count(b"\n")
        except OSError:
            pass
    return n


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def children(pid: int) -> List[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def descendants(pid: int) -> List[int]:
    """Children, grandchildren, ... of ``pid``."""
    out, todo = [], children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out
