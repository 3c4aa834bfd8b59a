"""Vectors: fit steering vectors from datasets with every standard method, keep a library (arithmetic,
safetensors and GGUF export/import), ask any vector what it does, and choose layer and dataset size."""

import dataclasses

import pandas as pd
import streamlit as st

import ui
from steering_core import SteeringCoreError
from steering_core import vectors as vm
from steering_core.browse.rows import BASES, DEFAULT_MAX_DENSITY, ListFilter
from steering_core.measure import vector_effects as ve
from steering_core.measure.links import VectorsLink
from steering_core.vectors import trained
from steering_core.vectors.extraction import POSITIONS
from steering_core.vectors.fitting import FitRequest, fit_dataset, refit_note, vector_name
from steering_core.vectors.methods import METHODS, FitContext, available, parse_feature_weights
from steering_core.vectors.uploads import MAX_VECTOR_FILE_BYTES
from ui.positions import default_position, position_notes
from ui.vector_sweeps import data_efficiency_tab, layer_sweep_tab

ui.setup_page("Vectors")
st.title("Vectors")
ss = st.session_state
model = ui.current_model()
sae = ui.current_sae()
pack = ui.current_pack()
dstore, vstore = ui.library().datasets, ui.library().vectors
approx = pack.approximator() if pack is not None else None


def select_vector(name: str) -> None:
    """Make the Library and What-does-it-do selectors show ``name``, the vector just made (call before they are drawn)."""
    ss.lib_pick = ss.what_pick = name


def vector_select(key: str, names: list[str]) -> str:
    if ss.get(key) not in names:  # a deleted vector, or none chosen yet
        # written, not dropped: a dropped key let the browser keep showing the deleted name over the
        # results of the vector the page fell back to
        ss[key] = names[0]
    return st.selectbox("Vector", names, key=key)


def context(weights_text: str = "", top: int = 8) -> FitContext:
    return FitContext(sae=sae, approximator=approx, feature_weights=parse_feature_weights(weights_text) or None,
                      top_features=int(top))


default_layer = sae.layer if sae is not None else model.default_layer
link_tab, link_warnings = ui.read_vectors_link(vstore.names())  # /vectors?vector=NAME, once per session
for warning in link_warnings:
    st.warning(warning)
fit_tab, lib_tab, what_tab, layer_tab, eff_tab = st.tabs(
    ["Fit", "Library", ui.VECTORS_LINK_TAB, "Layer sweep", "Data efficiency"], default=link_tab)

# -- fit -----------------------------------------------------------------------------------------------
with fit_tab:
    c1, c2, c3 = st.columns([2, 1, 1])
    choice = c1.selectbox("Dataset", dstore.choices(), key="fit_dataset")
    layer = c2.number_input("Layer (output of block)", 0, model.n_layers - 1, int(default_layer), key="fit_layer")
    default_position(model, dstore, choice, "fit_position")
    position = c3.selectbox("Token position", POSITIONS, key="fit_position",
                            help="last token · mean over tokens · mean over the tokens where the pair differs")
    position_notes(model, dstore, choice, "fit_position", position)
    usable = {m.name for m in available(FitContext(sae=sae, approximator=approx, model=model))}
    names = list(METHODS)
    method = st.selectbox("Method", names, key="fit_method",
                          format_func=lambda n: METHODS[n].label + ("" if n in usable else " (needs SAE/pack)"))
    st.caption(METHODS[method].about)
    training = None
    if METHODS[method].trained:
        t1, t2, t3 = st.columns(3)
        defaults = trained.training_config(method)
        steps = t1.number_input("Training steps", 1, 100_000, defaults.steps, key=f"fit_steps_{method}")
        lr = t2.number_input("Learning rate", 1e-6, 10.0, defaults.lr, format="%.4f", key=f"fit_lr_{method}")
        rank = t3.number_input("Rank", 1, 256, getattr(defaults, "rank", 4), key=f"fit_rank_{method}",
                               disabled=not hasattr(defaults, "rank"))
        training = trained.training_config(method, steps=int(steps), lr=float(lr), rank=int(rank))
    if ss.pop("fit_training", None):  # the last run ended in the middle of training: Stop (or any click)
        st.info("Training stopped; nothing was saved.")
    weights_text, top = "", 8
    chosen = METHODS[method]
    if chosen.takes_features or chosen.ranks_features:  # only the boxes this method reads
        w1, w2 = st.columns([3, 1])
        if chosen.takes_features:
            weights_text = w1.text_input(
                "Target features (id:weight, comma-separated"
                + ("" if chosen.needs_features else "; empty = from the dataset") + ")",
                key="fit_weights", placeholder="e.g. 812:1.0, 95:0.5")
        if chosen.ranks_features:
            top = w2.number_input("Features from the dataset", 1, 64, 8, key="fit_top")
    name = st.text_input("Save as", value="", key="fit_name", placeholder="default: <dataset>-<method>-L<layer>")
    OVERWRITE = "Overwrite a vector with that name"
    overwrite = st.checkbox(OVERWRITE, key="fit_overwrite")
    if st.button("Fit and save", type="primary", key="fit_go"):
        bar = None
        try:
            req = FitRequest(dstore.open_choice(choice), int(layer), method, position, name.strip())
            # refuse a taken or bad name now, not after the extraction
            vstore.check_name(vector_name(req), overwrite, remedy=f"tick '{OVERWRITE}' or pick another name")
            bar = st.progress(0.0, text="Extracting activations…")
            ctx = context(weights_text, top)
            if training is not None:
                st.button("Stop training", key="fit_stop", help="Ends training now; nothing is saved.")
                train_bar = st.progress(0.0, text="Training…")
                ctx = dataclasses.replace(ctx, training=training,
                                          on_progress=ui.progress_callback(train_bar, "training steps"))
                ss.fit_training = True
            res, vec = fit_dataset(model, req, ctx, on_progress=ui.progress_callback(bar, "texts"))
            ss.pop("fit_training", None)
            saved = vstore.save(vec, overwrite=overwrite)
            bar.progress(1.0, text="Done")
            ss.fit_last = {"name": saved, "layer": vec.layer, "warnings": list(res.warnings),
                           "text": f"Saved **{saved}**: {METHODS[method].label}, block {vec.layer}, norm {vec.norm:.3g}."}
            select_vector(saved)
        except SteeringCoreError as exc:
            ss.pop("fit_training", None)
            ss.pop("fit_last", None)
            if bar is not None:
                bar.empty()
            ui.show_error(exc)
    last = ss.get("fit_last")
    if last is not None and last["name"] in vstore.names():  # the last fit, until the next one (or its deletion)
        for w in last["warnings"]:
            st.warning(w)
        st.success(last["text"])
        n1, n2 = st.columns([1, 3])
        if n1.button("Steer with it", key="fit_steer"):
            ui.goto_steer(vector=last["name"], layer=last["layer"])
        n2.caption("What it looks like, and what it does to other features: the **What does it do?** tab, "
                   "where it is selected.")

