"""Steering vectors: the object, its files, the user's library of them, and how they are fitted.

* :mod:`~steering_core.vectors.vector`: :class:`SteeringVector` (direction, layer, operator,
  provenance) and its arithmetic (:func:`combine`);
* :mod:`~steering_core.vectors.uploads`: reading vector files from outside safely (size limit,
  no unpickling) and single-tensor uploads;
* :mod:`~steering_core.vectors.safetensors_format` and :mod:`~steering_core.vectors.gguf_format`:
  the library's own files and llama.cpp / repeng control vectors;
* :mod:`~steering_core.vectors.store`: :class:`VectorStore`, the saved vectors;
* :mod:`~steering_core.vectors.methods`, :mod:`~steering_core.vectors.extraction`,
  :mod:`~steering_core.vectors.fitting`, :mod:`~steering_core.vectors.evaluation`,
  :mod:`~steering_core.vectors.pair_efficiency`: fitting vectors from contrastive pairs and judging them.

How a vector is applied (addition, ACE, ...) is the operator registry's job,
:mod:`steering_core.model.operators`.
"""

from steering_core.errors import VectorError, VectorFileError
from steering_core.vectors.gguf_format import export_gguf, gguf_bytes, import_gguf
from steering_core.vectors.safetensors_format import from_safetensors_bytes, to_safetensors_bytes
from steering_core.vectors.store import VectorStore
from steering_core.vectors.uploads import MAX_VECTOR_FILE_BYTES, check_vector, read_vector_bytes
from steering_core.vectors.vector import SteeringVector, combine

__all__ = ["MAX_VECTOR_FILE_BYTES", "SteeringVector", "VectorError", "VectorFileError", "VectorStore", "check_vector",
           "combine", "export_gguf", "from_safetensors_bytes", "gguf_bytes", "import_gguf", "read_vector_bytes",
           "to_safetensors_bytes"]
