"""lmms-eval's ``--model_args key=value,...`` for our models: the keys, their checks, and the EvalSetting they make.

lmms-eval splits ``--model_args`` on commas and turns ``true``/numbers into
Python values before our class sees them (``lmms_eval.utils.simple_parse_args_string``).
Every pruning and model option of the VLMEvalKit front end's flags is a key
here; an unknown key is refused, naming the known ones, before any model loads.
A comma inside a value would split the argument, so list values of
``prune_option`` use ``|`` (``prune_option=stages=2|8|16``) and several options are
separated by ``;``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

from SequentialPrune import METHODS, SCORERS, PruneConfig
from SequentialPrune.config import CACHE_MODES, POSITIONS, SCORE_DTYPES, before_methods, before_stage, parse_option
from SequentialPrune.evaluation.setting import EvalSetting

ATTN_IMPLS = ("sdpa", "flash_attention_2", "eager")
DTYPES = ("float16", "bfloat16", "float32", "auto")
# lmms-eval feeds its own prompts, so the checkpoint's chat template (hf) is the one protocol here; the paper
# protocol rebuilds the original's VLMEvalKit inputs and lives in that front end.
PROTOCOLS = ("hf",)

# key -> what it sets (the README's table is written from the same words)
KEYS: Dict[str, str] = {
    "pretrained": "hub id or local checkpoint directory (default: the model name's checkpoint)",
    "prune_method": f"pruning method, one of {sorted(METHODS)} (default sequential)",
    "prune_ratio": "fraction R of image tokens finally dropped, in [0, 1] (default: the method's)",
    "prune_layer": "first decoder layer K that sees fewer tokens (default: the method's)",
    "prune_step": "percentage points of N dropped per layer by stepwise methods (default 10)",
    "prune_seed": "seed of the random scorer",
    "prune_scorer": f"rank tokens with another scorer, one of {sorted(SCORERS)}",
    "prune_option": "schedule/scorer options KEY=VALUE, ';' between options, '|' for commas (stages=2|8|16)",
    "prune_before": f"also prune once before the decoder (layer 0) with this method, one of {before_methods()}; "
                    "the other prune_* keys set the decoder-side stage, whose ratio is of the tokens it leaves",
    "prune_before_ratio": "fraction of image tokens the prune_before stage drops (default: its method's)",
    "prune_before_option": "options of the prune_before method, as prune_option (contextual_ratio=0.2)",
    "prune_positions": f"RoPE positions of the kept tokens, one of {POSITIONS}",
    "prune_budget": "solve R for this average of image tokens per layer (fraction of N if <= 1, else tokens)",
    "budget_n_image": "N for a prune_budget token count (default: the checkpoint's fixed count)",
    "cache_mode": f"one of {CACHE_MODES} (default static)",
    "score_dtype": f"precision of attention scores, one of {SCORE_DTYPES} (default float32)",
    "protocol": f"input protocol, one of {PROTOCOLS}: the checkpoint's chat template and processor",
    "dtype": f"weights and activations, one of {DTYPES} (default bfloat16 on GPU, float32 on CPU)",
    "attn_impl": f"attention implementation, one of {ATTN_IMPLS} (default sdpa)",
    "max_new_tokens": "generation length, over the task's max_new_tokens (default: the task's, else 2048)",
    "min_pixels": "Qwen models: min pixels per image",
    "max_pixels": "Qwen models: max pixels per image",
    "system_prompt": "system turn of every prompt; 'none' for no system turn (default: LLaVA-1.5's for llava, "
                     "none for the others)",
    "work_dir": "where the run folder (setting record, per-sample stats) goes (default: --output_path, else "
                "./seqprune_lmms_eval)",
    "reuse_despite_changes": "keep the run folder although checkpoint or code changed since its stats were made",
}
# Passed by lmms-eval itself (its --batch_size, --max_batch_size and --device), never by the user's model_args.
HARNESS_KEYS = ("batch_size", "max_batch_size", "device")


class ModelArgsError(ValueError):
    """A bad ``--model_args``; its message names the key and what to give."""


def _choice(args: dict, key: str, choices) -> Optional[str]:
    v = args.get(key)
    if v is not None and str(v) not in choices:
        raise ModelArgsError(f"model_args {key}={v!r}: expected one of {sorted(choices)}")
    return None if v is None else str(v)


def _number(args: dict, key: str, kind=float, low=None) -> Optional[float]:
    v = args.get(key)
    if v is None:
        return None
    try:
        x = kind(v)
    except (TypeError, ValueError):
        raise ModelArgsError(f"model_args {key}={v!r}: expected a{'n integer' if kind is int else ' number'}") from None
    if kind is int and float(v) != x or (isinstance(x, float) and math.isnan(x)) or (low is not None and x < low):
        raise ModelArgsError(f"model_args {key}={v!r}: expected a{'n integer' if kind is int else ' number'}"
                             + (f" >= {low}" if low is not None else ""))
    return x


def _options(text, key: str = "prune_option") -> Optional[dict]:
    if text is None:
        return None
    out = {}
    for part in str(text).split(";"):
        try:
            k, v = parse_option(part.replace("|", ","))
        except ValueError as e:
            raise ModelArgsError(f"model_args {key}: {e}") from None
        if k in out:
            raise ModelArgsError(f"model_args {key} repeats the key {k!r}")
        out[k] = v
    return out


def _before(args: dict, method: str) -> Optional[PruneConfig]:
    """The prune_before stage (None without one), at layer 0; ModelArgsError for its keys' mistakes."""
    name = args.get("prune_before")
    if name is not None:
        name = _choice(args, "prune_before", before_methods())
        if method == "none":
            raise ModelArgsError(f"model_args prune_before={name} with prune_method=none: to prune before the "
                                 f"decoder only, give prune_method={name} (with prune_ratio, prune_option)")
    # without a method, a ratio or options are refused as such (before_stage), not parsed
    ratio = _number(args, "prune_before_ratio", float, 0) if name is not None else args.get("prune_before_ratio")
    options = _options(args.get("prune_before_option"), "prune_before_option") if name is not None else \
        args.get("prune_before_option")
    try:
        return before_stage(name, ratio, options, _BEFORE_NAMES)
    except ValueError as e:
        raise ModelArgsError(f"model_args {e}") from None


