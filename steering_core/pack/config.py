"""A pack's build settings: the TOML config read into typed dataclasses, with every impossible
value refused before anything is written (a NaN, a negative count, an unknown key or SAE
architecture would otherwise surface as a traceback, or a wrong pack, after minutes of building)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steering_core.errors import SteeringCoreError
from steering_core.measure.alpha import DEFAULT_REFINE
from steering_core.measure.effects import EffectSpec
from steering_core.model.loading import PROJECT_ROOT
from steering_core.model.precision import check_device_spec
from steering_core.model.precision import resolve as resolve_precision
from steering_core.model.steerable import layer_of_hook
from steering_core.pack.corpus import CorpusSpec
from steering_core.pack.sae_training import SAETrainSpec, architecture
from steering_core.pack.stats import StatsSpec

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel


class PackConfigError(SteeringCoreError):
    """A pack configuration that cannot be built as written."""


@dataclass
class AlphaSpec:
    """How each feature's α is loss-matched on held-out reference text (docs/design.md §Steering strength)."""

    target_dce: float = 0.5
    ref_windows: int = 2
    ref_tokens: int = 32
    tolerance: float = 0.2
    symmetric: bool = False  # one-sided probe: 2 evaluations per feature unless the check fails
    # bracketing steps for rows whose two solves still miss (measure.alpha); 0 is how packs were
    # built before it existed (the shipped embedded pack: 119 of 3,072 features missed)
    refine: int = DEFAULT_REFINE


@dataclass
class ControlSpec:
    """The generic-response control (docs/design.md §Generic response): random unit directions
    measured like features, at their own loss-matched α and with the same rollouts."""

    directions: int = 128
    top: int = 10  # a target counts for a direction when it is among the direction's ``top`` raised
    hub_share: float = 0.1  # hub: raised by at least this share of random directions


@dataclass
class ReferenceSpec:
    """The reference that ships with a pack: random non-dense features re-measured with fresh seeds
    at the paper's budget, against which the pack's own effects are scored."""

    features: int = 12
    rollouts_per_prompt: int = 64  # 896 rollouts over the 14 prompts
    seed_offset: int = 1000


@dataclass
class TopupSpec:
    """Adaptive budget (docs/design.md §Adaptive budget): after the effects stage, features whose
    top-``top`` list is contested (more than ``contested_over`` targets within ``z`` SE of its
    boundary) are measured on more rollouts, pooled with their first ones."""

    rollouts_per_prompt: int = 0  # a topped-up feature's rollouts per prompt in all; 0: no top-up
    contested_over: int = 30
    share: float = 1.0  # at most this share of all features is topped up (the threshold rises until it holds)
    top: int = 10
    z: float = 2.0


@dataclass
class PackConfig:
    """One pack build: which model, hook and SAE, and the settings of every stage."""

    name: str
    model: str = "embedded"
    layer: int | None = None
    hook: str | None = None
    sae: str = "train"  # "train", or an SAE spec (folder, release:id) to measure instead
    seed: int = 0
    out_dir: str | None = None
    ship_to: str | None = None
    top_effects: int = 64
    neighbors: int = 32
    stability_features: int = 50
    dense_threshold: float = 0.2
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    sae_train: SAETrainSpec = field(default_factory=SAETrainSpec)
    stats: StatsSpec = field(default_factory=StatsSpec)
    effects: EffectSpec = field(default_factory=EffectSpec)
    alpha: AlphaSpec = field(default_factory=AlphaSpec)
    control: ControlSpec = field(default_factory=ControlSpec)
    reference: ReferenceSpec = field(default_factory=ReferenceSpec)
    topup: TopupSpec = field(default_factory=TopupSpec)
    precision: str = "auto"  # auto (bf16 where the hardware has it), fp32 or bf16
    device: str = "auto"  # auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N
    # Where the chunked effect stages run (docs: README "Building a pack on one GPU or a Ray cluster"):
    ray: str = ""  # "" (this process), auto, local:N, ray://host:port or host:port
    ray_actors: int = 0  # Ray workers; 0: one per GPU of the cluster (one per CPU without GPUs; local:N → N)
    ray_threads: int = 0  # torch threads per Ray worker; 0: the driver's count (bit-identical chunks on CPUs)
    # A folder the expensive, corpus-independent progress is copied to as the build goes, so a build
    # can continue on another machine (docs/design.md §Builds that span machines); "" for none.
    progress: str = ""
    progress_every: int = 16  # effects chunks between two saves of the progress folder

    @property
    def workdir(self) -> Path:
        return resolve_path(self.out_dir) if self.out_dir else PROJECT_ROOT / "cache" / "build" / self.name

    def to_dict(self) -> dict[str, Any]:
        """The settings that make the pack what it is (stored in ``meta.config``); where the work ran
        (the Ray settings) is left out: with the default thread count it changes no number."""
        out = dataclasses.asdict(self)
        for key in RUN_ONLY:
            out.pop(key, None)
        return out


