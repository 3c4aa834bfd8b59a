"""Steer: drag α and watch steered and unsteered completions side by side, streamed.

Other pages open this one through ``ui.goto_steer``; presets load through ``pending_widgets``.
Both only set session state, so a widget here passes its own first value only while session
state holds none for its key (``ui.first_value``; Streamlit warns when a widget gets both).
"""

import time

import streamlit as st

import ui
from steering_core import GenerationConfig, SteeringCoreError
from steering_core.measure.alpha import auto_alpha
from steering_core.measure.links import SteerLink, parse_steer_link
from steering_core.measure.live import (
    MAX_SAMPLES,
    ExtraVector,
    ShownSettings,
    SideBySide,
    operator_choices,
    random_direction,
    sae_direction,
    saved_direction,
    side_by_side,
    unsteered_key,
    uploaded_direction,
    with_operator,
)
from steering_core.model.operators import get_operator
from steering_core.storage.presets import PresetTarget, applicable
from steering_core.vectors.uploads import MAX_VECTOR_FILE_BYTES

ui.setup_page("Steer")
st.title("Steer")
model = ui.current_model()
sae = ui.current_sae()
norms = model.residual_norms()
ss = st.session_state
vstore = ui.library().vectors
PRESET_KEYS = ["vec_source", "vec_seed", "vec_feature", "vec_saved", "layer", "alpha", "prompt", "n_samples",
               "max_tokens", "temperature", "seed", "chat", "extra_vectors"]
for key, value in (ss.pop("pending_widgets", None) or {}).items():  # a loaded preset, before any widget exists
    ss["pending_alpha" if key == "alpha" else key] = value  # α is clamped to its layer's slider below
if "steer_link_read" not in ss:  # a shared link (/steer?feature=…&alpha=…) fills the settings once per session
    ss.steer_link_read = True
    link, ss.steer_link_warnings = parse_steer_link(
        st.query_params.to_dict(), n_layers=model.n_layers, n_features=sae.d_sae if sae is not None else None,
        vector_names=vstore.names())
    if link.feature is not None:
        ss.vec_source, ss.vec_feature = ui.SteerSource.SAE_FEATURE, str(link.feature)
    elif link.vector is not None:
        ss.vec_source, ss.vec_saved = ui.SteerSource.SAVED, link.vector
    for key, value in (("layer", link.layer), ("pending_alpha", link.alpha), ("seed", link.seed),
                       ("prompt", link.prompt)):
        if value is not None:
            ss[key] = value
    ss.steer_link_alpha = link.alpha  # said below if the layer's slider cannot reach it
for warning in ss.get("steer_link_warnings", []):
    st.warning(warning)

