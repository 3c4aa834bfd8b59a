"""Contrastive pair datasets: the pairs every extraction method learns a direction from.

- :mod:`~steering_core.datasets.pairs`: ``Pair``, ``ContrastiveDataset``, validation and limits
- :mod:`~steering_core.datasets.io`: reading uploads (CSV, JSON Lines, JSON), writing CSV/JSONL
- :mod:`~steering_core.datasets.generators`: templates, stories, chat wrapping, heldout split
- :mod:`~steering_core.datasets.store`: ``DatasetStore``, the saved datasets in library.duckdb
- :mod:`~steering_core.datasets.examples`: the datasets shipped with the project

Use it as ``from steering_core import datasets as dsm; dsm.parse_upload(...)``.
"""

from steering_core.datasets.examples import example_datasets, load_example
from steering_core.datasets.generators import from_templates, split_heldout, story_pairs, wrap_chat
from steering_core.datasets.io import MAX_UPLOAD_BYTES, UPLOAD_FORMATS, parse_upload, to_csv, to_jsonl
from steering_core.datasets.pairs import (
    MAX_DESCRIPTION_CHARS,
    MAX_PAIRS,
    MAX_SOURCE_CHARS,
    MAX_TEXT_CHARS,
    MIN_PAIRS_PCA_ACE,
    MIN_PAIRS_PROBE,
    SPLITS,
    ContrastiveDataset,
    Pair,
    drop_duplicates,
    incomplete_rows,
    table_rows,
    validate_name,
    validate_pairs,
)
from steering_core.datasets.store import DatasetStore
from steering_core.errors import DatasetError

__all__ = [
    # pairs and their checks
    "ContrastiveDataset", "DatasetError", "Pair", "SPLITS", "drop_duplicates", "incomplete_rows", "table_rows",
    "validate_name", "validate_pairs",
    # limits
    "MAX_DESCRIPTION_CHARS", "MAX_PAIRS", "MAX_SOURCE_CHARS", "MAX_TEXT_CHARS", "MAX_UPLOAD_BYTES",
    "MIN_PAIRS_PCA_ACE", "MIN_PAIRS_PROBE",
    # files, generators, storage, examples
    "UPLOAD_FORMATS", "parse_upload", "to_csv", "to_jsonl",
    "from_templates", "split_heldout", "story_pairs", "wrap_chat",
    "DatasetStore", "example_datasets", "load_example",
]