#: Settings that say where the build runs, not what it builds.
RUN_ONLY = ("ray", "ray_actors", "ray_threads", "progress", "progress_every")

#: The config's sections, each one nested dataclass of :class:`PackConfig`.
SECTIONS = ("corpus", "sae_train", "stats", "effects", "alpha", "control", "reference", "topup")


def resolve_path(p: str) -> Path:
    """A config path: ``~`` expanded, relative paths taken from the project root (not the cwd)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise PackConfigError(f"[{where}] must be a table of settings.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PackConfigError(f"Unknown setting(s) {unknown} in [{where}]; known: {sorted(names)}.")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            kwargs[k] = _from_dict(type(default), v, k)
        elif isinstance(default, tuple) and isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def load_config(path: str | Path) -> PackConfig:
    """Read a TOML pack config; unknown keys and impossible values are errors, not silent defaults."""
    path = Path(path)
    if not path.exists():
        raise PackConfigError(f"No pack config at {path}.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PackConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:  # a folder, or no permission to read it
        raise PackConfigError(f"Cannot read the pack config {path} ({exc.strerror or exc}).") from None
    if "name" not in data:
        data["name"] = path.stem
    nested = {k: data.pop(k) for k in SECTIONS if k in data}
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(PackConfig)})
    if unknown:
        raise PackConfigError(f"Unknown setting(s) {unknown} in {path.name}.")
    cfg = PackConfig(**data)
    for k, v in nested.items():
        setattr(cfg, k, _from_dict(type(getattr(cfg, k)), v, k))
    check_values(cfg)
    return cfg


#: Settings whose default is None but which take a whole number when given.
_OPTIONAL_INTS = {"layer", "dead_feature_window"}


def _check_value(key: str, value: Any, default: Any, name: str = "") -> None:
    """One setting against the type of its default: whole numbers and numbers must be finite and
    not negative, texts must be text, lists hold items like the default's."""
    def fail(why: str) -> None:
        raise PackConfigError(f"{key} {why}, not {value!r}.")

    if default is None:
        default = 0 if name in _OPTIONAL_INTS else ""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("must be a whole number")
        if value < 0:
            fail("cannot be negative")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("must be a number")
        if not math.isfinite(value):
            fail("must be a finite number")
        if value < 0:
            fail("cannot be negative")
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("must be text")
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            fail("must be a list")
        if default:
            for i, item in enumerate(value):
                _check_value(f"{key}[{i}]", item, default[0])
                if isinstance(item, str) and not item.strip():
                    raise PackConfigError(f"{key}[{i}] is empty; every item must be non-empty text.")


#: Settings added after packs were built, with the value older code behaved as: a stored config
#: without them reads as that value, so a resumed or carried build neither sees a change nor
#: claims today's default.
LEGACY = {"alpha": {"refine": 0}}


def with_legacy(settings: dict) -> dict:
    """``settings`` (a stored config, or its sections) with :data:`LEGACY` filled in where absent."""
    out = dict(settings)
    for section, keys in LEGACY.items():
        if isinstance(out.get(section), dict):
            out[section] = {**keys, **out[section]}
    return out


