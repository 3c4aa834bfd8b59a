"""Toy world: the "steering clear" problem with a known answer ([Krasheninnikov 2024], document 000
§3.1). Every pair method is scored by how often steering makes the model predict the asked-for
value, against the number of steering examples."""

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

import ui
from steering_core import SteeringCoreError
from steering_core import toyworld as tw
from steering_core.vectors.methods import METHODS

ui.setup_page("Toy world")
st.title("Toy world: steering with a known answer")
st.caption("Synthetic inputs with m attributes × 8 values; a residual GeLU MLP (512-512-256-512) is trained to read "
           "them all, then each method is fitted on n pairs that differ only in one attribute and asked to steer "
           "that attribute to value μ₁ on fresh inputs. Chance is 1/8; unsteered is 0 (test inputs never hold μ₁).")
ss = st.session_state


@st.cache_resource(show_spinner=False, max_entries=4)
def _trained(m: int, seed: int, samples: int) -> tw.TrainedModel:
    return tw.train_mlp(tw.make_world(tw.WorldConfig(m=m, seed=seed)),
                        tw.TrainConfig(n_samples=samples, seed=seed))


c1, c2, c3, c4 = st.columns(4)
m = c1.number_input("Attributes m", 1, 120, 20, key="tw_m", help="The document uses 60, 90 and 120; small m trains fast.")
layer = c2.number_input("Layer (residual after block)", 0, 3, 2, key="tw_layer")
repeats = c3.number_input("Repeats", 1, 50, 3, key="tw_repeats")
largest = c4.selectbox("Most examples", [16, 64, 256, 1024, 4096], index=2, key="tw_max")
methods = st.multiselect("Methods", tw.steering_methods(), default=["caa", "ace", "probe", "loreft", "lorest"],
                         key="tw_methods", format_func=lambda n: METHODS[n].label)
d1, d2, d3 = st.columns(3)
alphas = d1.text_input("α (several: chosen on validation inputs)", "1", key="tw_alphas")
n_test = d2.number_input("Test inputs", 50, 5000, 500, key="tw_test")
samples = d3.number_input("Pre-training samples", 5_000, 500_000, 50_000, step=5_000, key="tw_samples")

tw_settings = {"attributes m": int(m), "layer": int(layer), "repeats": int(repeats), "most examples": int(largest),
               "methods": tuple(methods), "α": alphas.strip(), "test inputs": int(n_test),
               "pre-training samples": int(samples)}
if st.button("Run", type="primary", key="tw_go", disabled=not methods):
    bar = st.progress(0.0, text="Training the MLP…")
    try:
        alpha_list = tuple(float(a) for a in alphas.split(",") if a.strip())
        cfg = tw.CurveConfig(layer=int(layer), methods=tuple(methods), repeats=int(repeats),
                             ns=tuple(tw.example_counts(int(largest))), n_test=int(n_test), alphas=alpha_list)
        trained = _trained(int(m), 0, int(samples))
        total = len(cfg.ns) * len(methods) * int(repeats)
        done = [0]

        def tick(point: tw.CurvePoint) -> None:
            done[0] += 1
            bar.progress(min(1.0, done[0] / total), text=f"{METHODS[point.method].label}, {point.n} examples, repeat {point.repeat + 1}")

        result = tw.run_curves(trained, cfg, on_point=tick)
        ss.tw_result = {"result": result, "accuracy": trained.report.accuracy_text(), "m": int(m), "layer": int(layer),
                        "settings": tw_settings}
    except ValueError:
        st.error(f"Cannot read α {alphas.strip()!r}: write numbers separated by commas.")
    except SteeringCoreError as exc:
        ui.show_error(exc)
    bar.empty()

res = ss.get("tw_result")
if res is not None:
    r = res["result"]
    if note := ui.stale_warning(res.get("settings"), tw_settings, "press Run again"):
        st.warning(note)
    st.caption(f"m = {res['m']}, layer {res['layer']}: the MLP reads {res['accuracy']}; "
               f"{r.seconds:.0f} s for the curves. "
               + ("Bands: ± one standard deviation over repeats." if any(v == v for n in r.methods for v in r.std(n)) else
                  "No bands: one repeat has no spread to read (raise Repeats for one)."))
    fig = go.Figure()
    for i, name in enumerate(r.methods):
        ui.add_band(fig, r.ns, r.mean(name), r.std(name), METHODS[name].label, i)
    fig.update_layout(height=420, xaxis=dict(title="steering examples (pairs)", type="log", dtick=0.30103),
                      yaxis=dict(title="steered-attribute accuracy", range=[0, 1.05]), legend=ui.LEGEND_ABOVE)
    st.plotly_chart(fig, width="stretch")
    if r.notes:
        with st.expander(f"{len(r.notes)} notes (points a method could not fit)"):
            st.markdown("\n".join(f"- {n}" for n in r.notes[:50]))

figure = Path(__file__).resolve().parent.parent / "docs" / "img" / "toyworld_curves.png"
if figure.exists():
    with st.expander("The reference run (m = 60, 20 repeats, 4 … 4,096 examples; README)"):
        st.image(str(figure))
