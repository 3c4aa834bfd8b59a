"""Contrastive pair datasets: validation refuses damaged sets, files round-trip exactly, the
generators build the pairs [Purchase 2025] §3.2.1 and [SAE-Gender] describe, and the store is all-or-nothing."""

from __future__ import annotations

import json
import math

import pytest

from steering_core.datasets import (
    MAX_PAIRS,
    MAX_TEXT_CHARS,
    MAX_UPLOAD_BYTES,
    ContrastiveDataset,
    DatasetError,
    DatasetStore,
    Pair,
    drop_duplicates,
    example_datasets,
    from_templates,
    load_example,
    parse_upload,
    split_heldout,
    story_pairs,
    to_csv,
    to_jsonl,
    validate_name,
    validate_pairs,
    wrap_chat,
)
from steering_core.errors import SteeringCoreError
from steering_core.names import InvalidNameError, clean_name

TRICKY = [
    Pair("Hello, world", 'She said "no", then left', "train"),
    Pair("line one\nline two", "line one\r\nline three", "heldout"),
    Pair("emoji 🎉💍 party", "emoji 😐 nothing", "train"),
    Pair("مرحبا بالعالم", "שלום עולם", "train"),
    Pair("  leading and trailing spaces  ", "\ttabbed\t", "heldout"),
    Pair('"quoted" text, with commas, and \'single\' quotes', "plain", "train"),
    Pair("separator\u2028inside", "paragraph\u2029inside", "train"),
    Pair("=SUM(A1:A2)", "-5 degrees; ok?", "train"),
]


def _store(tmp_path):
    return DatasetStore(tmp_path / "library.duckdb")


def _pairs(n, prefix="p"):
    return [Pair(f"{prefix} positive {i}", f"{prefix} negative {i}") for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


def test_csv_round_trip_is_exact():
    ds = ContrastiveDataset("tricky", TRICKY)
    pairs, warnings = parse_upload(to_csv(ds).encode("utf-8"), "tricky.csv")
    assert pairs == TRICKY
    assert warnings == []


def test_jsonl_round_trip_is_exact():
    ds = ContrastiveDataset("tricky", TRICKY)
    text = to_jsonl(ds)
    assert len(text.rstrip("\n").split("\n")) == len(TRICKY)  # one line per pair, U+2028 included
    assert "🎉" in text and "مرحبا" in text  # kept readable, not \u-escaped
    pairs, _ = parse_upload(text.encode("utf-8"), "tricky.jsonl")
    assert pairs == TRICKY


def test_json_list_upload():
    doc = [{"positive": p.positive, "negative": p.negative, "split": p.split} for p in TRICKY]
    pairs, _ = parse_upload(json.dumps(doc).encode(), "x.json")
    assert pairs == TRICKY


def test_csv_with_bom_case_blank_rows_and_extra_columns():
    data = "\ufeffID,Positive,Negative,Split\r\n1,a wedding,a meeting,\r\n,,,\r\n\r\n2,the bride,the boss,HELDOUT\r\n"
    pairs, warnings = parse_upload(data.encode("utf-8"), "sheet.CSV")
    assert pairs == [Pair("a wedding", "a meeting", "train"), Pair("the bride", "the boss", "heldout")]
    assert any("Ignored columns" in w and "ID" in w for w in warnings)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, needle", [
    ([("a", "b"), ("c", None)], "Unpaired"),
    ([("a", "b"), ("c", float("nan"))], "Unpaired"),
    ([("a", "b"), {"positive": "c"}], "'positive'"),
    ([("a", "b"), ("only one",)], "not pairs"),
    ([("a", "b"), ("", "d")], "Empty"),
    ([("a", "b"), ("c", "   \n\t")], "whitespace"),
    ([("a", "b"), ("same", "  same ")], "zero difference vector"),
    ([("a", "b"), ("a", "b")], "Duplicate"),
    ([("a", "b"), ("b", "a")], "swap"),
    ([("a", "b"), ("c", 5)], "not text"),
    ([("a", "b"), ("c", "x" * (MAX_TEXT_CHARS + 1))], f"{MAX_TEXT_CHARS:,}"),
    ([("a", "b"), ("c", "d", "test")], "'test'"),
    ([("a", "b"), ("c", "d\x00")], "NUL"),
])
def test_bad_rows_are_refused_with_the_row_number(rows, needle):
    with pytest.raises(DatasetError) as exc:
        validate_pairs(rows)
    msg = str(exc.value)
    assert needle in msg
    assert "row 2" in msg and "row 1" not in msg


