"""ONNX -> Ascend OM with ATC, the CANN model converter.

The ``atc`` argv is built here (as a list: it is run without a shell) from the ONNX graph:
``--framework=5`` (ONNX), ``--input_shape`` with batch ``-1`` plus ``--dynamic_batch_size``
(the batch gears the OM model accepts), or one fixed batch with ``static``. ``--out_nodes``
names, for every graph output in order, the node that produces it and that node's output
index (``node:index``; ATC's syntax), read from the graph rather than hard-coded, so the OM
model keeps the ONNX outputs and their order whatever the exporter named the nodes.

Every input whose batch axis is dynamic gets ``-1`` there (ATC applies the gears to all of
them), e.g. ``--input_shape=image:-1,3,256,128;camera:-1`` for a camera-aware model.
``outputs`` cuts the graph to some outputs before ATC reads it; ``atc_args`` pass further ATC
options through (``--precision_mode``, ``--insert_op_conf`` for AIPP, ``--log``, ...).
``--soc_version`` is checked against :data:`SOC_VERSIONS` and, where the CANN toolkit is
installed, the SoCs it ships platform configurations for.
"""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidctl.artifacts import sidecar_path, write_sidecar
from reidctl.convert.graph import cut_outputs, graph_inputs, select_outputs, with_outputs
from reidctl.convert.trt import passthrough_args
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

#: ``--soc_version`` values of the Ascend AI processors (the CANN toolkit's platform
#: configurations; on a machine, ``Ascend`` + the ``Name`` column of ``npu-smi info``; for
#: Atlas A3, ``<Chip Name>_<NPU Name>`` of ``npu-smi info -t board``)
SOC_VERSIONS: tuple[str, ...] = (
    "Ascend310",
    "Ascend310B1",
    "Ascend310B2",
    "Ascend310B3",
    "Ascend310B4",
    "Ascend310P1",
    "Ascend310P3",
    "Ascend310P5",
    "Ascend310P7",
    "Ascend910",
    "Ascend910A",
    "Ascend910B",
    "Ascend910B1",
    "Ascend910B2",
    "Ascend910B2C",
    "Ascend910B3",
    "Ascend910B4",
    "Ascend910B4-1",
    "Ascend910PremiumA",
    "Ascend910ProA",
    "Ascend910ProB",
    "Ascend910_9362",
    "Ascend910_9372",
    "Ascend910_9381",
    "Ascend910_9382",
    "Ascend910_9391",
    "Ascend910_9392",
)
# atc options reidctl derives from the graph and its own options
_OWN_ATC_ARGS = (
    "--framework",
    "--model",
    "--output",
    "--soc_version",
    "--input_shape",
    "--dynamic_batch_size",
    "--out_nodes",
)


def installed_soc_versions() -> list[str]:
    """SoC names the installed CANN toolkit has platform configurations for (empty without
    CANN): ``<toolkit>/compiler/data/platform_config/<soc>.ini``."""
    found: set[str] = set()
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        root = os.environ.get(var)
        if root:
            cfg = Path(root) / "compiler" / "data" / "platform_config"
            if cfg.is_dir():
                found.update(f.stem for f in cfg.glob("*.ini"))
    return sorted(found)


