"""The setting file beside a model's results, and the guard against reusing another setting's files.

VLMEvalKit reuses any prediction file already in ``work_dir/<model>/``. The
pruning setting is in the model name, so another setting gets another folder;
what the name does not say (checkpoint, attention, dtype, generation length,
image size) is in ``identity`` here, and a run whose identity differs from the
one recorded refuses to start instead of returning the old answers.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import List, Optional

SETTING_FILE = "seqprune_setting.json"
PACKAGES = ("SequentialPrune", "torch", "transformers", "accelerate", "ms-vlmeval", "qwen-vl-utils", "pandas")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        repo = Path(__file__).resolve().parents[2]
        out["git_commit"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except Exception:  # no git: the versions above still say what ran
        out["git_commit"] = None
    return out


def identity(model_kwargs: dict, dtype: str, base: str) -> dict:
    """What decides the answers of this model name, beyond the pruning tag in the name."""
    # Not identity: where stats go, and the original code's lengths, which are only compared (warnings).
    skip = ("stats_dir", "prune", "expect_sys_length", "expect_image_tokens")
    kw = {k: v for k, v in model_kwargs.items() if k not in skip}
    kw["prune"] = model_kwargs["prune"].to_dict()
    kw["dtype"] = dtype
    kw["model"] = base
    return json.loads(json.dumps(kw, sort_keys=True, default=str))


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def check_not_stale(run_dir: Path, ident: dict) -> None:
    """Raise if ``run_dir`` holds results of a different identity (they would be silently reused)."""
    old = _read(run_dir / SETTING_FILE)
    if old is None:
        stray = [p.name for p in run_dir.glob(f"{run_dir.name}_*") if p.is_file()] if run_dir.is_dir() else []
        if stray:
            raise RuntimeError(f"{run_dir} holds results ({', '.join(sorted(stray)[:3])}, ...) but no {SETTING_FILE}, "
                               "so what produced them is unknown and VLMEvalKit would reuse them; use another "
                               "--work-dir or move that folder away")
        return
    diff = sorted(k for k in set(old.get("identity", {})) | set(ident)
                  if old.get("identity", {}).get(k) != ident.get(k))
    if diff:
        details = "; ".join(f"{k}: {old.get('identity', {}).get(k)!r} -> {ident.get(k)!r}" for k in diff)
        raise RuntimeError(f"{run_dir} holds results of another setting ({details}); VLMEvalKit would reuse them. "
                           "Use another --work-dir or move that folder away")


def write_setting(run_dir: Path, name: str, ident: dict, setting_dict: dict, datasets: List[str],
                  vlmeval_args: dict, world_size: int, argv: List[str]) -> Path:
    """Write (or extend) ``run_dir/seqprune_setting.json``; each launch appends its command line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SETTING_FILE
    rec = _read(path) or {"model_name": name, "identity": ident, "setting": setting_dict, "launches": []}
    rec["setting"] = setting_dict
    rec["launches"].append({
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": list(argv), "cwd": os.getcwd(), "datasets": list(datasets), "world_size": world_size,
        "vlmeval_args": vlmeval_args, "versions": package_versions(),
    })
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path