with st.sidebar:
    st.subheader("Vector")
    first_source = ui.SteerSource.SAE_FEATURE if sae is not None else ui.SteerSource.RANDOM
    source = st.radio("Source", list(ui.SteerSource), key="vec_source",
                      **ui.first_value("vec_source", list(ui.SteerSource).index(first_source), "index"))
    resolved, error = None, None
    try:
        if source == ui.SteerSource.RANDOM:
            seed_v = st.number_input("Direction seed", step=1, key="vec_seed", **ui.first_value("vec_seed", 0))
            resolved = random_direction(model, int(seed_v))
        elif source == ui.SteerSource.SAE_FEATURE:
            fid = st.text_input("Feature id", key="vec_feature", **ui.first_value("vec_feature", "0"))
            resolved = sae_direction(model, sae, fid)
        elif source == ui.SteerSource.SAVED:
            names = vstore.names()
            if not names:
                st.info("No saved vectors yet: fit one on the Vectors page.")
            else:
                pick = st.selectbox("Vector", names, key="vec_saved")
                resolved = saved_direction(model, vstore, pick)
        else:
            up = st.file_uploader("Vector file", type=["safetensors", "npy", "pt", "pth"], key="vec_upload",
                                  max_upload_size=ui.upload_mb(MAX_VECTOR_FILE_BYTES),
                                  help="One vector of length d_model as .safetensors, .npy or .pt. A GGUF control "
                                       "vector holds one per layer: import it on the Vectors page, then pick it "
                                       "under 'Saved vector'.")
            normalize = st.checkbox("Normalise to unit norm", value=True, key="vec_norm")
            if up is None:
                st.info("Upload a vector of length d_model = %d." % model.d_model)
            else:
                resolved = uploaded_direction(model, up.getvalue(), up.name, normalize)
        if resolved is not None:
            choices = operator_choices(resolved)
            if ss.get("vec_operator") not in choices:  # another vector: start from its own operator
                ss.vec_operator = resolved.operator
            op_name = st.selectbox("Operator", choices, key="vec_operator", disabled=len(choices) == 1,
                                   format_func=lambda n: get_operator(n).label,
                                   help="How the direction changes the residual: added (α·v), or, like Neuronpedia's "
                                        "steering, the component along it set or capped at α·|v|.")
            st.caption(get_operator(op_name).about)  # the sidebar is too narrow to show it inside the box
            resolved = with_operator(resolved, op_name)
    except SteeringCoreError as exc:
        error = str(exc)
    if error:
        st.error(error)
    elif resolved is not None:
        st.caption(f"{resolved.description} · original norm {resolved.original_norm:.3g}"
                   + (" (α = that norm reproduces the dataset's mean gap)" if source == ui.SteerSource.SAVED else ""))

    default_layer = resolved.suggested_layer if resolved and resolved.suggested_layer is not None else model.default_layer
    if "layer" in ss and not 0 <= int(ss.layer) < model.n_layers:  # a hand-off or link may be out of range
        ss.layer = min(max(int(ss.layer), 0), model.n_layers - 1)
    layer = st.slider("Layer (steer the output of block)", 0, model.n_layers - 1, key="layer",
                      **ui.first_value("layer", int(default_layer)))
    norm = norms[layer]
    limit = float(max(1.0, round(3 * norm)))
    # α's slider range follows the layer's norm. Only a hand-off, preset, link or the Automatic α
    # button writes α (through pending_alpha, applied here before the slider exists), and another
    # layer's slider starts again at half its norm; otherwise the slider alone owns its value
    # (writing it back on every run races with the value the browser is sending).
    if "pending_alpha" in ss:
        ss.alpha = max(-limit, min(limit, float(ss.pop("pending_alpha"))))
    elif ss.get("alpha_limit", limit) != limit:
        ss.pop("alpha", None)
    ss.alpha_limit = limit
    if (asked := ss.pop("steer_link_alpha", None)) is not None and asked != ss.get("alpha"):
        ss.steer_link_warnings = [*ss.get("steer_link_warnings", []), (
            f"The link's alpha={asked:g} is beyond layer {layer}'s slider (±{limit:.0f}): α starts at {ss.alpha:+.1f}.")]
        st.warning(ss.steer_link_warnings[-1])
    alpha = st.slider("α", -limit, limit, step=max(limit / 300, 0.01), key="alpha",
                      **ui.first_value("alpha", round(norm / 2, 1)))
    st.caption(f"‖resid‖ at layer {layer} ≈ **{norm:.1f}** → α is **{alpha / norm:+.2f}×** the typical norm.")
    a1, a2 = st.container(), st.container()  # stacked: side by side, the sidebar cut their labels
    additive = resolved is not None and resolved.additive
    if a1.button("Automatic α", key="auto_alpha", disabled=not additive,
                 help="The α at which next-token loss on built-in neutral prose rises by 0.5 nats (quadratic "
                      "fit, then one check). A feature card's loss-matched α was matched on the pack's own "
                      "held-out text; ΔCE depends on the text, so the two can differ."):
        try:
            res = auto_alpha(model, layer, resolved.vector)
            ss.pending_alpha = float(res.alpha[0])
            ss.auto_alpha_result = {"alpha": float(res.alpha[0]), "vector": resolved.description, "layer": layer,
                             "text": f"Automatic α = {float(res.alpha[0]):.1f} (checked ΔCE {float(res.dce[0]):+.2f} "
                                     f"nats on built-in neutral prose, {res.evals_per_vector} evaluations; a feature "
                                     "card's α is matched on the pack's text and can differ)"}
            st.rerun()
        except SteeringCoreError as exc:
            st.error(str(exc))
    auto = ss.get("auto_alpha_result")
    if auto and resolved is not None and (auto["vector"], auto["layer"]) == (resolved.description, layer):
        clamped = max(-limit, min(limit, auto["alpha"]))
        st.caption(auto["text"] + (f"; beyond this layer's slider (±{limit:.0f})" if clamped != auto["alpha"] else "")
                   + (f"; the slider now reads α = {alpha:+.1f}" if f"{clamped:+.1f}" != f"{alpha:+.1f}" else "") + ".")
    elif auto:  # computed for another vector or layer: say so rather than show it as if it were this one's
        st.caption(f"{auto['text']} was for {auto['vector']} at layer {auto['layer']}; press Automatic α "
                   "again for the current vector and layer.")
    sweepable = resolved is not None and source in (ui.SteerSource.SAE_FEATURE, ui.SteerSource.SAVED)
    if a2.button("Sweep around this α", key="sweep_here", disabled=not sweepable,
                 help="Open the Sweep page with this vector and a grid from 0 to 2α."):
        grid = [alpha * k for k in (0, 0.25, 0.5, 0.75, 1, 1.5, 2)]
        if source == ui.SteerSource.SAE_FEATURE:
            ui.goto_sweep(feature=sae.check_feature(fid), alphas=grid)
        ui.goto_sweep(vector=pick, alphas=grid)

    with st.expander("More vectors (applied together)"):
        extras, extra_desc = [], []
        try:
            for nm in st.multiselect("Saved vectors", vstore.names(), key="extra_vectors"):
                a = st.number_input(f"α for {nm}", key=f"extra_alpha_{nm}", **ui.first_value(f"extra_alpha_{nm}", 0.0))
                v = vstore.load(nm)
                extras.append(ExtraVector(v.layer, v.unit(), float(a), v.reference, v.operator))
                extra_desc.append(f"{nm} (α {float(a):+.1f})")
        except SteeringCoreError as exc:
            st.error(str(exc))
        st.caption("Each is added at its own block with its own α, in the steered column only.")
    with st.expander("Presets"):
        presets = ui.library().presets
        pname = st.text_input("Save these settings as", key="preset_name")
        if st.button("Save preset", key="preset_save"):
            try:
                keep = {k: ss[k] for k in PRESET_KEYS if k in ss}
                keep.update({k: ss[k] for k in ss if isinstance(k, str) and k.startswith("extra_alpha_")})
                before = set(presets.names())
                saved = presets.save(pname, keep)
                st.success(f"Replaced preset {saved} with these settings." if saved in before
                           else f"Saved preset {saved}.")
            except SteeringCoreError as exc:
                st.error(str(exc))
        if presets.names():
            chosen = st.selectbox("Preset", presets.names(), key="preset_pick")
            if st.button("Load preset", key="preset_load"):
                try:
                    ss.pending_widgets, notes = applicable(presets.load(chosen), PresetTarget(
                        n_layers=model.n_layers, sources=tuple(ui.SteerSource), vector_names=tuple(vstore.names()),
                        n_features=sae.d_sae if sae is not None else None, max_samples=MAX_SAMPLES,
                        source_keys={ui.SteerSource.RANDOM: "vec_seed", ui.SteerSource.SAE_FEATURE: "vec_feature",
                                     ui.SteerSource.SAVED: "vec_saved"}))
                    for note in notes:
                        ui.flash("preset_flash", "warning", note)
                    st.rerun()
                except SteeringCoreError as exc:
                    st.error(str(exc))
    ui.show_flashes("preset_flash")  # after the load's rerun, outside the folded expander

