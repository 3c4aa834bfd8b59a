"""The Vectors page's two "how much, where" tabs: a layer sweep (which block separates a dataset's
pairs best) and data efficiency (how many pairs a method needs). Both fit many vectors on held-out
splits, so both say how few held-out pairs score them, and when the widgets changed since."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import streamlit as st

import ui
from steering_core import SteeringCoreError
from steering_core.datasets.store import DatasetStore
from steering_core.measure.prompt_pairs import DEFAULT_OFF_TARGET, FeatureSelection, find_target_features
from steering_core.measure.scores import wilson_interval
from steering_core.model.saes import LoadedSAE
from steering_core.model.steerable import SteerableModel
from steering_core.pack.reader import FeaturePack
from steering_core.vectors.extraction import POSITIONS
from steering_core.vectors.fitting import MIN_HELDOUT_TO_PICK, best_layer, sweep_layers, sweep_pairs
from steering_core.vectors.methods import METHODS, FitContext, available
from steering_core.vectors.pair_efficiency import PromptPairSetup, prompt_pair_efficiency
from ui.positions import default_position, position_notes

PAIR_ACCURACY, PROMPT_PAIRS = "held-out pair accuracy", "prompt-pair metrics ([Purchase 2025] §3.2.2)"
#: The figures of the prompt-pair mode: metric → y-axis title.
PAIR_FIGURES = {"target": "target-feature activation", "off_target": "off-target activation",
                "word_similarity": "generated-word similarity"}


def _label(method: str) -> str:
    return METHODS[method].label


def _run_and_recall(label: str, button: str, state: str, field: str, settings: dict, again: str,
                    compute: Callable[[Callable], Any]) -> Any:
    """Both tabs' one pattern: on ``button``, run ``compute(on_progress)`` under a progress bar and
    keep its result with the settings that made it (``ss[state] = {field: result, "settings": …}``);
    return the kept result, after a warning when the widgets changed since (None: nothing kept)."""
    ss = st.session_state
    if st.button(label, key=button):
        bar = st.progress(0.0, text="Extracting activations…")
        try:
            ss[state] = {field: compute(ui.progress_callback(bar, "steps")), "settings": settings}
        except SteeringCoreError as exc:
            ui.show_error(exc)
        bar.empty()
    shown = ss.get(state) or {}
    if shown.get(field) and (note := ui.stale_warning(shown["settings"], settings, again)):
        st.warning(note)
    return shown.get(field)


def layer_sweep_tab(model: SteerableModel, datasets: DatasetStore) -> None:
    """Fit one method at every chosen block and plot held-out pair accuracy with Wilson intervals."""
    l1, l2, l3 = st.columns([2, 1, 1])
    choice = l1.selectbox("Dataset", datasets.choices(), key="ls_dataset")
    # the layer sweep fits without an SAE or approximator: the methods an empty context allows
    method = l2.selectbox("Method", [m.name for m in available()], key="ls_method", format_func=_label)
    default_position(model, datasets, choice, "ls_position")
    position = l3.selectbox("Token position", POSITIONS, key="ls_position")
    position_notes(model, datasets, choice, "ls_position", position)
    layers = st.multiselect("Layers", list(range(model.n_layers)), default=list(range(model.n_layers)), key="ls_layers")
    settings = {"dataset": choice, "method": method, "token position": position, "layers": tuple(layers)}
    scores = _run_and_recall("Run layer sweep", "ls_go", "ls_result", "scores", settings, "run the layer sweep again",
                             lambda step: sweep_layers(model, datasets.open_choice(choice), layers, method, position,
                                                       on_progress=step))
    if not scores:
        return
    st.plotly_chart(ui.charts.layer_sweep_figure(scores), width="stretch")
    best = best_layer(scores)
    gap = f"{best.projection_gap:.2f}" if math.isfinite(best.projection_gap) else "— (too few held-out pairs)"
    if math.isfinite(best.projection_gap) and math.isfinite(best.gap_lo):
        gap += f" (95 % interval {best.gap_lo:.2f}–{best.gap_hi:.2f})"
    st.caption(f"Best held-out separation at block {best.layer}: pair accuracy {best.pair_accuracy:.2f} on "
               f"{best.n_heldout} held-out pairs (95 % interval {best.accuracy_lo:.2f}–{best.accuracy_hi:.2f}), "
               f"d′ {gap}. Error bars: 95 % Wilson intervals for accuracy, a bootstrap over the held-out pairs "
               "for d′; with this few pairs, neighbouring layers are usually not distinguishable.")
    if best.n_heldout < MIN_HELDOUT_TO_PICK:
        st.warning(f"Only {best.n_heldout} held-out pair{'s' if best.n_heldout != 1 else ''}: too few to pick a "
                   "layer (every interval spans most of 0–1). Hold out more pairs on the Datasets page.")


def data_efficiency_tab(model: SteerableModel, sae: LoadedSAE | None, pack: FeaturePack | None,
                        datasets: DatasetStore, ctx: FitContext, usable: set[str]) -> None:
    """Score methods on growing random subsets of a dataset's training pairs: held-out pair accuracy,
    or the prompt-pair metrics that steer held-out negatives and read SAE features ([Purchase 2025])."""
    default_layer = sae.layer if sae is not None else model.default_layer
    d1, d2, d3 = st.columns([2, 1, 1])
    choice = d1.selectbox("Dataset", datasets.choices(), key="de_dataset")
    layer = d2.number_input("Layer", 0, model.n_layers - 1, int(default_layer), key="de_layer")
    repeats = d3.number_input("Subsets per point", 1, 10, 3, key="de_repeats")
    mode = st.radio("Score", [PAIR_ACCURACY, PROMPT_PAIRS], key="de_mode", horizontal=True,
                    help="Prompt-pair metrics steer the held-out negatives and read the target and off-target "
                         "features at the target word, and the word the model writes there.")
    methods = st.multiselect("Methods", [m for m in METHODS if m in usable and METHODS[m].uses_pairs],
                             default=["caa", "pca_diff", "probe"], key="de_methods", format_func=_label)
    settings = {"dataset": choice, "layer": int(layer), "subsets": int(repeats), "methods": tuple(methods)}
    if mode == PAIR_ACCURACY:
        _pair_accuracy(model, datasets, choice, int(layer), int(repeats), methods, ctx, settings)
    elif sae is None:
        st.info("The prompt-pair metrics read SAE features: load an SAE (the embedded model has one).")
    else:
        _prompt_pairs(model, sae, pack, datasets, choice, PromptPairSetup(
            layer=int(layer), methods=tuple(methods), alpha=1.0, repeats=int(repeats)), ctx)


def _pair_accuracy(model: SteerableModel, datasets: DatasetStore, choice: str, layer: int, repeats: int,
                   methods: list[str], ctx: FitContext, settings: dict) -> None:
    pts = _run_and_recall("Run data-efficiency sweep", "de_go", "de_result", "points", settings, "run the sweep again",
                          lambda step: sweep_pairs(model, datasets.open_choice(choice), layer, methods, ctx=ctx,
                                                   repeats=repeats, on_progress=step))
    if not pts:
        return
    st.plotly_chart(ui.charts.efficiency_figure(pts, _label), width="stretch")
    n_test = max(p.n_heldout for p in pts)
    lo, _ = wilson_interval(n_test, n_test)
    reps = max(p.repeats for p in pts)
    bars = (f"Error bars: ± one standard deviation over {reps} random subsets of the training pairs per point "
            "(the spread from which pairs were drawn, not a standard error; none at all the pairs, the only "
            "subset there is). " if reps > 1 else
            "No error bars: one subset per point has no spread to read (raise 'Subsets per point' for them). ")
    st.caption(bars +
               f"Every point is scored on the same {n_test} held-out pairs: with that few, even "
               f"{n_test} of {n_test} right has a 95 % interval of {lo:.2f}–1.00 (Wilson), so curves closer "
               "than that are not told apart.")


def _prompt_pairs(model: SteerableModel, sae: LoadedSAE, pack: FeaturePack | None, datasets: DatasetStore,
                  choice: str, base: PromptPairSetup, ctx: FitContext) -> None:
    ss = st.session_state
    st.caption(f"Target features fire on the target word of at least a share of the positives ([Purchase 2025] "
               f"asks for all of them); off-target features fire on neither side. The SAE reads block {sae.layer}.")
    f1, f2, f3, f4 = st.columns(4)
    share = f1.number_input("Share of positives", 0.05, 1.0, 1.0, 0.05, key="de_share")
    neg_share = f2.number_input("Largest share of negatives", 0.0, 1.0, 1.0, 0.05, key="de_neg_share",
                                help="1.0: no limit (the document's rule). Lower it to drop features that "
                                     "fire on both sides alike.")
    n_off = f3.number_input("Off-target features", 0, 512, DEFAULT_OFF_TARGET, key="de_off")
    alpha = f4.number_input("α (1 = the mean gap)", 0.0, 20.0, 1.0, 0.25, key="de_alpha")
    sel = FeatureSelection(share=float(share), off_target=int(n_off),
                           max_negative_share=float(neg_share) if neg_share < 1.0 else None)
    g1, g2 = st.columns(2)
    if g1.button("Find target features", key="de_tf_go"):
        try:
            ss.de_features = (choice, find_target_features(model, sae, datasets.open_choice(choice), sel))
        except SteeringCoreError as exc:
            ui.show_error(exc)
    if g2.button("Run prompt-pair sweep", key="de_pp_go"):
        bar = st.progress(0.0, text="Target features and activations…")
        methods = list(base.methods)
        try:
            setup = dataclasses.replace(base, alpha=float(alpha), selection=sel)

            def step(method: str, n: int) -> None:
                bar.progress(min(1.0, methods.index(method) / max(1, len(methods))),
                             text=f"{_label(method)}: {n} pairs")

            ss.de_pp_result = (choice, prompt_pair_efficiency(model, sae, datasets.open_choice(choice), setup,
                                                              ctx=ctx, on_point=step))
            ss.de_features = (choice, ss.de_pp_result[1].features)
        except SteeringCoreError as exc:
            ui.show_error(exc)
        bar.empty()
    got = ss.get("de_pp_result")
    if got is not None:
        name, pp = got
        st.caption(f"{name}: {len(pp.train)} training and {len(pp.heldout)} held-out pairs, α = "
                   f"{pp.setup.alpha:g}, {pp.setup.repeats} subsets per point; took {pp.seconds:.1f} s. "
                   + ("Error bars: ± one standard deviation over the subsets." if pp.setup.repeats > 1 else
                      "No error bars: one subset per point has no spread to read."))
        for warning in pp.warnings():
            st.warning(warning)
        for metric, title in PAIR_FIGURES.items():
            st.plotly_chart(ui.charts.prompt_pair_figure(pp, metric, title, _label), width="stretch")
    found = ss.get("de_features")
    if found is not None:
        st.caption(f"Features of {found[0]}:")
        ui.show_target_features(pack, found[1])
