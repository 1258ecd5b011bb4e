"""The robustness rig: tiny checkpoints (one that answers, one that answers nothing, one that never stops)
and small and long synthetic benchmarks, built once per test module, plus readers of a run folder."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from eval_helpers import stats_lines, subprocess_env, tsv_indices

from scripts.tiny.checkpoints import build_tiny_llava, build_tiny_qwen2vl
from scripts.tiny.lmudata import write_synthetic_benchmarks

SMALL, LONG = 6, 30          # rows of the Small_* and Long_* datasets
TOKENS = 16                  # the slow checkpoint's answer length where a test stops a run mid-way (~0.1 s a sample)
RUN = "llava_seqprune_sequential_r0.75_l2_s10"  # the run folder of the default setting
KINDS = {"_MCQ": "mcq", "_YN": "yn", "_GQA": "vqa"}


@dataclass
class Rig:
    root: Path
    llava: Path       # answers one letter, then stops
    empty: Path       # answers nothing (EOS first)
    slow: Path        # never emits its EOS: generates up to --max-new-tokens
    qwen: Path
    lmudata: Path
    env: Dict[str, str]

    def args(self, ckpt: Path, data: List[str], work_dir: Path, *flags: str, max_new_tokens: int = 4) -> List[str]:
        reg = [x for p in ("Small", "Long") for suffix, kind in KINDS.items()
               for x in ("--register-dataset", f"{p}{suffix}={kind}")]
        return ["--data", *data, "--model", "qwen2vl_seqprune" if ckpt == self.qwen else "llava_seqprune",
                "--model-path", str(ckpt), "--work-dir", str(work_dir), "--max-new-tokens", str(max_new_tokens),
                *reg, *flags]

    def own_lmudata(self, dest: Path) -> Path:
        """A private copy of the TSVs (no dumped images), for tests that change the data."""
        dest.mkdir(parents=True)
        for tsv in self.lmudata.glob("*.tsv"):
            shutil.copy2(tsv, dest / tsv.name)
        return dest

    def env_for(self, lmudata: Path) -> Dict[str, str]:
        return dict(self.env, LMUData=str(lmudata))


def build_rig(root: Path) -> Rig:
    """The checkpoints and benchmarks under ``root`` (tests/eval/conftest.py: once per test module)."""
    llava = build_tiny_llava(root / "llava", num_layers=12)
    empty = build_tiny_llava(root / "llava-empty", num_layers=12, answer_letter="</s>")  # EOS is the "answer"
    slow = root / "llava-slow"
    shutil.copytree(llava, slow)
    gen = json.loads((slow / "generation_config.json").read_text())
    gen["eos_token_id"] = gen["pad_token_id"]  # its real EOS no longer stops generation
    (slow / "generation_config.json").write_text(json.dumps(gen))
    qwen = build_tiny_qwen2vl(root / "qwen", num_layers=12)
    lmudata = root / "LMUData"
    write_synthetic_benchmarks(lmudata, n=SMALL, prefix="Small")
    write_synthetic_benchmarks(lmudata, n=LONG, prefix="Long", seed=2000)
    return Rig(root, Path(llava), Path(empty), slow, Path(qwen), lmudata, subprocess_env(lmudata))


def setting_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "seqprune_setting.json").read_text())


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "seqprune_results.json").read_text())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def error_lines(out: str) -> List[str]:
    return [x for x in out.splitlines() if "cannot write" in x]


def assert_one_line_per_sample(run_dir: Path, lmudata: Path, dataset: str) -> List[dict]:
    lines = [r for r in stats_lines(run_dir) if r["dataset"] == dataset]
    assert sorted(str(r["index"]) for r in lines) == sorted(str(i) for i in tsv_indices(lmudata, dataset))
    return lines


def rank_pickle_entries(run_dir: Path, dataset: str) -> int:
    n = 0
    for p in run_dir.glob(f"*_{dataset}.pkl"):
        try:
            n += len(pickle.loads(p.read_bytes()))
        except Exception:  # being written at the moment of the kill
            pass
    return n

