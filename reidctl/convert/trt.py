"""ONNX -> TensorRT engine (TensorRT >= 10), with one optimisation profile and a timing cache.

The profile covers the batch sizes given (``--bs``): ``min`` = the smallest, ``opt`` =
``max`` = the largest. ``opt`` is the largest because ``reidctl infer --bs N`` runs every
batch at ``N`` except the last, so that is the shape whose kernels matter; smaller batches
still run, with kernels tuned for the larger shape. A static-batch ONNX gets no profile.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidctl.artifacts import ModelSidecar, sidecar_path
from reidctl.errors import FormatError, InputError
from reidctl.io import atomic_path, refuse_existing, sha256_file, write_bytes_atomic
from reidctl.runners._env import import_backend
from reidctl.runners.batching import parse_batch_sizes
from reidctl.runners.facts import source_facts
from reidctl.runners.trt import INSTALL_HINT

DEFAULT_WORKSPACE_MIB = 2048


def profile_from_batches(batch_sizes: Sequence[int]) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch of the optimisation profile for ``batch_sizes``."""
    bs = parse_batch_sizes(list(batch_sizes))
    return bs[0], bs[-1], bs[-1]


def _input_of(facts: ModelSidecar) -> tuple[str, list[int | str], int | None]:
    inputs = facts.inputs
    if len(inputs) != 1:
        raise FormatError(f"TensorRT conversion expects one model input, found {len(inputs)}")
    shape = list(inputs[0].shape)
    static = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if not all(isinstance(d, int) for d in shape[1:]):
        raise FormatError(f"input {inputs[0].name!r} has dynamic non-batch dims {shape}")
    return inputs[0].name, shape, static


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
) -> list[str]:
    """The equivalent ``trtexec`` argv; ``batch_sizes`` ``None`` for a static-batch ONNX."""
    argv = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}"]
    if batch_sizes:
        lo, opt, hi = profile_from_batches(batch_sizes)
        dims = "x".join(str(d) for d in chw)
        argv += [
            f"--minShapes={input_name}:{lo}x{dims}",
            f"--optShapes={input_name}:{opt}x{dims}",
            f"--maxShapes={input_name}:{hi}x{dims}",
        ]
    if fp16:
        argv.append("--fp16")
    argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}M")
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={timing_cache}")
    return argv


def engine_sidecar(
    facts: ModelSidecar,
    onnx_file: Path,
    engine_file: Path,
    conversion: dict[str, Any],
    static_batch: int | None,
) -> ModelSidecar:
    """The engine's sidecar: the ONNX facts carried forward, its source and the conversion."""
    dims: int | str = static_batch or "batch"
    return facts.with_batch_dim(dims).with_fields(
        drop=("validation",),
        source={"file": str(onnx_file.resolve()), "sha256": sha256_file(onnx_file)},
        conversion=conversion,
        static_batch=static_batch,
        model_file=engine_file.name,
        model_sha256=sha256_file(engine_file),
    )


def engine_from_onnx(
    onnx_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    fp16: bool = False,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build a TensorRT engine from ``onnx_file``; write it and ``<output>.json`` atomically.

    ``batch_sizes`` set the optimisation profile (see the module docstring); they are
    ignored for a static-batch ONNX. ``workspace_mib`` caps the builder's scratch memory
    (MiB). ``timing_cache`` is read if present and written back after the build, so later
    builds on the same GPU skip kernel timing. Returns the sidecar dictionary.
    """
    onnx_file, output = Path(onnx_file), Path(output)
    refuse_existing(output, sidecar_path(output), force=force)
    if workspace_mib < 1:
        raise InputError(f"--workspace must be a positive number of MiB, got {workspace_mib}")
    facts = source_facts(onnx_file)
    input_name, shape, static = _input_of(facts)
    bs = None if static else parse_batch_sizes(list(batch_sizes))
    trt = import_backend("tensorrt", "trt", INSTALL_HINT)
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise InputError(f"TensorRT {trt.__version__} found; reidctl needs TensorRT >= 10")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FormatError(f"TensorRT cannot parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if bs is not None:
        lo, opt, hi = profile_from_batches(bs)
        chw = [int(d) for d in shape[1:]]
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, [lo, *chw], [opt, *chw], [hi, *chw])
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FormatError(f"TensorRT failed to build an engine from {onnx_file} (see its log)")
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))

    argv = trtexec_command(
        onnx_file,
        output,
        input_name,
        shape[1:],  # type: ignore[arg-type]
        bs,
        fp16=fp16,
        workspace_mib=workspace_mib,
        timing_cache=cache_path,
    )
    conversion = {
        "kind": "tensorrt",
        "batch_sizes": bs,
        "profile": dict(zip(("min", "opt", "max"), profile_from_batches(bs), strict=True))
        if bs
        else None,
        "precision": "fp16" if fp16 else "fp32",
        "workspace_mib": workspace_mib,
        "tensorrt_version": str(trt.__version__),
        "trtexec": shlex.join(argv),
    }
    with atomic_path(output) as tmp:
        tmp.write_bytes(bytes(serialized))
        side = engine_sidecar(facts, onnx_file, tmp, conversion, static)
        side = side.with_fields(model_file=output.name)
        side.save(output)
    return side.to_dict()
