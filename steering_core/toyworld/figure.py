"""The toy world's curves as a figure: mean steered-attribute accuracy against the number of
steering examples (log₂ axis), a band of ±1 standard deviation over repeats, the unsteered
baseline dashed and chance (1/8) dotted, as in [Krasheninnikov 2024] Fig. 1 (docs/references.md).
A second panel shows how many *other* attributes stay right, since a method can reach the target
by breaking the model.

Drawn with matplotlib when it is installed, else plotly (PNG export needs kaleido); the caller
learns in a sentence when neither can write a PNG.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from steering_core.toyworld.curves import CurveResult
from steering_core.toyworld.data import N_VALUES, ToyWorldError


def _title(result: CurveResult) -> str:
    s = result.settings
    alphas = s.get("alphas") or [1.0]
    strength = f"α = {alphas[0]:g}" if len(alphas) == 1 else f"α picked on validation from {', '.join(f'{a:g}' for a in alphas)}"
    return (f"Steering clear toy world: m = {s.get('m')}, layer {s.get('layer')}, {strength}, "
            f"{s.get('repeats')} repeats, {s.get('n_test')} test inputs each")


def save_figure(result: CurveResult, path: str | Path) -> Path:
    """Write the curves to ``path`` (PNG) with whichever plotting library is installed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("matplotlib") is not None:
        return _matplotlib(result, path)
    if importlib.util.find_spec("plotly") is not None and importlib.util.find_spec("kaleido") is not None:
        return _plotly(result, path)
    raise ToyWorldError("Cannot draw the figure: install matplotlib (or plotly with kaleido) to save a PNG; "
                        "the JSON of the curves holds the same numbers.")


def _matplotlib(result: CurveResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for kept, ax in zip((False, True), axes):
        for name in result.methods:
            mu, sd = result.mean(name, kept), result.std(name, kept)
            line, = ax.plot(result.ns, mu, marker="o", ms=3, label=name)
            ax.fill_between(result.ns, [m - s for m, s in zip(mu, sd)], [m + s for m, s in zip(mu, sd)],
                            color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(result.ns, [f"{n:,}" for n in result.ns], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("steering examples (pairs)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    base = sum(result.baseline) / max(1, len(result.baseline))
    axes[0].axhline(base, ls="--", c="k", lw=1, label="unsteered")
    axes[0].axhline(1 / N_VALUES, ls=":", c="grey", lw=1, label="chance (1/8)")
    axes[0].set_ylabel("steered-attribute accuracy (mean ± sd)")
    axes[1].set_ylabel("other attributes still right")
    low = min((m - (s if s == s else 0.0)  # an unknown spread (one repeat) widens nothing
               for name in result.methods for m, s in zip(result.mean(name, True), result.std(name, True))
               if m == m), default=0.0)
    axes[1].set_ylim(max(0.0, min(low, 0.99) - 0.005), 1.0005)  # zoom: these stay near 1 unless a method breaks the model
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(_title(result), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plotly(result: CurveResult, path: Path) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in result.methods:
        mu, sd = result.mean(name), result.std(name)
        fig.add_trace(go.Scatter(x=result.ns, y=mu, name=name, mode="lines+markers",
                                 error_y={"type": "data", "array": sd, "visible": True}))
    base = sum(result.baseline) / max(1, len(result.baseline))
    fig.add_hline(y=base, line_dash="dash", annotation_text="unsteered")
    fig.add_hline(y=1 / N_VALUES, line_dash="dot", annotation_text="chance")
    fig.update_layout(title=_title(result), xaxis={"type": "log", "title": "steering examples (pairs)"},
                      yaxis={"range": [0, 1], "title": "steered-attribute accuracy"})
    fig.write_image(str(path))
    return path


__all__ = ["save_figure"]
