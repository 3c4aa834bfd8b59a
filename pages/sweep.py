"""Sweep: behaviour and coherence over α for a vector or an SAE feature, the automatic α, and the
next-token view ([Garreau 2026]; docs/design.md §Steering strength)."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from steering_core import SteeringCoreError
from steering_core.browse.rows import feature_table
from steering_core.browse.suggest import example_feature, sweep_suggestion
from steering_core.measure.alpha import auto_alpha
from steering_core.measure.comparison import beats_phrase, peak_verdict
from steering_core.measure.judge import JudgeConfig
from steering_core.measure.links import SweepLink
from steering_core.measure.prompt_pairs import FeatureSelection, find_target_features, target_spec
from steering_core.measure.prompting import PLACEMENTS, PromptEntry, prompt_baseline
from steering_core.measure.scores import agreement_note, format_se
from steering_core.measure.sweep import MAX_SAMPLES, MAX_TOKENS, SweepSpec, parse_grid, run_sweep
from ui.numbers import number_table
from ui.sweep_tabs import MISSING, PLACEMENT_LABELS, Task, compare_tab, next_token_tab

ui.setup_page("Sweep")
st.title("Sweep α")
ss = st.session_state
model = ui.current_model()
sae = ui.current_sae()
pack = ui.current_pack()
vstore = ui.library().vectors


def label_of(fid: int) -> str:
    """A feature's label from the open pack ("" without one)."""
    return feature_table(pack).label_of(fid) if pack is not None else ""


def use_suggestion(keywords: tuple[str, ...], concept: str) -> None:
    """Button callback: put a feature's suggested keywords and concept into their fields (before
    those are drawn, so they can be set)."""
    ss.sw_keywords, ss.sw_use_kw = ", ".join(keywords), True
    if concept:
        ss.sw_concept = concept


def dataset_targets() -> None:
    """Button callback: put the chosen dataset's target features into the target-feature field
    (before that field is drawn, so it can be set), or keep the error for the page to show."""
    choice = ss.sw_tf_dataset
    try:
        ds = ui.library().datasets.open_choice(choice)
        sel = FeatureSelection(share=float(ss.sw_tf_share), max_negative_share=float(ss.sw_tf_neg))
        tf = find_target_features(model, sae, ds, sel)
        target_spec(SweepSpec(prompts=("-",), alphas=(0.0,)), tf)  # says so when there is none
        ss.sw_tf = ", ".join(str(f) for f in tf.target)
        ss.sw_use_tf = True
        ss.sw_tf_found = (choice, tf)
        ss.pop("sw_tf_error", None)
    except SteeringCoreError as exc:
        ss.sw_tf_error = str(exc)
        ss.pop("sw_tf_found", None)

# -- what to sweep -------------------------------------------------------------------------------------
for warning in ui.read_sweep_link(sae.d_sae if sae is not None else None, vstore.names()):  # a shared link
    st.warning(warning)
with st.sidebar:
    st.subheader("Vector")
    # ui.goto_sweep (from the Steer page) sets these keys, so they get no widget default of their own
    first_source = ui.SweepSource.SAVED if vstore.names() else ui.SweepSource.SAE_FEATURE
    source = st.radio("Source", list(ui.SweepSource), key="sw_source",
                      **ui.first_value("sw_source", list(ui.SweepSource).index(first_source), "index"))
    vector, layer, reference, label, operator, feature = None, None, None, "", None, None
    try:
        if source == ui.SweepSource.SAVED:
            names = vstore.names()
            if not names:
                st.info("No saved vectors: fit one on the Vectors page, or sweep an SAE feature.")
            else:
                pick = st.selectbox("Vector", names, key="sw_vector")
                vec = vstore.load(pick)
                vector, layer, reference, label, operator = vec.unit(), vec.layer, vec.reference, pick, vec.operator
        else:
            if sae is None:
                st.info("No SAE is loaded.")
            else:
                first = example_feature(pack) if pack is not None else None  # one that steers toward its words
                raw = st.text_input("Feature id", key="sw_feature", **ui.first_value("sw_feature", str(first or 0)))
                fid = sae.check_feature(raw.strip())  # a message echoes what was typed, without its spaces
                vector, layer, label, feature = sae.decoder_direction(fid), sae.layer, f"feature {fid}", fid
    except SteeringCoreError as exc:
        ui.show_error(exc)
    if layer is not None and layer >= model.n_layers:
        st.error(f"This vector is for block {layer}; {model.name} has {model.n_layers} blocks.")
        vector = None
    if vector is not None:
        norm = model.residual_norms()[layer]
        named = f"#{feature} · {label_of(feature)}. " if feature is not None and label_of(feature) else ""
        st.caption(f"{named}Unit direction at block {layer}; ‖resid‖ there ≈ {norm:.1f}.")
    with st.expander("LLM judge (optional, off by default)"):
        st.caption("An OpenAI-compatible endpoint scores each rollout 1–10 with the rubric of [Chalnev 2024] (Appendix B). "
                   "Nothing else needs it; if it cannot be reached, the other scores are kept.")
        judge_url = st.text_input("Endpoint (…/v1)", "", key="judge_url", placeholder="https://api.openai.com/v1")
        judge_model = st.text_input("Model", JudgeConfig("").model, key="judge_model")
        judge_key = st.text_input("API key", "", key="judge_key", type="password")