def check_values(cfg: PackConfig) -> None:
    """Refuse impossible values before anything is written: the pack name (it becomes a folder),
    every setting against its default's type, the hook's form and the SAE architecture."""
    from steering_core.names import InvalidNameError, clean_name

    try:
        clean_name(cfg.name, "pack")  # the name becomes a folder under cache/build
    except InvalidNameError as exc:
        raise PackConfigError(str(exc)) from None
    fresh = PackConfig(name=cfg.name)
    for f in dataclasses.fields(PackConfig):
        value, default = getattr(cfg, f.name), getattr(fresh, f.name)
        items = ([(f"[{f.name}] {g.name}", g.name, getattr(value, g.name), getattr(default, g.name))
                  for g in dataclasses.fields(default)] if dataclasses.is_dataclass(default)
                 else [(f.name, f.name, value, default)])
        for key, name, v, d in items:
            if v is not None:  # None only where the default is None and the setting was left out
                _check_value(key, v, d, name)
    try:
        architecture(cfg.sae_train.architecture)
    except SteeringCoreError as exc:
        raise PackConfigError(f"[sae_train] architecture: {exc}") from None
    try:
        resolve_precision(cfg.precision)
        cfg.device = check_device_spec(cfg.device)  # its form; whether it exists is checked before a build
        if cfg.ray:
            from steering_core.pack.distributed.ray_pool import parse_address

            parse_address(cfg.ray)
    except SteeringCoreError as exc:
        raise PackConfigError(str(exc)) from None
    try:
        cfg.effects.check()
    except SteeringCoreError as exc:
        raise PackConfigError(f"[effects] {exc}") from None
    _check_topup(cfg)
    if not 0 <= cfg.alpha.refine <= 16:
        raise PackConfigError(f"[alpha] refine must be 0 to 16 bracketing steps, not {cfg.alpha.refine!r}.")
    if cfg.progress_every < 1:
        raise PackConfigError(f"progress_every must be at least 1 chunk, not {cfg.progress_every!r}.")
    if not 0 < cfg.control.hub_share <= 1:
        raise PackConfigError(f"[control] hub_share must be in (0, 1], not {cfg.control.hub_share!r}.")
    if cfg.hook:
        try:
            layer_of_hook(cfg.hook)  # the form; the range is checked against the model
        except SteeringCoreError as exc:
            raise PackConfigError(str(exc)) from None


def _check_topup(cfg: PackConfig) -> None:
    t, e = cfg.topup, cfg.effects
    if not t.rollouts_per_prompt:
        return
    if t.rollouts_per_prompt <= e.rollouts_per_prompt:
        raise PackConfigError(f"[topup] rollouts_per_prompt ({t.rollouts_per_prompt}) is a topped-up feature's rollouts "
                              f"in all, so it must exceed [effects] rollouts_per_prompt ({e.rollouts_per_prompt}); "
                              "0 turns the top-up off.")
    if t.rollouts_per_prompt - e.rollouts_per_prompt < 2:
        raise PackConfigError(f"[topup] rollouts_per_prompt ({t.rollouts_per_prompt}) must add at least 2 rollouts per "
                              f"prompt to [effects] rollouts_per_prompt ({e.rollouts_per_prompt}): the added pass's "
                              "standard error is estimated within prompts.")
    if t.rollouts_per_prompt > e.baseline_rollouts_per_prompt:
        raise PackConfigError(f"[topup] rollouts_per_prompt ({t.rollouts_per_prompt}) needs an unsteered twin for every "
                              f"rollout: set [effects] baseline_rollouts_per_prompt to at least {t.rollouts_per_prompt} "
                              f"(it is {e.baseline_rollouts_per_prompt}).")
    if t.top < 1:
        raise PackConfigError(f"[topup] top must be at least 1, not {t.top!r}.")
    if not 0 < t.share <= 1:
        raise PackConfigError(f"[topup] share must be in (0, 1], not {t.share!r}.")


def resolve_layer(cfg: PackConfig, model: SteerableModel) -> int:
    """The block whose output the pack studies, from ``layer`` or ``hook`` (checked against the model)."""
    if cfg.hook:
        try:
            layer = layer_of_hook(cfg.hook, model.n_layers)
        except SteeringCoreError as exc:
            raise PackConfigError(f"Hook {cfg.hook!r} does not exist on {model.name}: {exc}") from exc
    elif cfg.layer is not None:
        layer = int(cfg.layer)
    else:
        layer = model.default_layer
    if not 0 <= layer < model.n_layers:
        raise PackConfigError(f"Layer {layer} does not exist on {model.name} (layers 0..{model.n_layers - 1}).")
    return layer
