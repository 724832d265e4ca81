"""ONNX -> TensorRT engine (TensorRT >= 10), with one optimisation profile and a timing cache.

The profile covers the batch sizes given (``--bs``): ``min`` = the smallest, ``max`` =
the largest, ``opt`` = the largest unless ``opt_batch`` (``--opt-bs``) says otherwise.
``opt`` defaults to the largest because ``reidctl infer --bs N`` runs every batch at ``N``
except the last, so that is the shape whose kernels matter; a tracker that runs 1 to 8 crops
a frame wants ``--opt-bs 4`` or so. Every input whose first axis is dynamic (an image, and a
camera index for camera-aware models) gets the profile's batch. A static-batch ONNX gets no
profile.

``outputs`` (``--outputs``) builds from a copy of the graph cut to those outputs (e.g. without
a classifier's logits). ``builder_flags`` (``--builder-flag``) are ``trt.BuilderFlag`` names
(:data:`BUILDER_FLAGS`, each with its ``trtexec`` equivalent); ``trtexec_args``
(``--trtexec-args``) are extra ``trtexec`` arguments for a build with the ``trtexec`` binary
(``use_trtexec``) or the printed command.
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

from reidctl.artifacts import sidecar_path, write_sidecar
from reidctl.convert.graph import (
    GraphInput,
    cut_outputs,
    graph_inputs,
    select_outputs,
    with_outputs,
)
from reidctl.errors import BackendUnavailableError, BadDataError, FormatError, InputError
from reidctl.io import refuse_existing, sha256_file, write_bytes_atomic
from reidctl.runners._env import import_backend
from reidctl.runners.batching import parse_batch_sizes
from reidctl.runners.facts import source_facts
from reidctl.runners.trt import INSTALL_HINT

DEFAULT_WORKSPACE_MIB = 2048

#: ``trt.BuilderFlag`` names accepted by ``--builder-flag``, with their ``trtexec`` argument
BUILDER_FLAGS: dict[str, str] = {
    "FP16": "--fp16",
    "BF16": "--bf16",
    "INT8": "--int8",
    "FP8": "--fp8",
    "INT4": "--int4",
    "SPARSE_WEIGHTS": "--sparsity=enable",
    "OBEY_PRECISION_CONSTRAINTS": "--precisionConstraints=obey",
    "PREFER_PRECISION_CONSTRAINTS": "--precisionConstraints=prefer",
    "DIRECT_IO": "--directIO",
    "REFIT": "--refit",
    "STRIP_PLAN": "--stripWeights",
    "VERSION_COMPATIBLE": "--versionCompatible",
    "EXCLUDE_LEAN_RUNTIME": "--excludeLeanRuntime",
    "GPU_FALLBACK": "--allowGPUFallback",
    "WEIGHT_STREAMING": "--weightStreaming",
}
# trtexec arguments reidctl derives itself: passing them through would contradict the sidecar
_OWN_TRTEXEC_ARGS = ("--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes")


def profile_from_batches(
    batch_sizes: Sequence[int], opt_batch: int | None = None
) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch of the optimisation profile for ``batch_sizes``; ``opt`` is
    the largest unless ``opt_batch`` (which must lie within min..max) is given."""
    bs = parse_batch_sizes(list(batch_sizes))
    opt = bs[-1] if opt_batch is None else int(opt_batch)
    if not bs[0] <= opt <= bs[-1]:
        raise InputError(
            f"--opt-bs {opt} lies outside the profile's batch range {bs[0]}..{bs[-1]} (--bs)"
        )
    return bs[0], opt, bs[-1]


def builder_flag_names(flags: Sequence[str]) -> list[str]:
    """Upper-cased, de-duplicated ``--builder-flag`` names, checked against
    :data:`BUILDER_FLAGS` (an unknown name raises :class:`InputError` listing them)."""
    out: list[str] = []
    for f in flags:
        name = f.strip().upper().removeprefix("BUILDERFLAG.")
        if name not in BUILDER_FLAGS:
            raise InputError(
                f"unknown --builder-flag {f!r}; valid (trt.BuilderFlag names): "
                f"{', '.join(BUILDER_FLAGS)}"
            )
        if name not in out:
            out.append(name)
    return out


def passthrough_args(args: str | Sequence[str] | None, own: Sequence[str], what: str) -> list[str]:
    """Split extra tool arguments (a shell-quoted string or a list); refuse those reidctl
    sets itself (``own``), which would contradict the command it builds."""
    if not args:
        return []
    argv = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    for a in argv:
        key = a.split("=", 1)[0]
        if key in own:
            raise InputError(
                f"{what} must not set {key}: reidctl derives it from the model and its own "
                f"options ({', '.join(own)})"
            )
    return argv


