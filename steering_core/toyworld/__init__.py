"""The "steering clear" toy world ([Purchase 2025] §3.1 after [Krasheninnikov 2024];
docs/references.md): a problem whose right answer is known, so steering methods can be compared by
how often they actually make the model predict the value asked for.

* :mod:`~steering_core.toyworld.data`: the synthetic attribute dataset (m attributes × 8 values);
* :mod:`~steering_core.toyworld.mlp`: the residual GeLU MLP that is steered, and its pre-training;
* :mod:`~steering_core.toyworld.steer`: the task "steer attribute k to value μ₁" and its score;
* :mod:`~steering_core.toyworld.adapt`: the project's method and operator registries on toy
  activations, and callable edits for interventions that are not a vector;
* :mod:`~steering_core.toyworld.curves`: accuracy against the number of steering examples;
* :mod:`~steering_core.toyworld.figure`: the curves as a PNG.

``python -m steering_core.toyworld --help`` runs it all from the command line.
"""

from steering_core.toyworld.adapt import ActivationSpace, Edit, EditMethod, edit_from_fit, fit_edit, steering_methods
from steering_core.toyworld.curves import CurveConfig, CurvePoint, CurveResult, example_counts, load_json, run_curves
from steering_core.toyworld.data import ToyWorldError, World, WorldConfig, make_dataset, make_world
from steering_core.toyworld.mlp import ToyMLP, TrainConfig, TrainedModel, train_mlp
from steering_core.toyworld.steer import SteeringSplit, SteeringTask, SteerScore, make_split, steered_accuracy

__all__ = ["ActivationSpace", "CurveConfig", "CurvePoint", "CurveResult", "Edit", "EditMethod", "SteerScore",
           "SteeringSplit", "SteeringTask", "ToyMLP", "ToyWorldError", "TrainConfig", "TrainedModel", "World",
           "WorldConfig", "edit_from_fit", "example_counts", "fit_edit", "load_json", "make_dataset", "make_split",
           "make_world", "run_curves", "steered_accuracy", "steering_methods", "train_mlp"]
