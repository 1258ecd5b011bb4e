#!/usr/bin/env python
"""VLMEvalKit's run loop with Sequential Prune models.

Usage is VLMEvalKit's, plus our flags (see ``flags.py`` or ``--help``)::

    python run.py --data MME OCRBench --model llava_seqprune \\
        --prune-method sequential --prune-ratio 0.75 --prune-layer 2
    torchrun --nproc-per-node=4 run.py --data DocVQA_VAL --model qwen2vl_seqprune --prune-method fastv

Steps: parse our flags and check them (no model, no vlmeval yet); import
vlmeval (it narrows CUDA_VISIBLE_DEVICES per rank at import, so before any CUDA
use); parse the rest with vlmeval's own parser; check checkpoints, datasets and
old results; register our models under names that carry the setting; call
vlmeval's ``run_task``; then check that every model x dataset produced results.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from flags import build_parser, explicit_flags, parse_flags  # noqa: E402

RANK = int(os.environ.get("RANK", 0))


def note(msg: str) -> None:
    if RANK == 0:
        print(f"[seqprune] {msg}", file=sys.stderr, flush=True)


class LaunchError(RuntimeError):
    """A problem found before any model loads."""


def _judge_configured(args) -> bool:
    return bool(args.judge or args.judge_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LOCAL_LLM"))


def _resolve_models(args, setting, ns):
    """Our base model names in args.model (original names mapped when the original flags are used)."""
    from seqprune_models import MODELS, ORIGINAL_MODEL_NAMES

    names = list(args.model or [])
    if setting.legacy_flags:
        for i, n in enumerate(names):
            if n in ORIGINAL_MODEL_NAMES:
                note(f"--use-fast-v: model {n} runs as {ORIGINAL_MODEL_NAMES[n]} "
                     f"({MODELS[ORIGINAL_MODEL_NAMES[n]].default_path} unless --model-path)")
                names[i] = ORIGINAL_MODEL_NAMES[n]
    args.model = names
    ours = [n for n in names if n in MODELS]
    given = explicit_flags(ns)
    if not ours and given:
        raise LaunchError(f"{', '.join(given)} apply to our models ({', '.join(MODELS)}), and --model names none")
    if len(set(ours)) > 1 and setting.model_path:
        raise LaunchError("--model-path with several of our models is ambiguous; run them one at a time")
    if (setting.min_pixels or setting.max_pixels) and not any(MODELS[n].family == "qwen" for n in ours):
        raise LaunchError("--min-pixels/--max-pixels apply to Qwen models only")
    return ours


def _check_static(args, setting, ours):
    from local_datasets import dataset_known, register_local_datasets
    from seqprune_models import checkpoint_layers, protocol_of

    if setting.attn_impl == "flash_attention_2":
        import torch
        if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
            raise LaunchError("--attn-impl flash_attention_2 needs CUDA and the flash-attn package; use sdpa")
    try:
        register_local_datasets(setting.register_datasets)
    except FileNotFoundError as e:
        raise LaunchError(str(e)) from None
    unknown = [d for d in args.data if not dataset_known(d)]
    if unknown:
        raise LaunchError(f"unknown dataset(s) {unknown}: not a VLMEvalKit name and no $LMUData/<name>.tsv")
    for base in dict.fromkeys(ours):
        try:
            layers, _, n_fixed = checkpoint_layers(base, setting.model_path)
            if setting.budget is not None:
                setting = solve_budget(setting, layers, n_fixed)
                note(f"--prune-budget {setting.budget:g}: {base} runs {setting.prune.method} at ratio "
                     f"{setting.prune.ratio:g} ({setting.prune.tag()})")
            setting.prune.check_model(layers)
            proto = protocol_of(base, setting)  # refuses e.g. --protocol paper for a model the paper did not run
            note(f"{base}: {proto['protocol']} protocol, " + ", ".join(
                f"{k} {v}" for k, v in proto.items() if k != "protocol"))
        except ValueError as e:
            raise LaunchError(f"{base}: {e}") from None
    return setting


NOMINAL_N = 1000  # N for a fractional budget on models whose image token count varies: plans scale with N


def solve_budget(setting, num_layers: int, n_fixed):
    """The setting with the ratio that meets ``--prune-budget`` (average image tokens per layer)."""
    import dataclasses

    from SequentialPrune import PruneConfig

    b = setting.budget
    n = setting.budget_n_image or n_fixed
    if b > 1 and n is None:
        raise ValueError(f"--prune-budget {b:g} is a token count, but this model's image token count varies: "
                         "give --budget-n-image N, or a fraction of N (<= 1)")
    n = n or NOMINAL_N
    target = b if b > 1 else b * n
    fixed = {k: v for k, v in setting.prune.to_dict().items()
             if k in ("layer", "step", "scorer", "seed", "cache_mode", "score_dtype", "positions", "options")}
    if fixed.get("scorer") == setting.prune.spec.scorer:
        fixed.pop("scorer")
    if not setting.prune.schedule_obj.uses_layer:
        fixed.pop("layer", None)
    cfg = PruneConfig.for_budget(setting.prune.method, target, n, num_layers,
                                 **{k: v for k, v in fixed.items() if v is not None})
    return dataclasses.replace(setting, prune=cfg)


def _register(args, setting, ours, work_dir) -> set:
    """Register our models, refuse stale results, write the setting files; rename args.model."""
    from run_record import check_not_stale, identity, write_setting
    from seqprune_models import model_kwargs, register

    renamed = {}
    for base in dict.fromkeys(ours):
        name = register(base, setting, work_dir)
        run_dir = Path(work_dir) / name
        kw = model_kwargs(base, setting, str(run_dir))
        ident = identity(kw, kw["dtype"], base)  # the dtype the protocol resolved (issue 9)
        try:  # every rank checks (read-only), so all of them stop, not only rank 0
            check_not_stale(run_dir, ident)
        except RuntimeError as e:
            raise LaunchError(str(e)) from None
        if RANK == 0:
            vargs = {k: v for k, v in vars(args).items() if k not in ("key", "judge_key")}  # no secrets on disk
            vargs["model"] = [name if n == base else n for n in args.model]
            write_setting(run_dir, name, ident, setting.to_dict(), args.data, vargs,
                          int(os.environ.get("WORLD_SIZE", 1)), COMMAND_LINE)
        note(f"{base} -> {name} (results in {run_dir})")
        renamed[base] = name
    args.model = [renamed.get(n, n) for n in args.model]
    return set(renamed.values())


COMMAND_LINE: list = []


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    COMMAND_LINE[:] = [sys.argv[0]] + argv  # as typed, before vlmeval's parser sees only its part
    setting, rest, ns = parse_flags(argv)
    if "-h" in rest or "--help" in rest:
        build_parser().print_help()
        print("\nVLMEvalKit's flags:\n")
    import vlmeval.run as vrun  # noqa: E402  (reads RANK/WORLD_SIZE; may narrow CUDA_VISIBLE_DEVICES)
    from vlmeval.smp import load_env

    load_env()
    sys.argv = [sys.argv[0]] + rest
    args = vrun.parse_args()
    try:
        if args.config is not None or args.api_mode:
            if explicit_flags(ns):
                raise LaunchError("our flags need --data/--model (not --config or --api-mode)")
            vrun.run_task(args)
            return 0
        if not args.data or not args.model:
            raise LaunchError("give --data and --model")
        ours = _resolve_models(args, setting, ns)
        setting = _check_static(args, setting, ours)
        unknown = [m for m in args.model if m not in ours and m not in vrun.supported_VLM and not args.base_url]
        if unknown:
            raise LaunchError(f"unknown model(s) {unknown}")
        if not _judge_configured(args):
            args.judge = "exact_matching"  # else each dataset retries an unreachable judge API for minutes
            note("no judge API key configured: using --judge exact_matching")
        work_dir = os.environ.get("MMEVAL_ROOT", args.work_dir)  # vlmeval gives MMEVAL_ROOT precedence
        registered = _register(args, setting, ours, work_dir)
    except LaunchError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        from dist_fallback import install_gloo_fallback
        install_gloo_fallback()
    vrun.run_task(args)
    if RANK != 0:
        return 0
    from results_summary import write_results
    from run_check import dataset_problems

    bad = []
    for model in args.model:
        found = dataset_problems(work_dir, model, args.data, args.mode)
        bad += [f"{model} x {d}: {why}" for d, why in found.items()]
        if model in registered:
            write_results(Path(work_dir) / model, args.data, found)
    for line in bad:
        print(f"[seqprune] NO RESULT: {line}", file=sys.stderr)
    if not bad:
        note(f"all {len(args.model)} model(s) x {len(args.data)} dataset(s) produced results in {work_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
