""""What does this vector do?" for any vector, through the same machinery as SAE features.

Three answers, cheapest first:

* **cosine**: the SAE features whose decoder rows point the same way (what the vector *looks
  like*; free, and often misleading, which is why the next two exist);
* **predicted effects**: the pack's effect approximator applied to the vector (milliseconds);
* **measured effects**: the pack's own measurement ([Chalnev 2024] §3; docs/design.md
  §Feature effects) run on this one vector at a loss-matched α, against the pack's shared
  baseline, so the numbers are on the same scale as every feature's effects in the browser. Seconds on a CPU, so results are cached in DuckDB by
  (pack, vector bytes, layer, α, seed).

Every list is made of :class:`steering_core.browse.rows.ListRow`, so the pages draw them with the
same components as the feature browser.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from steering_core.browse.lists import as_raw_prediction, rank_cosine, rank_predicted
from steering_core.browse.rows import (
    ListFilter,
    ListRow,
    check_filter,
    check_k,
    feature_table,
    with_user_labels,
)
from steering_core.errors import SteeringCoreError
from steering_core.measure.alpha import DEFAULT_REFINE
from steering_core.model.precision import dtype_name
from steering_core.pack.reader import FeaturePack
from steering_core.storage.crashpoints import crash_point
from steering_core.storage.library import LibraryTable

if TYPE_CHECKING:
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel


class VectorEffectsError(SteeringCoreError):
    """A vector that cannot be compared with this pack's features as given."""


def _vector(pack: FeaturePack, vector) -> np.ndarray:
    v = np.asarray(vector.detach().cpu().float().numpy() if isinstance(vector, torch.Tensor) else vector,
                   dtype=np.float64).reshape(-1)
    w = pack.decoder_matrix()
    if v.shape[0] != w.shape[1]:
        raise VectorEffectsError(f"The vector has {v.shape[0]} dimensions; this pack's SAE reads {w.shape[1]}.")
    if not np.isfinite(v).all():
        raise VectorEffectsError("The vector contains NaN or infinite values.")
    n = np.linalg.norm(v)
    if n == 0:
        raise VectorEffectsError("The vector is zero: it does nothing.")
    return v / n


def check_layer(pack: FeaturePack, layer: int) -> None:
    """Effects are measured at the pack's SAE layer; a vector for another layer would be compared
    with the wrong features."""
    pl = pack.meta_json("layer", None)
    if pl is None:
        return  # a pack that does not record its layer cannot be checked
    pl = int(pl)
    if int(layer) != pl:
        raise VectorEffectsError(f"This vector steers block {layer}, but the pack's SAE reads block {pl}: "
                                 f"fit or choose a vector for block {pl} to compare it with the features.")


def cosine_rows(pack: FeaturePack, vector, flt: ListFilter | None = None, k: int = 32,
                notes=None) -> list[ListRow]:
    """Features whose decoder rows are most cosine-similar to the vector (highest first)."""
    flt, k = check_filter(flt), check_k(k)
    cos = pack.decoder_matrix().astype(np.float64) @ _vector(pack, vector)
    return with_user_labels(pack, rank_cosine(pack, cos, flt, k), notes)


def predicted(pack: FeaturePack, vector) -> np.ndarray:
    """The approximator's effects of the (unit-normalised) vector ``[d_sae]``."""
    approx = pack.approximator()
    if approx is None:
        raise VectorEffectsError("This pack has no effect approximator, so effects cannot be predicted; "
                                 "measure them instead.")
    v = _vector(pack, vector)
    if v.shape[0] != approx.M.shape[0]:
        raise VectorEffectsError(f"The approximator reads vectors of size {approx.M.shape[0]}, not {v.shape[0]}.")
    return as_raw_prediction(pack, approx.predict(torch.from_numpy(v).float()[None]).numpy()[0].astype(np.float64))


