"""Resolving one model's full setting, once: checkpoint, budget, schedule check and protocol -> ModelRun."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from SequentialPrune import PruneConfig

from . import protocols
from .catalog import MODELS, checkpoint_info
from .protocols.paper_llava import sentencepiece_file
from .setting import EvalSetting, ModelRun, protocol_pairs, registered_name

NOMINAL_N = 1000  # N for a fractional budget on models whose image token count varies: plans scale with N


def solve_budget(setting: EvalSetting, num_layers: int, n_fixed: Optional[int]) -> PruneConfig:
    """The pruning config that meets ``setting.budget`` (average image tokens per layer) on this model."""
    b = setting.budget
    n = setting.budget_n_image or n_fixed
    if b > 1 and n is None:
        raise ValueError(f"--prune-budget {b:g} is a token count, but this model's image token count varies: "
                         "give --budget-n-image N, or a fraction of N (<= 1)")
    n = n or NOMINAL_N
    return setting.prune.solve_ratio(b if b > 1 else b * n, n, num_layers)


def resolve_model(base: str, setting: EvalSetting, work_dir: str, twin: Optional[dict] = None,
                  device: Optional[str] = None) -> ModelRun:
    """Model ``base`` under the launch's ``setting``: its checkpoint, its own budget-solved pruning config
    (checked against its layer count) and its protocol values. ``twin``: the harness entry's image settings
    for the same checkpoint (the hf protocol's). ValueError when the flags ask what the model cannot do."""
    spec = MODELS[base]
    own = setting.for_model(base)
    path = own.model_path or spec.default_path
    info = checkpoint_info(base, path)
    prune = solve_budget(own, info.num_layers, info.fixed_image_tokens) if own.budget is not None else own.prune
    prune.check_model(info.num_layers)
    proto = protocols.resolve(spec.family, spec.paper_protocol, base, own, path, twin, device=device)
    if spec.family == "llava" and proto["protocol"] == "paper":
        # The original tokenised with the slow (SentencePiece) tokenizer; checkpoints without one use theirs.
        proto["paper_tokenizer"] = "sentencepiece" if sentencepiece_file(path) else "checkpoint"
    own = replace(own, prune=prune)
    return ModelRun(base=base, family=spec.family, model_path=path, model_type=info.model_type,
                    num_layers=info.num_layers, protocol=protocol_pairs(proto),
                    run_dir=str(Path(work_dir) / registered_name(base, prune)), setting=own)
