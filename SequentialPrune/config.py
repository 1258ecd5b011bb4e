"""The one object describing a pruning setting."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any, Dict, List, Optional, Tuple

from .methods import METHODS
from .schedules import SCHEDULES, Schedule, tokens_per_layer
from .scorers import SCORERS

CACHE_MODES = ("static", "recompute")
SCORE_DTYPES = ("float32", "model")
POSITIONS = ("original", "renumber")
MIN_STEP = 0.001  # a stepwise schedule's plan has R/step layers: bounded so that a typo cannot exhaust memory


def parse_option(text: str) -> Tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``, the form the CLIs take options in (``--prune-option stages=2,8,16``).

    The value is an int if it reads as one, else a float if it reads as one, else the string as given (lists
    such as ``2,8,16`` stay strings: the schedule or scorer parses its own option). Raises ValueError naming
    the expected form when there is no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE (e.g. stages=2,8,16 or image_pivots=4), got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def _option_fields(cls) -> Tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "seed")


def _layer0_ok(scorer_cls) -> bool:
    return not scorer_cls.needs or getattr(scorer_cls, "allows_layer0", False)


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


@dataclass(frozen=True)
class PruneConfig:
    """A pruning setting. Fields left ``None`` take the method's defaults (its paper's).

    method: one of ``METHODS`` (none, fastv, sequential, random, random_oneshot,
        pdrop, dart, divprune, spatial, custom).
    ratio: R, the fraction of image tokens dropped by the end, in [0, 1]; 1
        drops every image token.
    layer: K, the first decoder layer that sees fewer tokens (0 = before the
        decoder, for scorers that need no previous layer).
    step: the further fraction of N dropped per layer (stepwise schedules only).
    scorer: override the method's scorer (any of ``SCORERS``).
    seed: seed of the random scorer.
    cache_mode: ``static`` (prune at prefill, decode on the pruned KV cache) or
        ``recompute`` (no KV cache, re-select at every generated token).
    score_dtype: ``float32`` ranks float32 attention probabilities; ``model``
        casts them to the model's dtype and averages over heads in it, as the
        original research code's eager attention did (attention scorers only).
    positions: ``original`` (kept tokens keep their RoPE positions) or
        ``renumber`` (contiguous after each drop, as PyramidDrop and DivPrune do);
        None: the method's convention (see :meth:`effective_positions`).
    options: the schedule's and the scorer's own fields, e.g.
        ``{"stages": (8, 16, 24)}`` (pdrop), ``{"schedule": "2:0.5,6:0.3"}``
        (custom), ``{"image_pivots": 4, "text_pivots": 4}`` (dart).
    before: a stage that prunes before the decoder (a one-shot setting at layer 0, e.g.
        ``PruneConfig("visionzip", 0.666)``) and runs first, in the same pass: this setting's own
        schedule then starts at a layer >= 1 and its ratio, plan fractions and budget are of the N'
        image tokens that stage leaves (merged ones included), as if they were the image. ``plan(N)``
        is the combined plan, ``{0: N', ...this schedule's plan of N'}``; see :attr:`stages`.
    """
    method: str = "sequential"
    ratio: Optional[float] = None
    layer: Optional[int] = None
    step: Optional[float] = None
    scorer: Optional[str] = None
    seed: Optional[int] = None
    cache_mode: str = "static"
    score_dtype: Optional[str] = None
    positions: Optional[str] = None
    options: Any = None
    before: Optional["PruneConfig"] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose from {sorted(METHODS)}")
        spec = METHODS[self.method]
        if self.before is not None:
            self._check_before(spec)
        if self.scorer is not None and self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose from {sorted(SCORERS)}")
        if self.cache_mode not in CACHE_MODES:
            raise ValueError(f"cache_mode must be one of {CACHE_MODES}, got {self.cache_mode!r}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: resolve in place)
        sched_cls, scorer_cls = SCHEDULES[spec.schedule], SCORERS[self.scorer or spec.scorer]
        sched, opts = self._resolve_options(spec, sched_cls, scorer_cls)
        set_("options", opts)
        self._resolve_ratio(spec, sched)
        if spec.schedule == "none":
            for k in ("layer", "step", "seed", "score_dtype", "positions"):
                if getattr(self, k) is not None:
                    raise ValueError(f"{k} has no effect with method 'none' (the unpruned model)")
            return
        self._resolve_layer(spec, sched)
        self._resolve_generic("step", sched_cls.uses_step, spec.defaults.get("step", 0.1),
                              f"the {spec.schedule} schedule of {self.method} has no step (stepwise schedules do)")
        scorer_name = self.scorer or spec.scorer
        self._resolve_generic("seed", scorer_cls.uses_seed, 0, f"the {scorer_name} scorer is not random")
        self._resolve_generic("score_dtype", scorer_cls.uses_score_dtype, "float32",
                              f"the {scorer_name} scorer uses no attention probabilities")
        if self.positions is not None and self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.step is not None:
            self._check_step()
        if self.seed is not None and (isinstance(self.seed, bool) or int(self.seed) != self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.score_dtype is not None and self.score_dtype not in SCORE_DTYPES:
            raise ValueError(f"score_dtype must be one of {SCORE_DTYPES}, got {self.score_dtype!r}")
        first = sched.first_layer(self.layer)
        if self.before is not None:
            if first == 0:
                raise ValueError(f"two stages at layer 0 ({self.before.method} before the decoder, {self.method} at "
                                 f"layer {first}): a combination has one before stage (layer 0) and a decoder-side "
                                 "stage starting at a layer >= 1")
            if scorer_cls.needs_vision and SCORERS[self.before.scorer_name].needs_vision:
                raise ValueError(f"both stages read the vision tower ({self.before.scorer_name} before the decoder, "
                                 f"{scorer_name} in it); one vision capture serves one stage, so give the "
                                 "decoder-side stage a scorer of the decoder's own states")
        if self._own_prunes and getattr(scorer_cls, "merges", False) and (first != 0 or spec.schedule != "oneshot"):
            raise ValueError(f"the {scorer_name} scorer merges image embeddings before the decoder, so it runs with "
                             "a one-shot schedule at layer 0 only")
        if first == 0 and self._own_prunes and not _layer0_ok(scorer_cls):
            need = " and ".join(sorted(scorer_cls.needs))
            raise ValueError(f"layer 0 has no previous layer, and the {scorer_name} scorer ranks tokens by the "
                             f"previous layer's {need}: use a layer >= 1, or a scorer that needs no previous layer "
                             f"({', '.join(sorted(s for s, c in SCORERS.items() if _layer0_ok(c)))})")

    def _check_before(self, spec) -> None:
        b = self.before
        if not isinstance(b, PruneConfig):
            raise TypeError(f"before must be a PruneConfig (the stage before the decoder), got {type(b).__name__}")
        if spec.schedule == "none":
            raise ValueError(f"method 'none' with a before stage: use PruneConfig({b.method!r}, ...) on its own")
        if b.before is not None:
            raise ValueError(f"the before stage ({b.method}) has a before stage of its own ({b.before.method}): a "
                             "combination is one stage at layer 0 and one decoder-side stage, nested once")
        if b.schedule_name != "oneshot" or b.layer != 0:
            where = f"layer {b.layer}" if b.schedule_obj.uses_layer else f"its {b.schedule_name} schedule"
            raise ValueError(f"the before stage must prune once before the decoder (a one-shot schedule at layer 0, "
                             f"e.g. visionzip, fastervlm, divprune); {b.method} prunes at {where}: make it the "
                             "decoder-side stage, or give it layer=0")
        if b.cache_mode != "static":
            raise ValueError("the cache mode of a combination is the decoder-side setting's: leave the before "
                             "stage's cache_mode unset")

    @property
    def stages(self) -> Tuple["PruneConfig", ...]:
        """The single-stage settings this one runs, in order: ``(before, this without before)`` for a
        combination, else ``(self,)``. Each stage scores, prunes and numbers positions by its own convention,
        at its own layers (the before stage at layer 0, the other from :attr:`first_layer` on)."""
        return (self,) if self.before is None else (self.before, replace(self, before=None))

    @property
    def first_layer(self) -> int:
        """The first layer this setting's own schedule may prune before."""
        return self.schedule_obj.first_layer(self.layer)

    def _resolve_options(self, spec, sched_cls, scorer_cls):
        given = dict(self.options or {})
        sched_keys, scorer_keys = _option_fields(sched_cls), _option_fields(scorer_cls)
        unknown = sorted(set(given) - set(sched_keys) - set(scorer_keys))
        if unknown:
            valid = sorted(set(sched_keys) | set(scorer_keys))
            raise ValueError(f"unknown option(s) {unknown} for method {self.method} (schedule {spec.schedule}, "
                             f"scorer {scorer_cls.name}); valid: {valid or 'none'}")
        defaults = dict(spec.defaults.get("options", {}))
        pick = lambda keys: {k: given[k] if k in given else defaults[k] for k in keys if k in given or k in defaults}  # noqa
        sched = sched_cls(**pick(sched_keys))
        scorer = scorer_cls(**pick(scorer_keys))
        resolved = {k: getattr(sched, k) for k in sched_keys}
        resolved.update({k: getattr(scorer, k) for k in scorer_keys})
        return sched, _hashable(resolved)

    def _check_step(self) -> None:
        step = self.step
        try:
            if isinstance(step, bool):
                raise TypeError
            step = float(step)
        except (TypeError, ValueError):
            raise ValueError(f"step must be a number, a fraction in (0, 1] (e.g. 0.1), got {self.step!r}") from None
        if not (0 < step <= 1):
            raise ValueError(f"step is a fraction in (0, 1] (e.g. 0.1), got {self.step}"
                             + (f"; did you mean {step / 100}?" if step > 1 else ""))
        if step < MIN_STEP:
            raise ValueError(f"step must be >= {MIN_STEP} ({MIN_STEP * 100:g} percentage points of N), got {self.step}: "
                             f"a smaller one needs more than {round(1 / MIN_STEP)} pruning layers to reach R = 1, "
                             "more than any decoder has")
        object.__setattr__(self, "step", step)

    def _resolve_ratio(self, spec, sched: Schedule) -> None:
        r = self.ratio
        if r is None:
            r = spec.defaults.get("ratio", sched.default_ratio())
        if r is None:
            raise ValueError(f"method {self.method} needs a ratio")
        if isinstance(r, bool) or not (0.0 <= float(r) <= 1.0):
            raise ValueError(f"ratio must be in [0, 1] (the fraction of image tokens dropped), got {r}")
        if spec.schedule == "none" and r != 0:
            raise ValueError(f"method 'none' prunes nothing, but ratio {r} was given; choose a pruning method")
        object.__setattr__(self, "ratio", float(r))

    def _resolve_layer(self, spec, sched: Schedule) -> None:
        if not sched.uses_layer:
            first = sched.first_layer(None)
            if self.layer is not None and self.layer != first:
                raise ValueError(f"the first pruning layer of {self.method} is set by its options "
                                 f"({dict(self.options)}), which give {first}; got layer={self.layer}")
            object.__setattr__(self, "layer", first)
        elif self.layer is None:
            object.__setattr__(self, "layer", spec.defaults.get("layer", 2))
        k = self.layer
        if isinstance(k, bool) or int(k) != k or k < 0:
            raise ValueError(f"layer K must be an integer >= 0, got {k}")
        object.__setattr__(self, "layer", int(k))

    def _resolve_generic(self, name: str, applies: bool, default, why_not: str) -> None:
        if not applies:
            if getattr(self, name) is not None:
                raise ValueError(f"{name} has no effect with method {self.method}: {why_not}")
            return
        if getattr(self, name) is None:
            object.__setattr__(self, name, default)

    @property
    def spec(self):
        return METHODS[self.method]

    @property
    def schedule_name(self) -> str:
        return self.spec.schedule

    @property
    def scorer_name(self) -> str:
        return self.scorer or self.spec.scorer

    @property
    def options_dict(self) -> Dict[str, Any]:
        return dict(self.options)

    @cached_property
    def schedule_obj(self) -> Schedule:
        cls = SCHEDULES[self.schedule_name]
        return cls(**{k: v for k, v in self.options if k in _option_fields(cls)})

    def make_scorer(self):
        """A fresh scorer instance with this setting's options and seed."""
        cls = SCORERS[self.scorer_name]
        kw = {k: v for k, v in self.options if k in _option_fields(cls)}
        if cls.uses_seed:
            kw["seed"] = self.seed
        return cls(**kw)

    def effective_positions(self, mrope: bool) -> Optional[str]:
        """The positions convention on a model with (``mrope``) or without 3-D M-RoPE.

        Renumbering is defined for 1-D RoPE; where the method's convention is to
        renumber and the model has M-RoPE, it keeps the original positions (an
        explicit ``positions="renumber"`` is refused by the pruner instead).
        """
        if not self._own_prunes:
            return None
        if self.positions is not None:
            return self.positions
        default = self.spec.defaults.get("positions", "original")
        return "original" if mrope else default

    @property
    def prunes(self) -> bool:
        """Whether this setting can drop anything at all (its before stage included)."""
        return self._own_prunes or (self.before is not None and self.before.prunes)

    @property
    def _own_prunes(self) -> bool:
        return self.schedule_name != "none" and self.ratio > 0

    def plan(self, n_image: int) -> Dict[int, int]:
        """``{layer: image tokens kept entering it}`` for N = ``n_image``; with a before stage, its layer-0 entry
        N' and then this schedule's plan of N'."""
        plan = {}
        if self.before is not None:
            plan = self.before.plan(n_image)
            n_image = plan.get(0, n_image)
        if self._own_prunes:
            plan.update(self.schedule_obj.plan(n_image, self.ratio, self.layer, self.step))
        return plan

    def check_model(self, num_layers: int) -> None:
        """Raise if this setting cannot run on a decoder with ``num_layers`` layers."""
        if not self.prunes:
            return
        if self.before is not None:
            self.before.check_model(num_layers)
        if self.layer >= num_layers:
            raise ValueError(f"layer K={self.layer} must be < the number of decoder layers ({num_layers})")
        last = max(self.plan(10_000))
        if last >= num_layers:
            raise ValueError(
                f"the {self.method} schedule ({self.describe()}) prunes up to layer {last}, but the decoder has "
                f"only {num_layers} layers (0..{num_layers - 1}); lower the ratio or the layer, or raise the step")

    def describe(self) -> str:
        parts = [f"ratio {self.ratio:g}"]
        if self.schedule_obj.uses_layer:
            parts.append(f"layer {self.layer}")
        if self.step is not None:
            parts.append(f"step {self.step:g}")
        parts += [f"{k} {v}" for k, v in self.options]
        if self.before is not None:
            parts.append(f"before the decoder: {self.before.method} ({self.before.describe()})")
        return ", ".join(parts)

    def tokens_per_layer(self, n_image: int, num_layers: int) -> list[int]:
        """Image tokens entering each of ``num_layers`` layers."""
        return tokens_per_layer(self.plan(n_image), n_image, num_layers)

    def average_image_tokens(self, n_image: int, num_layers: int) -> float:
        """Average image tokens per decoder layer."""
        return sum(self.tokens_per_layer(n_image, num_layers)) / num_layers

    def to_dict(self) -> dict:
        """Every field (resolved) plus the schedule and scorer names, for logs and result files; a combination's
        ``before`` is its stage's own dict."""
        d = asdict(self)
        d["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}
        d.update(schedule=self.schedule_name, scorer=self.scorer_name)
        # only a combination has the key: the records of single-stage settings (run identities) stay as they were
        if self.before is None:
            del d["before"]
        else:
            d["before"] = self.before.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PruneConfig":
        """The config a :meth:`to_dict` came from; an unknown key is an error, as in the constructor."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"schedule"})  # schedule: derived, written by to_dict
        if unknown:
            raise ValueError(f"unknown PruneConfig key(s) {unknown}; the fields are {sorted(names)}")
        if "method" not in d:
            raise ValueError("a PruneConfig dict needs its 'method'")
        kw = {k: v for k, v in d.items() if k in names and v is not None}
        if isinstance(kw.get("before"), dict):
            kw["before"] = cls.from_dict(kw["before"])
        if kw.get("scorer") == METHODS.get(kw.get("method"), METHODS["sequential"]).scorer:
            kw.pop("scorer")
        return cls(**kw)

    def tag(self) -> str:
        """A short, file-name-safe name for this setting, e.g. ``sequential_r0.75_l2_s10``; a combination's is
        its before stage's, ``+``, then its own (``visionzip_r0.666_l0+sequential_r0.75_l2_s10``)."""
        if not self.prunes:
            return "none"
        if self.before is not None:
            return f"{self.before.tag()}+{replace(self, before=None, ratio=self.ratio)._tag()}"
        return self._tag()

    def _tag(self) -> str:
        spec = self.spec
        t = self.method
        if self.schedule_name == "custom":
            t += "_" + "_".join(f"{k}k{f:g}" for k, f in self.options_dict["schedule"])
            if self.ratio != self.schedule_obj.default_ratio():
                t += f"_r{self.ratio:g}"
        else:
            t += f"_r{self.ratio:g}"
        if self.schedule_obj.uses_layer:
            t += f"_l{self.layer}"
        if self.step is not None:
            t += f"_s{self.step * 100:g}"
        defaults = dict(_hashable(spec.defaults.get("options", {})))
        for k, v in self.options:
            if k == "schedule" or defaults.get(k, self._field_default(k)) == v:
                continue
            t += f"_{k}" + ("-".join(str(x) for x in v) if isinstance(v, tuple) else f"{v}")
        if self.scorer is not None and self.scorer != spec.scorer:
            t += f"_{self.scorer}"
        if self.seed is not None:
            t += f"_seed{self.seed}"
        if self.positions is not None and self.positions != spec.defaults.get("positions", "original"):
            t += f"_pos{self.positions}"
        if self.score_dtype not in (None, "float32"):
            t += f"_score{self.score_dtype}"
        if self.cache_mode != "static":
            t += f"_{self.cache_mode}"
        return t

    def _field_default(self, key: str):
        for cls in (SCHEDULES[self.schedule_name], SCORERS[self.scorer_name]):
            for f in fields(cls):
                if f.name == key:
                    return _hashable(f.default)
        return None

    @classmethod
    def for_budget(cls, method: str, avg_image_tokens: float, n_image: int, num_layers: int,
                   resolution: float = 1e-4, **kw) -> "PruneConfig":
        """Solve the ratio R so that the average image tokens per layer is as close as
        possible to ``avg_image_tokens`` (not above it when reachable), for N = ``n_image``.
        ``kw`` are the other fields (layer, step, options, ...), fixed while R varies."""
        if not (0 < avg_image_tokens <= n_image):
            raise ValueError(f"avg_image_tokens must be in (0, {n_image}], got {avg_image_tokens}")
        kw.pop("ratio", None)
        cls(method=method, **kw)  # invalid fixed fields fail here, with their own message
        best = None
        for i in range(int(round(1 / resolution)) + 1):
            r = round(i * resolution, 10)
            try:
                c = cls(method=method, ratio=r, **kw)
                c.check_model(num_layers)
            except ValueError:
                continue
            avg = c.average_image_tokens(n_image, num_layers)
            # Keep the smallest R reaching the budget, else the closest.
            key = (avg > avg_image_tokens + 1e-9, abs(avg - avg_image_tokens))
            if best is None or key < best[0]:
                best = (key, c)
        if best is None or best[0][0]:
            reach = None if best is None else best[1].average_image_tokens(n_image, num_layers)
            raise ValueError(
                f"no {method} setting with {kw or 'its defaults'} reaches an average of {avg_image_tokens} image "
                f"tokens per layer over {num_layers} layers (closest: {reach}); prune earlier (a lower layer)")
        return best[1]

    def solve_ratio(self, avg_tokens: float, n_image: int, num_layers: int) -> "PruneConfig":
        """This setting with the ratio R that meets an average of ``avg_tokens`` image tokens per decoder layer
        (of ``num_layers``, for N = ``n_image``), solved by :meth:`for_budget`.

        Every other field stays as it is: layer, step, scorer, seed, cache mode, score precision, positions and
        options (the layer of a schedule that takes it from its options follows them, as it did here). Raises
        ValueError, as :meth:`for_budget` does, when no ratio reaches the budget.
        """
        fixed = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("method", "ratio")}
        fixed["options"] = self.options_dict  # the form a caller writes (and an error message shows)
        if not self.schedule_obj.uses_layer:
            del fixed["layer"]
        return PruneConfig.for_budget(self.method, avg_tokens, n_image, num_layers,
                                      **{k: v for k, v in fixed.items() if v not in (None, ())})

    @staticmethod
    def option_names(method: str, scorer: Optional[str] = None) -> Tuple[str, ...]:
        """The ``options`` keys that ``method`` takes: its schedule's, then its scorer's (or ``scorer``'s)."""
        spec = METHODS[method]
        return _option_fields(SCHEDULES[spec.schedule]) + _option_fields(SCORERS[scorer or spec.scorer])

    def replace(self, **changes) -> "PruneConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def before_methods() -> List[str]:
    """The methods a before stage can run: those PruneConfig accepts as ``before`` at layer 0 (one-shot)."""
    out = []
    for name, spec in sorted(METHODS.items()):
        if spec.schedule != "oneshot":
            continue
        try:  # the decoder-side stage is only a probe of PruneConfig's own before-stage check
            PruneConfig("sequential", before=PruneConfig(name, layer=0))
        except ValueError:
            continue
        out.append(name)
    return out


def before_stage(method: Optional[str], ratio: Optional[float], options: Optional[Dict[str, Any]],
                 names: Dict[str, str]) -> Optional[PruneConfig]:
    """A combination's stage before the decoder (layer 0) from a front end's settings; None without ``method``.

    ``names`` spells the settings as the front end does: ``"method"`` (how to give one, e.g. ``"--prune-before
    METHOD"``), ``"ratio"`` and ``"option"`` (e.g. ``"--prune-before-ratio"``), and optionally ``"option_syntax"``
    (default ``"<option> KEY=VALUE"``). ValueError in those words, for a ratio or options given without a method,
    or a setting PruneConfig refuses (a bad ratio, an unknown option).
    """
    if method is None:
        given = [names[k] for k, v in (("ratio", ratio), ("option", options or None)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set the stage before the decoder: add {names['method']} "
                             f"({', '.join(before_methods())}), or drop them")
        return None
    try:  # layer 0: every one-shot method takes its K, and a before stage prunes before the decoder
        return PruneConfig(method, ratio, layer=0, options=options or None)
    except ValueError as e:
        msg = str(e)
        msg = names["ratio"] + msg[len("ratio"):] if msg.startswith("ratio ") else \
            f"{names['method'].replace('METHOD', method)}: {msg}"
        syntax = names.get("option_syntax", f"{names['option']} KEY=VALUE")
        raise ValueError(msg + (f" (set options with {syntax})" if "option" in msg else "")) from None
