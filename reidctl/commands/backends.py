"""``reidctl backends``: which back ends can run here, and how to get the others."""

from __future__ import annotations

import click


@click.command()
def backends() -> None:
    """List every back end: available or not, why, its model files and how to install it.

    Availability is probed without loading the back ends (installed packages, GPU or NPU
    driver present); a listed back end can still fail at start-up, e.g. on a CUDA version
    mismatch, with an error that says so.

    \b
    Example:
      reidctl backends
    """
    from reidctl.runners import get_runner, list_runners

    rows = []
    for name in list_runners():
        cls = get_runner(name)
        ok, why = cls.availability()
        rows.append((name, "yes" if ok else "no", ", ".join(cls.suffixes) or "-", why, cls))
    w = max(len(r[0]) for r in rows)
    fw = max(len("files"), *(len(r[2]) for r in rows))
    click.echo(f"{'back end':<{w}}  available  {'files':<{fw}}  status")
    for name, ok, suffixes, why, cls in rows:
        click.echo(f"{name:<{w}}  {ok:<9}  {suffixes:<{fw}}  {why}")
        if ok == "no":
            click.echo(f"{'':<{w}}  {'':<9}  {'':<{fw}}  install: {cls.install_hint}")
