"""Feature packs: for one (model, SAE), every feature's statistics and measured steering effects,
built once by a resumable pipeline and read by the app.

Modules: ``config`` (the TOML settings), ``stages`` (the pipeline, one ``@stage`` function per
step, in an order derived from what each needs; ``registry`` derives it), ``builder`` (runs the
stages and resumes), ``tables`` (the build's SQL), ``cli`` (``python -m steering_core.pack``),
``corpus``, ``sae_training``, ``stats`` and ``maps`` (the work of single stages), and ``reader``
(opening a finished pack). Import from the modules; this package imports nothing, so reading a
pack does not load the build's dependencies."""
