"""The durability modes an append may ask for, weakest first, and their order.

`none` writes before returning (survives a crash of the process), `batch` also
has a background fsync every `sync_interval`, `always` returns only once a
fsync covers the record (group commit). A call may ask for a stronger mode
than the log's; never a weaker one.
"""

from __future__ import annotations

from ..errors import InvalidArgument

SYNC_MODES = ("none", "batch", "always")
_STRENGTH = {m: i for i, m in enumerate(SYNC_MODES)}


def stronger(a: str, b: str | None) -> str:
    """The stronger of two durability modes (None means "no preference")."""
    if b is None:
        return a
    if b not in _STRENGTH:
        raise InvalidArgument(f"sync must be one of {SYNC_MODES}, not {b!r}")
    return a if _STRENGTH[a] >= _STRENGTH[b] else b