def prediction_note(pack: FeaturePack) -> str:
    """How far a predicted list can be trusted, in the pack's own held-out figure. The approximator
    is a linear map from direction to effects; a researcher reading its list beside a measured one
    needs to know that it explains only part of a measured list, and that it carries no error bar."""
    r2 = pack.meta_json("approximator_r2_heldout")
    if not isinstance(r2, (int, float)) or math.isnan(r2):
        return "Predicted by the effect approximator, not measured; this pack does not say how well it predicts."
    n = pack.meta.get("approximator_pairs")
    fitted = f" fitted on {int(n):,} features' measured effects" if str(n or "").isdigit() else ""
    se = pack.meta_json("approximator_r2_heldout_se")
    pm = f" ± {se:.2f}" if isinstance(se, (int, float)) and not math.isnan(se) else ""
    return (f"A linear map{fitted}; on features held out of its fit it explains {max(r2, 0.0):.0%} of the "
            f"variance of their measured effects (R² {r2:.2f}{pm}). No error bars on its predictions: a "
            "guide to what to measure, not a measurement.")


def effect_rows(pack: FeaturePack, effects: np.ndarray, flt: ListFilter | None = None, k: int = 64,
                notes=None, is_predicted: bool = False, se: np.ndarray | None = None) -> list[ListRow]:
    """Effects (measured or predicted) as list rows, largest |effect| first after filtering. With
    ``flt.basis == "specific"`` the pack's generic response is subtracted (and its SE added in
    quadrature), as for every feature's list."""
    flt, k = check_filter(flt), check_k(k)
    ft = feature_table(pack)
    values = np.asarray(effects, dtype=np.float64)
    se = None if se is None else np.asarray(se, dtype=np.float64)
    generic = pack.generic_arrays()
    if flt.basis == "specific":
        if generic is None:
            raise VectorEffectsError("This pack has no generic-response control, so it has no specific effects; "
                                     "show raw effects, or rebuild the pack.")
        values = values - generic[0][: len(values)]
        se = None if se is None else np.sqrt(se ** 2 + generic[1][: len(se)] ** 2)
    rows = rank_predicted(values, ft.baseline, ft.density, flt, k, ft.label_of, se,
                          None if generic is None else generic[2])
    if not is_predicted:
        rows = [dataclasses.replace(r, predicted=False) for r in rows]
    return with_user_labels(pack, rows, notes)


# -- measurement -----------------------------------------------------------------------------------


@dataclass
class MeasuredEffects:
    effects: np.ndarray  # [d_sae]
    alpha: float
    dce: float | None  # verified ΔCE at alpha (None when α was given)
    seconds: float
    from_cache: bool = False
    se: np.ndarray | None = None  # [d_sae] standard errors (paired by prompt)
    rollouts: int | None = None  # steered rollouts averaged (more where the pack's top-up rule applied)


class EffectCache(LibraryTable):
    """Measured vector effects in a DuckDB file (one row per measurement, written in one statement)."""

    SCHEMA = ("""CREATE TABLE IF NOT EXISTS vector_effect_cache (
        key TEXT PRIMARY KEY, pack_id TEXT, alpha DOUBLE, dce DOUBLE, seconds DOUBLE,
        effects FLOAT[], created TIMESTAMP DEFAULT current_timestamp)""",
              "ALTER TABLE vector_effect_cache ADD COLUMN IF NOT EXISTS se FLOAT[]",
              "ALTER TABLE vector_effect_cache ADD COLUMN IF NOT EXISTS rollouts INTEGER")

    def get(self, key: str) -> MeasuredEffects | None:
        with self._lock:
            row = self.con.execute("SELECT effects, alpha, dce, seconds, se, rollouts FROM vector_effect_cache "
                                   "WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
        return MeasuredEffects(np.asarray(row[0], dtype=np.float64), float(row[1]),
                               None if row[2] is None else float(row[2]), float(row[3]), from_cache=True,
                               se=None if row[4] is None else np.asarray(row[4], dtype=np.float64),
                               rollouts=None if row[5] is None else int(row[5]))

    def put(self, key: str, pack_id: str, m: MeasuredEffects) -> None:
        with self._lock:
            self.con.execute("INSERT OR REPLACE INTO vector_effect_cache (key, pack_id, alpha, dce, seconds, effects, se, "
                             "rollouts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [key, pack_id, m.alpha, m.dce, m.seconds, m.effects.astype(np.float32).tolist(),
                              None if m.se is None else m.se.astype(np.float32).tolist(), m.rollouts])