# -- library ---------------------------------------------------------------------------------------------
with lib_tab:
    # the table and selector are drawn at the top but filled last, so a vector combined or imported
    # below in this run is already listed and selected
    top = st.container()
    if vstore.names():
        st.markdown("**Arithmetic**: a weighted sum of vectors on the same layer.")
        a1, a2, a3, a4 = st.columns(4)
        va = a1.selectbox("A", vstore.names(), key="ar_a")
        wa = a2.number_input("× weight", value=1.0, key="ar_wa")
        vb = a3.selectbox("B", ["(none)"] + vstore.names(), key="ar_b")
        wb = a4.number_input("× weight ", value=-1.0, key="ar_wb")
        ar_name = st.text_input("Save the result as", key="ar_name", placeholder="default: a formula")
        if st.button("Combine and save", key="ar_go"):
            try:
                terms = [(vstore.load(va), wa)] + ([(vstore.load(vb), wb)] if vb != "(none)" else [])
                out = vm.combine(terms, ar_name.strip() or None)
                vstore.check_name(out.name, remedy="type another name under 'Save the result as', or delete the "
                                                   "old one above")
                saved = vstore.save(out)
                select_vector(saved)
                st.success(f"Saved {saved} (norm {out.norm:.3g}).")
            except SteeringCoreError as exc:
                ui.show_error(exc)
    st.markdown("**Import** a `.safetensors` vector or a GGUF control vector (every layer in it becomes a vector).")
    up = st.file_uploader("Vector file", type=["safetensors", "gguf"], key="lib_upload",
                          max_upload_size=ui.upload_mb(MAX_VECTOR_FILE_BYTES))
    if up is not None and st.button("Import", key="lib_import"):
        try:
            data = up.getvalue()
            stem = up.name.rsplit(".", 1)[0]
            got = vm.import_gguf(data, name=stem) if up.name.lower().endswith(".gguf") else [
                vm.from_safetensors_bytes(data, name=stem)]
            for v in got:
                select_vector(vstore.save(v))
            st.success(f"Imported {', '.join(v.name for v in got)}.")
        except SteeringCoreError as exc:
            ui.show_error(exc)
    with top:
        rows = vstore.summaries()
        if not rows:
            st.info("No saved vectors yet: fit one in the Fit tab, or import a file below.")
        else:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
                "name": st.column_config.TextColumn("name", width="large"),  # two fits' names share long prefixes
                "method": st.column_config.TextColumn("method", width="medium"),
                "norm": st.column_config.NumberColumn("norm", format="%.3g")})
            pick = vector_select("lib_pick", vstore.names())
            try:
                vec = vstore.load(pick)
                if note := refit_note(vec):
                    st.warning(note)
                e1, e2, e3, e4 = st.columns(4)
                e1.download_button("safetensors", vm.to_safetensors_bytes(vec), f"{pick}.safetensors",
                                   key="lib_dl_st")
                try:
                    e2.download_button("GGUF (llama.cpp / repeng)", vm.gguf_bytes(vec, model.name), f"{pick}.gguf",
                                       key="lib_dl_gguf")
                except SteeringCoreError as exc:
                    e2.caption(f"GGUF: {exc}")
                if e3.button("Steer with it", key="lib_steer"):
                    ui.goto_steer(vector=pick, layer=vec.layer)
                if e4.button("Delete", key="lib_delete"):
                    vstore.delete(pick)
                    st.rerun()
            except SteeringCoreError as exc:
                ui.show_error(exc)

