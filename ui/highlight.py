"""Tokens painted by activation: snippets, "What fires here" and "Test this feature on my text"
all draw text the same way, one orange whose strength is the activation as a share of a scale."""

from __future__ import annotations

import html
from typing import Sequence

from steering_core.describe.words import shown_token


def tokens_html(tokens: Sequence[str], strengths: Sequence[float], titles: Sequence[str] | None = None,
                badge: str = "") -> str:
    """One line of monospace tokens; ``strengths`` in [0, 1] set the background, ``titles`` the
    hover text; ``badge`` (e.g. "×4 similar") is shown after the text."""
    spans = []
    for i, (tok, a) in enumerate(zip(tokens, strengths)):
        alpha = max(0.0, min(1.0, float(a)))
        title = html.escape(titles[i]) if titles is not None else ""
        spans.append(f'<span title="{title}" style="background: rgba(255,140,0,{alpha:.2f}); border-radius:3px">'
                     f"{html.escape(tok).replace(chr(10), '⏎')}</span>")
    tail = f' <span style="font-size:0.8em;color:gray">{html.escape(badge)}</span>' if badge else ""
    return f'<div style="font-family:monospace; font-size:0.85em; margin-bottom:4px">{"".join(spans)}{tail}</div>'


def snippet_html(snip: dict, scale: float | None = None) -> str:
    """A stored snippet, coloured on ``scale`` (the feature's maximum, so a lower-quantile sample
    looks as faint as it is) or else its own peak; near-duplicates it stands for are counted."""
    top = max(scale if scale else snip["max_act"], 1e-9)
    n = int(snip.get("similar") or 1)
    return tokens_html(snip["tokens"], [a / top for a in snip["acts"]], [f"{a:.3f}" for a in snip["acts"]],
                       badge=f"×{n} similar" if n > 1 else "")


def token_spans(tokens: Sequence[str], values: Sequence[float] | None = None) -> str:
    """Tokens as Markdown code spans, comma-separated, each as ``describe.words.shown_token`` shows
    it (double backticks, so a token that is a quote or a lone backtick still shows literally),
    followed by its signed value when ``values`` are given."""
    return ", ".join(f"`` {shown_token(t)} ``" + ("" if values is None else f" {values[i]:+.3f}")
                     for i, t in enumerate(tokens))
