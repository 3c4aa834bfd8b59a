"""The plots the pages share: a curve with a ± band in the curve's own colour, and the Vectors
page's layer-sweep and data-efficiency figures (built from the library's result rows)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import plotly.colors
import plotly.graph_objects as go

PALETTE = plotly.colors.qualitative.Plotly


#: A horizontal legend above the plot: below it, Plotly draws it over the x tick labels and title.
LEGEND_ABOVE = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0)


def add_band(fig: go.Figure, x: Sequence[float], mean: Sequence[float], spread: Sequence[float] | None, name: str,
             index: int, width: float = 2) -> None:
    """A line with markers for ``mean`` and a translucent band from mean − spread to mean + spread,
    both in the curve's own colour (a band left to Plotly's colour cycle takes the next curve's
    colour, and its corners show as that curve's markers). No band where any spread is unknown
    (NaN: one rollout): a band with holes would draw shapes nobody measured."""
    colour = PALETTE[index % len(PALETTE)]
    r, g, b = plotly.colors.hex_to_rgb(colour)
    x, mean = [float(v) for v in x], [float(v) for v in mean]
    if spread is not None and all(math.isfinite(float(s)) for s in spread):
        upper = [m + s for m, s in zip(mean, spread)]
        lower = [m - s for m, s in zip(mean, spread)]
        fig.add_scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", mode="lines", line=dict(width=0),
                        fillcolor=f"rgba({r},{g},{b},0.15)", showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=x, y=mean, name=name, mode="lines+markers", line=dict(color=colour, width=width))


#: Training-pair axes double per tick: 1, 2, 4, 8 … (log₁₀ 2 apart).
_DOUBLING = dict(type="log", dtick=0.30103)


def layer_sweep_figure(scores: Sequence) -> go.Figure:
    """Held-out separation per layer (``vectors.evaluation.LayerScore`` rows): pair accuracy with its
    95 % Wilson interval, probe accuracy with its own, and d′ with its 95 % bootstrap interval on a second axis."""
    layers = [s.layer for s in scores]
    fig = go.Figure()
    fig.add_scatter(x=layers, y=[s.pair_accuracy for s in scores], name="pair accuracy (vector)",
                    mode="lines+markers",
                    error_y=dict(type="data", symmetric=False, array=[s.accuracy_hi - s.pair_accuracy for s in scores],
                                 arrayminus=[s.pair_accuracy - s.accuracy_lo for s in scores]))
    fig.add_scatter(x=layers, y=[s.probe_accuracy for s in scores], name="probe accuracy", mode="lines+markers",
                    error_y=dict(type="data", symmetric=False, array=[s.probe_hi - s.probe_accuracy for s in scores],
                                 arrayminus=[s.probe_accuracy - s.probe_lo for s in scores], thickness=1))
    fig.add_scatter(x=layers, y=[s.projection_gap for s in scores], name="projection gap (d′, 95 % bootstrap)",
                    mode="lines+markers", yaxis="y2",
                    error_y=dict(type="data", symmetric=False, array=[s.gap_hi - s.projection_gap for s in scores],
                                 arrayminus=[s.projection_gap - s.gap_lo for s in scores]))
    # d′ from 0 on its own ticks (synced to the accuracy grid they read 1.653, 2.04, …)
    fig.update_layout(height=360, xaxis_title="layer", yaxis=dict(title="held-out accuracy", range=[0, 1.05]),
                      yaxis2=dict(title="d′", overlaying="y", side="right", rangemode="tozero", tickmode="auto",
                                  showgrid=False), legend=LEGEND_ABOVE)
    return fig


def efficiency_figure(points: Sequence, label: Callable[[str], str]) -> go.Figure:
    """Held-out pair accuracy against training pairs, one curve per method, ± one SD over subsets
    (``vectors.evaluation.EfficiencyPoint`` rows; ``label`` names a method)."""
    fig = go.Figure()
    for method in dict.fromkeys(p.method for p in points):
        cur = sorted((p for p in points if p.method == method), key=lambda p: p.n_pairs)
        fig.add_scatter(x=[p.n_pairs for p in cur], y=[p.pair_accuracy for p in cur], name=label(method),
                        mode="lines+markers", error_y=dict(type="data", array=[p.accuracy_sd for p in cur]))
    fig.update_layout(height=360, xaxis=dict(title="training pairs", **_DOUBLING),
                      yaxis=dict(title="held-out pair accuracy", range=[0, 1.05]), legend=LEGEND_ABOVE)
    return fig


def prompt_pair_figure(pp, metric: str, title: str, label: Callable[[str], str]) -> go.Figure:
    """One prompt-pair metric (``vectors.pair_efficiency.PromptPairEfficiency``) against training pairs,
    one curve per method, with the unsteered and positive levels as reference lines."""
    fig = go.Figure()
    for method in dict.fromkeys(p.method for p in pp.points):
        cur = pp.curve(metric, method)
        if cur:
            fig.add_scatter(x=[p.n_pairs for p in cur], y=[p.mean for p in cur], name=label(method),
                            mode="lines+markers", error_y=dict(type="data", array=[p.sd for p in cur]))
    if metric in pp.baseline:
        fig.add_hline(y=pp.baseline[metric], line_dash="dash", annotation_text="unsteered")
    if metric in pp.positives:
        fig.add_hline(y=pp.positives[metric], line_dash="dot", annotation_text="positives",
                      annotation_position="bottom right")
    fig.update_layout(height=300, title=title, xaxis=dict(title="training pairs", **_DOUBLING), yaxis_title=title,
                      legend=LEGEND_ABOVE)
    return fig