def test_zero_rows_too_many_rows_and_all_heldout():
    with pytest.raises(DatasetError, match="no pairs"):
        validate_pairs([])
    with pytest.raises(DatasetError, match=f"{MAX_PAIRS:,}"):
        validate_pairs([(f"p{i}", f"n{i}") for i in range(MAX_PAIRS + 1)])
    with pytest.raises(DatasetError, match="heldout"):
        validate_pairs([("a", "b", "heldout"), ("c", "d", "heldout")])


def test_error_lists_at_most_five_rows_and_other_problems():
    rows = [("a", "b")] + [("same", "same")] * 8 + [("a", "b")]
    with pytest.raises(DatasetError) as exc:
        validate_pairs(rows)
    msg = str(exc.value)
    assert "rows 2, 3, 4, 5, 6 and 3 more" in msg
    assert msg.endswith("Also found: duplicate pairs (1).")


def test_valid_rows_of_every_shape_and_warnings():
    pairs, warnings = validate_pairs([Pair("a", "b"), {"positive": "c", "negative": "d", "split": " Heldout ",
                                                       "id": 7}, ("e", "f"), ["g", "h", None]])
    assert pairs == [Pair("a", "b"), Pair("c", "d", "heldout"), Pair("e", "f"), Pair("g", "h")]
    assert any("probe" in w for w in warnings)  # 3 train pairs
    assert any("Ignored fields: id" in w for w in warnings)
    _, warnings = validate_pairs([("a", "b")])
    assert warnings and warnings[0].startswith("Only one pair: CAA works but is noisy")
    _, warnings = validate_pairs(_pairs(5))
    assert warnings == []


def test_drop_duplicates_keeps_first_and_then_validates():
    rows = [("a", "b"), ("c", "d"), (" a ", "b"), ("c", "d"), ("e", None)]
    out = drop_duplicates(rows)
    assert out == [("a", "b"), ("c", "d"), ("e", None)]  # the broken row stays to be reported
    assert validate_pairs(out[:2])[0] == [Pair("a", "b"), Pair("c", "d")]


def test_dataset_properties():
    ds = ContrastiveDataset("d", [Pair("a", "b"), Pair("c", "d", "heldout"), Pair("e", "f")])
    assert len(ds) == 3
    assert ds.train == [Pair("a", "b"), Pair("e", "f")]
    assert ds.heldout == [Pair("c", "d", "heldout")]
    assert ds.positives == ["a", "c", "e"] and ds.negatives == ["b", "d", "f"]
    plain = ContrastiveDataset("p", _pairs(3))
    assert plain.train == plain.pairs and plain.heldout == []


# ----------------------------------------------------------------------------------------------
# Uploads
# ----------------------------------------------------------------------------------------------


def test_non_utf8_names_the_byte_offset():
    data = "positive,negative\ncafé,tea\n".encode("latin-1")
    with pytest.raises(DatasetError, match=r"byte offset 21 .*0xe9"):
        parse_upload(data, "x.csv")
    with pytest.raises(DatasetError, match="UTF-16"):
        parse_upload("positive,negative\n".encode("utf-16"), "x.csv")


def test_oversized_upload_is_refused_with_its_size():
    data = b"positive,negative\n" + b"a" * (6 * 1024 * 1024)
    assert len(data) > MAX_UPLOAD_BYTES
    with pytest.raises(DatasetError, match=r"6\.3 MB .*at most 5 MB"):
        parse_upload(data, "big.csv")