def trtexec_command(
    onnx_file: str | os.PathLike[str],
    engine_file: str | os.PathLike[str],
    input_name: str,
    chw: Sequence[int],
    batch_sizes: Sequence[int] | None,
    *,
    fp16: bool = False,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: str | os.PathLike[str] | None = None,
    opt_batch: int | None = None,
    more_inputs: Sequence[tuple[str, Sequence[int]]] = (),
    builder_flags: Sequence[str] = (),
    extra_args: str | Sequence[str] | None = None,
) -> list[str]:
    """The equivalent ``trtexec`` argv; ``batch_sizes`` ``None`` for a static-batch ONNX.

    ``more_inputs`` are further batched inputs as ``(name, dims without batch)`` (a camera
    index ``[batch]`` has ``()``), listed after ``input_name`` in each shape argument.
    ``builder_flags`` map through :data:`BUILDER_FLAGS`; ``extra_args`` go last.
    """
    argv = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}"]
    if batch_sizes:
        profile = profile_from_batches(batch_sizes, opt_batch)
        inputs = [(input_name, tuple(chw)), *((n, tuple(d)) for n, d in more_inputs)]
        for key, batch in zip(("min", "opt", "max"), profile, strict=True):
            shapes = ",".join(
                f"{name}:{'x'.join(str(d) for d in (batch, *dims))}" for name, dims in inputs
            )
            argv.append(f"--{key}Shapes={shapes}")
    flags = builder_flag_names([*(["FP16"] if fp16 else []), *builder_flags])
    argv += [BUILDER_FLAGS[f] for f in flags]
    argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}M")
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={timing_cache}")
    argv += passthrough_args(extra_args, _OWN_TRTEXEC_ARGS, "--trtexec-args")
    return argv


def engine_sidecar(
    facts: dict[str, Any],
    onnx_file: Path,
    engine_file: Path,
    conversion: dict[str, Any],
    static_batch: int | None,
) -> dict[str, Any]:
    """The engine's sidecar: the ONNX facts carried forward, its source and the conversion."""
    dims: int | str = static_batch or "batch"
    side = {
        k: v for k, v in facts.items() if k not in ("format", "tool", "validation", "model_file")
    }
    for key in ("inputs", "outputs"):
        side[key] = [{**t, "shape": [dims, *list(t["shape"])[1:]]} for t in facts[key]]
    side.update(
        source={"file": str(onnx_file.resolve()), "sha256": sha256_file(onnx_file)},
        conversion=conversion,
        static_batch=static_batch,
        model_file=engine_file.name,
        model_sha256=sha256_file(engine_file),
    )
    return side


def cut_graph_path(output: str | os.PathLike[str]) -> Path:
    """Where a printed command's cut graph goes: ``model.engine`` -> ``model.cut.onnx``."""
    output = Path(output)
    return output.with_name(output.stem + ".cut.onnx")


def _profile_inputs(facts: dict[str, Any]) -> tuple[list[GraphInput], int | None]:
    inputs = graph_inputs(facts)
    return inputs, inputs[0].static_batch


def trtexec_for_onnx(
    onnx_file: str | os.PathLike[str],
    engine_file: str | os.PathLike[str],
    *,
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    opt_batch: int | None = None,
    fp16: bool = False,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: str | os.PathLike[str] | None = None,
    builder_flags: Sequence[str] = (),
    trtexec_args: str | Sequence[str] | None = None,
    facts: dict[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    force: bool = False,
) -> list[str]:
    """The ``trtexec`` argv building ``engine_file`` from ``onnx_file``, its shapes read from
    the model's facts (``facts``, else its sidecar or graph); every dynamic-batch input is
    listed in the shape arguments.

    ``trtexec`` cannot drop outputs itself: with ``outputs`` that drop some, the cut graph is
    written to :func:`cut_graph_path` (refused if it exists, unless ``force``) and the argv
    reads it.
    """
    facts = facts if facts is not None else source_facts(onnx_file).to_dict()
    kept = select_outputs(facts, outputs)
    if len(kept) < len(facts.get("outputs", [])):
        cut = cut_graph_path(engine_file)
        refuse_existing(cut, force=force)
        onnx_file = cut_outputs(onnx_file, kept, cut)
        facts = with_outputs(facts, kept)
    inputs, static = _profile_inputs(facts)
    return trtexec_command(
        onnx_file,
        engine_file,
        inputs[0].name,
        inputs[0].dims,
        None if static else parse_batch_sizes(list(batch_sizes)),
        fp16=fp16,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
        opt_batch=None if static else opt_batch,
        more_inputs=[(i.name, i.dims) for i in inputs[1:]],
        builder_flags=builder_flags,
        extra_args=trtexec_args,
    )


def _build_with_python_api(
    graph_file: Path,
    inputs: Sequence[GraphInput],
    profile: tuple[int, int, int] | None,
    flags: Sequence[str],
    workspace_mib: int,
    cache_path: Path | None,
) -> tuple[bytes, str]:
    """Serialized engine and TensorRT version, built with the TensorRT Python API."""
    trt = import_backend("tensorrt", "trt", INSTALL_HINT)
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise InputError(f"TensorRT {trt.__version__} found; reidctl needs TensorRT >= 10")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FormatError(f"TensorRT cannot parse {graph_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    for name in flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise InputError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}")
        config.set_flag(flag)
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        for inp in inputs:
            opt_profile.set_shape(inp.name, *([b, *inp.dims] for b in profile))
        config.add_optimization_profile(opt_profile)
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FormatError(f"TensorRT failed to build an engine from {graph_file} (see its log)")
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), str(trt.__version__)


