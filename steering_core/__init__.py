"""steering_core: load a model, steer it exactly, generate, and measure what vectors do.

Reads as prose::

    from steering_core import load_model, steer, generate, GenerationConfig
    model = load_model()                         # embedded SmolLM2-135M-Instruct, offline
    v = random_unit_vector(model.d_model)
    with steer(model, [(15, v, 8.0)]):
        print(generate(model, "I think", GenerationConfig(greedy=True)).texts[0])

Architecture, one subpackage per concept::

    errors, names, progress   plain errors and helpers shared by all
    model/      SteerableModel (one face over HF / TransformerLens backends), loading, steering
                hooks, generation, LoadedSAE (sae_lens SAEs tied to a layer), embeddings
    storage/    DuckDB store, presets, crash points
    datasets/   contrastive prompt pairs (shipped examples and the user's own)
    vectors/    steering vectors: fitting methods, extraction, evaluation, the Vector file format
    measure/    what a vector does: alpha scale, effects on SAE features, sweeps, judges
    pack/       feature packs: build (SAE, statistics, effect approximator) and read them
    browse/     exploring a pack's features, and the user's notes on them

``model/`` depends on nothing but the shared helpers, and everything else takes its
``SteerableModel`` and ``LoadedSAE``; ``storage/`` depends only on ``model/``.
The Streamlit app (``app.py``, ``ui/``, ``pages/``) sits on top and holds no maths.
"""

from steering_core.errors import (
    GenerationError,
    ModelLoadError,
    SAELoadError,
    SteeringCoreError,
    SteeringError,
    VectorFileError,
)
from steering_core.model.generation import GenerationConfig, GenerationResult, GenerationStep, generate, stream
from steering_core.model.loading import load_model
from steering_core.model.recording import record_residuals
from steering_core.model.steerable import SteerableModel, hook_name, layer_of_hook
from steering_core.model.steering import Steering, SteeringTerm, make_term, random_unit_vector, steer, steering
from steering_core.model.tiny import tiny_model

__all__ = [
    "GenerationConfig", "GenerationError", "GenerationResult", "GenerationStep", "ModelLoadError",
    "SAELoadError", "SteerableModel", "Steering", "SteeringCoreError", "SteeringError", "SteeringTerm",
    "VectorFileError", "generate", "hook_name", "layer_of_hook", "load_model", "make_term",
    "random_unit_vector", "record_residuals", "steer", "steering", "stream", "tiny_model",
]