# -- what does it do ---------------------------------------------------------------------------------------
with what_tab:
    if pack is None:
        st.info("Comparing a vector with SAE features needs a feature pack (the embedded model opens the shipped one).")
    elif not vstore.names():
        st.info("No saved vectors yet: fit one in the Fit tab.")
    else:
        pick = vector_select("what_pick", vstore.names())
        ui.write_link(VectorsLink(vector=pick))  # the address opens this tab on this vector
        try:
            vec = vstore.load(pick)
            st.caption(f"{vec.method} · block {vec.layer} · norm {vec.norm:.3g} · dataset {vec.dataset or '—'}")
            if note := refit_note(vec):
                st.warning(note)
            if not vec.operator_spec.additive:
                op = vec.operator_spec
                st.caption(f"{op.label} vector: the lists treat its direction r as an added vector (effects of "
                           f"{op.label}'s operator, which {op.about}, are not measured here).")
            o1, o2, o3, o4 = st.columns(4)
            hide = o1.toggle("Hide dense features", value=True, key="what_hide_dense")
            basis = o2.radio("Effects shown", BASES, horizontal=True, key="what_basis", disabled=not pack.has_specific,
                             format_func=lambda b: {"raw": "Raw", "specific": "Specific"}[b],
                             help="Specific = raw − the generic response of random directions.")
            hide_noise = o3.toggle("Hide effects within 2 SE", value=False, key="what_hide_noise")
            hide_hubs = o4.toggle("Hide hubs ◎", value=False, key="what_hide_hubs", disabled=not pack.has_specific,
                                  help="Effects lists only (hubs are targets): targets that random directions move "
                                       "too; their sign follows the direction, so the specific view does not "
                                       "remove them.")
            flt = ListFilter(max_density=DEFAULT_MAX_DENSITY if hide else None, hide_noise=hide_noise,
                             basis=basis if pack.has_specific else "raw", hide_hubs=hide_hubs and pack.has_specific)
            # two across, then the measurement full width: three across cut the labels off
            cols = st.columns(2) + [st.container()]
            with cols[0]:
                st.markdown("**Cosine-similar features** (what it looks like)")
                ui.feature_list("cosine", ve.cosine_rows(pack, vec.direction, flt, k=32), "what_cos",
                                on_open=ui.goto_features)
            with cols[1]:
                st.markdown("**Predicted effects** (approximator)")
                if approx is None:
                    st.caption("This pack has no effect approximator.")
                else:
                    st.caption(ve.prediction_note(pack))
                    ui.feature_list("predicted", ve.effect_rows(pack, ve.predicted(pack, vec.direction), flt, k=32,
                                                                is_predicted=True), "what_pred",
                                    on_open=ui.goto_features)
            with cols[2]:
                st.markdown("**Measured effects** (rollouts, loss-matched α)")
                try:
                    ve.check_layer(pack, vec.layer)
                    key = f"measured::{pack.pack_id}::{pick}::{vec.created}"
                    m1, m2 = st.columns(2)
                    measure_now = m1.button("Measure effects", key="what_measure",
                                            help="Generates the pack's rollouts with this vector at the α that "
                                                 "raises next-token loss by 0.5 nats; cached afterwards.")
                    if m2.button("Stop", key="what_stop", help="Cancel a running measurement (nothing is cached)."):
                        st.caption("Measurement stopped; nothing was cached.")
                    if measure_now:
                        bar = st.progress(0.0, text="Finding α…")
                        step = ui.progress_callback(bar, "Finding α, then generating rollouts: step")
                        ss[key] = ve.measure(model, sae, pack, vec.direction, vec.layer, cache=ui.library().effects,
                                             on_progress=step)
                        bar.empty()
                    m = ss.get(key)
                    if m is not None:
                        st.caption(f"α = {m.alpha:.1f}" + (f" · ΔCE {m.dce:.2f} nats" if m.dce is not None else "")
                                   + (f" · {m.rollouts} rollouts" if m.rollouts else "")
                                   + (" · from cache" if m.from_cache else f" · {m.seconds:.1f} s"))
                        ui.feature_list("measured", ve.effect_rows(pack, m.effects, flt, k=32, se=m.se),
                                        "what_meas", on_open=ui.goto_features)
                except SteeringCoreError as exc:
                    st.caption(str(exc))
        except SteeringCoreError as exc:
            ui.show_error(exc)

# -- layer sweep and data efficiency ---------------------------------------------------------------------
with layer_tab:
    layer_sweep_tab(model, dstore)
with eff_tab:
    data_efficiency_tab(model, sae, pack, dstore, context(), usable)
