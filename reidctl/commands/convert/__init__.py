"""``reidctl convert``: a group whose subcommands live in ``reidctl.commands.convert.<kind>``.

Each is a thin click layer over the library function in ``reidctl.convert.<kind>``.

Each module defines a click command named ``command``; it is imported only when that
subcommand runs (or its help is shown), so ``reidctl convert om --dry-run`` never imports
TensorRT. Adding a conversion: write the module, add one line to ``CONVERSIONS``.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

# subcommand -> (module holding `command`, one-line help for `reidctl convert --help`)
CONVERSIONS: dict[str, tuple[str, str]] = {
    "trt": ("reidctl.commands.convert.trt", "ONNX -> TensorRT engine (one optimisation profile)."),
    "om": ("reidctl.commands.convert.om", "ONNX -> Ascend OM via ATC (dynamic batch gears)."),
    "int8": ("reidctl.commands.convert.int8", "ONNX -> INT8 ONNX (static QDQ, calibrated)."),
    "openvino": ("reidctl.commands.convert.openvino", "ONNX -> OpenVINO IR (.xml + .bin)."),
    "fp16": ("reidctl.commands.convert.fp16", "ONNX -> float16 ONNX (overflow-prone ops FP32)."),
    "triton": ("reidctl.commands.convert.triton", "Model -> Triton model repository."),
}


class ConversionGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in CONVERSIONS.items() if importlib.util.find_spec(mod))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        return importlib.import_module(CONVERSIONS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, CONVERSIONS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Conversions"):
                formatter.write_dl(rows)


@click.group(cls=ConversionGroup)
def convert() -> None:
    """Convert an ONNX model (with its sidecar) for another runtime.

    Every converted file gets its own sidecar (<output>.json) carrying the ONNX sidecar's
    facts forward plus what the conversion did.

    \b
    Examples:
      reidctl convert trt osnet.onnx -o osnet.engine --bs 1,4,8,16,32 --fp16
      reidctl convert om osnet.onnx -o osnet --soc Ascend310P3 --bs 1,4,8,16,32
      reidctl convert openvino osnet.onnx -o osnet.xml
      reidctl convert fp16 osnet.onnx -o osnet.fp16.onnx --data prep/
      reidctl convert triton osnet.onnx -o model_repository/ --name osnet
    """
