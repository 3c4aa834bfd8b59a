"""Training text for an SAE of a model nobody has released one for: the model's own generations
over a broad prompt grid (topics × instruction styles, through its chat template), optionally mixed
with documentation text that ships with Python itself. Deterministic given a seed, so a rebuilt
pack sees the same text.

Every token carries a *content* flag: the chat template, the system prompt and the synthetic user
prompt are context the model reads, not text it writes, so they are fed through the model (the
response needs them) but left out of SAE training, feature statistics and snippets. Without that,
a feature's top snippets are copies of one prompt ("Give me three facts about weddings.") behind
the same system-prompt text."""

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
    "a wedding anniversary", "a first date", "divorce", "a newborn baby", "grandparents", "a funeral",
    "moving to a new house", "a job promotion", "retirement", "a haunted house", "pirates", "knights",
    "the Olympic games", "tennis", "swimming", "running a marathon", "yoga", "vegetarian food", "chocolate",
    "wine", "a restaurant review", "a hotel stay", "airports", "smartphones", "social media", "email etiquette",
    "cybersecurity", "the internet", "vaccines", "viruses", "bacteria", "dinosaurs", "evolution", "rainforests",
    "earthquakes", "hurricanes", "recycling", "solar power", "nuclear energy", "the economy", "taxes",
    "a small business", "advertising", "a museum visit", "photography", "films", "theatre", "the piano",
    "a rock concert", "libraries", "a science fair", "philosophy", "religion and faith", "democracy", "war",
    "peace", "kindness", "loneliness", "anger", "fear", "happiness", "time travel", "aliens", "magic",
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
    "Write a diary entry about {t}.",
    "Write a dialogue between two people about {t}.",
    "Give step-by-step instructions related to {t}.",
    "Write a persuasive speech about {t}.",
    "Describe {t} in a cheerful tone.",
    "Write an encyclopedia entry about {t}.",
]


def prompt_grid() -> list[str]:
    """Every topic in every style, in a fixed shuffled order: breadth is what gives an SAE features
    worth browsing, and the shuffle spreads a corpus shorter than the grid over every topic and
    style rather than the first topics in all styles."""
    grid = [s.format(t=t) for t in TOPICS for s in STYLES]
    return [grid[i] for i in np.random.default_rng(0).permutation(len(grid))]


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` at ``path`` through a temp file + rename: a kill leaves the old file or the new one."""
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
            docs = [{"prompt": f, "text": t} for f, t in zip(formatted, res.texts)]
            atomic_write_bytes(path, gzip.compress(json.dumps(docs).encode("utf-8")))
            bar.update(1)
    return paths


def read_parts(paths: list[Path]) -> list[tuple[str, str]]:
    """Generated documents as ``(prompt, response)``; parts written before prompts were kept apart
    (plain strings) read as all-content text."""
    docs: list[tuple[str, str]] = []
    for p in paths:
        for d in json.loads(gzip.decompress(p.read_bytes()).decode("utf-8")):
            docs.append((d["prompt"], d["text"]) if isinstance(d, dict) else ("", d))
    return docs


def pack_windows(model: SteerableModel, docs, window: int, max_tokens: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents (EOS between them) and cut the stream into equal windows; returns the
    token windows and a same-shaped content mask (False on prompts, templates and separators)."""
    tok = model.tokenizer
    sep = model.eos_token_id if model.eos_token_id is not None else model.pad_token_id
    stream: list[int] = []
    content: list[bool] = []
    for d in docs:
        context, text = ("", d) if isinstance(d, str) else d
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"] if context else []
        ids = tok(text, add_special_tokens=False)["input_ids"]
        stream.extend(ctx_ids)
        stream.extend(ids)
        stream.append(sep)
        content.extend([False] * len(ctx_ids) + [True] * len(ids) + [False])
        if max_tokens is not None and len(stream) >= max_tokens:
            break
    if max_tokens is not None:
        stream, content = stream[:max_tokens], content[:max_tokens]
    n = len(stream) // window
    return (np.asarray(stream[: n * window], dtype=np.int64).reshape(n, window),
            np.asarray(content[: n * window], dtype=bool).reshape(n, window))


def build_corpus(model: SteerableModel, spec: CorpusSpec, out: Path, seed: int, log_path: Path | None = None,
                 show_bar: bool = True, extra_texts: Callable[[], Iterator[str]] | None = package_texts) -> Path:
    """Write ``corpus.npz`` (token windows, source of each, held-out mask). Idempotent."""
    target = out / "corpus.npz"
    if target.exists():
        return target
    parts = generate_parts(model, spec, out / "parts", seed, log_path, show_bar)
    empty = (np.zeros((0, spec.window), np.int64), np.zeros((0, spec.window), bool))
    gen, gen_c = pack_windows(model, read_parts(parts), spec.window) if parts else empty
    if spec.package_tokens > 0 and extra_texts is not None:
        pkg, pkg_c = pack_windows(model, extra_texts(), spec.window, spec.package_tokens)
    else:
        pkg, pkg_c = empty
    tokens, content = np.concatenate([gen, pkg]), np.concatenate([gen_c, pkg_c])
    source = np.concatenate([np.zeros(len(gen), np.int8), np.ones(len(pkg), np.int8)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))
    tokens, source, content = tokens[order], source[order], content[order]
    n_held = max(1, int(round(len(tokens) * spec.heldout_fraction))) if len(tokens) > 1 else 0
    heldout = np.zeros(len(tokens), bool)
    heldout[len(tokens) - n_held:] = True
    dtype = np.uint16 if model.tokenizer.vocab_size <= 65535 and tokens.max(initial=0) < 65535 else np.int32
    atomic_save_npz(target, tokens=tokens.astype(dtype), source=source, heldout=heldout, content=content)
    return target


@dataclass
class Corpus:
    tokens: np.ndarray  # [windows, window]
    source: np.ndarray  # 0 generated, 1 package text
    heldout: np.ndarray  # bool per window
    content: np.ndarray | None = None  # [windows, window] bool: text the model wrote or read as prose

    def __post_init__(self):
        if self.content is None:  # a corpus from before the mask: every token counts
            self.content = np.ones(self.tokens.shape, dtype=bool)

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        with np.load(path) as z:
            content = z["content"] if "content" in z.files else None
            return cls(z["tokens"].astype(np.int64), z["source"], z["heldout"], content)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)