st.subheader("Prompt")
chat_mode = st.toggle("Multi-turn chat (each column keeps its own replies)", key="chat_mode",
                      disabled=not model.chat_template)
ss.setdefault("hist_u", [])
ss.setdefault("hist_s", [])
if chat_mode:
    st.caption("Each turn continues from each column's first sample (the top reply), which joins the "
               "conversation shown here from the next turn on.")
    if ss.hist_u:
        h1, h2 = st.columns(2)
        for col, hist in ((h1, ss.hist_u), (h2, ss.hist_s)):
            for user, reply in hist:
                col.markdown(f"**You:** {user}")
                col.markdown(f"**Model:** {reply}")
    if st.button("Reset conversation", key="chat_reset"):
        ss.hist_u, ss.hist_s = [], []
        ss.pop("steer_last", None)  # its replies belonged to the conversation just reset
        st.rerun()
first = ui.first_value  # presets set these keys too
prompt = st.text_area("Prompt", key="prompt", label_visibility="collapsed",
                      **first("prompt", "Tell me about your weekend plans."))
c1, c2, c3, c4, c5 = st.columns(5)
chat = c1.toggle("Chat template", key="chat", disabled=not model.chat_template,
                 **first("chat", bool(model.chat_template)))
n_samples = c2.number_input("Samples", 1, MAX_SAMPLES, key="n_samples", **first("n_samples", 2))
max_tokens = c3.number_input("Max new tokens", 1, 1_000_000, key="max_tokens", **first("max_tokens", 48),
                             help="More than the model allows per call is clamped (and said).")
temperature = c4.number_input("Temperature (0 = greedy)", 0.0, 5.0, step=0.1, key="temperature",
                              **first("temperature", 0.8))
seed = c5.number_input("Seed", step=1, key="seed", **first("seed", 0))
current = ShownSettings(float(alpha), int(layer), resolved.description, int(seed), prompt, samples=int(n_samples),
                        max_tokens=int(max_tokens), temperature=float(temperature), chat=bool(chat),
                        extras="; ".join(extra_desc), conversation=bool(chat_mode)) if resolved else None
