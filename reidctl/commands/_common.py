"""Helpers shared by the command modules (printing only; no library logic here)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Show library warnings as one ``warning: ...`` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                msg = str(w.message)
                if msg in seen or issubclass(w.category, DeprecationWarning | FutureWarning):
                    continue
                seen.add(msg)
                click.secho(f"warning: {msg}", fg="yellow", err=True)