def effect_spec_of(pack: FeaturePack):
    """The rollout settings the pack measured its features with (so a vector's effects are on the
    same scale), or the library default for a pack that does not record them."""
    from steering_core.measure.effects import EffectSpec

    raw = pack.meta_json("effects_rollouts", None)
    if isinstance(raw, dict):
        known = {f.name for f in dataclasses.fields(EffectSpec)}
        return EffectSpec(**{k: v for k, v in raw.items() if k in known})
    return EffectSpec()


def _as_stored(est):
    """``est`` rounded as a pack stores effects and SEs (float16)."""
    from steering_core.measure.effects import EffectEstimate
    from steering_core.pack.carry import to_stored

    return EffectEstimate(torch.from_numpy(to_stored(est.effect.numpy(), "effect")),
                          torch.from_numpy(to_stored(est.se.numpy(), "standard error")))


def topup_of(pack: FeaturePack) -> dict | None:
    """The pack's top-up rule (``rollouts_per_prompt``, ``contested_over``, ``top``, ``z``) when its
    effects used one, so a vector is measured the way its features were; else None."""
    rule = pack.meta_json("effects_topup", None)
    return rule if isinstance(rule, dict) and int(rule.get("rollouts_per_prompt") or 0) > 0 else None


def twin_baseline(model: SteerableModel, sae: LoadedSAE, pack: FeaturePack, layer: int, spec, seed: int
                  ) -> torch.Tensor:
    """The unsteered twins of a vector's rollouts: the pack's own baseline rows when it ships them for
    this seed, else measured here once per pack, spec and seed (and kept in memory)."""
    from steering_core.measure.effects import baseline_rows

    shipped = pack.dir / "baseline_rows.npy"
    # the shipped rows are twins only in the precision they were measured in: a bf16 pack read on
    # an fp32-only CPU would give a vector at α = 0 nonzero "effects" from the last bits alone
    same = int(seed) == int(pack.meta_json("config", {}).get("seed", 0)) and \
        pack.meta.get("precision", dtype_name(model.dtype)) == dtype_name(model.dtype)
    if same and shipped.exists():
        rows = pack.cached("baseline_rows", lambda: np.load(shipped))
        if rows.shape[0] == len(spec.prompts) * spec.baseline_rollouts_per_prompt:
            return torch.from_numpy(rows)
    key = f"baseline_rows:{layer}:{seed}:{json.dumps(spec.to_dict())}"
    return pack.cached(key, lambda: baseline_rows(model, sae, layer, spec, seed))


def cache_key(pack: FeaturePack, vector: torch.Tensor, layer: int, alpha: float | None, seed: int, spec,
              target_dce: float = 0.5, precision: str = "") -> str:
    """What a cached measurement depends on: the pack, the vector, where and how hard it steers (a
    given α, or the ΔCE target it is matched to), the seeds, the budget and rule, and the precision
    (a bf16 and an fp32 measurement differ in their last bits, their twins too)."""
    h = hashlib.sha256()
    h.update(pack.pack_id.encode())
    h.update(vector.detach().cpu().float().contiguous().numpy().tobytes())
    rule = topup_of(pack)
    how_hard = float(alpha) if alpha is not None else {"target_dce": float(target_dce), "refine": DEFAULT_REFINE}
    h.update(json.dumps([int(layer), how_hard, int(seed), spec.to_dict(), precision,
                         "paired-v2", *([rule] if rule else [])]).encode())
    return h.hexdigest()[:40]


