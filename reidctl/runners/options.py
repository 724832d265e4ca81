"""Which keyword options a runner takes: one check for every caller.

A runner class declares the options its constructor understands in
:attr:`reidctl.runners.base.Runner.accepted_options`. :func:`check_options` refuses the
others (``Runner.__init__`` calls it, so a typo never passes silently);
:func:`options_for` picks, out of one set of options, those a back end declares, for
commands that run several back ends with one command line (``reidctl bench --threads``);
:func:`check_some_accepts` refuses an option that none of those back ends declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from reidctl.errors import InputError

if TYPE_CHECKING:
    from reidctl.runners.base import Runner


def given_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that are set: ``None`` and ``False`` mean "not given" and are dropped."""
    return {k: v for k, v in options.items() if v is not None and v is not False}


def check_options(cls: type[Runner], options: Mapping[str, Any]) -> dict[str, Any]:
    """The given options of ``options`` (see :func:`given_options`), all declared by ``cls``.

    Raises :class:`InputError` naming the unknown options and listing the valid ones.
    """
    given = given_options(options)
    unknown = sorted(set(given) - set(cls.accepted_options))
    if unknown:
        accepted = ", ".join(cls.accepted_options) or "none"
        raise InputError(
            f"option(s) {', '.join(unknown)} do not apply to back end {cls.name!r} "
            f"(its options: {accepted})"
        )
    return given


def options_for(cls: type[Runner], options: Mapping[str, Any]) -> dict[str, Any]:
    """The given options of ``options`` that ``cls`` declares; the others are left out."""
    return {k: v for k, v in given_options(options).items() if k in cls.accepted_options}


def check_some_accepts(classes: Iterable[type[Runner]], options: Mapping[str, Any]) -> None:
    """Refuse (:class:`InputError`) a given option that none of ``classes`` declares."""
    classes = list(classes)
    known = {o for cls in classes for o in cls.accepted_options}
    unused = sorted(set(given_options(options)) - known)
    if unused:
        names = ", ".join(repr(c.name) for c in classes)
        valid = ", ".join(sorted(known)) or "none"
        raise InputError(
            f"option(s) {', '.join(unused)} apply to none of the back ends {names} "
            f"(their options: {valid})"
        )
