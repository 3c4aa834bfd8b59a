"""Training text for an SAE of a model nobody has released one for: the model's own generations
over a broad prompt grid (topics × instruction styles, through its chat template), optionally mixed
with documentation text that ships with Python itself. Deterministic given a seed, so a rebuilt
pack sees the same text."""

from __future__ import annotations

import ast
import gzip
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from steering_core.model.generation import GenerationConfig, generate
from steering_core.progress import Progress

if TYPE_CHECKING:
    from steering_core.model.steerable import SteerableModel

TOPICS = [
    "weddings", "the city of London", "Paris", "cooking pasta", "baking bread", "football", "the ocean",
    "volcanoes", "space travel", "black holes", "ancient Rome", "the French Revolution", "medieval castles",
    "dogs", "cats", "birds", "gardening", "climate change", "electric cars", "trains", "airplanes",
    "programming in Python", "databases", "machine learning", "the stock market", "personal finance",
    "job interviews", "friendship", "a broken heart", "grief", "a birthday party", "Christmas", "music",
    "jazz", "painting", "poetry", "chess", "video games", "mountains", "deserts", "rain", "winter",
    "coffee", "tea", "health and exercise", "sleep", "hospitals", "law and courts", "elections",
    "a detective story", "a ghost", "dragons", "robots", "the moon", "farming", "fashion", "shoes",
    "a road trip", "school exams", "mathematics", "chemistry", "the human brain", "insects", "fishing",
]

STYLES = [
    "Write a short story about {t}.",
    "Explain {t} to a ten-year-old.",
    "Write a news report about {t}.",
    "Give me three facts about {t}.",
    "Write a formal letter about {t}.",
    "Write a casual text message to a friend about {t}.",
    "What are the pros and cons of {t}?",
    "Write a poem about {t}.",
    "Describe {t} in an angry tone.",
    "Write a product review related to {t}.",
    "Tell me a joke about {t}.",
    "Summarize the history of {t}.",
]


def prompt_grid() -> list[str]:
    """Every topic in every style: breadth is what gives an SAE features worth browsing."""
    return [s.format(t=t) for t in TOPICS for s in STYLES]


#: Installed (pinned) packages whose docstrings add prose after CPython's own documentation.
DOC_PACKAGES = ["sklearn", "pandas", "scipy", "numpy"]


def _docstrings(files) -> Iterator[str]:
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 300:
                    yield doc


def package_texts() -> Iterator[str]:
    """Documentation prose that ships with CPython (the pydoc topic pages and stdlib docstrings)
    and with pinned packages, read without importing anything and in a fixed order, so the mix is
    the same on every machine with the same requirements."""
    try:
        from pydoc_data.topics import topics
    except Exception:  # pragma: no cover - stripped Python
        topics = {}
    for key in sorted(topics):
        text = topics[key].strip()
        if len(text) > 200:
            yield text
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    yield from _docstrings(sorted(stdlib.glob("*.py")))
    import importlib.util

    for name in DOC_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        files = sorted(p for p in root.rglob("*.py") if "tests" not in p.parts)
        yield from _docstrings(files)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed through a temp file + rename: a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class CorpusSpec:
    generated_tokens: int = 300_000
    package_tokens: int = 300_000
    window: int = 128
    gen_batch: int = 128
    gen_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 50
    heldout_fraction: float = 0.05


def generate_parts(model: SteerableModel, spec: CorpusSpec, out: Path, seed: int, log_path: Path | None = None,
                   show_bar: bool = True) -> list[Path]:
    """Generate the model-written part in numbered gzip parts; parts already on disk are kept,
    so a killed build resumes at the first missing part with the same prompts and seeds."""
    out.mkdir(parents=True, exist_ok=True)
    grid = prompt_grid()
    per_batch = spec.gen_batch * spec.gen_new_tokens
    n_parts = 0 if spec.generated_tokens <= 0 else max(1, -(-spec.generated_tokens // per_batch))
    paths = [out / f"gen_{i:05d}.json.gz" for i in range(n_parts)]
    done = sum(p.exists() for p in paths)
    cfg = GenerationConfig(max_new_tokens=spec.gen_new_tokens, temperature=spec.temperature,
                           top_k=spec.top_k, seed=0, stop_at_eos=True)
    with Progress(n_parts, "corpus", initial=done, log_path=log_path, show_bar=show_bar) as bar:
        for i, path in enumerate(paths):
            if path.exists():
                continue
            rows = [(i * spec.gen_batch + r) for r in range(spec.gen_batch)]
            prompts = [grid[r % len(grid)] for r in rows]
            formatted = [model.format_prompt(p, chat=True) for p in prompts]
            seeds = [seed * 1_000_003 + r for r in rows]
            res = generate(model, formatted, cfg, row_seeds=seeds)
            docs = [f + t for f, t in zip(formatted, res.texts)]
            _atomic_write_bytes(path, gzip.compress(json.dumps(docs).encode("utf-8")))
            bar.update(1)
    return paths


def read_parts(paths: list[Path]) -> list[str]:
    docs: list[str] = []
    for p in paths:
        docs.extend(json.loads(gzip.decompress(p.read_bytes()).decode("utf-8")))
    return docs


def pack_windows(model: SteerableModel, docs, window: int, max_tokens: int | None = None) -> np.ndarray:
    """Concatenate documents (EOS between them) and cut the stream into equal windows."""
    tok = model.tokenizer
    sep = model.eos_token_id if model.eos_token_id is not None else model.pad_token_id
    stream: list[int] = []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        stream.append(sep)
        if max_tokens is not None and len(stream) >= max_tokens:
            break
    if max_tokens is not None:
        stream = stream[:max_tokens]
    n = len(stream) // window
    return np.asarray(stream[: n * window], dtype=np.int64).reshape(n, window)


def build_corpus(model: SteerableModel, spec: CorpusSpec, out: Path, seed: int, log_path: Path | None = None,
                 show_bar: bool = True, extra_texts: Callable[[], Iterator[str]] | None = package_texts) -> Path:
    """Write ``corpus.npz`` (token windows, source of each, held-out mask). Idempotent."""
    target = out / "corpus.npz"
    if target.exists():
        return target
    parts = generate_parts(model, spec, out / "parts", seed, log_path, show_bar)
    gen = pack_windows(model, read_parts(parts), spec.window) if parts else np.zeros((0, spec.window), np.int64)
    if spec.package_tokens > 0 and extra_texts is not None:
        pkg = pack_windows(model, extra_texts(), spec.window, spec.package_tokens)
    else:
        pkg = np.zeros((0, spec.window), np.int64)
    tokens = np.concatenate([gen, pkg])
    source = np.concatenate([np.zeros(len(gen), np.int8), np.ones(len(pkg), np.int8)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))
    tokens, source = tokens[order], source[order]
    n_held = max(1, int(round(len(tokens) * spec.heldout_fraction))) if len(tokens) > 1 else 0
    heldout = np.zeros(len(tokens), bool)
    heldout[len(tokens) - n_held:] = True
    dtype = np.uint16 if model.tokenizer.vocab_size <= 65535 and tokens.max(initial=0) < 65535 else np.int32
    atomic_save_npz(target, tokens=tokens.astype(dtype), source=source, heldout=heldout)
    return target


@dataclass
class Corpus:
    tokens: np.ndarray  # [windows, window]
    source: np.ndarray  # 0 generated, 1 package text
    heldout: np.ndarray  # bool per window

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        with np.load(path) as z:
            return cls(z["tokens"].astype(np.int64), z["source"], z["heldout"])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)
