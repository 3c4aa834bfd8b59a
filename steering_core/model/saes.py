"""Sparse autoencoders, loaded through ``sae_lens`` and tied to a model layer.

An SAE reads the residual stream at one hook; here that hook is always translated to "the
output of block l" so an SAE trained on ``blocks.8.hook_resid_pre`` steers and measures at
layer 7. Decoder rows are the natural steering directions for features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steering_core.errors import ModelLoadError, SAELoadError
from steering_core.model.steerable import SteerableModel, hook_name, layer_of_hook

if TYPE_CHECKING:
    from sae_lens import SAE


@dataclass
class LoadedSAE:
    """An ``sae_lens`` SAE plus where it lives in the model.

    Callers read the weights and sizes from here (``W_dec``, ``W_enc``, ``b_dec``, ``b_enc``,
    ``d_sae``, ``d_in``, ``dtype``, ``device``), never through ``.sae``, so that what a "loaded
    SAE" offers is stated in one place; ``.sae`` is for handing the module back to sae_lens.
    """

    sae: SAE  # the sae_lens module itself
    layer: int  # block whose output the SAE reads
    hook_name: str  # as the SAE names it
    source: str  # folder path, or "release/id"

    @property
    def W_dec(self) -> torch.Tensor:
        """Decoder ``[d_sae, d_in]``: row ``i`` is feature ``i``'s direction (the live parameter)."""
        return self.sae.W_dec

    @property
    def W_enc(self) -> torch.Tensor:
        """Encoder ``[d_in, d_sae]`` (the live parameter)."""
        return self.sae.W_enc

    @property
    def b_dec(self) -> torch.Tensor | None:
        """Decoder bias ``[d_in]``, or ``None`` for architectures without one."""
        return getattr(self.sae, "b_dec", None)

    @property
    def b_enc(self) -> torch.Tensor | None:
        """Encoder bias ``[d_sae]``, or ``None`` for architectures without one."""
        return getattr(self.sae, "b_enc", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.sae.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def architecture(self) -> str:
        arch = getattr(self.sae.cfg, "architecture", None)
        return arch() if callable(arch) else str(arch or type(self.sae).__name__)

    def encode(self, acts: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` for residuals ``[..., d_in]``."""
        with torch.no_grad():
            return self.sae.encode(acts.to(self.dtype))

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.sae.decode(feats.to(self.dtype))

    def check_feature(self, feature_id: Any) -> int:
        """Validate a feature id typed by a person; returns it as an int."""
        try:
            fid = int(str(feature_id).strip())
        except (TypeError, ValueError):
            raise SAELoadError(f"Feature id must be a whole number, got {feature_id!r}.") from None
        if not 0 <= fid < self.d_sae:
            raise SAELoadError(f"Feature {fid} does not exist: this SAE has features 0 to {self.d_sae - 1}.")
        return fid

    def decoder_direction(self, feature_id: Any, normalize: bool = True) -> torch.Tensor:
        """Decoder row of a feature (unit norm by default, so α keeps its meaning)."""
        row = self.W_dec[self.check_feature(feature_id)].detach().float().clone()
        return row / row.norm().clamp_min(1e-12) if normalize else row

    def describe(self) -> dict[str, Any]:
        return {
            "SAE": self.source,
            "hook point": self.hook_name,
            "layer (block output)": self.layer,
            "d_sae": self.d_sae,
            "architecture": self.architecture,
        }


def _hook_of(sae: SAE) -> str:
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) if meta is not None else None
    if name is None:
        name = getattr(sae.cfg, "hook_name", None)
    if not name:
        raise SAELoadError("The SAE does not record which hook it was trained on (cfg.metadata.hook_name).")
    return str(name)


def attach(sae: SAE, model: SteerableModel | None = None, source: str = "memory") -> LoadedSAE:
    """Tie an ``sae_lens`` SAE to a model, checking that its width and hook fit."""
    name = _hook_of(sae)
    try:
        layer = layer_of_hook(name, model.n_layers if model is not None else None)
    except ModelLoadError as exc:
        raise SAELoadError(f"SAE {source}: {exc}") from None
    if model is not None and int(sae.cfg.d_in) != model.d_model:
        raise SAELoadError(
            f"SAE {source} reads vectors of length {sae.cfg.d_in}, but {model.name} has d_model {model.d_model}: "
            "it was trained on a different model."
        )
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return LoadedSAE(sae=sae, layer=layer, hook_name=name, source=source)


def load_sae_from_disk(path: str | Path, model: SteerableModel | None = None) -> LoadedSAE:
    """An SAE saved in ``sae_lens`` disk format (``cfg.json`` + ``sae_weights.safetensors``)."""
    from sae_lens import SAE

    path = Path(path)
    if not (path / "cfg.json").is_file():
        raise SAELoadError(f"{path} is not an sae_lens SAE folder (no cfg.json).")
    try:
        sae = SAE.load_from_disk(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise SAELoadError(f"Could not read the SAE in {path}: {type(exc).__name__}: {exc}") from exc
    return attach(sae, model, source=str(path))


def load_pretrained_sae(release: str, sae_id: str, model: SteerableModel | None = None) -> LoadedSAE:
    """A pretrained ``sae_lens`` SAE by release and id (needs the hub the first time)."""
    from sae_lens import SAE

    release, sae_id = (release or "").strip(), (sae_id or "").strip()
    if not release or not sae_id:
        raise SAELoadError("Give both an sae_lens release (e.g. gpt2-small-res-jb) and an SAE id.")
    from steering_core.model.hub import hub_offline_if_unreachable

    try:
        with hub_offline_if_unreachable():
            sae = SAE.from_pretrained(release, sae_id, device="cpu")
        if isinstance(sae, tuple):  # older sae_lens returned (sae, cfg, sparsity)
            sae = sae[0]
    except Exception as exc:  # noqa: BLE001
        text = f"{type(exc).__name__}: {exc}"
        if any(k in text for k in ("Connection", "offline", "Offline", "LocalEntryNotFound", "resolve", "Max retries",
                                   "cannot find the requested files", "outgoing traffic has been disabled")):
            msg = (f"Could not load SAE {release}/{sae_id}: it is not on this machine and the Hugging Face hub "
                   "cannot be reached (offline). Connect once to download it, or use the embedded SAE.")
        else:
            msg = f"Could not load SAE {release}/{sae_id}: {text.splitlines()[0][:300]}"
        raise SAELoadError(msg) from exc
    return attach(sae, model, source=f"{release}/{sae_id}")


def model_kwargs_of(release: str, sae_id: str) -> dict[str, Any]:
    """The ``HookedTransformer.from_pretrained`` kwargs an SAE was trained with (weight processing
    changes the residual stream, so a model must be loaded the same way)."""
    sae = load_pretrained_sae(release, sae_id).sae
    meta = getattr(sae.cfg, "metadata", None)
    return dict(getattr(meta, "model_from_pretrained_kwargs", None) or {})


def tiny_sae(model: SteerableModel, layer: int | None = None, d_sae: int = 128, seed: int = 0,
             k: int | None = None) -> LoadedSAE:
    """A random SAE (standard ReLU, or TopK when ``k`` is given) for tests and demos."""
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    layer = model.default_layer if layer is None else layer
    meta = SAEMetadata(hook_name=hook_name(layer), model_name=model.name)
    if k is None:
        sae = StandardSAE(StandardSAEConfig(d_in=model.d_model, d_sae=d_sae, metadata=meta))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=model.d_model, d_sae=d_sae, k=k, metadata=meta))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(d_sae, model.d_model, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return attach(sae, model, source=f"tiny-random-{d_sae}")


def save_sae(loaded: LoadedSAE, path: str | Path) -> Path:
    """Write in ``sae_lens`` disk format (so ``load_sae_from_disk`` and sae_lens itself read it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    loaded.sae.save_model(str(path))
    cfg = json.loads((path / "cfg.json").read_text())
    if "hook_name" not in json.dumps(cfg):
        raise SAELoadError("sae_lens did not record the hook name; refusing to write an SAE that cannot be reattached.")
    return path


def load_sae(spec: str | None, model: SteerableModel | None = None) -> LoadedSAE | None:
    """Load an SAE from a short spec: ``None``/``""`` (none), ``tiny`` (random, for demos),
    a folder path in ``sae_lens`` disk format, or ``release/id`` / ``release:id`` (pretrained)."""
    spec = (spec or "").strip()
    if not spec or spec == "none":
        return None
    if spec == "tiny":
        if model is None:
            raise SAELoadError("A tiny random SAE needs the model it should fit.")
        return tiny_sae(model)
    if Path(spec).expanduser().is_dir():
        return load_sae_from_disk(Path(spec).expanduser(), model)
    if ":" in spec:
        release, sae_id = spec.split(":", 1)
        return load_pretrained_sae(release, sae_id, model)
    if "/" in spec and not spec.startswith(("/", ".", "~")):
        release, sae_id = spec.split("/", 1)
        return load_pretrained_sae(release, sae_id, model)
    raise SAELoadError(f"{spec!r} is neither an SAE folder on this machine nor a release:id pair.")
