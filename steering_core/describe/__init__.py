"""Words for features: what a feature reads (input side), what it writes (output side), and the
readable label and description built from both (docs/design.md §Feature descriptions).

Modules: ``words`` (which token strings are readable words, names for symbols), ``inputs``
(tokens ranked by specificity, context words, near-duplicate snippet keys), ``labels`` (label and
description from both sides)."""
