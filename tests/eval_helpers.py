"""Helpers for the evaluation-layer tests: launching run.py and reading what it wrote."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
RUN_PY = REPO / "eval" / "VLMEvalKit" / "run.py"
EVAL_DIR = RUN_PY.parent
COMBINATION_FAILED = "combination failed"


@dataclass
class Launch:
    rc: int
    out: str
    seconds: float

    def __str__(self) -> str:  # what pytest shows when an assertion on a launch fails
        return f"rc={self.rc} after {self.seconds:.1f}s\n{self.out[-6000:]}"


def subprocess_env(lmudata: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LMUData=str(lmudata), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("MMEVAL_ROOT", None)  # would override --work-dir
    env.pop("OPENAI_API_KEY", None)  # the launcher must pick exact matching by itself
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: Sequence[str], env: Dict[str, str], nproc: int = 1, cwd: Path = REPO, timeout: int = 300) -> Launch:
    """Run run.py (through torchrun when nproc > 1); stdout and stderr together."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               "--master-port", str(free_port()), str(RUN_PY), *args]
    else:
        cmd = [sys.executable, str(RUN_PY), *args]
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
