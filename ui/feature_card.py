"""A feature's card on the Features page: what it is (label, density, α, baseline), what it reads
(histogram, snippets, a test on the user's own text), what it writes (logit lens, exact output
changes), whether it is a hub, and its effects and actions lists with their ± and filters. The same
card is drawn full-width under Search and compact in the Workspace and beside the Map."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

import ui
from steering_core import SteeringCoreError, browse
from steering_core.browse.rows import ListFilter
from steering_core.browse.usernotes import UserNotes, effective_label
from steering_core.pack.reader import FeaturePack


def feature_card(pack: FeaturePack, notes: UserNotes, fid: int, key: str, flt: ListFilter,
                 compact: bool = False) -> None:
    """Draw feature ``fid``'s card; ``key`` keeps its widgets apart from another card of the same
    feature elsewhere on the page, and ``flt`` is the sidebar's list filter."""
    ss = st.session_state
    feat = pack.feature(fid)
    label = effective_label(pack, fid, notes)
    mark = "★ " if ss.selected == fid else ""
    st.markdown(f"### {mark}#{fid} · {ui.md_escape(label)}")
    if feat.get("description"):
        st.caption(feat["description"])
    # a compact card (Workspace, beside the Map) is half the page wide: a 2×2 grid keeps the labels whole
    m = [c for row in ([st.columns(2), st.columns(2)] if compact else [st.columns(4)]) for c in row]
    m[0].metric("Density", f"{(feat['density'] or 0):.2%}")
    m[1].metric("Max activation", f"{(feat['max_act'] or 0):.3g}")
    checked = f" (checked: {feat['alpha_dce']:+.2f} nats)" if feat.get("alpha_dce") is not None else ""
    m[2].metric("Loss-matched α", f"{feat['alpha']:.1f}" if feat.get("alpha") else "—",
                help=f"α at which steering with this unit decoder row raises next-token loss by ≈0.5 nats{checked} "
                     f"on {pack.alpha_basis()}: the α its effects were measured at. ΔCE depends on the text, so "
                     "the Steer page's Automatic α, matched on built-in neutral prose, can differ.")
    base = browse.baseline_activation(pack, fid)
    se = base.se if base is not None else None
    # the ± goes under the value (grey, no arrow): beside it, a half-width card cut it off
    m[3].metric("Baseline activation", "—" if base is None else f"{base.value:.3g}",
                delta=None if se is None else f"± {se:.2g}", delta_color="off", delta_arrow="off",
                delta_description=None if se is None else "one SE",
                help="Mean unsteered activation over the effect rollouts' generated tokens"
                     + ("" if se is None else f" ({base.rollouts} rollouts); ± is one standard error, within prompts")
                     + ". Effects are changes from it.")
    if (missed := pack.alpha_missed(feat)) is not None:
        st.warning(f"This feature's α missed the loss target: at α {feat['alpha']:.1f}, next-token loss rose by "
                   f"{missed[0]:.2f} nats, not ≈{missed[1]:g} (the solve's check on {pack.alpha_basis()}). Its "
                   f"effects were measured at that {'stronger' if missed[0] > missed[1] else 'weaker'} push, so they "
                   "are not comparable with other features' at equal loss.")
    if (sink := browse.sink_note(pack, feat)) is not None:
        st.warning(sink)
    b1, b2, b3 = st.columns(3)
    if b1.button("Steer" if compact else "Steer with this feature", key=f"{key}_steer", type="primary",
                 help="Open the Steer page with this feature's decoder row at its loss-matched α."):
        # this decoder row, at the pack's layer and the feature's loss-matched α
        ui.goto_steer(feature=fid, layer=int(pack.meta.get("layer", 0)),
                      alpha=round(feat["alpha"], 1) if feat.get("alpha") else None)
    if b2.button("Select", key=f"{key}_select"):
        ui.pin_feature(fid)
        st.rerun()
    if b3.button("Unpin", key=f"{key}_unpin"):
        ui.unpin_feature(fid)
        st.rerun()
    with st.expander("Label and notes", expanded=False):
        note = notes.get(pack, fid)
        new_label = st.text_input("Label", value=label, key=f"{key}_label")
        new_notes = st.text_area("Notes", value=note.notes or "", key=f"{key}_notes")
        if st.button("Save", key=f"{key}_save"):
            try:
                notes.set_label(pack, fid, new_label)
                notes.set_notes(pack, fid, new_notes)
                st.success("Saved (in your user database; the shipped pack is unchanged).")
            except SteeringCoreError as exc:
                st.error(str(exc))
    if not compact:
        _reads_and_writes(pack, feat, fid, key)
        _snippets_and_test(pack, feat, fid, key)
    hub = pack.generic(fid)
    if hub is not None and hub[3]:
        st.info(f"◎ Hub: {hub[2]:.0%} of random directions raise #{fid} (generic response {hub[0]:+.3f} ± "
                f"{hub[1]:.3f}), so a raw effect onto it says little about the steering direction; the specific "
                "effect subtracts that.")
    budget = pack.effects_budget(fid)
    if budget is not None and not compact:
        st.caption(f"Effects of #{fid}: means over {budget[0]} steered rollouts, each against its unsteered twin; "
                   "± is one standard error." + (" Topped up: its top 10 was contested at the pack's base budget."
                                                 if budget[1] else ""))
    # two across on a full card (a 2×2 grid): room for the bar and the label; one column on a compact card
    cols = [st.container()] if compact else st.columns(2)
    for i, kind in enumerate(browse.LIST_KINDS.values()):
        with cols[i % len(cols)]:
            st.markdown(f"**{kind.title}**", help=kind.about)
            try:
                rows = kind.fetch(pack, fid, flt, k=32, notes=notes)
            except SteeringCoreError as exc:
                st.warning(str(exc))
                continue
            ui.feature_list(kind.title, rows, f"{key}_{kind.name}", selected=ss.selected, on_open=ui.pin_feature)


