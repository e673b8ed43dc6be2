"""`new_tuple(Cls, fields)`: a fast constructor shared by every layer (a leaf: imports nothing)."""

new_tuple = tuple.__new__
"""`new_tuple(Cls, fields)` builds NamedTuple `Cls` from a tuple of its fields, without its
generated `__new__` (a Python-level call with one argument per field): about twice as fast on
paths that build a tuple per record. The fields must be in order and complete."""
