"""Our command-line flags: parsing, the original research code's aliases, validation.

``parse_flags(argv)`` takes our flags out of ``argv`` and returns an
:class:`EvalSetting` plus the arguments left for VLMEvalKit's own parser. Every
check here is static (no model, no vlmeval import), so a bad command fails in
well under a second with a message, before anything loads.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from typing import List, Optional, Sequence, Tuple

from SequentialPrune import METHODS, SCORERS, PruneConfig
from SequentialPrune.config import CACHE_MODES, POSITIONS, SCORE_DTYPES, before_methods, before_stage, parse_option
from SequentialPrune.evaluation.protocols import PROTOCOLS
from SequentialPrune.evaluation.setting import EvalSetting

ATTN_IMPLS = ("sdpa", "flash_attention_2", "eager")
# Model dtypes (resolved per model by evaluation/protocols).
DTYPES = ("float16", "bfloat16", "float32", "auto")
# --register-dataset kinds; datasets.py maps them to vlmeval classes.
DATASET_KINDS = ("mcq", "yn", "vqa")

# Flags of the original research code that only meant something with --use-fast-v.
LEGACY_NEED_USE_FAST_V = ("fast_v_inplace", "fast_v_sys_length", "fast_v_image_token_length",
                          "fast_v_attention_rank", "fast_v_agg_layer", "fast_v_sequential_prune")


class FlagError(ValueError):
    """A bad or contradictory combination of flags."""


def _percent(text: str) -> float:
    v = float(text)
    if not (0 < v <= 100) or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be in (0, 100] percentage points of the image tokens, got {text}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return v


def _option(text: str) -> Tuple[str, object]:
    try:
        return parse_option(text)
    except ValueError as e:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(e)) from None


def _dataset_kind(text: str) -> Tuple[str, str]:
    name, sep, kind = text.rpartition("=")
    if not sep or not name or kind.lower() not in DATASET_KINDS:
        raise argparse.ArgumentTypeError(f"expected NAME=KIND with KIND one of {DATASET_KINDS}, got {text!r}")
    return name, kind.lower()


def build_parser(prog: str = "run.py", harness: str = "VLMEvalKit") -> argparse.ArgumentParser:
    # allow_abbrev=False: otherwise --model would be taken as an abbreviation of --model-path.
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, add_help=False,
        description=f"Sequential Prune flags; every other flag goes to {harness}'s {prog}.")
    g = p.add_argument_group("pruning")
    g.add_argument("--prune-method", choices=sorted(METHODS), default=None,
                   help="pruning method (default: sequential, or what --use-fast-v implies); each method's other "
                        "settings default to its paper's (see README)")
    g.add_argument("--prune-ratio", type=float, default=None,
                   help="fraction R of image tokens finally dropped, in [0, 1] (default: the method's)")
    g.add_argument("--prune-layer", type=int, default=None,
                   help="first decoder layer K that sees fewer tokens; 0 = before the decoder, for scorers that "
                        "need no previous layer (default: the method's)")
    g.add_argument("--prune-step", type=_percent, default=None,
                   help="percentage points of N dropped per layer by stepwise methods (default 10)")
    g.add_argument("--prune-seed", type=int, default=None, help="seed of the random scorer (random methods)")
    g.add_argument("--prune-scorer", choices=sorted(SCORERS), default=None,
                   help="rank tokens with another scorer than the method's (e.g. the sequential schedule with dart)")
    g.add_argument("--prune-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a schedule or scorer option, e.g. stages=2,8,16 (pdrop), image_pivots=4 (dart), "
                        "schedule=2:0.5,6:0.3 (custom); repeatable")
    g.add_argument("--prune-before", choices=before_methods(), default=None, metavar="METHOD",
                   help="also prune once before the decoder (layer 0) with METHOD, one of "
                        f"{', '.join(before_methods())}; the --prune-* flags then set the decoder-side stage, "
                        "whose ratio is of the tokens METHOD leaves (e.g. --prune-before visionzip)")
    g.add_argument("--prune-before-ratio", type=float, default=None, metavar="R",
                   help="fraction of image tokens the --prune-before stage drops (default: its method's)")
    g.add_argument("--prune-before-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the --prune-before method, e.g. contextual_ratio=0.2 (visionzip); repeatable")
    g.add_argument("--prune-positions", choices=POSITIONS, default=None,
                   help="RoPE positions of the kept tokens: original, or renumber (contiguous) "
                        "(default: the method's convention)")
    g.add_argument("--score-dtype", choices=SCORE_DTYPES, default=None,
                   help="precision of attention scores: float32, or model (the model's dtype, as the original "
                        "eager fp16 code ranked) (default float32; model with --use-fast-v)")
    g.add_argument("--prune-budget", type=float, default=None,
                   help="solve R for this average of image tokens per decoder layer: a fraction of N if <= 1, "
                        "else a token count (with --budget-n-image, or the model's fixed N)")
    g.add_argument("--budget-n-image", type=_positive_int, default=None,
                   help="N used to solve a --prune-budget token count (default: the checkpoint's fixed image "
                        "token count, e.g. 576 for LLaVA-1.5)")
    g.add_argument("--cache-mode", choices=CACHE_MODES, default=None,
                   help="static: prune at prefill, decode on the pruned KV cache (default); "
                        "recompute: no KV cache, re-select at every generated token (the original inplace code)")
    m = p.add_argument_group("model")
    m.add_argument("--model-path", nargs="+", default=None, metavar="PATH | NAME=PATH",
                   help="hub id or local checkpoint directory (offline use) for every model; with several of our "
                        "models, one NAME=PATH pair per model (the others load their default checkpoint)")
    m.add_argument("--register-dataset", type=_dataset_kind, action="append", default=[], metavar="NAME=KIND",
                   help=f"use $LMUData/NAME.tsv as a local dataset of KIND {DATASET_KINDS} (repeatable)")
    r = p.add_argument_group("results")
    r.add_argument("--reuse-despite-changes", action="store_true",
                   help="keep the results in the run folder although the checkpoint files, a dataset TSV or the "
                        "code changed since they were made (otherwise such a launch is refused)")
    pp = p.add_argument_group("input and decoding protocol (defaults: the protocol's; see README)")
    pp.add_argument("--protocol", choices=PROTOCOLS, default=None,
                    help="paper: the original research code's images, prompt, token ids and decoding (default for "
                         "the paper's models); hf: the checkpoint's chat template and processor defaults, as "
                         "VLMEvalKit runs them (default for the others)")
    pp.add_argument("--dtype", choices=DTYPES, default=None,
                    help="weights and activations; auto = the checkpoint's stored dtype (default on GPU: paper "
                         "LLaVA float16, paper Qwen2-VL auto, hf bfloat16; float32 on CPU)")
    pp.add_argument("--attn-impl", choices=ATTN_IMPLS, default=None,
                    help="attention implementation (default: eager for paper, as the original; sdpa for hf)")
    pp.add_argument("--max-new-tokens", type=_positive_int, default=None,
                    help="generation length (default: paper LLaVA 100, paper Qwen2-VL 50, hf 2048 as VLMEvalKit)")
    pp.add_argument("--min-pixels", type=_positive_int, default=None,
                    help="Qwen models: min pixels per image, OCRBench included (default: paper 256*28*28, and "
                         "10*10*28*28 on OCRBench as the original; hf: VLMEvalKit's entry)")
    pp.add_argument("--max-pixels", type=_positive_int, default=None,
                    help="Qwen models: max pixels per image (default: paper 2048*28*28; hf: VLMEvalKit's entry)")
    o = p.add_argument_group("original research code (aliases)")
    o.add_argument("--use-fast-v", action="store_true", help="prune (FastV, or sequential with "
                                                             "--fast-v-sequential-prune)")
    o.add_argument("--fast-v-inplace", action="store_true",
                   help="accepted: tokens are always removed in place here (see --cache-mode)")
    o.add_argument("--fast-v-sys-length", type=int, default=None,
                   help="checked against the tokens found before the first image token (warns on mismatch)")
    o.add_argument("--fast-v-image-token-length", type=int, default=None,
                   help="checked against the image tokens found (warns on mismatch)")
    o.add_argument("--fast-v-attention-rank", type=float, default=None, help="= --prune-ratio")
    o.add_argument("--fast-v-agg-layer", type=int, default=None, help="= --prune-layer")
    o.add_argument("--fast-v-sequential-prune", action="store_true", help="= --prune-method sequential")
    return p


def _resolve_method(a) -> str:
    if a.use_fast_v:
        implied = "sequential" if a.fast_v_sequential_prune else "fastv"
        if a.prune_method == "none":
            raise FlagError("--use-fast-v turns pruning on, but --prune-method none turns it off; drop one")
        if a.prune_method is not None and a.prune_method != implied:
            how = "--use-fast-v --fast-v-sequential-prune" if a.fast_v_sequential_prune else "--use-fast-v"
            raise FlagError(f"{how} means --prune-method {implied}, but --prune-method {a.prune_method} was given")
        return implied
    given = [f"--{k.replace('_', '-')}" for k in LEGACY_NEED_USE_FAST_V if getattr(a, k) not in (None, False)]
    if given:
        raise FlagError(f"{', '.join(given)} only take effect with --use-fast-v (as in the original code); "
                        "add --use-fast-v, or use --prune-method/--prune-ratio/--prune-layer")
    return a.prune_method or "sequential"


def _merge(new, old, new_flag: str, old_flag: str):
    """One value from a new flag and its original alias; both given must agree."""
    if new is not None and old is not None and new != old:
        raise FlagError(f"{old_flag} {old} contradicts {new_flag} {new}; give one of them")
    return new if new is not None else old


def _legacy_ratio(a) -> Optional[float]:
    r = a.fast_v_attention_rank
    if r is None:
        return None
    if not (0 <= r <= 1):
        hint = ""
        if r > 1 and float(r).is_integer() and a.fast_v_image_token_length:
            hint = (f" (FastV's count of kept tokens {int(r)} of {a.fast_v_image_token_length} is ratio "
                    f"{1 - r / a.fast_v_image_token_length:g})")
        raise FlagError(f"--fast-v-attention-rank is the fraction of image tokens dropped and must be in [0, 1], "
                        f"got {r:g}{hint}")
    return r


def _check_model_path(path: Optional[str]) -> None:
    if path is None or os.path.isdir(os.path.expanduser(path)):
        return
    if path.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        raise FlagError(f"--model-path {path!r} is neither a local checkpoint directory nor a hub id (org/name)")


def _model_paths(values: Optional[List[str]]) -> Tuple[Optional[str], Tuple[Tuple[str, str], ...]]:
    """--model-path: one PATH for every model, or NAME=PATH pairs (one per model)."""
    if not values:
        return None, ()
    def as_pair(v: str):  # a model name has no '/', so 'org/name' and './dir' are never pairs; a directory wins
        m = re.fullmatch(r"([\w.-]+)=(.+)", v)
        return None if m is None or os.path.isdir(os.path.expanduser(v)) else (m.group(1), m.group(2))

    if len(values) == 1 and as_pair(values[0]) is None:
        _check_model_path(values[0])
        return values[0], ()
    pairs = []
    for v in values:
        pair = as_pair(v)
        if pair is None:
            raise FlagError(f"--model-path with several values takes NAME=PATH pairs (one per model), got {v!r}")
        _check_model_path(pair[1])
        pairs.append(pair)
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise FlagError(f"--model-path names a model twice: {names}")
    return None, tuple(pairs)


def _before(a, method: str) -> Optional[PruneConfig]:
    """The --prune-before stage (None without one); FlagError for its flags' mistakes."""
    if a.prune_before is not None and method == "none":
        raise FlagError(f"--prune-before {a.prune_before} with --prune-method none: to prune before the decoder "
                        f"only, run it as --prune-method {a.prune_before} (with --prune-ratio, --prune-option)")
    options = dict(a.prune_before_option)
    if len(options) != len(a.prune_before_option):
        raise FlagError(f"--prune-before-option repeats a key: {[k for k, _ in a.prune_before_option]}")
    try:
        return before_stage(a.prune_before, a.prune_before_ratio, options, _BEFORE_NAMES)
    except ValueError as e:
        raise FlagError(str(e)) from None


