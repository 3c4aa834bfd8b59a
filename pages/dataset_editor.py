"""Datasets: build and edit contrastive pair datasets (table, templates, stories, uploads), split off
held-out pairs, wrap in the chat template, save to the library.

(The file is not called datasets.py: Streamlit puts pages/ on the import path, and a datasets.py
there would shadow the `datasets` package that transformer_lens imports.)"""

import pandas as pd
import streamlit as st

import ui
from steering_core import SteeringCoreError
from steering_core import datasets as dsm

ui.setup_page("Datasets")
st.title("Datasets")
st.caption("Contrastive pairs: each row is a positive text (the behaviour you want) and a negative one "
           "(the same text without it). Vectors are fitted on the *train* pairs and checked on the *heldout* ones.")
ss = st.session_state
store = ui.library().datasets
COLUMNS = ["positive", "negative", "split"]


def set_table(pairs, name: str | None = None, description: str | None = None, flash: str = "") -> None:
    """Replace the table. Name and description widgets can only change before they are drawn, so
    they wait in session state for the next run (as does a message to show: ``ui.flash``)."""
    ss.ds_rows = [{"positive": p.positive, "negative": p.negative, "split": p.split} for p in pairs]
    ss.ds_version = ss.get("ds_version", 0) + 1
    ss.ds_pending = {"name": name, "description": description}
    if flash:
        ui.flash("ds_flash", "success", flash)


def apply_pending() -> None:
    pending = ss.pop("ds_pending", None) or {}
    if pending.get("name") is not None:
        ss.ds_name = pending["name"]
    if pending.get("description") is not None:
        ss.ds_description = pending["description"]


def current_rows() -> list[dict]:
    """The table as code last set it (the editor's starting rows, without the user's edits)."""
    return list(ss.get("ds_rows", []))


# -- open --------------------------------------------------------------------------------------------
saved = store.names()
NEW = "(new, empty)"
PREFIXES = (store.SAVED, store.EXAMPLE)
for warning in ui.read_datasets_link(saved, dsm.example_datasets(), PREFIXES):  # a shared link, once
    st.warning(warning)
options = [NEW] + store.choices()
c1, c2 = st.columns([3, 1])
choice = c1.selectbox("Open", options, key="ds_open")
if c2.button("Load", key="ds_load", width="stretch") or "ds_rows" not in ss:
    try:
        if choice == NEW:
            set_table([], "my-dataset", "")
        else:
            ds = store.open_choice(choice)
            set_table(ds.pairs, ds.name, ds.description)
        ss.ds_loaded = choice
    except SteeringCoreError as exc:
        ui.show_error(exc)
apply_pending()
ui.write_link(ui.datasets_link(ss.get("ds_loaded"), PREFIXES))  # the address opens the dataset last loaded or saved
ui.show_flashes("ds_flash")

edit, gen, io = st.tabs(["Edit", "Generate", "Import / export"])

with edit:
    n1, n2 = st.columns([1, 2])
    name = n1.text_input("Name", key="ds_name")
    description = n2.text_input("Description", key="ds_description")
    df = pd.DataFrame(current_rows(), columns=COLUMNS)
    edited = st.data_editor(
        df, key=f"ds_editor_{ss.get('ds_version', 0)}", num_rows="dynamic", width="stretch", height=360,
        column_config={
            "positive": st.column_config.TextColumn("positive", width="large"),
            "negative": st.column_config.TextColumn("negative", width="large"),
            "split": st.column_config.SelectboxColumn("split", options=list(dsm.SPLITS), default="train"),
        },
    )
    rows = dsm.table_rows(edited.to_dict("records"))  # what the table shows, typed edits included:
    # Generate and Import / export build on these, so appending or exporting keeps hand-typed pairs
    half = dsm.incomplete_rows(rows)  # counted apart: saving refuses them
    complete = [r for i, r in enumerate(rows, 1) if i not in half]
    n_held = sum(1 for r in complete if r.get("split") == "heldout")
    st.caption(f"{ui.count(len(complete), 'pair')} · {len(complete) - n_held} train · {n_held} heldout"
               + (f" · row{'s' if len(half) > 1 else ''} {', '.join(map(str, half))} "
                  f"{'miss' if len(half) > 1 else 'misses'} a side (Save refuses {'them' if len(half) > 1 else 'it'})"
                  if half else "")
               + ("" if rows else " · click the table's empty row to type a pair, paste cells copied from a "
                  "spreadsheet into it, or open an example above (Generate and Import / export make pairs too)"))
    b1, b2, b3, b4 = st.columns(4)
    overwrite = b1.checkbox("Overwrite if it exists", key="ds_overwrite")
    if b1.button("Save", type="primary", key="ds_save"):
        try:
            pairs, warnings = dsm.validate_pairs(rows)
            warn = store.save(dsm.ContrastiveDataset(name, pairs, description), overwrite=overwrite)
            ui.flash("ds_flash", "success", f"Saved {dsm.validate_name(name)} ({ui.count(len(pairs), 'pair')}).")
            ss.ds_loaded = store.SAVED + dsm.validate_name(name)
            for w in dict.fromkeys(list(warnings) + list(warn or [])):
                ui.flash("ds_flash", "warning", w)
            st.rerun()  # so the Open list and the saved-datasets table include it
        except SteeringCoreError as exc:
            ui.show_error(exc)
    if b2.button("Remove duplicates", key="ds_dedupe"):
        kept = dsm.drop_duplicates(rows)
        ss.ds_rows = kept
        ss.ds_version = ss.get("ds_version", 0) + 1
        st.toast(f"Removed {len(rows) - len(kept)} duplicate pairs.")
        st.rerun()
    frac = b3.slider("Held-out share", 0.0, 0.5, 0.2, 0.05, key="ds_frac")
    if b3.button("Split", key="ds_split"):
        try:
            pairs, _ = dsm.validate_pairs([{**r, "split": "train"} for r in rows])
            set_table(dsm.split_heldout(pairs, frac, seed=0))
            st.rerun()
        except SteeringCoreError as exc:
            ui.show_error(exc)
    model = ui.current_model()
    if b4.button("Wrap in chat template", key="ds_chat", disabled=not model.chat_template,
                 help="Each text becomes a user turn of the current model's chat template."):
        try:
            pairs, _ = dsm.validate_pairs(rows)
            set_table(dsm.wrap_chat(pairs, model.format_prompt))
            st.rerun()
        except SteeringCoreError as exc:
            ui.show_error(exc)
    try:  # the name as the library stores it (spaces around it are dropped when saving)
        stored_name = dsm.validate_name(name)
    except SteeringCoreError:
        stored_name = None
    if stored_name in saved and st.button(f"Delete saved dataset {stored_name}", key="ds_delete"):
        store.delete(stored_name)
        ui.flash("ds_flash", "success", f"Deleted {stored_name}.")  # shown after the rerun (a message here is lost)
        if ss.get("ds_loaded") == store.SAVED + stored_name:
            ss.ds_loaded = None  # the address no longer links it
        st.rerun()

