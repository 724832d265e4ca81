"""Parsers of the comma-separated values that options and settings take."""

from __future__ import annotations

from collections.abc import Sequence

from reidctl.errors import InputError


def parse_int_list(
    value: str | Sequence[int], what: str = "batch sizes", *, sort: bool = False
) -> tuple[int, ...]:
    """``"1,4,8"`` (or a sequence of ints) -> ``(1, 4, 8)``: positive integers, duplicates
    dropped, in the given order (ascending with ``sort``).

    ``what`` names the value in the :class:`InputError` raised for anything else (an empty
    list, a non-integer, zero or a negative number), e.g. ``"--bs"``.
    """
    try:
        if isinstance(value, str):
            items = [int(v) for v in value.split(",") if v.strip()]
        else:
            items = [int(v) for v in value]
    except (TypeError, ValueError):
        items = []
    if not items or any(i < 1 for i in items):
        raise InputError(
            f"{what} must be comma-separated positive integers such as 1,4,8,16,32; got {value!r}"
        )
    unique = tuple(dict.fromkeys(items))
    return tuple(sorted(unique)) if sort else unique
