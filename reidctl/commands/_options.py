"""Option decorators shared by the commands, so a recurring option is declared once.

Each factory takes the command's own help text (what the option does there) and returns a
click decorator; the option's name, type and parsing are the same in every command:

* :func:`force_option` ``--force`` (flag);
* :func:`threads_option` ``--threads N`` (a positive integer, default: the back end's own);
* :func:`batch_sizes_option` ``--bs 1,4,8`` (the rows of a table, the profile of an engine):
  parsed by :func:`reidctl.parsing.parse_int_list` into a tuple of positive integers;
* :func:`batch_size_option` ``--bs N`` (one batch size);
* :func:`backend_option` ``--backend NAME[,NAME]``;
* :func:`json_path_option` ``--json FILE`` (write a JSON report) and :func:`json_flag_option`
  ``--json`` (print JSON instead of text);
* :func:`connect_timeout_option` ``--connect-timeout S`` (joining a Ray cluster).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from reidctl.errors import InputError
from reidctl.parsing import parse_int_list

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def force_option(help: str) -> Decorator:
    """``--force``: replace what an earlier run wrote."""
    return click.option("--force", is_flag=True, help=help)


def threads_option(help: str) -> Decorator:
    """``--threads N``; ``None`` when not given (the back end's own choice)."""
    return click.option("--threads", type=int, default=None, callback=_positive, help=help)


def streams_option(default: str) -> Decorator:
    """``--streams N`` (ort): batches run at once; ``None`` when not given."""
    return click.option(
        "--streams",
        type=int,
        default=None,
        callback=_positive,
        help="ort: batches run at once, each on threads/N intra-op threads (onnxruntime "
        "runs them concurrently): more throughput, more memory (one set of activations per "
        f"stream); features the same bits for the CNNs measured [default: {default}].",
    )


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def _int_list(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return parse_int_list(value, "the value")
    except InputError as e:
        raise click.BadParameter(str(e)) from None


def batch_sizes_option(default: str, help: str, dest: str = "batch_sizes") -> Decorator:
    """``--bs 1,4,8``: a tuple of positive batch sizes (order kept, duplicates dropped)."""
    return click.option(
        "--bs", dest, default=default, show_default=True, callback=_int_list, help=help
    )


def batch_size_option(default: int, help: str, dest: str = "batch_size") -> Decorator:
    """``--bs N``: one positive batch size."""
    return click.option(
        "--bs", dest, type=int, default=default, show_default=True, callback=_positive, help=help
    )


def backend_option(help: str, default: str | None = None, dest: str = "backend") -> Decorator:
    """``--backend NAME`` (see ``reidctl backends``); a comma-separated list where the
    command measures several (``reidctl bench``)."""
    return click.option(
        "--backend", dest, default=default, show_default=default is not None, help=help
    )


def json_path_option(help: str) -> Decorator:
    """``--json FILE``: also write the figures as JSON there."""
    return click.option("--json", "json_path", type=click.Path(path_type=Path), help=help)


def json_flag_option(help: str) -> Decorator:
    """``--json``: print JSON instead of the text table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def connect_timeout_option() -> Decorator:
    """``--connect-timeout S``: the longest wait for a Ray cluster given by ``--address``."""
    return click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="With --engine ray --address: seconds to wait for the cluster to answer before "
        "giving up (exit code 2).  [default: 30]",
    )
