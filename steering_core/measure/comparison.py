"""Method comparison ([Chalnev 2024] Table 2): one task (prompts, a behavioural scorer) run across
several vectors, each swept over a grid scaled by its own automatic α, reporting the peak
behaviour × coherence and the α where it peaks.

Prompting entries (:mod:`steering_core.measure.prompting`) join the same table: an instruction
instead of a vector, scored on the same rows by the same scorers, so a steering method is always
seen next to the baseline it has to beat."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from steering_core.errors import SteeringCoreError
from steering_core.measure.scores import AlphaPoint, format_se
from steering_core.measure.sweep import SweepCache, SweepSpec, run_sweep

if TYPE_CHECKING:
    from steering_core.measure.prompting import PromptEntry
    from steering_core.model.saes import LoadedSAE
    from steering_core.model.steerable import SteerableModel

#: The grid, in multiples of each vector's automatic α (loss-matched, ΔCE +0.5 nats).
DEFAULT_MULTIPLIERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Candidate:
    name: str
    vector: torch.Tensor
    layer: int
    reference: torch.Tensor | None = None  # operators that need a reference point (ACE)
    operator: str | None = None  # a registered steering operator; None: addition, or ACE with a reference


@dataclass
class ComparisonRow:
    """One entry of the table. A prompting entry (``kind == "prompt"``) has no layer and no α: its
    one point is its "peak", ``auto_alpha`` and ``alpha_at_peak`` are NaN, and ``instruction`` says
    what it asked."""

    name: str
    layer: int | None
    auto_alpha: float
    peak_product: float
    alpha_at_peak: float
    behaviour_at_peak: float
    coherence_at_peak: float
    kind: str = "vector"  # "vector" or "prompt"
    instruction: str = ""
    peak_product_se: float = float("nan")  # standard error of the peak product (delta method, see sweep.add_product)


def peak(points: Sequence[AlphaPoint], behaviour: str) -> tuple[float, AlphaPoint | None]:
    """The point with the highest behaviour × coherence (NaNs ignored; ties: the smaller |α|)."""
    best, best_p = float("-inf"), None
    for p in sorted(points, key=lambda q: abs(q.alpha)):
        v = p.get("product")
        if math.isfinite(v) and v > best:
            best, best_p = v, p
    return (best if best_p is not None else float("nan")), best_p


#: Below this peak behaviour × coherence a sweep has no useful α: whatever behaviour appears comes
#: with text the unsteered model finds too unlikely (or the behaviour barely appears at all).
USEFUL_PRODUCT = 0.1


@dataclass(frozen=True)
class PeakVerdict:
    """Where behaviour × coherence peaks, and whether that peak is worth steering at."""

    product: float  # NaN when no point has a product
    alpha: float | None
    useful: bool
    message: str  # the peak, one sentence
    warning: str | None  # why there is no useful α, or None
    product_se: float = float("nan")


def beats_phrase(product: float, product_se: float, other: float, other_se: float, other_name: str = "it") -> str:
    """Whether a peak beats another entry's product, said honestly and as a whole phrase with its
    object (``other_name``): a difference within two standard errors (of the difference, the two
    taken as independent) is "within noise of it", an exact tie "ties with it"."""
    if not (math.isfinite(product) and math.isfinite(other)):
        return f"cannot be compared with {other_name}"
    if product == other:
        return f"ties with {other_name}"
    se = math.hypot(product_se, other_se)
    verb = "beats" if product > other else "does not beat"
    if not math.isfinite(se):  # one rollout on either side: no spread to judge the gap by
        return f"{verb} {other_name} (untested against noise: one rollout)"
    if se > 0 and abs(product - other) < 2 * se:
        return f"is within noise of {other_name} ({product - other:+.2f} ± {se:.2f})"
    return f"{verb} {other_name}"


def peak_verdict(points: Sequence[AlphaPoint], behaviour: str, label: str = "",
                 threshold: float = USEFUL_PRODUCT) -> PeakVerdict:
    """The sweep's peak as a sentence, flagged "no useful α" when the best product is below
    ``threshold`` or sits at α = 0 (steering only made things worse), so a faint peak of 0.03 is
    never read as a recommendation."""
    best, p = peak(points, behaviour)
    who = f"{label}: " if label else ""
    if p is None:
        return PeakVerdict(float("nan"), None, False, f"{who}no α has a {behaviour} × coherence score.",
                           "No useful α: no point of this sweep has a score.")
    se = p.get("product_se")
    pm = " " + format_se(se)
    message = f"{who}peak {behaviour} × coherence = {best:.2f}{pm} at α = {p.alpha:.1f}"
    if p.alpha == 0.0:
        warning = "No useful α: no steered α scores better than not steering (α = 0)."
    elif best < threshold:
        warning = (f"No useful α: the best {behaviour} × coherence is {best:.2f}, below {threshold:.2f}; "
                   "the behaviour barely appears, or only in text the model finds unlikely.")
    else:
        warning = None
    return PeakVerdict(best, p.alpha, warning is None, message, warning, se)


def verdict_label(points: Sequence[AlphaPoint], behaviour: str, threshold: float = USEFUL_PRODUCT) -> str:
    """:func:`peak_verdict` in a few words, for a table cell: "useful α", or why there is none."""
    v = peak_verdict(points, behaviour, threshold=threshold)
    if v.useful:
        return "useful α"
    if v.alpha is None:
        return "no score"
    if v.alpha == 0.0:
        return "no useful α (best at α = 0)"
    return f"no useful α (peak below {threshold:.2f})"


def summary_rows(rows: Sequence[ComparisonRow], curves: dict[str, Sequence[AlphaPoint]],
                 behaviour: str = "keywords") -> list[dict]:
    """The comparison as a table a person reads: each entry's peak with its standard error, whether
    that peak is a useful α at all (a peak of 0.005 must not read as a ranking), and how it stands
    against the best prompting baseline, judged against noise (:func:`beats_phrase`)."""
    def peak_se(r: ComparisonRow, p: AlphaPoint | None, name: str) -> float:
        """The standard error of score ``name`` at the entry's peak ``p`` (a prompting row's one point)."""
        if name == "product" and math.isfinite(r.peak_product_se):
            return r.peak_product_se
        return p.get(name + "_se") if p is not None else float("nan")

    peaks = {r.name: peak(curves.get(r.name, []), behaviour)[1] for r in rows}  # once per entry
    prompts = [r for r in rows if r.kind == "prompt" and math.isfinite(r.peak_product)]
    best = max(prompts, key=lambda r: r.peak_product) if prompts else None
    out = []
    for r in rows:
        vector, p = r.kind != "prompt", peaks[r.name]
        row = {"name": r.name, f"peak {behaviour} × coherence": r.peak_product, "±": peak_se(r, p, "product"),
               "verdict": verdict_label(curves.get(r.name, []), behaviour) if vector else "prompting baseline"}
        if best is not None:  # beside the verdict, where it is read without scrolling
            row[f"against {best.name}"] = (beats_phrase(r.peak_product, peak_se(r, p, "product"), best.peak_product,
                                                        peak_se(best, peaks[best.name], "product")) if vector else "")
        row.update({"α at peak": r.alpha_at_peak if vector else None, "automatic α": r.auto_alpha if vector else None,
                    f"{behaviour} at peak": r.behaviour_at_peak, f"± {behaviour}": peak_se(r, p, behaviour),
                    "coherence at peak": r.coherence_at_peak, "± coherence": peak_se(r, p, "coherence"),
                    "layer": r.layer})
        out.append(row)
    return out


def compare(model: SteerableModel, candidates: Sequence[Candidate], task: SweepSpec, sae: LoadedSAE | None = None,
            cache: SweepCache | None = None, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
            target_dce: float = 0.5,
            on_candidate: Callable[[int, int, str], None] | None = None,
            prompts: Sequence[PromptEntry] = (), judge=None,
            ) -> tuple[list[ComparisonRow], dict[str, list[AlphaPoint]]]:
    """Sweep every candidate on the same task; rows sorted by peak product, best first.

    ``prompts`` adds prompting baselines, measured after the vectors: each gets a row
    (``kind="prompt"``) and a one-point curve at α = 0, which a figure draws as a horizontal line."""
    from steering_core.measure.alpha import auto_alpha
    from steering_core.measure.prompting import check_entry

    if not candidates and not prompts:
        raise SteeringCoreError("Choose at least one vector or feature to compare.")
    prompts = [check_entry(model, e, task) for e in prompts]  # before anything is generated
    names = [c.name for c in candidates] + [e.name for e in prompts]
    if len(set(names)) != len(names):
        raise SteeringCoreError("Two candidates have the same name; give each a distinct one.")
    total = len(candidates) + len(prompts)
    rows, curves = [], {}
    for i, c in enumerate(candidates):
        if on_candidate is not None:
            on_candidate(i, total, c.name)
        v = torch.as_tensor(c.vector, dtype=torch.float32)
        v = v / v.norm().clamp(min=1e-12)
        a_star = float(auto_alpha(model, c.layer, v, target=target_dce).alpha[0])
        spec = dataclasses.replace(task, alphas=tuple(a_star * m for m in multipliers))
        pts = run_sweep(model, v, c.layer, spec, sae=sae, reference=c.reference, cache=cache, with_dce=False,
                        operator=c.operator)
        best, p = peak(pts, task.behaviour)
        rows.append(ComparisonRow(c.name, c.layer, a_star, best, p.alpha if p else float("nan"),
                                  p.get(task.behaviour) if p else float("nan"),
                                  p.get("coherence") if p else float("nan"),
                                  peak_product_se=p.get("product_se") if p else float("nan")))
        curves[c.name] = pts
    if prompts:
        def on_entry(j: int, name: str) -> None:
            if on_candidate is not None:
                on_candidate(len(candidates) + j, total, name)

        rows_p, curves_p = _prompt_rows(model, prompts, task, sae, cache, judge, on_entry)
        rows += rows_p
        curves.update(curves_p)
    if on_candidate is not None:
        on_candidate(total, total, "")
    rows.sort(key=lambda r: -r.peak_product if math.isfinite(r.peak_product) else float("inf"))
    return rows, curves


def _prompt_rows(model: SteerableModel, entries: Sequence[PromptEntry], task: SweepSpec, sae, cache, judge,
                 on_entry: Callable[[int, str], None]) -> tuple[list[ComparisonRow], dict[str, list[AlphaPoint]]]:
    """Rows and one-point curves of the prompting entries, all against one unsteered baseline."""
    from steering_core.measure.prompting import prompt_baseline

    rows, curves, baseline = [], {}, None
    for j, e in enumerate(entries):
        on_entry(j, e.name)
        res = prompt_baseline(model, e, task, sae=sae, cache=cache, judge=judge, baseline=baseline)
        baseline = res.baseline
        p = res.point
        rows.append(ComparisonRow(res.entry.name, None, float("nan"), p.get("product"), float("nan"),
                                  p.get(task.behaviour), p.get("coherence"), kind="prompt",
                                  instruction=res.entry.instruction, peak_product_se=p.get("product_se")))
        curves[res.entry.name] = [p]
    return rows, curves