def _build_with_trtexec(argv: list[str], engine: Path, onnx_file: Path) -> None:
    if shutil.which("trtexec") is None:
        raise BackendUnavailableError(
            f"`trtexec` is not on PATH (it ships with TensorRT, in its bin/ folder): {INSTALL_HINT}"
        )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not engine.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BadDataError(f"trtexec failed (exit {proc.returncode}) building {onnx_file}:\n{tail}")


def engine_from_onnx(
    onnx_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    fp16: bool = False,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    opt_batch: int | None = None,
    outputs: Sequence[str] | None = None,
    builder_flags: Sequence[str] = (),
    trtexec_args: str | Sequence[str] | None = None,
    use_trtexec: bool = False,
) -> dict[str, Any]:
    """Build a TensorRT engine from ``onnx_file``; write it and ``<output>.json`` atomically.

    ``batch_sizes`` and ``opt_batch`` set the optimisation profile (see the module
    docstring); they are ignored for a static-batch ONNX. ``workspace_mib`` caps the
    builder's scratch memory (MiB). ``timing_cache`` is read if present and written back
    after the build, so later builds on the same GPU skip kernel timing. ``outputs`` keeps
    only those outputs (the graph is cut in a temporary file first). The build uses the
    TensorRT Python API, or the ``trtexec`` binary with ``use_trtexec`` (``trtexec_args`` are
    then appended to its argv; without it they are refused). Returns the sidecar dictionary.
    """
    onnx_file, output = Path(onnx_file), Path(output)
    refuse_existing(output, sidecar_path(output), force=force)
    if workspace_mib < 1:
        raise InputError(f"--workspace must be a positive number of MiB, got {workspace_mib}")
    if trtexec_args and not use_trtexec:
        raise InputError(
            "--trtexec-args apply to a build with the trtexec binary: add --with-trtexec "
            "(or --print-trtexec to see the command)"
        )
    facts = source_facts(onnx_file).to_dict()
    kept = select_outputs(facts, outputs)
    cut = len(kept) < len(facts.get("outputs", []))
    facts = with_outputs(facts, kept)
    inputs, static = _profile_inputs(facts)
    bs = None if static else parse_batch_sizes(list(batch_sizes))
    profile = profile_from_batches(bs, opt_batch) if bs else None
    flags = builder_flag_names([*(["FP16"] if fp16 else []), *builder_flags])
    cache_path = Path(timing_cache) if timing_cache is not None else None
    output.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        graph = cut_outputs(onnx_file, kept, Path(tmp) / "cut.onnx") if cut else onnx_file
        staged = Path(tmp) / output.name
        options: dict[str, Any] = dict(
            batch_sizes=bs or (1,),
            opt_batch=opt_batch,
            fp16=fp16,
            workspace_mib=workspace_mib,
            builder_flags=builder_flags,
            facts=facts,
        )
        if use_trtexec:
            run_argv = trtexec_for_onnx(
                graph, staged, timing_cache=cache_path, trtexec_args=trtexec_args, **options
            )
            _build_with_trtexec(run_argv, staged, onnx_file)
            trt_version = None
        else:
            serialized, trt_version = _build_with_python_api(
                graph, inputs, profile, flags, workspace_mib, cache_path
            )
            staged.write_bytes(serialized)
        argv = trtexec_for_onnx(
            cut_graph_path(output) if cut else onnx_file,
            output,
            timing_cache=cache_path,
            trtexec_args=trtexec_args,
            **options,
        )
        conversion = {
            "kind": "tensorrt",
            "batch_sizes": bs,
            "profile": dict(zip(("min", "opt", "max"), profile, strict=True)) if profile else None,
            "precision": "fp16" if "FP16" in flags else "fp32",
            "builder_flags": flags,
            "workspace_mib": workspace_mib,
            "tensorrt_version": trt_version,
            "built_with": "trtexec" if use_trtexec else "tensorrt python api",
            "outputs": kept,
            "trtexec": shlex.join(argv),
        }
        side = engine_sidecar(facts, onnx_file, staged, conversion, static)
        side["model_file"] = output.name
        write_sidecar(output, side)  # the sidecar first: if it fails, no engine appears
        os.replace(staged, output)
    return side
