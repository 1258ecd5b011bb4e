"""The setting file beside a model's results, and the guard against reusing another setting's files.

A harness reuses prediction files already in a run folder (VLMEvalKit: any in ``work_dir/<model>/``). The
pruning setting is in the model name, so another setting gets another folder;
what the name does not say (checkpoint, attention, dtype, generation length,
image size) is in ``identity`` here, and a run whose identity differs from the
one recorded refuses to start instead of returning the old answers.

``content`` records what the flags do not pin down: fingerprints of the
checkpoint files, of each dataset's TSV and of the code (``fingerprint.py``).
:func:`content_changes` lists what changed since the results in the folder were
made; the front end refuses such a launch unless ``--reuse-despite-changes``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

from ..safe_io import read_json, write_text_atomic
from . import fingerprint
from .logs import LOG_DIRS

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
        repo = Path(__file__).resolve().parents[3]
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


def read_setting(run_dir: Path) -> Optional[dict]:
    """The run folder's setting record; None if there is none. A file that is there but is no record (cut short,
    edited by hand) raises, since what made the folder's results would be unknown."""
    path = Path(run_dir) / SETTING_FILE
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        problem = None if isinstance(rec, dict) and isinstance(rec.get("identity"), dict) else \
            "not an object with an identity"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        raise RuntimeError(f"{path} is not a setting record ({problem}); what produced the results in {run_dir} "
                           "cannot be checked: move that folder away, or use another --work-dir")
    return rec


def check_not_stale(run_dir: Path, ident: dict) -> None:
    """Raise if ``run_dir`` holds results of a different identity (they would be silently reused), or a
    setting record that cannot be read."""
    old = read_setting(run_dir)
    if old is None:
        stray = [p.name for p in run_dir.glob(f"{run_dir.name}_*") if p.is_file()] if run_dir.is_dir() else []
        if stray:
            raise RuntimeError(f"{run_dir} holds results ({', '.join(sorted(stray)[:3])}, ...) but no {SETTING_FILE}, "
                               "so what produced them is unknown and a resume would reuse them; use another "
                               "--work-dir or move that folder away")
        return
    diff = sorted(k for k in set(old.get("identity", {})) | set(ident)
                  if old.get("identity", {}).get(k) != ident.get(k))
    if diff:
        details = "; ".join(f"{k}: {old.get('identity', {}).get(k)!r} -> {ident.get(k)!r}" for k in diff)
        raise RuntimeError(f"{run_dir} holds results of another setting ({details}); a resume would reuse them. "
                           "Use another --work-dir or move that folder away")


def any_logs(run_dir: Path) -> bool:
    """Whether the folder holds per-sample logs (stats, failed rows) of any dataset."""
    return any(any((Path(run_dir) / sub).glob("*.jsonl")) for sub in LOG_DIRS)


def content_changes(run_dir: Path, content: dict, with_files: Dict[str, list], any_results: bool) -> List[str]:
    """What differs between the recorded content and ``content``, where the folder holds results it affects.

    ``content``: {"checkpoint": ..., "code": ..., "datasets": {name: ...}} from
    ``fingerprint``. A change matters only if results it would make stale are in
    the folder: any results (``any_results``, as the harness's files say) for the
    checkpoint and the code, that dataset's files (``with_files[dataset]``) for a
    dataset.
    """
    run_dir = Path(run_dir)
    rec = read_setting(run_dir)
    if rec is None:
        return []
    datasets = list(with_files)
    any_results = any_results or any(with_files.values()) or any_logs(run_dir)
    old = rec.get("content")
    if old is None:
        return ["the results in this folder were recorded before checkpoint, data and code fingerprints were "
                "kept, so what made them is unknown"] if any(with_files.values()) else []
    out = []
    if any_results:
        ck = content["checkpoint"]
        out += [f"checkpoint {ck.get('path') or ck.get('id')}: {c}"
                for c in fingerprint.checkpoint_changes(old.get("checkpoint", {}), ck)]
        out += fingerprint.code_changes(old.get("code", {}), content["code"])
    for ds in datasets:
        if not with_files[ds]:
            continue
        was = old.get("datasets", {}).get(ds)
        if was is None:
            out.append(f"dataset {ds}: results are in the folder but its TSV was never recorded")
        else:
            out += [f"dataset {ds} {c}" for c in fingerprint.dataset_changes(was, content["datasets"][ds])]
    return out


def unverifiable(run_dir: Path, content: dict) -> List[str]:
    """Fingerprints that cannot be compared (e.g. a hub id not in the local cache); warned about, not refused."""
    rec = read_setting(run_dir) or {}
    old = rec.get("content", {}).get("checkpoint", {})
    new = content["checkpoint"]
    if new.get("kind") == "hub" and old.get("kind") == "hub" and not (old.get("revision") and new.get("revision")):
        return [f"the revision of {new.get('id')} cannot be compared (recorded {old.get('revision')}, now "
                f"{new.get('revision')}): it is not in the local Hugging Face cache"]
    return []


def write_setting(run_dir: Path, name: str, ident: dict, setting_dict: dict, datasets: List[str],
                  harness_args: dict, world_size: int, argv: List[str], content: Optional[dict] = None,
                  effective: Optional[dict] = None, accepted: Optional[List[str]] = None) -> Path:
    """Write (or extend) ``run_dir/seqprune_setting.json``; each launch appends its command line.

    ``content`` replaces the recorded fingerprints (datasets are merged); this is
    called after :func:`content_changes` found nothing, or the changes were
    ``accepted`` (kept in the launch entry).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SETTING_FILE
    rec = read_setting(run_dir) or {"model_name": name, "identity": ident, "setting": setting_dict, "launches": []}
    rec["setting"] = setting_dict
    if content is not None:
        old = rec.get("content", {})
        rec["content"] = dict(content, datasets={**old.get("datasets", {}), **content.get("datasets", {})})
    if effective:
        rec["effective"] = effective
    launch = {
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": list(argv), "cwd": os.getcwd(), "datasets": list(datasets), "world_size": world_size,
        "vlmeval_args": harness_args, "versions": package_versions(),
    }
    if accepted:
        launch["accepted_changes"] = list(accepted)
    rec["launches"].append(launch)
    write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True, default=str) + "\n")
    return path


def record_datasets(run_dir: Path, fingerprints: Dict[str, dict]) -> None:
    """Add dataset fingerprints known only after the run (a TSV downloaded by VLMEvalKit)."""
    path = Path(run_dir) / SETTING_FILE
    rec = read_json(path)
    if rec is None or "content" not in rec:
        return
    known = rec["content"].setdefault("datasets", {})
    fresh = {k: v for k, v in fingerprints.items() if not (known.get(k) or {}).get("md5") and v.get("md5")}
    if fresh:
        known.update(fresh)
        write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True, default=str) + "\n")


def record_generation(run_dir, effective: dict) -> None:
    """Record the generation arguments the model decodes with (``effective_generation``) in the setting file,
    once the model has loaded; a later launch's model records its own."""
    path = Path(run_dir) / SETTING_FILE
    rec = read_json(path)
    if rec is None or rec.get("effective_generation") == effective:
        return
    rec["effective_generation"] = effective
    write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True, default=str) + "\n")
