"""A run's setting in two steps: what the flags ask (:class:`EvalSetting`, one per launch) and what one model
runs (:class:`ModelRun`, resolved once per model and handed to the model class).

The flags leave some values to each model: its checkpoint (one path, or a
NAME=PATH pair per model), the ratio that meets ``--prune-budget`` for its own
layer and image-token counts, and the protocol's dtype, attention, generation
length and image bounds. :func:`SequentialPrune.evaluation.resolve.resolve_model`
fills them in; nothing downstream resolves them again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Tuple

from SequentialPrune import PruneConfig

from .run_folder.identity import identity
from .run_folder.logs import STATS_DIR


@dataclass(frozen=True)
class EvalSetting:
    """Everything a launch's flags decide (the pruning setting and how the models run)."""
    prune: PruneConfig
    # --prune-budget: average image tokens per layer (a fraction of N when <= 1), solved per model at launch
    budget: Optional[float] = None
    budget_n_image: Optional[int] = None
    # Model values left None take the protocol's (evaluation/protocols), resolved per model at launch.
    protocol: Optional[str] = None
    dtype: Optional[str] = None
    attn_impl: Optional[str] = None
    model_path: Optional[str] = None  # one checkpoint for every model; after for_model(), this model's
    model_paths: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)  # NAME=PATH pairs
    max_new_tokens: Optional[int] = None
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    # Lengths the original code took as flags; now detected and only compared.
    expect_sys_length: Optional[int] = None
    expect_image_tokens: Optional[int] = None
    legacy_flags: bool = False
    register_datasets: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)

    def for_model(self, base: str) -> "EvalSetting":
        """This model's setting: its own checkpoint (a NAME=PATH pair, else the one path, else None for its
        default), no other model's. Its budget is solved by ``resolve_model``."""
        paths = dict(self.model_paths)
        return replace(self, model_path=paths.get(base, None if paths else self.model_path), model_paths=())

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["model_paths"]:  # a per-model setting: its record keeps the form it had before the pairs
            d.pop("model_paths")
        else:
            d["model_paths"] = [list(x) for x in self.model_paths]
        d["prune"] = self.prune.to_dict()
        d["prune_tag"] = self.prune.tag()
        d["register_datasets"] = [list(x) for x in self.register_datasets]
        return d


def registered_name(base: str, prune: PruneConfig) -> str:
    """The model name a harness sees and names files by: the setting is part of it, so files never mix."""
    return f"{base}_{prune.tag()}"


@dataclass(frozen=True)
class ModelRun:
    """One model's resolved setting: what its model class loads and how, and where its results go."""
    base: str                    # our model name (catalog.MODELS), before the pruning tag
    family: str                  # catalog.FAMILIES key
    model_path: str              # hub id or local directory
    model_type: str              # the checkpoint's config.model_type
    num_layers: int              # decoder layers of the checkpoint
    protocol: Tuple[Tuple[str, object], ...]  # protocols.resolve's values as (key, value) pairs, in its order
    run_dir: str                 # <work dir>/<name>
    setting: EvalSetting         # this model's flags, with the pruning config solved for this model

    @property
    def prune(self) -> PruneConfig:
        return self.setting.prune

    @property
    def name(self) -> str:
        return registered_name(self.base, self.prune)

    @property
    def stats_dir(self) -> str:
        return str(Path(self.run_dir) / STATS_DIR)

    @property
    def options(self) -> dict:
        """The protocol's values (``protocols.resolve``) as a dict."""
        return dict(self.protocol)

    def get(self, key: str, default=None):
        return self.options.get(key, default)

    def model_kwargs(self) -> dict:
        """Every value that shapes the model's answers, plus where stats go: the run record's source."""
        kw = self.options
        kw.update(model_path=self.model_path, prune=self.prune, stats_dir=self.stats_dir, model_name=self.name,
                  expect_sys_length=self.setting.expect_sys_length,
                  expect_image_tokens=self.setting.expect_image_tokens)
        return kw

    def identity(self) -> dict:
        """What decides this model name's answers beyond the pruning tag (compared at every launch)."""
        return identity(self.model_kwargs(), self.get("dtype"), self.base)

    def describe(self) -> str:
        """One line: the protocol and its values."""
        o = self.options
        return f"{o['protocol']} protocol, " + ", ".join(f"{k} {v}" for k, v in o.items() if k != "protocol")


def protocol_pairs(kw: dict) -> Tuple[Tuple[str, object], ...]:
    """A protocol dict in the frozen form ModelRun keeps (JSON-clean values, key order kept)."""
    return tuple((k, json.loads(json.dumps(v, default=str))) for k, v in kw.items())