def _setting(a) -> EvalSetting:
    method = _resolve_method(a)
    before = _before(a, method)
    ratio = _merge(a.prune_ratio, _legacy_ratio(a), "--prune-ratio", "--fast-v-attention-rank")
    layer = _merge(a.prune_layer, a.fast_v_agg_layer, "--prune-layer", "--fast-v-agg-layer")
    given = {"--prune-ratio": ratio, "--prune-layer": layer, "--prune-step": a.prune_step,
             "--prune-seed": a.prune_seed, "--cache-mode": a.cache_mode, "--prune-scorer": a.prune_scorer,
             "--prune-option": a.prune_option or None, "--prune-positions": a.prune_positions,
             "--score-dtype": a.score_dtype, "--prune-budget": a.prune_budget}
    if method == "none":
        extra = [f for f, v in given.items() if v is not None]
        if extra:
            raise FlagError(f"{', '.join(extra)} have no effect with --prune-method none")
    if a.prune_budget is not None and ratio is not None:
        raise FlagError("--prune-budget solves the ratio: give it or --prune-ratio, not both")
    if a.prune_budget is not None and not (0 < a.prune_budget):
        raise FlagError(f"--prune-budget must be > 0 (a fraction of N if <= 1, else tokens), got {a.prune_budget}")
    if a.budget_n_image is not None and (a.prune_budget is None or a.prune_budget <= 1):
        raise FlagError("--budget-n-image only applies to a --prune-budget token count (> 1)")
    options = dict(a.prune_option)
    if len(options) != len(a.prune_option):
        raise FlagError(f"--prune-option repeats a key: {[k for k, _ in a.prune_option]}")
    kw = dict(method=method, ratio=ratio, layer=layer, seed=a.prune_seed, scorer=a.prune_scorer,
              positions=a.prune_positions, cache_mode=a.cache_mode or ("recompute" if a.use_fast_v else "static"),
              score_dtype=a.score_dtype, options=options or None)
    if a.prune_step is not None:
        kw["step"] = a.prune_step / 100.0  # the original counts percentage points; the core uses a fraction
    if method != "none" and a.use_fast_v and kw["score_dtype"] is None:
        kw["score_dtype"] = "model"  # the original ranked its fp16 eager attention weights
    # With --prune-budget the ratio is left to the method's default here: each model's is solved at launch
    # (evaluation/resolve.py), for its own layer and image-token counts.
    if method == "none":
        kw = dict(method="none")
    elif before is not None and before.prunes:  # a before stage at ratio 0 prunes nothing: the single-stage run
        kw["before"] = before
    try:
        cfg = PruneConfig(**kw)
    except ValueError as e:
        msg = _flag_names(str(e))
        if msg.startswith("two stages at layer 0"):
            msg += ": give the decoder-side stage --prune-layer >= 1, or a --prune-method that prunes inside it"
        raise FlagError(msg) from None
    if not cfg.prunes and method != "none":
        if a.cache_mode == "recompute":
            raise FlagError("--cache-mode recompute has no effect when nothing is pruned (ratio 0)")
        cfg = PruneConfig(method="none")  # ratio 0 is the unpruned model; share its name and files
    if a.min_pixels and a.max_pixels and a.min_pixels > a.max_pixels:
        raise FlagError(f"--min-pixels {a.min_pixels} is larger than --max-pixels {a.max_pixels}")
    for flag, v in (("--fast-v-sys-length", a.fast_v_sys_length),
                    ("--fast-v-image-token-length", a.fast_v_image_token_length)):
        if v is not None and v < 0:
            raise FlagError(f"{flag} must be >= 0, got {v}")
    model_path, model_paths = _model_paths(a.model_path)
    return EvalSetting(
        prune=cfg, budget=a.prune_budget, budget_n_image=a.budget_n_image, protocol=a.protocol, dtype=a.dtype,
        attn_impl=a.attn_impl, model_path=model_path, model_paths=model_paths,
        max_new_tokens=a.max_new_tokens,
        min_pixels=a.min_pixels, max_pixels=a.max_pixels, expect_sys_length=a.fast_v_sys_length,
        expect_image_tokens=a.fast_v_image_token_length, legacy_flags=bool(a.use_fast_v),
        register_datasets=tuple(a.register_dataset))