with gen:
    st.markdown("**Template × context × target** ([Purchase 2025] §3.2.1): every template with every context and "
                "every (positive, negative) target pair. Use `<context>` and `<target>` in templates.")
    t1, t2 = st.columns(2)
    templates = t1.text_area("Templates, one per line", "Everyone thought <context> would lose. In the end they <target>.",
                             key="gen_templates")
    contexts = t2.text_area("Contexts, one per line", "the home team\nthe young candidate\nthe small startup",
                            key="gen_contexts")
    t3, t4 = st.columns(2)
    pos_t = t3.text_area("Positive targets, one per line", "won easily", key="gen_pos")
    neg_t = t4.text_area("Negative targets, one per line (aligned)", "lost badly", key="gen_neg")
    lines = lambda s: [x for x in s.splitlines() if x.strip()]  # noqa: E731
    g1, g2 = st.columns(2)
    for col, mode in ((g1, "Append to table"), (g2, "Replace table")):
        if col.button(mode, key=f"gen_tpl_{mode}"):
            try:
                new = dsm.from_templates(lines(templates), lines(contexts), lines(pos_t), lines(neg_t))
                keep = [] if mode == "Replace table" else dsm.validate_pairs(rows)[0] if rows else []
                set_table(keep + new, flash=f"{ui.count(len(new), 'pair')} generated.")
                st.rerun()
            except SteeringCoreError as exc:
                ui.show_error(exc)
    st.divider()
    st.markdown("**Story pairs** ([SAE-Gender]): one shared beginning, positive and negative endings.")
    beginning = st.text_area("Beginning", "After the ceremony, the two of them walked out into the sunshine and",
                             key="gen_begin")
    s1, s2 = st.columns(2)
    pos_e = s1.text_area("Positive endings, one per line", "threw the bouquet to the cheering guests.", key="gen_pos_e")
    neg_e = s2.text_area("Negative endings, one per line (aligned)", "caught the bus back to the office.",
                         key="gen_neg_e")
    if st.button("Append story pairs", key="gen_story"):
        try:
            new = dsm.story_pairs(beginning, lines(pos_e), lines(neg_e))
            keep = dsm.validate_pairs(rows)[0] if rows else []
            set_table(keep + new, flash=f"{ui.count(len(new), 'story pair')} added.")
            st.rerun()
        except SteeringCoreError as exc:
            ui.show_error(exc)

with io:
    up = st.file_uploader("Upload pairs (.csv with positive,negative[,split] columns, .jsonl, .json)",
                          type=[f.lstrip(".") for f in dsm.UPLOAD_FORMATS], key="ds_upload",
                          max_upload_size=ui.upload_mb(dsm.MAX_UPLOAD_BYTES))
    if up is not None and st.button("Load the file into the table", key="ds_upload_go"):
        try:
            pairs, warnings = dsm.parse_upload(up.getvalue(), up.name)
            stem = up.name.rsplit(".", 1)[0]
            set_table(pairs, stem, "", flash=" ".join([f"{ui.count(len(pairs), 'pair')} loaded from {up.name}; review and save them."]
                                                      + list(warnings)))
            st.rerun()
        except SteeringCoreError as exc:
            ui.show_error(exc)
    try:
        pairs_now, _ = dsm.validate_pairs(rows) if rows else ([], [])
    except SteeringCoreError as exc:
        pairs_now = []
        st.caption(f"Export needs a valid table: {exc}")
    if pairs_now:
        d1, d2 = st.columns(2)
        stem = ss.get("ds_name") or "dataset"
        d1.download_button("Download CSV", dsm.to_csv(pairs_now), f"{stem}.csv", "text/csv", key="ds_dl_csv")
        d2.download_button("Download JSONL", dsm.to_jsonl(pairs_now), f"{stem}.jsonl", "application/json",
                           key="ds_dl_jsonl")

if saved:
    st.subheader("Saved datasets")
    st.dataframe(pd.DataFrame(store.summaries()), hide_index=True, width="stretch")