_BEFORE_NAMES = {"method": "prune_before=METHOD", "ratio": "prune_before_ratio", "option": "prune_before_option",
                 "option_syntax": "prune_before_option=KEY=VALUE;KEY=VALUE ('|' for a comma)"}


def check_keys(args: dict) -> None:
    """Refuse keys we do not know (naming the known ones)."""
    unknown = sorted(k for k in args if k not in KEYS and k not in HARNESS_KEYS)
    if unknown:
        raise ModelArgsError(f"unknown model_args key(s) {unknown}; known keys: {', '.join(KEYS)}")


def parse_model_args(args: dict) -> Tuple[EvalSetting, dict]:
    """``args`` (lmms-eval's parsed model_args) -> (our EvalSetting, the front end's own keys: work_dir,
    reuse_despite_changes, system_prompt). Raises :class:`ModelArgsError` before anything loads."""
    check_keys(args)
    method = _choice(args, "prune_method", METHODS) or "sequential"
    before = _before(args, method)
    ratio = _number(args, "prune_ratio", float, 0)
    budget = _number(args, "prune_budget", float)
    given = {k: args.get(k) for k in ("prune_ratio", "prune_layer", "prune_step", "prune_seed", "prune_scorer",
                                      "prune_option", "prune_positions", "prune_budget", "score_dtype")}
    if method == "none":
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ModelArgsError(f"model_args {', '.join(extra)} have no effect with prune_method=none")
    if budget is not None and ratio is not None:
        raise ModelArgsError("model_args prune_budget solves the ratio: give it or prune_ratio, not both")
    if budget is not None and budget <= 0:
        raise ModelArgsError(f"model_args prune_budget must be > 0, got {budget}")
    n_image = _number(args, "budget_n_image", int, 1)
    if n_image is not None and (budget is None or budget <= 1):
        raise ModelArgsError("model_args budget_n_image only applies to a prune_budget token count (> 1)")
    step = _number(args, "prune_step", float)
    if step is not None and not 0 < step <= 100:
        raise ModelArgsError(f"model_args prune_step must be in (0, 100] percentage points, got {step}")
    kw = dict(method=method, ratio=ratio, layer=_number(args, "prune_layer", int, 0),
              seed=_number(args, "prune_seed", int), scorer=_choice(args, "prune_scorer", SCORERS),
              positions=_choice(args, "prune_positions", POSITIONS),
              cache_mode=_choice(args, "cache_mode", CACHE_MODES) or "static",
              score_dtype=_choice(args, "score_dtype", SCORE_DTYPES), options=_options(args.get("prune_option")))
    if step is not None:
        kw["step"] = step / 100.0  # percentage points, as the VLMEvalKit flag; the core takes a fraction
    if before is not None and before.prunes:  # a before stage at ratio 0 prunes nothing: the single-stage run
        kw["before"] = before
    try:
        cfg = PruneConfig(**kw) if method != "none" else PruneConfig(method="none")
    except ValueError as e:  # PruneConfig names its fields; the keys are prune_<field> (score_dtype: the same)
        msg = str(e)
        first = msg.split(" ", 1)[0]
        if first in ("ratio", "layer", "step", "seed", "scorer", "positions"):
            msg = f"prune_{msg}"
        if msg.startswith("two stages at layer 0"):
            msg += ": give the decoder-side stage prune_layer >= 1, or a prune_method that prunes inside it"
        raise ModelArgsError(f"model_args {msg}") from None
    if not cfg.prunes and method != "none":
        cfg = PruneConfig(method="none")  # ratio 0 is the unpruned model: same name and folder
    lo, hi = _number(args, "min_pixels", int, 1), _number(args, "max_pixels", int, 1)
    if lo and hi and lo > hi:
        raise ModelArgsError(f"model_args min_pixels {lo} is larger than max_pixels {hi}")
    pretrained = args.get("pretrained")
    setting = EvalSetting(
        prune=cfg, budget=budget, budget_n_image=n_image, protocol=_choice(args, "protocol", PROTOCOLS) or "hf",
        dtype=_choice(args, "dtype", DTYPES), attn_impl=_choice(args, "attn_impl", ATTN_IMPLS),
        model_path=None if pretrained is None else str(pretrained),
        max_new_tokens=_number(args, "max_new_tokens", int, 1), min_pixels=lo, max_pixels=hi)
    reuse = args.get("reuse_despite_changes", False)
    if not isinstance(reuse, bool):
        raise ModelArgsError(f"model_args reuse_despite_changes={reuse!r}: expected true or false")
    system = args.get("system_prompt")
    system = None if system is None else "" if str(system).lower() == "none" else str(system)
    return setting, {"work_dir": args.get("work_dir"), "reuse_despite_changes": reuse, "system_prompt": system}