def _reads_and_writes(pack: FeaturePack, feat: dict, fid: int, key: str) -> None:
    """The activation histogram beside what the feature writes: the logit lens (cheap, skips every
    later layer) and the exact output changes at its α (what steering really does to the next token)."""
    left, right = st.columns([1, 1])
    with left:
        counts = feat.get("hist_counts") or []
        if counts and feat.get("hist_max"):
            width = feat["hist_max"] / len(counts)
            fig = go.Figure(go.Bar(x=[(i + 0.5) * width for i in range(len(counts))], y=counts))
            fig.update_layout(height=200, margin=dict(l=0, r=0, t=20, b=0), title="Activation histogram",
                              xaxis_title="activation", yaxis=dict(type="log", dtick=1, title="count"))  # 1, 10, 100
            st.plotly_chart(fig, width="stretch", key=f"{key}_hist")
    with right:
        # double-backtick code spans show any token literally (quotes, <tags>, a lone backtick)
        top, bot = (ui.token_spans(feat.get(k) or []) for k in ("top_logits", "bottom_logits"))
        st.markdown(f"**Promotes** {top}\n\n**Suppresses** {bot}",
                    help="Logit lens: the decoder row through the unembedding (skips every later layer).")
        out = pack.outputs(fid)
        if out is not None:
            up, down = (ui.token_spans([t for t, _ in out[k][:6]], [v for _, v in out[k][:6]])
                        for k in ("gains", "losses"))
            bar = pack.steers_well_bar()
            verdict = "" if bar is None else (f" · **steers well** (random directions' 95th percentile: {bar:+.3f})"
                                              if out["output_score"] > bar else
                                              f" · below random directions' 95th percentile ({bar:+.3f})")
            st.markdown(f"**Steering raises** {up}\n\n**Steering lowers** {down}\n\n"
                        f"**Output score** {out['output_score']:+.3f}{verdict}",
                        help="Exact next-token probability changes when steering at this feature's α, "
                             "averaged over the effect prompts (TokenChange). Output score: probability "
                             "moved onto its own top-20 logit-lens tokens; high = it steers toward what it "
                             "promotes, near 0 = it mostly detects.")


def _snippets_and_test(pack: FeaturePack, feat: dict, fid: int, key: str) -> None:
    """Where the feature fires in the corpus, and on a sentence the user types: a label is a guess
    until it is checked on text the user chose."""
    snips = pack.snippets(fid)
    if snips:
        with st.expander(f"Top activating snippets ({sum(s['kind'] == 'top' for s in snips)}) and lower quantiles",
                         expanded=True):
            # a quantile sample's caption comes before the snippet it names
            st.markdown("".join(("" if s["kind"] == "top" else
                        f'<div style="font-size:0.7em;color:gray">{s["kind"]} sample</div>')
                                + ui.snippet_html(s, scale=feat.get("max_act"))
                                for s in snips[:24]), unsafe_allow_html=True)
    with st.expander("Test this feature on my text", expanded=False):
        mine = st.text_input("Text", key=f"{key}_mytext", placeholder="a sentence where you expect it to fire")
        if mine.strip():
            try:
                r = browse.feature_on_text(ui.current_model(), ui.current_sae(), mine, fid, pack=pack)
                st.markdown(ui.tokens_html(r.tokens, [r.strength(i) for i in range(len(r.tokens))],
                                           ["skipped" if a is None else f"{a:.3f}" for a in r.acts]),
                            unsafe_allow_html=True)
                peak = max((a for a in r.acts if a is not None), default=0.0)
                st.caption(f"Peak activation {peak:.3g}" + (f" (its corpus maximum is {r.scale:.3g})" if r.scale
                           else "") + "; the first token is an attention sink and is not analysed.")
            except SteeringCoreError as exc:
                st.error(str(exc))