# PruneConfig field -> the flag that sets it, for its error messages
_FIELD_FLAGS = {"ratio": "--prune-ratio", "layer": "--prune-layer", "step": "--prune-step", "seed": "--prune-seed",
                "scorer": "--prune-scorer", "positions": "--prune-positions", "score_dtype": "--score-dtype"}
# the --prune-before stage's flags (its layer is always 0, its other fields the method's)
_BEFORE_NAMES = {"method": "--prune-before METHOD", "ratio": "--prune-before-ratio", "option": "--prune-before-option"}


def _flag_names(msg: str, field_flags=None, option_flag: str = "--prune-option") -> str:
    """A PruneConfig message in terms of flags (``step has no effect`` -> ``--prune-step has no effect``)."""
    field_flags = _FIELD_FLAGS if field_flags is None else field_flags
    first = msg.split(" ", 1)[0]
    if first in field_flags:
        msg = field_flags[first] + msg[len(first):]
    if "option" in msg:
        msg += f" (set options with {option_flag} KEY=VALUE)"
    return msg


def parse_flags(argv: Sequence[str], prog: str = "run.py") -> Tuple[EvalSetting, List[str], argparse.Namespace]:
    """Split ``argv`` into our setting and the harness's arguments; raise SystemExit(2) with a message on error
    (``prog``: the command named in it; another front end passes its own)."""
    parser = build_parser(prog)
    args, rest = parser.parse_known_args(list(argv))
    try:
        setting = _setting(args)
    except FlagError as e:
        parser.error(str(e))
    return setting, rest, args


def explicit_flags(args: argparse.Namespace) -> List[str]:
    """Our model flags given on the command line (refused when no model of ours runs)."""
    defaults = build_parser().parse_args([])
    return [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
            if v != getattr(defaults, k) and k != "register_dataset"]  # datasets serve any model
