"""Entry point: `streamlit run app.py`. Routes to the pages in pages/ (see ui.PAGES)."""

import streamlit as st

import ui

st.navigation([st.Page(path, title=title, default=(i == 0)) for i, (path, title, _help) in enumerate(ui.PAGES)],
              position="hidden").run()
