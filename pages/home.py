"""Home page: what is loaded (model, SAE, hook point, residual norms) and where to go next."""

import plotly.graph_objects as go
import streamlit as st

import ui
from steering_core.browse.glossary import GLOSSARY, summary_texts
from steering_core.pack.reliability import overlap_spread

ui.setup_page("Home")
st.title("Steering workbench")
st.caption("Steer a language model's residual stream and see what your vectors really do.")

model = ui.current_model()
sae = ui.current_sae()
norms = model.residual_norms()
layer = sae.layer if sae is not None else model.default_layer

st.markdown(f"**Model** `{model.name}` · **SAE** `{sae.source if sae else 'none'}` · "
            f"**Hook point** `{sae.hook_name if sae else model.hook_names[layer]}`")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Layers", model.n_layers)
c2.metric("d_model", model.d_model)
c3.metric("SAE features", sae.d_sae if sae else "none")
c4.metric(f"Residual norm (layer {layer})", f"{norms[layer]:.1f}")

left, right = st.columns([2, 3])
with left:
    st.subheader("Model")
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in model.describe().items()))
    st.subheader("SAE")
    if sae is None:
        st.info("No SAE loaded. The embedded SAE pack appears here once it is built; any sae_lens "
                "SAE can be loaded from the sidebar (Model and SAE).")
    else:
        st.markdown("\n".join(f"- **{k}**: {v}" for k, v in sae.describe().items()))
    pack = ui.current_pack()
    if pack is not None:
        st.subheader("Feature pack")
        shown = summary_texts(pack.summary(), lambda key: overlap_spread(pack, key))
        st.markdown("\n".join(f"- **{label}**: {text}" for label, text in shown.items()))
with right:
    st.subheader("Mean residual norm after each block")
    fig = go.Figure(go.Bar(
        x=list(range(len(norms))), y=norms,
        marker_color=["#d62728" if i == layer else "#1f77b4" for i in range(len(norms))],
        hovertemplate="layer %{x}: ‖resid‖ ≈ %{y:.1f}<extra></extra>",
    ))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="layer", yaxis_title="‖resid‖")
    st.plotly_chart(fig, width="stretch")
    st.caption("α is in residual-stream units for a unit-norm vector: α equal to the bar's height "
               "adds a vector as long as what is typically there (attention sinks, such as the first token, excluded).")

with st.expander("How to read the numbers", expanded=pack is None or "reference_top10_overlap_median" not in pack.meta):
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in GLOSSARY.items()))  # this pack's figures: above

st.subheader("Pages")
ui.page_links()