def test_bad_jsonl_line_number_in_message():
    data = b'{"positive": "a", "negative": "b"}\n\n{"positive": "c", "negative": \n'
    with pytest.raises(DatasetError, match="Line 3 of x.jsonl is not valid JSON"):
        parse_upload(data, "x.jsonl")
    with pytest.raises(DatasetError, match="Line 2 of x.jsonl is a JSON list"):
        parse_upload(b'{"positive": "a", "negative": "b"}\n["c", "d"]\n', "x.jsonl")
    # Validation problems name the file's own line numbers.
    data = b'{"positive": "a", "negative": "b"}\n\n\n{"positive": "c", "negative": "c"}\n'
    with pytest.raises(DatasetError, match="line 4"):
        parse_upload(data, "x.jsonl")


def test_csv_missing_columns_names_what_it_found():
    with pytest.raises(DatasetError) as exc:
        parse_upload(b"chosen,rejected\na,b\n", "pairs.csv")
    assert "positive and negative" in str(exc.value) and "'chosen', 'rejected'" in str(exc.value)
    with pytest.raises(DatasetError, match="empty"):
        parse_upload(b"", "pairs.csv")
    with pytest.raises(DatasetError, match="no pairs"):
        parse_upload(b"positive,negative\n", "pairs.csv")
    with pytest.raises(DatasetError, match="CSV line 3"):
        parse_upload(b"positive,negative\na,b\nc\n", "pairs.csv")


