"""Typed exceptions: every bad input the library can see maps to one of these.

The app catches ``SteeringCoreError`` and shows its message; anything else is a bug.
All subclass ``ValueError`` so callers that only know Python's conventions still catch them.
"""


class SteeringCoreError(ValueError):
    """Base class: a message written for the person who typed the input."""


class ModelLoadError(SteeringCoreError):
    """The requested model could not be loaded (offline, unknown name, missing package)."""


class SAELoadError(SteeringCoreError):
    """The requested SAE could not be loaded, or does not fit the model."""


class SteeringError(SteeringCoreError):
    """A steering vector, alpha or layer that cannot be applied to this model."""


class GenerationError(SteeringCoreError):
    """A prompt or generation setting that cannot be honoured."""


class VectorFileError(SteeringCoreError):
    """An uploaded or saved vector file that is not a safe, readable tensor file."""


class VectorError(SteeringCoreError):
    """A steering vector, vector file or saved vector that cannot be used as given."""


class DatasetError(SteeringCoreError):
    """Pairs, a file or a dataset name that cannot be used as given."""


class FeatureLookupError(SteeringCoreError):
    """An unknown feature id, or a feature pack that lacks what was asked for."""