def check_soc(soc: str) -> str:
    """``soc`` if it names a known Ascend SoC; :class:`InputError` listing them otherwise."""
    known = sorted({*SOC_VERSIONS, *installed_soc_versions()})
    if soc in known:
        return soc
    lower = {k.lower(): k for k in known}
    guess = lower.get(soc.lower()) or next(iter(difflib.get_close_matches(soc, known, 1)), None)
    hint = f" (did you mean {guess}?)" if guess else ""
    raise InputError(
        f"unknown --soc {soc!r}{hint}; valid: {', '.join(known)}. On the device, the value is "
        "'Ascend' + the Name column of `npu-smi info`"
    )


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
    more_inputs: Sequence[tuple[str, Sequence[int]]] = (),
    extra_args: str | Sequence[str] | None = None,
) -> list[str]:
    """The ``atc`` argv. ``output_prefix`` has no ``.om`` (ATC appends it).

    Dynamic (default): ``--input_shape=<input>:-1,C,H,W --dynamic_batch_size=b1,b2,...``;
    ``static``: one batch size, ``--input_shape=<input>:B,C,H,W``. ``more_inputs`` are
    further batched inputs ``(name, dims without batch)``, joined with ``;``. ``extra_args``
    go last (an ``--input_format`` there replaces ``input_format``).
    """
    bs = parse_batch_sizes(list(batch_sizes))
    if not soc:
        raise InputError("--soc is required, e.g. Ascend310P3 (see `npu-smi info`)")
    if static and len(bs) != 1:
        raise InputError(f"--static builds one batch size; got --bs {','.join(map(str, bs))}")
    if not static and len(bs) > MAX_GEARS:
        raise InputError(f"ATC accepts at most {MAX_GEARS} batch gears, got {len(bs)}")
    check_soc(soc)
    extra = passthrough_args(extra_args, _OWN_ATC_ARGS, "--atc-args")
    batch = str(bs[0]) if static else "-1"
    shapes = ";".join(
        f"{name}:{','.join([batch, *(str(int(d)) for d in dims)])}"
        for name, dims in [(input_name, chw), *more_inputs]
    )
    argv = [
        "atc",
        "--framework=5",
        f"--model={onnx_file}",
        f"--output={output_prefix}",
        f"--soc_version={soc}",
    ]
    if not any(a.startswith("--input_format") for a in extra):
        argv.append(f"--input_format={input_format}")
    argv.append(f"--input_shape={shapes}")
    if not static:
        argv.append(f"--dynamic_batch_size={','.join(map(str, bs))}")
    argv.append(f"--out_nodes={';'.join(out_nodes)}")
    return argv + extra


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
    outputs: Sequence[str] | None = None,
    atc_args: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Convert ``onnx_file`` to ``<output>.om`` with ATC; write its sidecar ``.om.json``.

    ATC writes to a temporary prefix beside the output, renamed into place on success. With
    ``dry_run`` nothing runs or is written, except, with ``outputs`` that drop some, the cut
    graph the printed command reads (``<output>.cut.onnx``). Returns the sidecar dictionary
    (for a dry run, without the output file facts); ``conversion.argv`` holds the ATC command.
    """
    onnx_file = Path(onnx_file)
    prefix, om_file = _om_paths(output)
    check_soc(soc)
    facts = source_facts(onnx_file).to_dict()
    inputs = graph_inputs(facts)
    if inputs[0].static_batch and not static:
        raise InputError(
            f"{onnx_file} has a static batch of {inputs[0].static_batch}: convert it with "
            f"--static --bs {inputs[0].static_batch}, or export with a dynamic batch"
        )
    kept = select_outputs(facts, outputs)
    cut = len(kept) < len(facts.get("outputs", []))
    facts = with_outputs(facts, kept)
    cut_file = prefix.with_name(prefix.name + ".cut.onnx")
    bs = parse_batch_sizes(list(batch_sizes))
    kwargs: dict[str, Any] = dict(
        soc=soc,
        input_name=inputs[0].name,
        chw=inputs[0].dims,
        batch_sizes=bs,
        static=static,
        input_format="NCHW" if all(len(i.dims) == 3 for i in inputs) else "ND",
        more_inputs=[(i.name, i.dims) for i in inputs[1:]],
        extra_args=atc_args,
    )
    if cut and dry_run:
        refuse_existing(cut_file, force=force)
        cut_outputs(onnx_file, kept, cut_file)
    graph_file = cut_file if cut else onnx_file
    if cut and not dry_run:
        # the cut graph for --out_nodes; ATC itself reads a temporary copy (below)
        with tempfile.TemporaryDirectory() as tmp:
            out_nodes = out_nodes_from_onnx(cut_outputs(onnx_file, kept, Path(tmp) / "c.onnx"))
    else:
        out_nodes = out_nodes_from_onnx(graph_file)
    kwargs["out_nodes"] = out_nodes
    argv = atc_command(graph_file, prefix, **kwargs)
    batch_dim: int | str = bs[0] if static else "batch"
    side = {k: v for k, v in facts.items() if k not in ("format", "tool", "validation")}
    for key in ("inputs", "outputs"):
        side[key] = [{**t, "shape": [batch_dim, *list(t["shape"])[1:]]} for t in facts[key]]
    side.update(
        source={"file": str(onnx_file.resolve()), "sha256": sha256_file(onnx_file)},
        conversion={
            "kind": "atc",
            "soc_version": soc,
            "batch_sizes": bs,
            "static": static,
            "out_nodes": out_nodes,
            "outputs": kept,
            "extra_args": passthrough_args(atc_args, _OWN_ATC_ARGS, "--atc-args"),
            "argv": argv,
            "command": shlex.join(argv),
        },
        static_batch=bs[0] if static else None,
        model_file=om_file.name,
    )
    if dry_run:
        return side
    refuse_existing(om_file, sidecar_path(om_file), force=force)
    if shutil.which("atc") is None:
        raise BackendUnavailableError(f"`atc` is not on PATH: {ATC_HINT}")
    om_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{prefix.name}.", dir=om_file.parent) as tmp:
        tmp_prefix = Path(tmp) / prefix.name
        model = cut_outputs(onnx_file, kept, Path(tmp) / "cut.onnx") if cut else onnx_file
        run_argv = atc_command(model, tmp_prefix, **kwargs)
        proc = subprocess.run(run_argv, capture_output=True, text=True, check=False)
        built = tmp_prefix.with_name(tmp_prefix.name + ".om")
        if proc.returncode != 0 or not built.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BadDataError(
                f"atc failed (exit {proc.returncode}) converting {onnx_file}:\n{tail}"
            )
        side["model_sha256"] = sha256_file(built)
        write_sidecar(om_file, side)
        os.replace(built, om_file)
    return side