def measure(model: SteerableModel, sae: LoadedSAE, pack: FeaturePack, vector: torch.Tensor, layer: int,
            alpha: float | None = None, target_dce: float = 0.5, seed: int = 0, cache: EffectCache | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> MeasuredEffects:
    """Measure what steering with ``vector`` does to the pack's features.

    The vector is unit-normalised (the pack's features were measured as unit decoder rows); with
    ``alpha=None`` it gets the loss-matched α (ΔCE ≈ ``target_dce`` nats), like every feature, but
    on the built-in neutral prose rather than the pack's held-out windows (the pack does not ship
    them), so a feature's own decoder row can get another α than its card's; pass the card's α to
    reproduce its stored effects. Where the pack topped up features whose top 10 was contested, the
    vector is topped up by the same rule (docs/design.md §Adaptive budget). ``on_progress(done,
    total)`` follows each loss evaluation of the α search and every decoding step (the total grows
    when a top-up starts); raising from it cancels, and nothing is cached then.
    """
    from steering_core.measure.allocation import needs_topup, pool
    from steering_core.measure.alpha import loss_matched_alpha, reference_ids
    from steering_core.measure.effects import measure_effects

    check_layer(pack, layer)
    v = torch.from_numpy(_vector(pack, vector)).float()
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(float(alpha))):
        raise VectorEffectsError(f"α must be a finite number, got {alpha!r}.")
    spec = effect_spec_of(pack)
    key = cache_key(pack, v, layer, alpha, seed, spec, target_dce, dtype_name(model.dtype))
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    dce = None
    search = 4 if alpha is None else 0  # the α search's loss evaluations (at most 4 one-sided)
    calls = -(-spec.rows_per_vector // max(1, spec.max_rows))
    total = search + calls * spec.new_tokens  # then the decoding steps
    shown = [-1]

    def report(done: int, n: int) -> None:
        if on_progress is not None and done != shown[0]:
            shown[0] = done
            on_progress(done, n)

    report(0, total)
    if alpha is None:
        res = loss_matched_alpha(model, reference_ids(model), layer, v[None], target=target_dce, symmetric=False,
                                 refine=DEFAULT_REFINE,
                                 on_eval=lambda k: report(min(k, search), total))
        alpha, dce = float(res.alpha[0]), float(res.dce[0])
    report(search, total)
    rows = twin_baseline(model, sae, pack, layer, spec, seed)
    est = measure_effects(model, sae, layer, v[None], [float(alpha)], spec, rows, seed,
                          on_step=lambda i, n: report(search + i * (total - search) // max(1, n), total))
    r1, rule = spec.rollouts_per_prompt, topup_of(pack)
    if rule is not None:  # decide on the values as a pack stores them, so a feature's row decides as it did
        est = _as_stored(est)
    rollouts = spec.rows_per_vector
    over = None if rule is None else int(rule.get("contested_over_effective", rule["contested_over"]))
    if rule is not None and bool(needs_topup(est.effect, est.se, over, int(rule.get("top", 10)),
                                             float(rule.get("z", 2.0)))[0]):
        more = dataclasses.replace(spec, rollouts_per_prompt=int(rule["rollouts_per_prompt"]) - r1)
        start, total = total, total + -(-more.rows_per_vector // max(1, more.max_rows)) * more.new_tokens
        extra = measure_effects(model, sae, layer, v[None], [float(alpha)], more, rows, seed, first=r1,
                                on_step=lambda i, n: report(start + i * (total - start) // max(1, n), total))
        est = pool(est, r1, _as_stored(extra), more.rollouts_per_prompt)
        rollouts += more.rows_per_vector
    out = MeasuredEffects(est.effect[0].double().numpy(), float(alpha), dce, time.perf_counter() - t0,
                          se=est.se[0].double().numpy(), rollouts=rollouts)
    crash_point("vector_effects:measured")
    if cache is not None:
        cache.put(key, pack.pack_id, out)
    return out
