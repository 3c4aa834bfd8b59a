"""The Sweep page's two other tabs: the exact next-token view (how one vector moves the next token's
probabilities over α, and the ΔCE curve with its quadratic fit) and Compare methods (one task run
across saved vectors, SAE features and prompting baselines, with a downloadable report). Each keeps
its result with the settings that made it, and says when the widgets changed since."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import ui
from steering_core import SteeringCoreError
from steering_core.measure.comparison import DEFAULT_MULTIPLIERS, USEFUL_PRODUCT, Candidate, compare, summary_rows
from steering_core.measure.nexttoken import dce_curve, next_token_curves
from steering_core.measure.prompting import PLACEMENTS, PromptEntry
from steering_core.measure.report import compare_settings, feature_source, make_report, report_zip, saved_vector_source
from steering_core.measure.sweep import SweepSpec
from steering_core.model.precision import dtype_name
from steering_core.model.saes import LoadedSAE
from steering_core.model.steerable import SteerableModel
from steering_core.vectors.store import VectorStore
from ui.numbers import number_table

PLACEMENT_LABELS = {"system": "system prompt", "prefix": "before each prompt"}
#: What a tab says when the sidebar holds no valid vector (the tabs stay usable; Compare needs none).
MISSING = "Choose a valid vector in the sidebar to use this tab (see the message there)."


@dataclass(frozen=True)
class Task:
    """The first tab's task as typed (Compare methods scores every entry on it)."""

    prompts: str
    keywords: str
    samples: int
    new_tokens: int
    seed: int


def prompt_entries(text: str, placement: str) -> list[PromptEntry]:
    """One prompting entry per non-empty line (repeated lines once), named after its instruction."""
    lines = dict.fromkeys(line.strip() for line in text.splitlines())
    return [PromptEntry(f"prompt: {line}", line, placement) for line in lines if line]


def next_token_tab(model: SteerableModel, vector: torch.Tensor | None, layer: int | None, label: str) -> None:
    """Exact next-token probabilities over a symmetric α grid: no sampling, so no error bars."""
    ss = st.session_state
    t1, t2 = st.columns(2)
    nt_prompt = t1.text_input("Prompt", "I went to a", key="nt_prompt")
    nt_tokens = t2.text_input("Tokens to follow (comma-separated)", " wedding, party, store", key="nt_tokens")
    top = st.slider("Also show the tokens that move most", 0, 16, 6, key="nt_top")
    n1, n2 = st.columns([3, 1])
    hi = n1.number_input("Largest |α|", 1.0, 1e4,
                         float(round(model.residual_norms()[layer], 0)) if vector is not None else 100.0, key="nt_hi")
    # off by default: the tokens to follow continue the prompt's own text ("I went to a" → " wedding"),
    # while in the template the next token is the first of the assistant's reply
    nt_chat = n2.toggle("Chat template", False, key="nt_chat", disabled=not model.chat_template,
                        help="Wrap the prompt as a user turn: the next token is then the first of the reply.")
    nt_settings = {"vector": label, "layer": layer, "prompt": nt_prompt.strip(), "tokens": nt_tokens,
                   "movers": int(top), "largest |α|": float(hi), "chat template": bool(nt_chat)}
    if vector is None:
        st.info(MISSING)
    if st.button("Compute", key="nt_go", disabled=vector is None):
        ss.pop("nt_result", None)  # an error must not leave the last curves under it as if they were these
        try:
            grid = list(np.linspace(-hi, hi, 21))
            ss.nt_result = (next_token_curves(model, nt_prompt, vector, layer, grid, nt_tokens.split(","), top,
                                              chat=bool(nt_chat) and bool(model.chat_template)),
                            dce_curve(model, layer, vector, grid), nt_settings)
        except SteeringCoreError as exc:
            ui.show_error(exc)
    if ss.get("nt_result") and vector is not None:
        made = ss.nt_result[2]
        if note := ui.stale_warning(made, nt_settings, "press Compute again"):
            st.warning(note)
        st.caption(f"{made['vector']} at block {made['layer']}, 21 α from −{made['largest |α|']:g} to "
                   f"+{made['largest |α|']:g}, after {made['prompt']!r}"
                   + (" in the chat template" if made["chat template"] else "")
                   + ". Exact next-token probabilities (one forward pass per α, no sampling, so no error bars).")
        for line in ss.nt_result[0].notes:
            st.caption(line)
        cur, dc, _ = ss.nt_result
        if not cur.tokens:
            st.info("No token to draw: type tokens to follow, or raise 'Also show the tokens that move most'.")
        fig = go.Figure()
        for j, tok in enumerate(cur.tokens):
            fig.add_scatter(x=cur.alphas, y=cur.delta_p[:, j], name=repr(tok) + ("" if cur.chosen[j] else " (mover)"),
                            mode="lines", line=dict(width=3 if cur.chosen[j] else 1))
        fig.update_layout(height=340, xaxis_title="α", yaxis_title="Δp(z | α)", legend=ui.LEGEND_ABOVE)
        st.plotly_chart(fig, width="stretch")
        fit = dc.slope * dc.alphas + 0.5 * dc.curvature * dc.alphas ** 2
        fig2 = go.Figure()
        fig2.add_scatter(x=dc.alphas, y=dc.dce, name="ΔCE (measured)", mode="lines+markers")
        fig2.add_scatter(x=dc.alphas, y=fit, name=f"g·α + ½c·α² (fit for |α| ≤ {dc.fit_range:.0f})",
                         mode="lines", line=dict(dash="dash"))
        fig2.update_layout(height=300, xaxis_title="α", yaxis_title="ΔCE on reference text (nats)",
                           legend=ui.LEGEND_ABOVE)
        st.plotly_chart(fig2, width="stretch")