def test_json_must_be_a_list_of_objects_and_extension_known():
    with pytest.raises(DatasetError, match="list of objects"):
        parse_upload(b'{"positive": "a", "negative": "b"}', "x.json")
    with pytest.raises(DatasetError, match="Item 2"):
        parse_upload(b'[{"positive": "a", "negative": "b"}, "c"]', "x.json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        parse_upload(b"[{", "x.json")
    with pytest.raises(DatasetError, match=r"\.xlsx"):
        parse_upload(b"whatever", "x.xlsx")


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "", "   ", "..", "x..y", "a" * 81,
                                  "tab\tname", "nul\x00", "semi;colon", "CON", None, 3])
def test_bad_names_are_refused(name, tmp_path):
    with pytest.raises(DatasetError):
        validate_name(name)
    with pytest.raises(InvalidNameError):
        clean_name(name, what="vector")
    with _store(tmp_path) as store:
        with pytest.raises(DatasetError):
            store.save(ContrastiveDataset(name, _pairs(2)))
        assert store.names() == []
        assert store.con.execute("SELECT count(*) FROM dataset_pairs").fetchone()[0] == 0


def test_good_names_are_stripped_and_kept():
    assert validate_name("  London vs Paris (v2.1)_x-y ") == "London vs Paris (v2.1)_x-y"
    assert validate_name("café") == "café"
    assert issubclass(DatasetError, SteeringCoreError) and issubclass(InvalidNameError, SteeringCoreError)
    with pytest.raises(InvalidNameError, match="vector name"):
        clean_name("a/b", what="vector")


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------


def test_from_templates_counts_order_and_exact_strings():
    templates = ["Everyone thought <context> would lose. In the end they <target>.",
                 "<context> <target> the race."]
    contexts = ["the dancer", "the driver", "the <target> team"]
    pairs = from_templates(templates, contexts, ["won", "triumphed"], ["lost", "failed"])
    assert len(pairs) == 2 * 3 * 2
    assert pairs[0] == Pair("Everyone thought the dancer would lose. In the end they won.",
                            "Everyone thought the dancer would lose. In the end they lost.")
    assert pairs[1] == Pair("Everyone thought the dancer would lose. In the end they triumphed.",
                            "Everyone thought the dancer would lose. In the end they failed.")
    assert pairs[2].positive == "Everyone thought the driver would lose. In the end they won."
    assert pairs[4].positive == "Everyone thought the <target> team would lose. In the end they won."  # literal
    assert pairs[-1] == Pair("the <target> team triumphed the race.", "the <target> team failed the race.")
    assert all(p.split == "train" for p in pairs)


def test_from_templates_refusals():
    with pytest.raises(DatasetError, match="no <target>"):
        from_templates(["<context> did well."], ["she"], ["a"], ["b"])
    with pytest.raises(DatasetError, match="empty"):
        from_templates([], ["she"], ["a"], ["b"])
    with pytest.raises(DatasetError, match="empty"):
        from_templates(["<context> <target>"], [], ["a"], ["b"])
    with pytest.raises(DatasetError, match="2 positive targets and 1 negative"):
        from_templates(["<context> <target>"], ["she"], ["a", "c"], ["b"])
    with pytest.raises(DatasetError, match="same word on both sides"):
        from_templates(["<context> <target>"], ["she"], ["won"], ["won"])
    with pytest.raises(DatasetError, match="twice"):
        from_templates(["<context> <target>"], ["she", "she"], ["won"], ["lost"])
    with pytest.raises(DatasetError, match="no <context>"):
        from_templates(["They <target>."], ["she", "he"], ["won"], ["lost"])
    assert from_templates(["They <target>."], [""], ["won"], ["lost"]) == [Pair("They won.", "They lost.")]


def test_story_pairs_share_the_beginning():
    beginning = "On a battlefield long forgotten, a soldier found a shield that could protect an entire army."
    pos = ["Heroic, he led his nation to victory.", "Proud, he raised it high."]
    neg = ["Heroic, she brokered peace.", "Proud, she gave it away."]
    pairs = story_pairs(beginning, pos, neg)
    assert len(pairs) == 2
    for p, e_pos, e_neg in zip(pairs, pos, neg):
        assert p.positive.startswith(beginning) and p.negative.startswith(beginning)
        assert p.positive == f"{beginning} {e_pos}" and p.negative == f"{beginning} {e_neg}"
    assert story_pairs("Once,\n", ["he ran"], ["she ran"]) == [Pair("Once,\nhe ran", "Once,\nshe ran")]
    assert story_pairs("It was", ["... his"], [", hers"])[0] == Pair("It was... his", "It was, hers")
    assert story_pairs("He said", ['"yes"'], ['"no"'])[0] == Pair('He said "yes"', 'He said "no"')
    with pytest.raises(DatasetError, match="same number"):
        story_pairs("x", ["a", "b"], ["c"])
    with pytest.raises(DatasetError, match="shared beginning"):
        story_pairs("  ", ["a"], ["b"])
    with pytest.raises(DatasetError, match="zero difference"):
        story_pairs("x", ["same"], ["same"])


def test_wrap_chat_keeps_splits_and_checks_output():
    pairs = [Pair("a", "b"), Pair("c", "d", "heldout")]
    wrapped = wrap_chat(pairs, lambda t: f"<user>{t}</user><assistant>")
    assert wrapped == [Pair("<user>a</user><assistant>", "<user>b</user><assistant>"),
                       Pair("<user>c</user><assistant>", "<user>d</user><assistant>", "heldout")]
    with pytest.raises(DatasetError, match="identical"):
        wrap_chat(pairs, lambda t: "fixed")
    with pytest.raises(DatasetError, match="not text"):
        wrap_chat(pairs, lambda t: None)
    with pytest.raises(DatasetError, match="chat template failed"):
        wrap_chat(pairs, lambda t: 1 / 0)
    # a second wrap would nest the template (an audit clicked the button twice): refused by row
    with pytest.raises(DatasetError, match="Row 1 is already in the chat template"):
        wrap_chat(wrapped, lambda t: f"<user>{t}</user><assistant>")
    mixed = [Pair("e", "f"), Pair("<user>g</user><assistant>", "h")]
    with pytest.raises(DatasetError, match="Row 2 is already"):
        wrap_chat(mixed, lambda t: f"<user>{t}</user><assistant>")


def test_split_heldout_is_deterministic_and_counts():
    pairs = _pairs(50)
    a, b = split_heldout(pairs, 0.2, seed=0), split_heldout(pairs, 0.2, seed=0)
    assert a == b
    assert sum(p.split == "heldout" for p in a) == 10
    assert [(p.positive, p.negative) for p in a] == [(p.positive, p.negative) for p in pairs]  # order kept
    assert split_heldout(pairs, 0.2, seed=1) != a
    assert sum(p.split == "heldout" for p in split_heldout(pairs, 0.0)) == 0
    assert sum(p.split == "heldout" for p in split_heldout(_pairs(10), 0.25)) == round(0.25 * 10)
    assert all(p.split == "train" for p in split_heldout(_pairs(2), 0.5))  # n < 3: no split
    three = split_heldout(_pairs(3), 0.9)
    assert sum(p.split == "train" for p in three) == 1  # at least one train pair
    assert all(p.split == "train" for p in split_heldout(a, 0.0))  # old marks replaced
    for bad in (1.0, -0.1, "0.2", True, math.nan):
        with pytest.raises(DatasetError):
            split_heldout(pairs, bad)


# ----------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------


def _snapshot(store):
    rows = store.con.execute("SELECT name, idx, positive, negative, split FROM dataset_pairs "
                             "ORDER BY name, idx").fetchall()
    meta = store.con.execute("SELECT name, description, source, n_pairs, created, updated FROM datasets "
                             "ORDER BY name").fetchall()
    return store.names(), meta, rows


def test_a_name_differing_only_in_capitals_is_refused_even_with_overwrite(tmp_path):
    """'Honesty' beside 'honesty' reads as one dataset twice in every picker (the vector store
    refuses the same clash, where it would also share a file on some systems)."""
    with DatasetStore(tmp_path / "library.duckdb") as store:
        store.save(ContrastiveDataset("honesty", _pairs(2)))
        for overwrite in (False, True):
            with pytest.raises(DatasetError, match="'honesty' already exists.*capitals"):
                store.save(ContrastiveDataset("Honesty", _pairs(3)), overwrite=overwrite)
        assert store.names() == ["honesty"] and len(store.load("honesty").pairs) == 2
        store.save(ContrastiveDataset("honesty", _pairs(3)), overwrite=True)  # the same name still overwrites
        assert len(store.load("honesty").pairs) == 3


def test_store_save_load_overwrite_delete(tmp_path):
    path = tmp_path / "library.duckdb"
    ds = ContrastiveDataset("  tricky ", TRICKY, description="hard texts", source="tests")
    with DatasetStore(path) as store:
        assert store.save(ds) == []
        assert store.names() == ["tricky"]
        assert "tricky" in store and "other" not in store and "../x" not in store
        loaded = store.load("tricky")
        assert loaded == ContrastiveDataset("tricky", TRICKY, "hard texts", "tests")
        with pytest.raises(DatasetError, match="already exists"):
            store.save(ContrastiveDataset("tricky", _pairs(2)))
        assert store.load("tricky").pairs == TRICKY
        created = store.summaries()[0]["created"]
        warnings = store.save(ContrastiveDataset("tricky", _pairs(2), "new"), overwrite=True)
        assert any("probe" in w for w in warnings)
        assert store.load("tricky") == ContrastiveDataset("tricky", _pairs(2), "new", "")
        store.save(ContrastiveDataset("b-set", split_heldout(_pairs(10), 0.2)))
        summary = {s["name"]: s for s in store.summaries()}
        assert summary["tricky"]["n_pairs"] == 2 and summary["tricky"]["created"] == created
        assert summary["tricky"]["updated"] >= created
        assert summary["b-set"]["n_pairs"] == 10 and summary["b-set"]["n_heldout"] == 2
        assert store.names() == ["b-set", "tricky"]
    with DatasetStore(path) as store:  # persisted
        assert store.load("b-set").pairs == split_heldout(_pairs(10), 0.2)
        store.delete("tricky")
        assert store.names() == ["b-set"]
        assert store.con.execute("SELECT count(*) FROM dataset_pairs WHERE name = 'tricky'").fetchone()[0] == 0
        with pytest.raises(DatasetError, match="No saved dataset is named 'tricky'; saved: 'b-set'"):
            store.load("tricky")
        with pytest.raises(DatasetError, match="No saved dataset"):
            store.delete("tricky")
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == {"datasets", "dataset_pairs"}


@pytest.mark.parametrize("bad", [
    [("a", "b"), ("c", None)],               # unpaired
    [("a", "b"), ("", "d")],                 # empty
    [("a", "b"), ("  ", "d")],               # whitespace
    [("a", "b"), ("c", "c")],                # identical
    [("a", "b"), ("a", "b")],                # duplicate
    [],                                      # nothing
])
def test_failed_save_changes_nothing(tmp_path, bad):
    with _store(tmp_path) as store:
        store.save(ContrastiveDataset("keep", _pairs(3)))
        before = _snapshot(store)
        with pytest.raises(DatasetError):
            store.save(ContrastiveDataset("new", bad))
        with pytest.raises(DatasetError):
            store.save(ContrastiveDataset("keep", bad), overwrite=True)
        with pytest.raises(DatasetError):
            store.save(ContrastiveDataset("keep", _pairs(3), description="x" * 5000), overwrite=True)
        assert _snapshot(store) == before


def test_write_failure_mid_transaction_rolls_back(tmp_path):
    with _store(tmp_path) as store:
        store.save(ContrastiveDataset("keep", _pairs(3)))
        before = _snapshot(store)
        real = store.con

        class Failing:
            def execute(self, sql, *args):
                if sql.startswith("INSERT INTO dataset_pairs"):
                    raise OSError("disk full")
                return real.execute(sql, *args)

        store.con = Failing()
        with pytest.raises(OSError):
            store.save(ContrastiveDataset("keep", _pairs(5, "q")), overwrite=True)
        with pytest.raises(OSError):
            store.save(ContrastiveDataset("fresh", _pairs(5, "q")))
        store.con = real
        assert _snapshot(store) == before


def test_store_refuses_pack_file(tmp_path):
    with pytest.raises(DatasetError, match="pack.duckdb"):
        DatasetStore(tmp_path / "pack.duckdb")


# ----------------------------------------------------------------------------------------------
# Shipped examples
# ----------------------------------------------------------------------------------------------


def test_examples_load_and_validate(tmp_path):
    names = example_datasets()
    assert {"wedding_vs_neutral", "london_vs_paris", "masculine_vs_feminine", "formal_vs_casual",
            "positive_vs_negative"} <= set(names)
    with _store(tmp_path) as store:
        for name in names:
            ds = load_example(name)
            assert ds.name == name and len(ds) >= 40
            assert ds.description and ds.source == "written for this project"
            pairs, _ = validate_pairs(ds.pairs)
            assert pairs == ds.pairs
            assert len(ds.heldout) == round(0.2 * len(ds)) and load_example(name) == ds
            assert parse_upload(to_jsonl(ds).encode(), f"{name}.jsonl")[0] == ds.pairs
            store.save(ds)
        assert store.names() == sorted(names)
    with pytest.raises(DatasetError, match="No example"):
        load_example("../index")


def test_an_empty_table_says_how_to_add_a_pair(tmp_path, monkeypatch):
    """User-style audit: the new, empty table gave no hint of how to add a row."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STEERING_MODEL", "tiny")
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "dataset_editor.py"),
                           default_timeout=120).run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("0 pairs · 0 train · 0 heldout · click the table's empty row") for c in at.caption)


def test_store_choices_offer_saved_then_examples_and_open_back(tmp_path):
    """Every page's dataset selector reads these labels; a saved dataset named like an example
    opens the saved one, the example label the shipped one."""
    from steering_core.datasets import example_datasets, load_example

    example = example_datasets()[0]
    with DatasetStore(tmp_path / "library.duckdb") as store:
        store.save(ContrastiveDataset(example, _pairs(3)))
        choices = store.choices()
        assert choices == [f"saved: {example}"] + [f"example: {n}" for n in example_datasets()]
        assert store.open_choice(f"saved: {example}").pairs == _pairs(3)
        assert store.open_choice(f"example: {example}") == load_example(example)
        with pytest.raises(DatasetError, match="names no dataset"):
            store.open_choice(example)


def test_incomplete_rows_are_the_ones_saving_would_refuse():
    from steering_core.datasets import incomplete_rows

    rows = [{"positive": "a", "negative": "b"}, {"positive": "c", "negative": "  "}, {"positive": None, "negative": "d"},
            {"positive": "e", "negative": "f", "split": "heldout"}]
    assert incomplete_rows(rows) == [2, 3]
    with pytest.raises(DatasetError, match="row 3. Also found: empty texts"):  # both refused, for their reasons
        validate_pairs(rows)