ui.write_link(SteerLink(  # the URL follows the settings, so it can be shared
    feature=sae.check_feature(fid) if resolved and source == ui.SteerSource.SAE_FEATURE else None,
    vector=pick if resolved and source == ui.SteerSource.SAVED else None,
    layer=int(layer), alpha=round(float(alpha), 2), seed=int(seed), prompt=prompt))

request = SideBySide(
    prompt=prompt, layer=layer, vector=resolved.vector, alpha=alpha, chat=chat, n_samples=int(n_samples),
    reference=resolved.reference, operator=resolved.operator, extra=tuple(extras),
    history_unsteered=tuple(map(tuple, ss.hist_u)) if chat_mode else (),
    history_steered=tuple(map(tuple, ss.hist_s)) if chat_mode else (),
    config=GenerationConfig(max_new_tokens=int(max_tokens), temperature=float(temperature), top_k=50,
                            seed=int(seed)),
) if resolved is not None else None
#: What the unsteered column says: before anything was generated, and over its samples.
EMPTY_HINT = "Nothing generated yet: press Generate for both columns, same seeds on each side."
UNSTEERED = "no steering · the same prompt and row seeds as the steered column"
UNSTEERED_CACHED = "from cache: same prompt, seed and settings"
g1, g2 = st.columns([1, 3])
go = g1.button("Generate", type="primary", disabled=resolved is None, key="generate")
live = g2.toggle("Live α", key="live_alpha", disabled=chat_mode, **first("live_alpha", True),
                 help="Releasing the α slider regenerates the steered column; the unsteered column is reused "
                      "(same prompt, seed and settings) and says so.")
last = ss.get("steer_last") or {}
# live α: the slider moved and nothing else did, so only the steered column is regenerated
live_run = (not go and live and not chat_mode and request is not None and last.get("settings") is not None
            and last.get("key") == unsteered_key(request) and last["settings"].live_update(current))
run = (go or live_run) and request is not None
shown = current if run else last.get("settings")  # what the results below came from
if shown is not None and current is not None and (note := shown.stale_note(current)):
    st.info(note)
left, right = st.columns(2)
left.markdown("#### Unsteered")
right.markdown("#### " + (shown or current).header() if (shown or current) else "#### Steered")
if shown or current:
    right.caption((shown or current).label())
if run or "steer_last" in ss:  # a caption on both sides keeps the two columns' samples level
    left.caption(UNSTEERED_CACHED if (live_run if run else last.get("from_cache")) else UNSTEERED)

if run:
    cached = list(last["unsteered"]) if live_run else None
    slots_l = [left.empty() for _ in range(int(n_samples))]
    slots_r = [right.empty() for _ in range(int(n_samples))]
    bar = st.progress(0.0, text="Generating…")
    started = time.perf_counter()
    try:
        update = None
        for slot, text in zip(slots_l, cached or []):  # from cache: drawn once, not on every redraw below
            slot.info(text or "…")
        for update in side_by_side(model, request, unsteered=cached):
            if update.step % 6 == 0 or update.done:  # fewer redraws: each one costs the generating thread time
                for slot, text in zip(slots_l, [] if cached is not None else update.unsteered):
                    slot.info(text or "…")
                for slot, text in zip(slots_r, update.steered):
                    slot.success(text or "…")
                bar.progress(min(1.0, (update.step + 1) / request.config.max_new_tokens),
                             text=f"{update.step + 1} tokens")
        bar.empty()
        st.caption(f"Finished: {update.step + 1 if update else 0} decoding steps in {time.perf_counter() - started:.1f} s, "
                   + (f"{int(n_samples)} steered row{'s' if int(n_samples) > 1 else ''} (unsteered from cache), "
                      "same seeds as before."
                      if cached is not None else f"{2 * int(n_samples)} rows in one batch, same seeds on both sides."))
        if update is not None:
            ss.steer_last = {"unsteered": update.unsteered, "steered": update.steered, "settings": current,
                             "key": unsteered_key(request), "from_cache": cached is not None}
            ss.pop("steer_link_warnings", None)
            if chat_mode:  # sample 1 of each column becomes that column's reply
                ss.hist_u.append((prompt, update.unsteered[0]))
                ss.hist_s.append((prompt, update.steered[0]))
            for note in update.notes:
                st.warning(note)
    except SteeringCoreError as exc:
        bar.empty()
        st.error(str(exc))
elif "steer_last" in ss:
    for text in ss.steer_last["unsteered"]:
        left.info(text or "…")
    for text in ss.steer_last["steered"]:
        right.success(text or "…")
elif request is not None:
    left.caption(EMPTY_HINT + (" With Live α on, releasing the α slider afterwards regenerates the steered column "
                               "alone." if live and not chat_mode else ""))
