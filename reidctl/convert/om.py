"""ONNX -> Ascend OM with ATC, the CANN model converter.

The ``atc`` argv is built here (as a list: it is run without a shell) from the ONNX graph:
``--framework=5`` (ONNX), ``--input_shape`` with batch ``-1`` plus ``--dynamic_batch_size``
(the batch gears the OM model accepts), or one fixed batch with ``static``. ``--out_nodes``
names, for every graph output in order, the node that produces it and that node's output
index (``node:index``; ATC's syntax), read from the graph rather than hard-coded, so the OM
model keeps the ONNX outputs and their order whatever the exporter named the nodes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidctl.artifacts import sidecar_path
from reidctl.errors import (
    BackendUnavailableError,
    BadDataError,
    FormatError,
    InputError,
)
from reidctl.io import refuse_existing, sha256_file
from reidctl.runners.batching import parse_batch_sizes
from reidctl.runners.facts import source_facts

ATC_HINT = (
    "install the CANN toolkit and load its environment (`source "
    "/usr/local/Ascend/ascend-toolkit/set_env.sh`) so that `atc` is on PATH; --dry-run prints "
    "the command to run elsewhere"
)
MAX_GEARS = 100  # ATC accepts at most 100 dynamic batch gears


def out_nodes_from_onnx(onnx_file: str | os.PathLike[str]) -> list[str]:
    """``node:index`` for each graph output, in graph output order (ATC ``--out_nodes``)."""
    import onnx

    try:
        graph = onnx.load(str(onnx_file), load_external_data=False).graph
    except Exception as e:  # protobuf decode errors have no common public base class
        raise FormatError(f"cannot read the ONNX file {onnx_file}: {e}") from e
    producer = {}
    for node in graph.node:
        for i, name in enumerate(node.output):
            producer[name] = (node.name, i)
    nodes = []
    for out in graph.output:
        if out.name not in producer:
            raise FormatError(
                f"graph output {out.name!r} of {onnx_file} is not produced by a node (it is an "
                "input or a constant); ATC cannot select it with --out_nodes"
            )
        node_name, index = producer[out.name]
        if not node_name:
            raise FormatError(
                f"the node producing output {out.name!r} of {onnx_file} has no name, which "
                "--out_nodes needs; re-export with reidctl export (or name the nodes)"
            )
        nodes.append(f"{node_name}:{index}")
    return nodes


def atc_command(
    onnx_file: str | os.PathLike[str],
    output_prefix: str | os.PathLike[str],
    *,
    soc: str,
    input_name: str,
    chw: Sequence[int],
    batch_sizes: Sequence[int],
    out_nodes: Sequence[str],
    static: bool = False,
    input_format: str = "NCHW",
) -> list[str]:
    """The ``atc`` argv. ``output_prefix`` has no ``.om`` (ATC appends it).

    Dynamic (default): ``--input_shape=<input>:-1,C,H,W --dynamic_batch_size=b1,b2,...``;
    ``static``: one batch size, ``--input_shape=<input>:B,C,H,W``.
    """
    bs = parse_batch_sizes(list(batch_sizes))
    if not soc:
        raise InputError("--soc is required, e.g. Ascend310P3 (see `npu-smi info`)")
    if static and len(bs) != 1:
        raise InputError(f"--static builds one batch size; got --bs {','.join(map(str, bs))}")
    if not static and len(bs) > MAX_GEARS:
        raise InputError(f"ATC accepts at most {MAX_GEARS} batch gears, got {len(bs)}")
    dims = ",".join(str(int(d)) for d in chw)
    batch = str(bs[0]) if static else "-1"
    argv = [
        "atc",
        "--framework=5",
        f"--model={onnx_file}",
        f"--output={output_prefix}",
        f"--soc_version={soc}",
        f"--input_format={input_format}",
        f"--input_shape={input_name}:{batch},{dims}",
    ]
    if not static:
        argv.append(f"--dynamic_batch_size={','.join(map(str, bs))}")
    argv.append(f"--out_nodes={';'.join(out_nodes)}")
    return argv


def _om_paths(output: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``-o model`` or ``-o model.om`` -> (prefix without .om, the .om file)."""
    output = Path(output)
    prefix = output.with_suffix("") if output.suffix == ".om" else output
    return prefix, prefix.with_name(prefix.name + ".om")


def om_from_onnx(
    onnx_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    soc: str,
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    static: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Convert ``onnx_file`` to ``<output>.om`` with ATC; write its sidecar ``.om.json``.

    ATC writes to a temporary prefix beside the output, renamed into place on success. With
    ``dry_run`` nothing runs or is written. Returns the sidecar dictionary (for a dry run,
    without the output file facts); ``conversion.argv`` holds the ATC command.
    """
    onnx_file = Path(onnx_file)
    prefix, om_file = _om_paths(output)
    facts = source_facts(onnx_file)
    inputs = facts.inputs
    if len(inputs) != 1:
        raise FormatError(f"ATC conversion expects one model input, found {len(inputs)}")
    shape = list(inputs[0].shape)
    if not all(isinstance(d, int) for d in shape[1:]):
        raise FormatError(f"input {inputs[0].name!r} has dynamic non-batch dims {shape}")
    if isinstance(shape[0], int) and not static:
        raise InputError(
            f"{onnx_file} has a static batch of {shape[0]}: convert it with --static --bs "
            f"{shape[0]}, or export with a dynamic batch"
        )
    out_nodes = out_nodes_from_onnx(onnx_file)
    bs = parse_batch_sizes(list(batch_sizes))
    kwargs: dict[str, Any] = dict(
        soc=soc,
        input_name=inputs[0].name,
        chw=shape[1:],
        batch_sizes=bs,
        out_nodes=out_nodes,
        static=static,
    )
    argv = atc_command(onnx_file, prefix, **kwargs)
    batch_dim: int | str = bs[0] if static else "batch"
    side = facts.with_batch_dim(batch_dim).with_fields(
        drop=("validation",),
        source={"file": str(onnx_file.resolve()), "sha256": sha256_file(onnx_file)},
        conversion={
            "kind": "atc",
            "soc_version": soc,
            "batch_sizes": bs,
            "static": static,
            "out_nodes": out_nodes,
            "argv": argv,
            "command": shlex.join(argv),
        },
        static_batch=bs[0] if static else None,
        model_file=om_file.name,
    )
    if dry_run:
        return side.to_dict()
    refuse_existing(om_file, sidecar_path(om_file), force=force)
    if shutil.which("atc") is None:
        raise BackendUnavailableError(f"`atc` is not on PATH: {ATC_HINT}")
    om_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{prefix.name}.", dir=om_file.parent) as tmp:
        tmp_prefix = Path(tmp) / prefix.name
        run_argv = atc_command(onnx_file, tmp_prefix, **kwargs)
        proc = subprocess.run(run_argv, capture_output=True, text=True, check=False)
        built = tmp_prefix.with_name(tmp_prefix.name + ".om")
        if proc.returncode != 0 or not built.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BadDataError(
                f"atc failed (exit {proc.returncode}) converting {onnx_file}:\n{tail}"
            )
        side = side.with_fields(model_sha256=sha256_file(built))
        side.save(om_file)
        os.replace(built, om_file)
    return side.to_dict()
