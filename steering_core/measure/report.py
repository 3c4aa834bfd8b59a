"""The Compare report: a finished comparison (``measure.comparison.compare``) as files a paper can use
and a reader can rerun.

Three files, all made here from plain data (no model, no Streamlit):

* ``compare.csv``: every point of every curve, one row per (entry, α), with the entry's table
  columns (kind, layer, automatic α, instruction) and ``peak`` = 1 on the row that is its peak;
  the rows with ``peak`` = 1 are the table of [Chalnev 2024] Table 2. A prompting entry has one
  row at α = 0 (docs/design.md §Offline evaluation);
* ``settings.json``: the exact settings (:class:`CompareSettings`): the task (prompts, samples,
  tokens, sampling, seed, keywords and the behaviour score), every candidate with its layer and
  where its vector came from, the prompting entries, the α multipliers and ΔCE target of the
  automatic α, the model id, its precision and the SAE. :func:`load_settings` reads it back into an
  equal object, and :meth:`CompareSettings.task_spec` gives the ``SweepSpec`` to pass to ``compare``;
* ``compare.png``: behaviour × coherence against α in multiples of each vector's own automatic α (so
  vectors of different norms share an axis), prompting entries as horizontal lines; and behaviour
  against coherence, the trade-off each entry reaches. Drawn with matplotlib's Agg canvas on a
  ``Figure`` of its own, never through pyplot's global state, so sessions drawing at once do not
  share a figure.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from steering_core.errors import SteeringCoreError
from steering_core.measure.comparison import DEFAULT_MULTIPLIERS, ComparisonRow
from steering_core.measure.prompting import PromptEntry
from steering_core.measure.scores import AlphaPoint
from steering_core.measure.sweep import SweepSpec, check_spec

#: Version of the settings file; :func:`load_settings` refuses another.
SETTINGS_VERSION = 1
#: Names of the three files in :func:`report_zip`.
CSV_NAME, SETTINGS_NAME, PNG_NAME = "compare.csv", "settings.json", "compare.png"
#: Scores written per point, in this order (those present; each with its "_se" where there is one).
SCORE_ORDER = ("keywords", "similarity", "target", "judge", "judge_coherence", "coherence", "product", "loglik", "dce")


class ReportError(SteeringCoreError):
    """A report that cannot be made or read (the message says why)."""


@dataclass(frozen=True)
class CandidateSource:
    """One compared vector and where it came from, enough to make it again: ``kind`` is
    ``"saved vector"`` (``source`` its name in the library, with the method, dataset and position it was
    fitted with), ``"sae feature"`` (``feature`` the id, ``source`` the SAE) or anything else a caller
    describes in ``source``. ``digest`` (optional) is a hash of the vector, to check a rerun used the
    same one."""

    name: str
    layer: int
    kind: str
    source: str = ""
    method: str = ""
    dataset: str = ""
    position: str = ""
    feature: int | None = None
    operator: str | None = None
    digest: str = ""


@dataclass(frozen=True)
class CompareSettings:
    """Everything a comparison depends on. ``task`` is the ``SweepSpec`` as a dict without its α grid
    (each candidate's grid is ``multipliers`` × its own automatic α at ``target_dce``)."""

    task: dict
    candidates: tuple[CandidateSource, ...] = ()
    prompting: tuple[PromptEntry, ...] = ()
    multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS
    target_dce: float = 0.5
    model: str = ""
    precision: str = ""
    sae: str | None = None
    notes: str = ""
    version: int = field(default=SETTINGS_VERSION)

    def task_spec(self) -> SweepSpec:
        """The task as a ``SweepSpec`` (α grid (0,): ``compare`` makes each candidate's own)."""
        known = {f.name for f in dataclasses.fields(SweepSpec)}
        kw = {k: v for k, v in self.task.items() if k in known and k != "alphas"}
        for k in ("prompts", "keywords", "target_features"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return SweepSpec(alphas=(0.0,), **kw)


def compare_settings(task: SweepSpec, candidates: Sequence[CandidateSource] = (),
                     prompting: Sequence[PromptEntry] = (), multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                     target_dce: float = 0.5, model: str = "", precision: str = "", sae: str | None = None,
                     notes: str = "") -> CompareSettings:
    """The settings of a comparison, normalised to what JSON keeps (tuples, floats). The task is
    recorded as ``compare`` runs it (``check_spec``: empty prompts dropped, keywords stripped)."""
    task_d = json.loads(check_spec(dataclasses.replace(task, alphas=(0.0,))).to_json())
    task_d.pop("alphas", None)
    return CompareSettings(task_d, tuple(candidates), tuple(prompting), tuple(float(m) for m in multipliers),
                           float(target_dce), str(model), str(precision), sae, notes)


def settings_json(settings: CompareSettings) -> str:
    """The settings as indented JSON (UTF-8 text, keys sorted)."""
    d = dataclasses.asdict(settings)
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_settings(text: str | bytes) -> CompareSettings:
    """Read :func:`settings_json`'s output back into an equal :class:`CompareSettings`."""
    try:
        d = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ReportError(f"The settings are not valid JSON ({exc}).") from None
    if not isinstance(d, dict) or d.get("version") != SETTINGS_VERSION:
        raise ReportError(f"These are not version-{SETTINGS_VERSION} comparison settings.")
    try:
        d["candidates"] = tuple(CandidateSource(**c) for c in d.get("candidates", ()))
        d["prompting"] = tuple(PromptEntry(**e) for e in d.get("prompting", ()))
        d["multipliers"] = tuple(float(m) for m in d.get("multipliers", ()))
        return CompareSettings(**d)
    except TypeError as exc:
        raise ReportError(f"The settings file has an unexpected field ({exc}).") from None


# -- CSV ---------------------------------------------------------------------------------------------------


def _score_columns(curves: Mapping[str, Sequence[AlphaPoint]]) -> list[str]:
    have = {k for pts in curves.values() for p in pts for k in p.scores}
    cols = [k for k in SCORE_ORDER if k in have]
    cols += sorted(k for k in have if k not in SCORE_ORDER and not k.endswith("_se"))
    out = []
    for c in cols:
        out.append(c)
        if c + "_se" in have:
            out.append(c + "_se")
    return out


def _num(x) -> str:
    if x is None:
        return ""
    x = float(x)
    return "" if math.isnan(x) else repr(x)


def report_csv(rows: Sequence[ComparisonRow], curves: Mapping[str, Sequence[AlphaPoint]]) -> str:
    """Every point of every curve as CSV (see the module docstring), entries in the table's order."""
    scores = _score_columns(curves)
    head = ["name", "kind", "layer", "instruction", "auto_alpha", "multiplier", "alpha", *scores, "peak"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        for p in sorted(curves.get(r.name, ()), key=lambda q: q.alpha):
            mult = p.alpha / r.auto_alpha if r.kind != "prompt" and r.auto_alpha else None
            is_peak = (r.kind == "prompt") or (math.isfinite(r.alpha_at_peak) and p.alpha == r.alpha_at_peak)
            w.writerow([r.name, r.kind, "" if r.layer is None else r.layer, r.instruction, _num(r.auto_alpha),
                        _num(mult), _num(p.alpha), *[_num(p.scores.get(s)) for s in scores], int(is_peak)])
    return buf.getvalue()


# -- figure ------------------------------------------------------------------------------------------------


def report_png(rows: Sequence[ComparisonRow], curves: Mapping[str, Sequence[AlphaPoint]], behaviour: str = "keywords",
               title: str = "", dpi: int = 120) -> bytes:
    """The comparison as a PNG (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax, tr = fig.subplots(1, 2, width_ratios=(3, 2))
    colours = [f"C{i}" for i in range(10)]
    for i, r in enumerate(rows):
        c = colours[i % len(colours)]
        pts = sorted(curves.get(r.name, ()), key=lambda q: q.alpha)
        if not pts:
            continue
        if r.kind == "prompt":
            p = pts[0]
            name = r.name if "prompt" in r.name.lower() else f"{r.name} (prompt)"
            ax.axhline(p.get("product"), color=c, linestyle="--", linewidth=1.6, label=name)
            tr.scatter([p.get("coherence")], [p.get(behaviour)], color=c, marker="*", s=140, zorder=3,
                       label=r.name)
            continue
        x = [p.alpha / r.auto_alpha if r.auto_alpha else p.alpha for p in pts]
        y = [p.get("product") for p in pts]
        se = [p.get("product_se") for p in pts]
        ax.plot(x, y, marker="o", color=c, linewidth=2, label=f"{r.name} (α* = {r.auto_alpha:.1f})")
        if all(math.isfinite(s) for s in se):
            ax.fill_between(x, [a - s for a, s in zip(y, se)], [a + s for a, s in zip(y, se)], color=c, alpha=0.15,
                            linewidth=0)
        tr.plot([p.get("coherence") for p in pts], [p.get(behaviour) for p in pts], marker="o", color=c,
                linewidth=1, label=r.name)
    ax.set_xlabel("α / automatic α (ΔCE +0.5 nats)")
    ax.set_ylabel(f"{behaviour} × coherence")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    tr.set_xlabel("coherence")
    tr.set_ylabel(behaviour)
    tr.set_xlim(0, 1.05)
    tr.set_title(f"{behaviour} against coherence (★ prompting)", fontsize=9)
    tr.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- all three ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareReport:
    csv: str
    settings: str
    png: bytes


def make_report(rows: Sequence[ComparisonRow], curves: Mapping[str, Sequence[AlphaPoint]], settings: CompareSettings,
                title: str = "") -> CompareReport:
    """The three files of a comparison. ``rows`` and ``curves`` are ``compare``'s result."""
    if not rows:
        raise ReportError("The comparison has no rows to report.")
    missing = [r.name for r in rows if r.name not in curves]
    if missing:
        raise ReportError(f"No curve for {', '.join(missing)}: pass the rows and curves of one comparison.")
    behaviour = settings.task.get("behaviour", "keywords")
    return CompareReport(report_csv(rows, curves), settings_json(settings),
                         report_png(rows, curves, behaviour, title))


def report_zip(report: CompareReport) -> bytes:
    """The three files in one zip (fixed timestamps, so the same report gives the same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in ((CSV_NAME, report.csv.encode("utf-8")), (SETTINGS_NAME, report.settings.encode("utf-8")),
                           (PNG_NAME, report.png)):
            z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def markdown_table(rows: Sequence[ComparisonRow], behaviour: str = "keywords") -> str:
    """The table as Markdown: entry, kind, layer, automatic α, peak product, α at the peak (and it in
    multiples of the automatic α), behaviour and coherence at the peak."""
    lines = [f"| entry | kind | peak {behaviour} × coherence | α at peak | automatic α | {behaviour} at peak | "
             "coherence at peak |", "|---|---|---|---|---|---|---|"]

    def f(x: float, fmt: str = ".2f") -> str:
        return "—" if x is None or not math.isfinite(x) else format(x, fmt)

    for r in rows:
        if r.kind == "prompt":
            at = "— (prompt)"
        else:
            at = f(r.alpha_at_peak, ".1f") + (f" ({r.alpha_at_peak / r.auto_alpha:.2g}×)" if r.auto_alpha else "")
        pm = f" ± {f(r.peak_product_se)}" if math.isfinite(r.peak_product_se) else ""
        lines.append(f"| {r.name} | {r.kind} | {f(r.peak_product)}{pm} | {at} | {f(r.auto_alpha, '.1f')} | "
                     f"{f(r.behaviour_at_peak)} | {f(r.coherence_at_peak)} |")
    return "\n".join(lines) + "\n"


# -- where candidates come from ----------------------------------------------------------------------------


def vector_digest(vector) -> str:
    """A short hash of a vector's float32 values (16 hex digits): equal vectors, equal digests."""
    import hashlib

    import numpy as np
    import torch

    arr = torch.as_tensor(vector).detach().to(torch.float32).cpu().numpy()
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def saved_vector_source(vec, name: str | None = None) -> CandidateSource:
    """A library vector (``vectors.SteeringVector``) as a candidate: its name, layer, method, dataset,
    fitting position and operator, and the digest of its direction."""
    return CandidateSource(name or vec.name, int(vec.layer), "saved vector", vec.name, vec.method, vec.dataset,
                           str(vec.meta.get("position", "")), None, vec.operator, vector_digest(vec.direction))


def feature_source(feature: int, layer: int, sae: str, direction=None, name: str | None = None) -> CandidateSource:
    """An SAE feature's decoder row as a candidate (``sae``: the SAE's folder or release id)."""
    return CandidateSource(name or f"feature {int(feature)}", int(layer), "sae feature", str(sae), feature=int(feature),
                           digest=vector_digest(direction) if direction is not None else "")
