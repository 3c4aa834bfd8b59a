"""Features: EffectVis-style browser over the pack: search, feature cards with measured effects,
actions, cosine- and effect-similar lists, a pinned workspace with cross-highlighting, the
cosine-vs-effect comparison, and the UMAP map."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from steering_core import SteeringCoreError, browse
from steering_core.browse.usernotes import MAX_WORKSPACE_BYTES, Workspace
from ui.feature_card import feature_card

ui.setup_page("Features")
st.title("Features")
pack = ui.current_pack()
if pack is None:
    st.info("No feature pack is open. The embedded model opens the shipped pack in cache/pack/; "
            "build one for your own model with `python -m steering_core.pack build CONFIG`.")
    st.stop()
notes = ui.user_notes()
ss = st.session_state
ss.setdefault("pins", [])
ss.setdefault("selected", None)  # the open feature: written only by ui.pin_feature / ui.unpin_feature
ui.feature_from_url(pack)  # /features?feature=630 opens card #630

# -- filters (sidebar; apply to every list) --------------------------------------------------------
with st.sidebar:
    st.subheader("List filters")
    min_abs = st.number_input("Minimum |value|", 0.0, 1e9, 0.0, step=0.01, key="f_min_abs")
    min_rel = st.number_input("Minimum |relative effect| (0 = off)", 0.0, 1e9, 0.0, step=0.1, key="f_min_rel",
                              help=f"effect ÷ (baseline activation + {browse.REL_EPS:g}): finds features that go "
                                   "from silent to active.")
    hide_dense = st.toggle("Hide dense features", value=True, key="f_hide_dense")
    max_density = st.slider("Density threshold", 0.0, 1.0, browse.DEFAULT_MAX_DENSITY, 0.01, key="f_max_density",
                            disabled=not hide_dense)
    sign = st.radio("Sign", browse.SIGNS, horizontal=True, key="f_sign")
    has_specific = pack.has_specific
    basis = st.radio("Effects shown", browse.BASES, horizontal=True, key="f_basis", disabled=not has_specific,
                     format_func=lambda b: {"raw": "Raw", "specific": "Specific"}[b],
                     help="Raw: the paper's effect (steered − unsteered). Specific: raw minus the generic response, "
                          "what steering in random directions does too." + ("" if has_specific else
                          " This pack has no generic-response control; rebuild it for specific effects."))
    hide_noise = st.toggle("Hide effects within 2 SE of zero", value=False, key="f_hide_noise",
                           help="Greyed in the lists when shown.")
    hide_hubs = st.toggle("Hide hub targets ◎", value=False, key="f_hide_hubs", disabled=not has_specific,
                          help="Effects lists only (a hub is a target; actions list sources): targets that "
                               "random directions move too, each with a sign that follows the direction: "
                               "subtracting the generic response (Specific) does not remove them.")
try:
    flt = browse.ListFilter(min_abs=min_abs, min_rel=min_rel or None,
                            max_density=max_density if hide_dense else None, sign=sign, hide_noise=hide_noise,
                            basis=basis if has_specific else "raw", hide_hubs=hide_hubs and has_specific)
except SteeringCoreError as exc:
    st.sidebar.error(str(exc))
    flt = browse.ListFilter()

s = pack.summary()
st.caption(f"Pack: `{s['model']}` · `{s['hook']}` · {s['d_sae']} features ({s['measured_features']} with measured "
           f"effects) · click any row to open its card; the selected feature is highlighted everywhere.")

# -- tabs ------------------------------------------------------------------------------------------
t_search, t_work, t_compare, t_map = st.tabs(["Search", "Workspace", "Compare", "Map"])

with t_search:
    mode = st.radio("Search by", ["Feature id", "Label text", "Meaning (semantic)", "What fires here"],
                    horizontal=True, key="search_mode")
    if mode == "Feature id" and ss.selected is not None and ss.get("search_synced") != ss.selected:
        # a feature opened elsewhere (a list row, the map, a link) is named in the box too
        ss.search_query = ss.last_id_search = str(ss.selected)
        ss.search_synced = ss.selected
    query = st.text_input("Query", key="search_query",
                          placeholder="e.g. 12 · wedding · talk about cooking · a sentence to analyse")
    hit_ids = None  # the features a list search shows: its card is shown only for one of them
    search_ok = True
    if query.strip():
        try:
            if mode == "Feature id":
                hit = browse.search_id(pack, query, notes)
                if ss.get("last_id_search") != query:  # open once per new query, not on every rerun
                    ss.last_id_search = query
                    ss.search_synced = ui.pin_feature(hit.feature_id)
                st.success(f"#{hit.feature_id} · {hit.label}")
            elif mode == "What fires here":
                toks = browse.what_fires_here(ui.current_model(), ui.current_sae(), None, query, k=3, pack=pack,
                                              notes=notes, max_density=flt.max_density)
                st.markdown(ui.tokens_html([t.token for t in toks], [t.strength for t in toks],
                                           ["skipped (attention sink or template)" if t.skipped else
                                            ", ".join(f"#{f.feature_id} {f.activation:.2f}" for f in t.features)
                                            for t in toks]), unsafe_allow_html=True)
                st.caption("Colour: the top feature's activation as a share of its own corpus maximum. Features "
                           "denser than the sidebar's threshold are left out.")
                df = pd.DataFrame([{"position": t.position, "token": t.token, "feature": f.feature_id,
                                    "activation": f.activation, "label": f.label} for t in toks for f in t.features])
                hit_ids = set(df["feature"].astype(int)) if not df.empty else set()
                if df.empty:
                    st.info("No feature fires on this text.")
                else:
                    ev = st.dataframe(df, key="fires_table", on_select="rerun", selection_mode="single-row",
                                      hide_index=True, height=300)
                    if ev.selection.rows and ss.get("fires_last") != ev.selection.rows[0]:
                        ss.fires_last = ev.selection.rows[0]
                        ui.pin_feature(int(df.iloc[ev.selection.rows[0]]["feature"]))
                        hit_ids.add(ss.selected)
            else:
                hits = (browse.search_label(pack, query, k=50, notes=notes) if mode == "Label text"
                        else browse.semantic_search(pack, query, k=20, notes=notes))
                o1, o2 = st.columns(2)
                well = o1.toggle("Only features that steer well", key="search_steers_well",
                                 disabled=pack.steers_well_bar() is None,
                                 help="Output score above the 95th percentile of random directions': steering "
                                      "with it moves the next token toward what it promotes.")
                order = o2.radio("Sort by", browse.SORTS, horizontal=True, key="search_sort")
                hits = browse.arrange_hits(hits, order, well)
                hit_ids = {h.feature_id for h in hits}
                if not hits:
                    st.info(f"No feature matches {query!r}" + (" and steers well" if well else "") +
                            ". Try fewer words, or search by meaning.")
                else:
                    df = pd.DataFrame([{"feature": h.feature_id, "label": h.label, "density": h.density,
                                        "score": h.score, "output score": h.output_score,
                                        "steers well": h.steers_well} for h in hits])
                    if df["score"].isna().all():  # label search ranks by match, not by a score
                        df = df.drop(columns="score")
                    ev = st.dataframe(df, key="search_table", on_select="rerun", selection_mode="single-row",
                                      hide_index=True, height=300, column_config={
                                          "density": st.column_config.NumberColumn(format="%.3f"),
                                          "score": st.column_config.NumberColumn(format="%.3f"),
                                          "output score": st.column_config.NumberColumn(format="%+.3f")})
                    if ev.selection.rows and ss.get("search_last") != (query, ev.selection.rows[0]):
                        ss.search_last = (query, ev.selection.rows[0])
                        ui.pin_feature(int(df.iloc[ev.selection.rows[0]]["feature"]))
                        hit_ids.add(ss.selected)
        except SteeringCoreError as exc:
            st.error(str(exc))
            search_ok = False  # no card under a query that names no feature
    if ss.selected is not None and search_ok and (hit_ids is None or ss.selected in hit_ids):
        st.divider()
        feature_card(pack, notes, ss.selected, f"card_{ss.selected}", flt)
    elif ss.selected is not None and search_ok:
        st.caption(f"#{ss.selected}, the open feature, is not among these results: click a row to open one "
                   "here, or see it in the Workspace tab.")

with t_work:
    if not ss.pins:
        st.info("Open features from Search, a list row or the Map; they are pinned here side by side.")
    across = 1 if len(ss.pins) == 1 else 2  # a card alone takes the width: half of it cut its lists' labels off
    for row_start in range(0, len(ss.pins), across):
        cols = st.columns(across)
        for col, fid in zip(cols, ss.pins[row_start:row_start + across]):
            with col, st.container(border=True):
                feature_card(pack, notes, fid, f"ws_{fid}", flt, compact=True)
    st.divider()
    w1, w2 = st.columns(2)
    ws = Workspace.capture(pack, notes, ss.pins)
    w1.download_button("Export workspace (JSON)", ws.to_json(), "workspace.json", "application/json", key="ws_export")
    up = w2.file_uploader("Import workspace", type=["json"], key="ws_import",
                          max_upload_size=ui.upload_mb(MAX_WORKSPACE_BYTES))
    if up is not None and ss.get("ws_imported") != up.file_id:
        try:
            loaded = Workspace.from_json(up.getvalue(), pack)
            loaded.apply(pack, notes)
            ss.pins = list(loaded.pinned)[:ui.MAX_PINS]
            ss.selected = ss.pins[0] if ss.pins else None  # the file's cards, not the one open before
            ss.ws_imported = up.file_id
            ui.flash("ws_flash", "success", f"Imported {ui.count(len(loaded.pinned), 'pinned card')}, "
                     f"{ui.count(len(loaded.labels), 'label')}, {ui.count(len(loaded.notes), 'note')}.")
            if len(loaded.pinned) > ui.MAX_PINS:
                ui.flash("ws_flash", "warning", f"The workspace holds {ui.MAX_PINS} cards at a time: the first "
                         f"{ui.MAX_PINS} of the file's {len(loaded.pinned)} are pinned "
                         f"({', '.join(f'#{f}' for f in loaded.pinned[ui.MAX_PINS:])} are not).")
            st.rerun()  # the cards above were drawn before the import: draw the file's
        except SteeringCoreError as exc:
            st.error(str(exc))
    ui.show_flashes("ws_flash", w2)

with t_compare:
    default = str(ss.selected if ss.selected is not None else (ss.pins[0] if ss.pins else 0))
    if "compare_id" not in ss or ss.get("compare_follows") != ss.selected:  # a newly opened feature is compared
        ss.compare_id = default
        ss.compare_follows = ss.selected
    cid = st.text_input("Feature", key="compare_id")  # its value is kept in ss.compare_id (set above)
    k = st.slider("Neighbours per list", 4, 32, 16, key="compare_k")
    try:
        fid = pack.check_feature(cid.strip())  # a message echoes the input without its spaces
        nb = browse.neighbourhoods(pack, fid, k=k, flt=flt, notes=notes)
        n_cos, n_eff = len(nb.cosine), len(nb.effect_similar)
        if not (n_cos and n_eff):  # an overlap with an empty list is undefined, not 0
            st.info(f"The sidebar filters leave {ui.count(n_cos, 'cosine-similar neighbour')} and "
                    f"{ui.count(n_eff, 'effect-similar one')}: nothing to overlap. Loosen the filters to compare.")
        else:
            st.metric("Jaccard overlap of the cosine and effect neighbourhoods", f"{nb.jaccard:.2f}")
            sizes = f"{n_cos}" if n_cos == n_eff else f"{n_cos} and {n_eff}"
            st.caption(f"{len(nb.both)} in both lists ({n_cos} cosine-similar, {n_eff} effect-similar after the "
                       f"filters); two random lists of {sizes} from the pack's {pack.n_features:,} features share "
                       f"{browse.chance_shared(n_cos, pack.n_features, n_eff):.2f} on average.")
        fig = go.Figure()
        fig.add_shape(type="circle", x0=0, y0=0, x1=2, y1=2, fillcolor="rgba(31,119,180,0.3)", line_width=1)
        fig.add_shape(type="circle", x0=1.2, y0=0, x1=3.2, y1=2, fillcolor="rgba(255,127,14,0.3)", line_width=1)
        fig.add_trace(go.Scatter(x=[0.6, 1.6, 2.6, 0.6, 2.6], y=[1, 1, 1, 2.2, 2.2], mode="text",
                                 text=[str(len(nb.cosine_only)), str(len(nb.both)), str(len(nb.effect_only)),
                                       "cosine-similar", "effect-similar"], textfont_size=16))
        fig.update_layout(height=240, xaxis_visible=False, yaxis_visible=False, showlegend=False,
                          margin=dict(l=0, r=0, t=10, b=0))
        st.plotly_chart(fig, width="stretch", key="venn")
        c1, c2, c3 = st.columns(3)
        for col, title, items in ((c1, "Cosine only", nb.cosine_only), (c2, "Both", nb.both),
                                  (c3, "Effect only", nb.effect_only)):
            with col:
                st.markdown(f"**{title}**")
                ui.clickable_table(pd.DataFrame([{"feature": i.feature_id, "label": i.label} for i in items],
                                                columns=["feature", "label"]), f"cmp_{title}_{fid}", ui.pin_feature)
        st.subheader("Growing groups ([Chalnev 2024], Appendix E)")
        g = st.columns(2)
        size = g[0].slider("Group size", 4, 32, 12, key="group_size")
        per_step = g[1].slider("Added per step", 1, 4, 2, key="group_step")
        cmp = browse.compare_groups(pack, fid, size=size, per_step=per_step, flt=flt, notes=notes)
        if len(cmp.effect_group) <= 1 or len(cmp.cosine_group) <= 1:
            st.info("The sidebar filters leave no neighbours to grow one of the groups from: it holds the seed "
                    "alone, so the two cannot be compared. Loosen the filters.")
        else:
            st.caption(f"Jaccard of the two groups: {cmp.jaccard:.2f} · {ui.count(len(cmp.both), 'feature')} in "
                       "both (the seed among them).")
        gl, gr = st.columns(2)
        both = {m.feature_id for m in cmp.both}
        for col, title, grp in ((gl, "By effect similarity", cmp.effect_group), (gr, "By cosine similarity", cmp.cosine_group)):
            with col:
                st.markdown(f"**{title}**")
                ui.clickable_table(pd.DataFrame([{"step": m.step, "feature": m.feature_id, "label": m.label,
                                                  "in both": m.feature_id in both} for m in grp],
                                                columns=["step", "feature", "label", "in both"]),
                                   f"grp_{title}_{fid}", ui.pin_feature)
    except SteeringCoreError as exc:
        st.error(str(exc))

with t_map:
    c1, c2 = st.columns(2)
    layout = c1.radio("Layout", ["Decoder directions", "Effect vectors"], horizontal=True, key="map_layout")
    colour = c2.radio("Colour", ["Density", "Cluster"], horizontal=True, key="map_colour")
    pts = pack.feature_columns(["feature_id", "dec_x", "dec_y", "eff_x", "eff_y", "density", "cluster", "label"])
    xi, yi = (1, 2) if layout == "Decoder directions" else (3, 4)
    pts = [p for p in pts if p[xi] is not None]
    if not pts:
        st.info("This pack has no map coordinates (its maps stage did not run).")
    else:
        ids = [p[0] for p in pts]
        fig = go.Figure(go.Scattergl(
            x=[p[xi] for p in pts], y=[p[yi] for p in pts], mode="markers", customdata=ids,
            text=[f"#{p[0]} {p[7]}" for p in pts], hovertemplate="%{text}<extra></extra>",
            marker=dict(size=5, color=[(p[5] or 0) if colour == "Density" else (p[6] or 0) for p in pts],
                        colorscale="Viridis" if colour == "Density" else "Turbo", showscale=colour == "Density",
                        opacity=0.7), name="features"))
        focus = ss.selected if ss.selected is not None else (ss.pins[0] if ss.pins else None)
        if focus is not None:
            where = {p[0]: (p[xi], p[yi]) for p in pts}
            for title, fn, colr in (("effect neighbours", browse.effects_list, "red"),
                                    ("cosine neighbours", browse.cosine_list, "blue")):
                try:
                    near = [r.feature_id for r in fn(pack, focus, None, k=16) if r.feature_id in where]
                except SteeringCoreError:
                    near = []
                fig.add_trace(go.Scatter(x=[where[i][0] for i in near], y=[where[i][1] for i in near], mode="markers",
                                         marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color=colr, width=2)),
                                         name=title, customdata=near, hoverinfo="skip"))
            if focus in where:
                fig.add_trace(go.Scatter(x=[where[focus][0]], y=[where[focus][1]], mode="markers",
                                         marker=dict(size=16, symbol="star", color="gold", line_width=1),
                                         name=f"#{focus}", hoverinfo="skip"))
        fig.update_layout(height=600, margin=dict(l=0, r=0, t=40, b=0), legend=ui.LEGEND_ABOVE)
        map_col, card_col = st.columns([3, 2])  # the clicked feature's card opens beside the map
        with map_col:
            ev = st.plotly_chart(fig, width="stretch", key="feature_map", on_select="rerun",
                                 selection_mode=("points", "box", "lasso"))
        with card_col:
            if focus is None:
                st.info("Click a point: its card opens here.")
            else:
                with st.container(border=True, height=600):
                    feature_card(pack, notes, focus, f"map_{focus}", flt, compact=True)
        chosen = [int(p["customdata"]) for p in (ev.selection.points if ev and ev.selection else [])
                  if p.get("customdata") is not None]
        if chosen and chosen != ss.get("map_last"):
            ss.map_last = chosen
            for fid in reversed(chosen[:ui.MAX_PINS]):
                ui.pin_feature(fid)
            st.rerun()
        st.caption(f"Click or lasso points to open their cards (up to {ui.MAX_PINS}). Red rings: the focused "
                   "feature's largest effects; blue rings: its cosine neighbours.")

# the address names the open card, so it can be shared (none while a bad id hides it)
ui.share_feature_url(ss.selected if search_ok else None)
