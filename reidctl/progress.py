"""Progress bars only where someone watches them.

Every tqdm bar passes ``disable=bar_disable(progress)``: off when the caller did not ask for
progress, and off when stderr is not a terminal (tqdm's ``disable=None``), so logs and CI
output never fill with ``\\r``-redrawn frames.
"""

from __future__ import annotations


def bar_disable(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar shown when ``progress`` is asked for: ``True`` (off)
    without it, else ``None`` (on only when the bar's stream is a terminal)."""
    return None if progress else True
