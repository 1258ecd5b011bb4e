"""What the benchmark runs: the method registry and the grid of settings.

Also adds the ``score_only`` method as an extension of the core library (no
core change): it scores at every layer Sequential Prune would, and keeps every
token, so its cost over ``none`` is the scoring overhead alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from SequentialPrune import METHODS, SCHEDULES, Method, PruneConfig, register_method, register_schedule
from SequentialPrune.schedules import Stepwise


@dataclass(frozen=True)
class StepwiseScoreOnly(Stepwise):
    """The stepwise schedule's layers, each keeping all N tokens: scores are computed, nothing is dropped."""

    def plan(self, n_image, ratio, layer, step):
        return {k: n_image for k in super().plan(n_image, ratio, layer, step)}


def register_score_only() -> None:
    """Add ``score_only`` to the core registries (idempotent).

    Called when the benchmark runs rather than on import: the core's own tests
    iterate over ``METHODS`` at collection time and must not see it.
    """
    if "stepwise_scoreonly" not in SCHEDULES:
        register_schedule("stepwise_scoreonly")(StepwiseScoreOnly)
    if "score_only" not in METHODS:
        register_method(Method("score_only", "stepwise_scoreonly", "attention",
                           "computes every score Sequential Prune needs, drops nothing",
                           defaults=dict(ratio=0.75, layer=2, step=0.1)))


def grid_fields(method: str, layer: Optional[int], step: Optional[float], options: Optional[dict] = None,
                **kw) -> dict:
    """``PruneConfig`` keywords (ratio aside) of a grid point: the grid's layer, step and options only where the
    method has them (PyramidDrop's and custom schedules' layers are their options; ``layer=None`` keeps the
    method's own K), so one grid serves every method."""
    schedule = SCHEDULES[METHODS[method].schedule]
    if schedule.uses_step and step is not None:
        kw["step"] = step
    if schedule.uses_layer and layer is not None:
        kw["layer"] = layer
    names = set(PruneConfig.option_names(method, kw.get("scorer")))
    if options and names & set(options):
        kw["options"] = {k: v for k, v in options.items() if k in names}
    return kw


@dataclass(frozen=True)
class BenchVariant:
    """One entry of ``--methods``: which library method runs, and how the benchmark runs it (attention, cache)."""
    core: Optional[str]            # METHODS key; None = the stock model without hooks
    doc: str
    attn: Optional[str] = None     # forced text attention implementation
    cache_mode: str = "static"
    slow: bool = False             # repeats capped by --slow-repeats

    @property
    def takes_ratio(self) -> bool:
        return self.core is not None


BENCH_METHODS: Dict[str, BenchVariant] = {
    "none": BenchVariant(None, "the stock model, no hooks: the unpruned baseline"),
    "score_only": BenchVariant("score_only", "computes every score Sequential Prune needs, drops nothing"),
    "original": BenchVariant("sequential", "Sequential Prune run like the original code: eager attention, no KV "
                             "cache, re-selection at every generated token", attn="eager", cache_mode="recompute",
                             slow=True),
    # Built from METHODS at import, so a method added to the library is benchmarked without an entry here
    # (its defaults, the given attention, the static cache); "none" is the stock model above, without hooks.
    **{name: BenchVariant(name, m.summary) for name, m in METHODS.items() if name != "none"},
}


@dataclass(frozen=True)
class Setting:
    """One row of the benchmark: a method, an attention implementation and a pruning config."""
    method: str
    attn: str
    config: Optional[PruneConfig] = None
    budget: Optional[float] = None
    status: str = "ok"       # ok | unreachable (budget) | invalid (does not fit the model)
    note: str = ""

    @property
    def use_cache(self) -> bool:
        return self.config is None or self.config.cache_mode == "static"

    def tokens_per_layer(self, n_image: int, num_layers: int) -> List[int]:
        """Planned image tokens entering each layer (the stock model keeps all)."""
        if self.config is None:
            return [n_image] * num_layers
        return self.config.tokens_per_layer(n_image, num_layers)

    def label(self) -> str:
        c = self.config
        base = self.method if c is None else f"{self.method} K={c.layer} R={c.ratio:g}"
        if c is not None and c.options:
            base += " " + " ".join(f"{k}={v}" for k, v in c.options)
        if c is not None and c.schedule_name.startswith("stepwise"):
            base += f" step={c.step:g}"
        if c is not None and c.before is not None:  # a combination: its before stage comes first
            b = c.before
            base = f"{b.method} R={b.ratio:g} + " + base
        return base + (f" @{self.budget:g}" if self.budget is not None else "") + f" [{self.attn}]"


def expand(methods: Sequence[str], attns: Sequence[str], ratios: Sequence[float], layers: Sequence[Optional[int]],
           step: float, budgets: Optional[Sequence[float]], n_image: int, num_layers: int,
           options: Optional[dict] = None) -> List[Setting]:
    """The grid: per attention and method, each (K, R), or each (K, budget) when budgets are given.
    A K of None is each method's own; ``options`` go to the methods that have them."""
    register_score_only()
    out, seen = [], set()
    for attn in attns:
        for name in methods:
            m = BENCH_METHODS[name]
            a = m.attn or attn
            for s in _method_settings(name, m, a, ratios, layers, step, budgets, n_image, num_layers, options):
                key = (s.method, s.attn, s.config, s.budget)
                if key not in seen:  # forced-attention methods would repeat per --attn
                    seen.add(key)
                    out.append(s)
    return out


def _method_settings(name, m: BenchVariant, attn, ratios, layers, step, budgets, n_image, num_layers, options):
    if not m.takes_ratio:
        yield Setting(name, attn)
        return
    for k in layers:
        fields = dict(cache_mode=m.cache_mode)
        try:
            fields = grid_fields(m.core, k, step, options, cache_mode=m.cache_mode)
        except ValueError:
            pass
        if budgets:
            for b in budgets:  # as run.py's --prune-budget: a fraction of N if <= 1, else a token count
                yield _solve(name, attn, m.core, b * n_image if b <= 1 else b, fields, n_image, num_layers)
            continue
        for r in ratios:
            try:
                cfg = PruneConfig(m.core, ratio=r, **fields)
                cfg.check_model(num_layers)
                yield Setting(name, attn, cfg)
            except ValueError as e:
                yield Setting(name, attn, _quiet_config(m.core, r, fields), status="invalid", note=str(e))


def _solve(name, attn, core, budget, fields, n_image, num_layers) -> Setting:
    """The grid point's config with R solved for ``budget`` (``PruneConfig.solve_ratio``); a budget no R reaches,
    or a grid point that is no valid config, is kept as an 'unreachable' row."""
    try:
        cfg = PruneConfig(core, **fields).solve_ratio(budget, n_image, num_layers)
        return Setting(name, attn, cfg, budget=budget)
    except ValueError as e:
        return Setting(name, attn, _quiet_config(core, 0.0, fields), budget=budget, status="unreachable", note=str(e))


def _quiet_config(core, r, fields) -> Optional[PruneConfig]:
    try:
        return PruneConfig(core, ratio=r, **fields)
    except ValueError:
        return None
