"""Trained interventions: steering learned by optimisation rather than read off activations.

* :mod:`~steering_core.vectors.trained.loreft`: LoReFT, a rank-r affine edit of a subspace
  ([Wu 2024]; [Purchase 2025] eq. 2.3);
* :mod:`~steering_core.vectors.trained.lorest`: LoReST, gated directions to zero plus a bias
  ([Krasheninnikov 2024]; [Purchase 2025] eq. 2.4);
* :mod:`~steering_core.vectors.trained.bipo`: BiPO, a vector trained through the model with a
  bi-directional preference objective ([Cao 2024]);
* :mod:`~steering_core.vectors.trained.adaptor`: what an adaptor that is not one vector is, and
  the operator with parameters that lets it steer through the ordinary scoped mechanism;
* :mod:`~steering_core.vectors.trained.loop`: the shared config, checks and training loop
  (seeded, progress callback, stop flag, NaN refusal).

All three are registered in :mod:`steering_core.vectors.methods` (``loreft``, ``lorest``,
``bipo``), so pages fit them like any other method.
"""

from steering_core.vectors.trained.adaptor import Adaptor, AdaptorTerm, adaptor_term, bound_adaptor
from steering_core.vectors.trained.bipo import BipoConfig, BipoResult, train_bipo
from steering_core.vectors.trained.loop import TrainConfig, TrainingError, TrainingStopped
from steering_core.vectors.trained.loreft import LoreftConfig, train_loreft
from steering_core.vectors.trained.lorest import LorestConfig, train_lorest

#: The training config of each trained method in the registry (what the Vectors page offers to set).
CONFIGS: dict[str, type[TrainConfig]] = {"loreft": LoreftConfig, "lorest": LorestConfig, "bipo": BipoConfig}


def training_config(method: str, **settings) -> TrainConfig:
    """The config of ``method`` with the given settings (steps, lr, rank …); settings the method has
    no field for are ignored, so one form serves every trained method. Bad values are refused by
    the method when it trains, with its own sentence."""
    import dataclasses

    cls = CONFIGS.get(method)
    if cls is None:
        raise TrainingError(f"{method!r} is not a trained method; trained methods: {', '.join(CONFIGS)}.")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names and v is not None})


__all__ = ["CONFIGS", "training_config", "Adaptor", "AdaptorTerm", "BipoConfig", "BipoResult", "LoreftConfig",
           "LorestConfig", "TrainConfig",
           "TrainingError", "TrainingStopped", "adaptor_term", "bound_adaptor", "train_bipo", "train_loreft",
           "train_lorest"]
