"""The datasets shipped with the project (``datasets/examples/*.jsonl`` and ``index.json``), so a
first session can fit and evaluate a vector without writing pairs."""

from __future__ import annotations

import json
from pathlib import Path

from steering_core.datasets.generators import split_heldout
from steering_core.datasets.io import parse_upload
from steering_core.datasets.pairs import ContrastiveDataset
from steering_core.errors import DatasetError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def _example_index() -> dict[str, dict[str, str]]:
    path = EXAMPLES_DIR / "index.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def example_datasets() -> list[str]:
    """Names of the datasets shipped with the project, so a first session can fit a vector
    without writing pairs."""
    return sorted(n for n in _example_index() if (EXAMPLES_DIR / f"{n}.jsonl").is_file())


def load_example(name: str) -> ContrastiveDataset:
    """A shipped example, validated like an upload, with a deterministic 20% heldout split so the
    evaluation numbers shown for it are reproducible."""
    names = example_datasets()
    if name not in names:
        raise DatasetError(f"No example dataset is named {name!r}; examples: {', '.join(names) or 'none'}.")
    info = _example_index()[name]
    path = EXAMPLES_DIR / f"{name}.jsonl"
    pairs, _ = parse_upload(path.read_bytes(), path.name)
    return ContrastiveDataset(name, split_heldout(pairs, 0.2, seed=0), info.get("description", ""),
                              info.get("source", ""))
