"""Small plotting helpers the pages share: a curve with a ± band in the curve's own colour."""

from __future__ import annotations

from typing import Sequence

import plotly.colors
import plotly.graph_objects as go

PALETTE = plotly.colors.qualitative.Plotly


#: A horizontal legend above the plot: below it, Plotly draws it over the x tick labels and title.
LEGEND_ABOVE = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0)


def add_band(fig: go.Figure, x: Sequence[float], mean: Sequence[float], spread: Sequence[float] | None, name: str,
             index: int, width: float = 2) -> None:
    """A line with markers for ``mean`` and a translucent band from mean − spread to mean + spread,
    both in the curve's own colour (a band left to Plotly's colour cycle takes the next curve's
    colour, and its corners show as that curve's markers)."""
    colour = PALETTE[index % len(PALETTE)]
    r, g, b = plotly.colors.hex_to_rgb(colour)
    x, mean = [float(v) for v in x], [float(v) for v in mean]
    if spread is not None:
        upper = [m + s for m, s in zip(mean, spread)]
        lower = [m - s for m, s in zip(mean, spread)]
        fig.add_scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", mode="lines", line=dict(width=0),
                        fillcolor=f"rgba({r},{g},{b},0.15)", showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=x, y=mean, name=name, mode="lines+markers", line=dict(color=colour, width=width))
