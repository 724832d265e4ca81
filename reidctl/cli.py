"""The ``reidctl`` command line: a thin click group.

Each command lives in ``reidctl/commands/<name>.py`` and is imported only when it runs, so
``reidctl eval`` never pays for importing torch and a missing optional back end never breaks
another command. Library errors (:class:`reidctl.errors.ReidctlError`) become a one-line
message on stderr and the error's exit code (2 bad input, 1 bad data).
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from reidctl.errors import ReidctlError

# command name -> (module, attribute, one-line help shown in `reidctl --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("reidctl.commands.demo", "demo", "Run the whole chain on a synthetic or real set."),
    "models": ("reidctl.commands.models", "models", "List the registered models and their facts."),
    "export": ("reidctl.commands.export", "export", "Export a model to ONNX, validated."),
    "preprocess": (
        "reidctl.commands.preprocess",
        "preprocess",
        "Turn a dataset into .bin tensors, an info file and labels.",
    ),
    "convert": (
        "reidctl.commands.convert",
        "convert",
        "Convert a model: TensorRT, Ascend OM, INT8, FP16, OpenVINO IR, Triton repository.",
    ),
    "infer": (
        "reidctl.commands.infer",
        "infer",
        "Run a model over a preprocessed set or over images.",
    ),
    "compare": ("reidctl.commands.compare", "compare", "Compare the features of two runs."),
    "backends": ("reidctl.commands.backends", "backends", "List back ends and their status."),
    "eval": ("reidctl.commands.eval", "eval_cmd", "CMC / mAP / mINP from a result directory."),
    "bench": ("reidctl.commands.bench", "bench", "Throughput and latency by batch size."),
    "index": ("reidctl.commands.index", "index", "Build a FAISS index over gallery features."),
    "adopt": (
        "reidctl.commands.adopt",
        "adopt",
        "Write the facts of a model made elsewhere (sidecar, ONNX metadata).",
    ),
    "inspect": (
        "reidctl.commands.inspect",
        "inspect",
        "Describe a model file or a checkpoint (format, keys, the models it fits).",
    ),
    "search": ("reidctl.commands.index", "search", "Search a FAISS index with query features."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _, _) in COMMANDS.items() if _module_exists(mod))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from reidctl.platform import version_report

    click.echo(version_report())
    ctx.exit()


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run `reidctl COMMAND --help` for a command's options and examples.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version of reidctl and of the packages it runs on, and exit.",
)
def cli() -> None:
    """Export, preprocess, convert, run, evaluate and benchmark person re-identification models.

    \b
    A typical chain:
      reidctl export osnet_x0_25 --weights ckpt.pth -o model.onnx
      reidctl preprocess market1501 --root DATA --model-config model.onnx.json -o prep/
      reidctl infer model.onnx prep/ -o results/
      reidctl eval results/
      reidctl bench model.onnx --bs 1,4,8,16,32
    """


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so ``finally`` blocks clean up, then exit 128 + 15."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="reidctl", standalone_mode=False)
    except ReidctlError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
