"""Content fingerprints of what decides a run's predictions: checkpoint, benchmark TSVs, code.

Flags alone do not identify a run: a checkpoint rewritten in place, a TSV
regenerated under the same name, or an edited prompt give other answers under
the same flags. These fingerprints are recorded beside the results
(``seqprune_setting.json``) and compared at the next launch; :func:`differences`
says what changed, with both values.

* Checkpoint directory: every file is hashed (sha256) up to
  ``SEQPRUNE_HASH_WEIGHTS_UP_TO`` bytes (default 256 MiB); larger files are
  identified by size and modification time, plus the sha256 of the JSON header
  for safetensors (names, dtypes and shapes of every tensor).
* Hub id: the snapshot revision that ``refs/main`` of the local Hugging Face
  cache points to (what ``from_pretrained`` loads), with that snapshot's files.
* Dataset: md5 of its data file (e.g. ``$LMUData/<name>.tsv``), or the md5 the
  harness registers for the name when the file is not downloaded yet.
* Code: sha256 of every ``.py`` file of the imported ``SequentialPrune`` package
  (the library, this evaluation core and the harness front ends), plus the
  versions of the packages that build the prompts and inputs; the git commit and
  dirty flag are recorded for reference.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

FULL_HASH_ENV = "SEQPRUNE_HASH_WEIGHTS_UP_TO"
FULL_HASH_DEFAULT = 256 * 2 ** 20
# Files that say nothing about the weights or inputs; editing them must not invalidate results.
IGNORED_SUFFIXES = (".md", ".lock", ".gitattributes")
# Packages whose code builds prompts or preprocesses inputs.
PROMPT_PACKAGES = ("ms-vlmeval", "transformers", "qwen-vl-utils")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2 ** 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_header_sha(path: Path) -> Optional[str]:
    """sha256 of a safetensors file's JSON header (its first 8 bytes give the header length)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 2 ** 20:  # not a safetensors header
                return None
            return hashlib.sha256(f.read(n)).hexdigest()
    except (OSError, struct.error):
        return None


def _full_hash_limit() -> int:
    try:
        return int(os.environ.get(FULL_HASH_ENV, FULL_HASH_DEFAULT))
    except ValueError:
        return FULL_HASH_DEFAULT


def _file_entry(path: Path, limit: int) -> dict:
    st = path.stat()
    if st.st_size <= limit:
        return {"size": st.st_size, "sha256": _sha256_file(path)}
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if path.suffix == ".safetensors":
        entry["header_sha256"] = _safetensors_header_sha(path)
    return entry


def directory_fingerprint(root: Path) -> Dict[str, dict]:
    """{relative file name: entry} for the files under ``root`` (hidden files and folders skipped)."""
    limit = _full_hash_limit()
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked files (HF snapshots) are still listed
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = _file_entry(path.resolve(), limit)
    return out


