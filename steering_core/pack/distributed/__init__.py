"""Where the expensive chunked work of a pack build runs: in the build's process, or on Ray workers.

* ``work``: one chunk of an effect-style stage as a pure function of a loaded model and SAE
  (:func:`~steering_core.pack.distributed.work.measure_chunk`), and the device helpers it needs;
* ``executor``: the executor abstraction the effect stages call (results in chunk order, so the
  builder stays the only, ordered writer of the build database) and the local executor;
* ``ray_pool``: the Ray executor (workers that load the model and SAE once and take chunks; a
  dead worker's chunks are retried). Ray is imported only when a build asks for it.

Import from the modules; this package imports nothing."""