# A bad sidebar input is reported there (above); the tabs stay usable (Compare methods needs no
# vector), and a result made for another vector is marked, one made while the input is bad hidden.

tab_sweep, tab_token, tab_compare = st.tabs(["Behaviour × coherence", "Next token", "Compare methods"])

with tab_sweep:
    c1, c2 = st.columns(2)
    prompts = c1.text_area("Prompts, one per line", key="sw_prompts",
                           help="Each prompt is a user turn in the model's chat template (where it has one), "
                                "and the rollouts are the reply, as on the Steer page by default.",
                           **ui.first_value("sw_prompts", "I think\nTell me about your weekend.\nWrite a short story."))
    mode = c2.radio("α grid", list(ui.SweepGrid), key="sw_mode", horizontal=True)
    target = c2.number_input("ΔCE target for the automatic α (nats)", 0.05, 5.0, 0.5, 0.05, key="sw_target")
    manual = c2.text_input("Manual grid (comma-separated)", key="sw_grid", disabled=mode != ui.SweepGrid.MANUAL,
                           **ui.first_value("sw_grid", "0, 10, 20, 40, 80"))
    c3, c4, c5 = st.columns(3)
    samples = c3.number_input("Samples per prompt and α", 1, MAX_SAMPLES, key="sw_samples",
                              **ui.first_value("sw_samples", 4))
    new_tokens = c4.number_input("Tokens per rollout", 1, MAX_TOKENS, key="sw_tokens", **ui.first_value("sw_tokens", 32))
    seed = c5.number_input("Seed", step=1, key="sw_seed", **ui.first_value("sw_seed", 0))
    s1, s2, s3 = st.columns(3)
    suggestion = None
    if feature is not None and pack is not None:
        try:
            suggestion = sweep_suggestion(pack, feature)
        except SteeringCoreError:
            suggestion = None
    # the fields start at the first feature's words (wedding words for a saved vector), chosen once:
    # a widget's default must not change between runs
    if "sw_first_words" not in ss:
        ss.sw_first_words = ((", ".join(suggestion.keywords), suggestion.concept or "weddings and marriage")
                             if suggestion is not None else ("wedding, bride, groom, married", "weddings and marriage"))
    first_words = ss.sw_first_words
    use_kw = s1.checkbox("Keyword hit rate", key="sw_use_kw", **ui.first_value("sw_use_kw", True))
    keywords = s1.text_input("Keywords (comma-separated)", key="sw_keywords", disabled=not use_kw,
                             **ui.first_value("sw_keywords", first_words[0]))
    if suggestion is not None and ", ".join(suggestion.keywords) != keywords.strip():
        s1.caption(f"From the pack: {', '.join(suggestion.keywords)}")
        s1.button(f"Use #{suggestion.feature}'s words", key="sw_suggest", on_click=use_suggestion,
                  args=(suggestion.keywords, suggestion.concept), help=suggestion.note)
    if suggestion is not None and suggestion.steers_well is False:
        s1.caption(f"⚠ {suggestion.note}")
    use_sim = s2.checkbox("Similarity to a concept (MiniLM)", key="sw_use_sim", **ui.first_value("sw_use_sim", False))
    concept = s2.text_input("Concept description", key="sw_concept", disabled=not use_sim,
                            **ui.first_value("sw_concept", first_words[1]))
    use_tf = s3.checkbox("Target SAE features", key="sw_use_tf", disabled=sae is None, **ui.first_value("sw_use_tf", False))
    target_features = s3.text_input("Feature ids (comma-separated)", key="sw_tf", disabled=not use_tf,
                                    **ui.first_value("sw_tf", ""))
    if sae is not None:
        with s3.expander("…or a dataset's target features"):
            st.caption("The SAE features that fire on the target word of at least this share of the positives "
                       "([Purchase 2025] §3.2.2 asks for all of them) and on at most this share of the negatives.")
            st.selectbox("Dataset", ui.library().datasets.choices(), key="sw_tf_dataset")
            t1, t2 = st.columns(2)
            t1.number_input("Share of positives", 0.05, 1.0, 0.3, 0.05, key="sw_tf_share")
            t2.number_input("Largest share of negatives", 0.0, 1.0, 0.05, 0.05, key="sw_tf_neg")
            st.button("Use its target features", key="sw_tf_go", on_click=dataset_targets)
            if ss.get("sw_tf_error"):
                st.error(ss.sw_tf_error)
            found = ss.get("sw_tf_found")
            if found:
                st.caption(f"{found[0]}: " + "; ".join(f"#{f} {label_of(f)}".strip() for f in found[1].target))
    use_judge = bool(judge_url.strip())
    criterion = st.text_input("Judge criterion", "The text contains discussion about a wedding", key="sw_criterion",
                              disabled=not use_judge, help="Used only when a judge endpoint is set in the sidebar.")
    behaviours = [b for b, on in (("keywords", use_kw), ("similarity", use_sim), ("target", use_tf),
                                  ("judge", use_judge)) if on]
    behaviour = st.radio("Behavioural score in the product", behaviours or ["keywords"], key="sw_behaviour",
                         horizontal=True)
    p1, p2 = st.columns([3, 1])
    sw_instruction = p1.text_input("Prompting baseline (optional)", "", key="sw_prompting",
                                   placeholder="e.g. Always mention weddings.",
                                   help="An instruction instead of a vector, scored on the same prompts, seeds and "
                                        "scorers; drawn as a horizontal line.")
    sw_placement = p2.selectbox("Placed as", PLACEMENTS, key="sw_placement", format_func=PLACEMENT_LABELS.get)
    # what a result is made with, so one made with other settings says so (vector: the label check below)
    sw_settings = {"layer": layer, "prompts": prompts, "α grid": (str(mode), manual if mode == ui.SweepGrid.MANUAL
                                                                  else float(target)),
                   "samples": int(samples), "tokens per rollout": int(new_tokens), "seed": int(seed),
                   "keywords": keywords if use_kw else None, "concept": concept if use_sim else None,
                   "target features": target_features if use_tf else None,
                   "judge": (judge_url, judge_model, criterion) if use_judge else None, "behaviour": behaviour,
                   "prompting baseline": (sw_instruction.strip(), sw_placement) if sw_instruction.strip() else None}
    try:  # the address follows the settings, so a sweep can be shared as a link
        linked_grid = parse_grid(manual) if mode == ui.SweepGrid.MANUAL else None
    except SteeringCoreError:
        linked_grid = None  # the Run button says what is wrong with it
    ui.write_link(SweepLink(
        feature=feature, vector=label if source == ui.SweepSource.SAVED and vector is not None else None,
        grid=linked_grid, keywords=keywords if use_kw else None, concept=concept if use_sim else None,
        prompts=prompts, samples=int(samples), tokens=int(new_tokens), seed=int(seed)))
    b1, b2 = st.columns([1, 5])
    go_sweep = b1.button("Run sweep", type="primary", key="sw_go", disabled=vector is None)
    if vector is None:
        st.info(MISSING)
    # Clicking Stop while a sweep runs interrupts it at its next progress update (Streamlit stops a
    # script run when the same session asks for a new one); every finished α is already saved.
    if b2.button("Stop", key="sw_stop", help="Stop a running sweep; the α values finished so far are kept."):
        last = ss.get("sw_running")
        if last is None:
            st.caption("No sweep is running.")
        else:
            kept = run_sweep(model, last["vector"], last["layer"], last["spec"], sae=sae, reference=last["reference"],
                             cache=ui.library().sweeps, should_stop=lambda: True, operator=last.get("operator"))
            ss.sw_result = {"points": kept, "auto": last["auto"], "label": last["label"],
                            "behaviour": last["spec"].behaviour}
            st.info(f"Stopped. {len(kept)} of {len(last['spec'].alphas)} α values were finished and are kept; "
                    "Run sweep again computes only the missing ones.")
        ss.pop("sw_running", None)
    if go_sweep:
        bar = st.progress(0.0, text="Preparing…")
        try:
            if mode == ui.SweepGrid.MANUAL:
                grid = parse_grid(manual)
                auto = None
            else:
                bar.progress(0.0, text="Finding the automatic α…")
                res = auto_alpha(model, layer, vector, target=float(target))
                auto = float(res.alpha[0])
                grid = tuple(auto * k for k in (0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0))
            ids = ()
            if use_tf:
                try:
                    ids = tuple(int(x) for x in target_features.replace(";", ",").split(",") if x.strip())
                except ValueError:
                    raise SteeringCoreError("Target feature ids must be whole numbers separated by commas.") from None
            spec = SweepSpec(prompts=tuple(prompts.splitlines()), alphas=grid, samples=int(samples),
                             new_tokens=int(new_tokens), seed=int(seed),
                             keywords=tuple(keywords.split(",")) if use_kw else None,
                             concept=concept if use_sim else None, target_features=ids, behaviour=behaviour,
                             judge_criterion=criterion if use_judge else None)
            judge = JudgeConfig(judge_url, judge_model, judge_key).check() if use_judge else None
            ss.sw_running = {"vector": vector, "layer": layer, "spec": spec, "reference": reference, "auto": auto,
                             "label": label, "operator": operator}
            prompted = None
            if sw_instruction.strip():
                bar.progress(0.0, text="Prompting baseline…")
                prompted = prompt_baseline(model, PromptEntry(f"prompt: {sw_instruction.strip()}", sw_instruction,
                                                              sw_placement), spec, sae=sae if use_tf else None,
                                           cache=ui.library().sweeps, judge=judge)
            points = run_sweep(model, vector, layer, spec, sae=sae if use_tf else None, reference=reference,
                               cache=ui.library().sweeps, judge=judge, operator=operator,
                               on_point=lambda i, n, p: bar.progress(i / n, text=f"α = {p.alpha:.1f} ({i}/{n})"))
            ss.sw_result = {"points": points, "auto": auto, "label": label, "behaviour": behaviour,
                            "prompt": prompted, "settings": sw_settings}
        except SteeringCoreError as exc:
            ui.show_error(exc)
        bar.empty()
        ss.pop("sw_running", None)  # reached unless a Stop click interrupted the run
    res = ss.get("sw_result") if vector is not None else None
    if res and res["label"] != label:
        st.warning(f"This result is for {res['label']}, not {label}: run the sweep again for the current vector.")
    elif res and (note := ui.stale_warning(res.get("settings"), sw_settings, "run the sweep again")):
        st.warning(note)
    if res:
        pts = res["points"]
        for note in dict.fromkeys(n for p in pts for n in p.notes):
            st.warning(note)
        df = pd.DataFrame([{"alpha": p.alpha, **p.scores} for p in pts])
        fig = go.Figure()
        shown = [c for c in ("keywords", "similarity", "target", "judge", "judge_coherence", "coherence", "product")
                 if c in df]
        for i, name in enumerate(shown):
            se = df[name + "_se"].to_numpy(dtype=float) if name + "_se" in df else None
            ui.add_band(fig, df["alpha"], df[name].to_numpy(dtype=float), se, name, i,
                        width=4 if name == "product" else 2)
        if res["auto"] is not None:
            fig.add_vline(x=res["auto"], line_dash="dot", annotation_text="automatic α")
        prompted = res.get("prompt")
        if prompted is not None:
            pp = prompted.point
            fig.add_hline(y=pp.get("product"), line_dash="dash", line_width=3,
                          annotation_text=f"{prompted.entry.name} ({res['behaviour']} × coherence)")
            fig.add_hline(y=pp.get(res["behaviour"]), line_dash="dot", line_width=1,
                          annotation_text=f"{prompted.entry.name} ({res['behaviour']})",
                          annotation_position="bottom right")
        fig.update_layout(height=380, xaxis_title="α", yaxis_title="score", legend=ui.LEGEND_ABOVE)
        st.plotly_chart(fig, width="stretch")
        verdict = peak_verdict(pts, res["behaviour"], res["label"])
        st.caption(verdict.message + (f" (automatic α {res['auto']:.1f})" if res["auto"] else ""))
        if verdict.warning:
            st.warning(verdict.warning)
        if prompted is not None:
            pp = prompted.point
            better = beats_phrase(verdict.product, verdict.product_se, pp.get("product"), pp.get("product_se"))
            st.caption(f"Prompting baseline {prompted.entry.instruction!r} ({PLACEMENT_LABELS[prompted.entry.placement]}"
                       f"): {res['behaviour']} {pp.get(res['behaviour']):.2f}, coherence {pp.get('coherence'):.2f}, "
                       f"product {pp.get('product'):.2f} {format_se(pp.get('product_se'))}; the best α {better}.")
        # each score next to its standard error, so no measured figure is shown without one
        cols = [c for name in df.columns if not name.endswith("_se")
                for c in (name, name + "_se") if c in df.columns]
        table = df[cols].rename(columns={c: f"± {c[:-3]}" for c in cols if c.endswith("_se")})
        number_table(table, {c: "%.3f" for c in table.columns if c != "alpha"})
        if any(df[c].isna().any() for c in df.columns if c.endswith("_se")):
            st.caption("A ± of — is unknown: one rollout per α has no spread to estimate it from. Raise the "
                       "samples per prompt (or add prompts) for standard errors.")
        if "keywords" in df and (note := agreement_note(pts, "keywords")):
            st.caption(note)
        at = st.select_slider("Samples at α", options=[round(p.alpha, 2) for p in pts], key="sw_show")
        for text in next(p for p in pts if round(p.alpha, 2) == at).samples[:8]:
            st.text(text)

with tab_token:
    next_token_tab(model, vector, layer, label)

with tab_compare:
    compare_tab(model, sae, vstore, Task(prompts, keywords, int(samples), int(new_tokens), int(seed)))