def _hub_snapshot(repo_id: str) -> Optional[Path]:
    """The local snapshot folder that ``refs/main`` points to, or None if the id is not cached."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name
    except ImportError:
        return None
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snap = repo / "snapshots" / commit
    return snap if snap.is_dir() else None


def checkpoint_fingerprint(path_or_id: str) -> dict:
    """Fingerprint of a local checkpoint directory or a hub id (see the module docstring)."""
    local = Path(os.path.expanduser(path_or_id))
    if local.is_dir():
        return {"kind": "directory", "path": str(local.resolve()), "files": directory_fingerprint(local)}
    snap = _hub_snapshot(path_or_id)
    if snap is None:
        return {"kind": "hub", "id": path_or_id, "revision": None,
                "note": "not in the local Hugging Face cache at launch (it downloads the latest revision)"}
    return {"kind": "hub", "id": path_or_id, "revision": snap.name, "revision_source": "HF cache refs/main",
            "files": directory_fingerprint(snap)}


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_fingerprint(tsv: Path, registered_md5: Optional[str] = None) -> dict:
    """md5 of the dataset's file, or ``registered_md5`` (the harness's, for a name) when it is not downloaded
    yet. The md5 is the file's, as VLMEvalKit's own ``md5`` computes it, so both compare."""
    if tsv.is_file():
        return {"tsv": str(tsv), "md5": _md5_file(tsv), "bytes": tsv.stat().st_size}
    return {"tsv": str(tsv), "md5": registered_md5, "bytes": None,
            "note": "TSV not present at launch; md5 registered by the harness" if registered_md5 else
                    "TSV not present at launch and no registered md5"}


def _git(args: List[str], cwd: Path) -> Optional[str]:
    try:
        p = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _shapes_runs_of(parts: tuple, frontends: Optional[Tuple[str, ...]]) -> bool:
    """Whether the package file at ``parts`` (relative to the package) can change a run of ``frontends``."""
    if "__pycache__" in parts or parts[0] == "testing":  # the test references: a run never imports them
        return False
    # Another harness's front end cannot change this one's results (None: every front end counts).
    return frontends is None or parts[0] != "frontends" or len(parts) < 3 or parts[1] in frontends


def code_fingerprint(*frontends: str) -> dict:
    """sha256 of the code that shapes prompts and pruning, as imported by this process: the library, the
    evaluation core and the front ends named (folders of ``SequentialPrune/frontends``: the one running and any
    it imports from; none named: all of them)."""
    import SequentialPrune

    root = Path(SequentialPrune.__file__).resolve().parent
    wanted = frontends or None
    files = {f"SequentialPrune/{path.relative_to(root)}": _sha256_file(path)[:16]
             for path in sorted(root.rglob("*.py")) if _shapes_runs_of(path.relative_to(root).parts, wanted)}
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
    packages = {}
    for name in PROMPT_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    commit = _git(["rev-parse", "HEAD"], root)
    dirty = _git(["status", "--porcelain", "--", "."], root.parent) if commit else None
    return {"digest": digest, "files": files, "packages": packages,
            "git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None}


def _short(entry: Optional[dict]) -> str:
    if entry is None:
        return "absent"
    if "sha256" in entry:
        return f"sha256 {entry['sha256'][:12]}, {entry['size']} bytes"
    parts = [f"{entry.get('size')} bytes", f"mtime_ns {entry.get('mtime_ns')}"]
    if entry.get("header_sha256"):
        parts.append(f"header sha256 {entry['header_sha256'][:12]}")
    return ", ".join(parts)


def _file_changes(old: Dict[str, dict], new: Dict[str, dict]) -> List[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is not None and b is not None and "sha256" in a and "sha256" in b and a["sha256"] == b["sha256"]:
            continue
        out.append(f"{name}: {_short(a)} -> {_short(b)}")
    return out


def checkpoint_changes(old: dict, new: dict) -> List[str]:
    """What differs between two checkpoint fingerprints (empty: the same)."""
    if old.get("kind") != new.get("kind"):
        return [f"was a {old.get('kind')} checkpoint, now a {new.get('kind')} one"]
    if new["kind"] == "hub":
        if old.get("revision") and new.get("revision") and old["revision"] != new["revision"]:
            return [f"{new['id']} revision {old['revision']} -> {new['revision']}"]
        if old.get("revision") and new.get("revision"):
            return _file_changes(old.get("files", {}), new.get("files", {}))
        return []  # one side unknown: not comparable (reported as a warning by the caller)
    return _file_changes(old.get("files", {}), new.get("files", {}))


def code_changes(old: dict, new: dict) -> List[str]:
    """Changed code files and prompt-building package versions (empty: the same)."""
    out = []
    if old.get("digest") != new.get("digest"):
        files = _file_changes({k: {"sha256": v, "size": "?"} for k, v in old.get("files", {}).items()},
                              {k: {"sha256": v, "size": "?"} for k, v in new.get("files", {}).items()})
        names = [f.split(":")[0] for f in files]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        where = ""
        if old.get("git_commit") or new.get("git_commit"):
            where = (f"; commit {str(old.get('git_commit'))[:12]}{' (dirty)' if old.get('git_dirty') else ''} -> "
                     f"{str(new.get('git_commit'))[:12]}{' (dirty)' if new.get('git_dirty') else ''}")
        out.append(f"code digest {old.get('digest')} -> {new.get('digest')} (files: {shown}){where}")
    for name in sorted(set(old.get("packages", {})) | set(new.get("packages", {}))):
        a, b = old.get("packages", {}).get(name), new.get("packages", {}).get(name)
        if a != b:
            out.append(f"package {name} {a} -> {b}")
    return out


def dataset_changes(old: dict, new: dict) -> List[str]:
    if old.get("md5") and new.get("md5") and old["md5"] != new["md5"]:
        return [f"{new.get('tsv')}: md5 {old['md5']} -> {new['md5']}"]
    return []


def dump(obj) -> dict:
    """A JSON-clean copy (what is written and later compared)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))
