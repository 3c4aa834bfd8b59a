"""The model itself: load it, give it one face, steer it, generate from it, read it with SAEs.

* :mod:`~steering_core.model.backends`: the :class:`Backend` protocol (hook point, forward,
  KV-cached start/step) and its Hugging Face and TransformerLens implementations;
* :mod:`~steering_core.model.steerable`: :class:`SteerableModel`, the object everything else
  takes, and the residual hook names (``hook_name``/``layer_of_hook``);
* :mod:`~steering_core.model.loading`: ``load_model(spec)`` and the loaders behind it;
  :mod:`~steering_core.model.hub` keeps their offline failures fast and plain;
  :mod:`~steering_core.model.tiny`: tiny random models for tests and demos;
* :mod:`~steering_core.model.steering` and :mod:`~steering_core.model.generation`: exact
  residual-stream steering and batched generation under it; :mod:`~steering_core.model.operators`
  names the ways a direction can edit the residual (addition, ACE, ...);
  :mod:`~steering_core.model.hooks` holds the per-block hooks steering and
  :mod:`~steering_core.model.recording` (residuals after chosen blocks) share;
* :mod:`~steering_core.model.saes`: :class:`LoadedSAE`, an ``sae_lens`` SAE tied to a layer;
* :mod:`~steering_core.model.embeddings`: sentence embeddings for search and similarity.
"""