def compare_tab(model: SteerableModel, sae: LoadedSAE | None, vstore: VectorStore, task: Task) -> None:
    """Every candidate swept from 0 to 3× its own automatic α on the first tab's task."""
    ss = st.session_state
    prompts, keywords, samples, new_tokens, seed = task.prompts, task.keywords, task.samples, task.new_tokens, task.seed
    st.caption("One task run across vectors ([Chalnev 2024], Table 2): each candidate is swept from 0 to 3× its own "
               "automatic α on the prompts and keywords of the first tab; the table gives the peak keyword hit "
               "rate × coherence and the α where it peaks. Prompting baselines (AxBench's lesson: start with a "
               "prompt) are scored on the same rows and drawn as horizontal lines.")
    chosen = st.multiselect("Saved vectors", vstore.names(), key="cmp_vectors")
    feats = st.text_input("SAE features (ids, comma-separated)", "", key="cmp_features", disabled=sae is None)
    q1, q2 = st.columns([3, 1])
    instructions = q1.text_area("Prompting baselines, one instruction per line (optional)", "", key="cmp_prompting",
                                placeholder="Always mention weddings.", height=80)
    placement = q2.selectbox("Placed as", PLACEMENTS, key="cmp_placement", format_func=PLACEMENT_LABELS.get)
    task_prompts = [p for p in prompts.splitlines() if p.strip()]
    st.caption(f"Task, from the first tab: keywords {keywords.strip()!r}, scored on {ui.count(len(task_prompts), 'prompt')}"
               f" × {ui.count(int(samples), 'sample')} of {ui.count(int(new_tokens), 'token')}, "
               f"seed {int(seed)}; every entry gets the same rows.")
    cmp_settings = {"vectors": tuple(chosen), "features": feats.strip(), "prompting baselines": instructions.strip(),
                    "placement": placement, "prompts": tuple(task_prompts), "keywords": keywords.strip(),
                    "samples": int(samples), "tokens": int(new_tokens), "seed": int(seed)}
    if st.button("Compare", key="cmp_go"):
        bar = st.progress(0.0, text="Comparing…")
        for old in ("cmp_result", "cmp_report"):  # an error must not leave an earlier comparison under it
            ss.pop(old, None)
        try:
            cands, sources = [], []
            for name in chosen:
                v = vstore.load(name)
                cands.append(Candidate(name, v.unit(), v.layer, v.reference, v.operator))
                sources.append(saved_vector_source(v))
            for piece in [x for x in feats.replace(";", ",").split(",") if x.strip()] if sae is not None else []:
                fid = sae.check_feature(piece)
                cands.append(Candidate(f"feature {fid}", sae.decoder_direction(fid), sae.layer))
                sources.append(feature_source(fid, sae.layer, sae.source, sae.decoder_direction(fid)))
            entries = prompt_entries(instructions, placement)
            task = SweepSpec(prompts=tuple(prompts.splitlines()), alphas=(0.0,), samples=int(samples),
                             new_tokens=int(new_tokens), seed=int(seed), keywords=tuple(keywords.split(",")))
            rows, curves = compare(model, cands, task, cache=ui.library().sweeps, prompts=entries,
                                   on_candidate=lambda i, n, name: bar.progress(i / max(1, n), text=f"{name} ({i}/{n})"))
            ss.cmp_result = (rows, curves)
            ss.cmp_settings = cmp_settings
            settings = compare_settings(task, sources, entries, DEFAULT_MULTIPLIERS, 0.5, model.name,
                                        dtype_name(model.dtype), sae.source if sae is not None else None)
            ss.cmp_report = report_zip(make_report(rows, curves, settings,
                                                   title=f"{model.name}: keywords × coherence"))
        except SteeringCoreError as exc:
            ui.show_error(exc)
        bar.empty()
    if ss.get("cmp_result"):
        rows, curves = ss.cmp_result
        if note := ui.stale_warning(ss.get("cmp_settings"), cmp_settings, "press Compare again"):
            st.warning(note)
        table = pd.DataFrame(summary_rows(rows, curves))
        number_table(table, {**{c: "%.3f" for c in table.columns if c not in ("name", "verdict", "layer", "α at peak",
                                                                             "automatic α") and not c.startswith("against")},
                             "α at peak": "%.1f", "automatic α": "%.1f", "layer": "%d"},
                     name=st.column_config.TextColumn("name", width="large"))
        st.caption("± is one standard error of the peak (delta method over the behaviour's and the coherence's "
                   f"SEs; — where one rollout per α leaves it unknown, and for a prompting baseline's α and "
                   f"layer, which it has none of). A peak below {USEFUL_PRODUCT:.2f}, or "
                   "at α = 0, is no useful α; a gap to the prompting baseline within 2 SE is within noise.")
        fig = go.Figure()
        corners = ("top right", "bottom right", "top left", "bottom left")  # two baselines at one height stay readable
        for i, r in enumerate(rows):
            pts = curves[r.name]
            if r.kind == "prompt":
                fig.add_hline(y=pts[0].get("product"), line_dash="dash", annotation_text=r.name,
                              annotation_position=corners[sum(q.kind == "prompt" for q in rows[:i]) % len(corners)])
            else:
                ui.add_band(fig, [p.alpha for p in pts], [p.get("product") for p in pts],
                            [p.get("product_se") for p in pts], r.name, i)
        fig.update_layout(height=340, xaxis_title="α", yaxis_title="keywords × coherence (± 1 SE)",
                          legend=ui.LEGEND_ABOVE)
        st.plotly_chart(fig, width="stretch")
        if ss.get("cmp_report"):
            st.download_button("Download the Compare report (CSV + PNG + settings JSON)", ss.cmp_report,
                               "compare_report.zip", mime="application/zip", key="cmp_download",
                               help="compare.csv: every point, peak rows marked; compare.png: the curves; "
                                    "settings.json: everything needed to rerun it.")
