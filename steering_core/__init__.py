"""steering_core: load a model, steer it exactly, generate, and measure what vectors do.

Reads as prose::

    from steering_core import load_model, steer, generate, GenerationConfig
    model = load_model()                         # embedded SmolLM2-135M-Instruct, offline
    v = random_unit_vector(model.d_model)
    with steer(model, [(15, v, 8.0)]):
        print(generate(model, "I think", GenerationConfig(greedy=True)).texts[0])
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
from steering_core.model.loading import SteerableModel, hook_name, layer_of_hook, load_model, tiny_model
from steering_core.model.steering import (
    Steering,
    SteeringTerm,
    make_term,
    random_unit_vector,
    record_residuals,
    steer,
    steering,
)

__all__ = [
    "GenerationConfig", "GenerationError", "GenerationResult", "GenerationStep", "ModelLoadError",
    "SAELoadError", "SteerableModel", "Steering", "SteeringCoreError", "SteeringError", "SteeringTerm",
    "VectorFileError", "generate", "hook_name", "layer_of_hook", "load_model", "make_term",
    "random_unit_vector", "record_residuals", "steer", "steering", "stream", "tiny_model",
]
