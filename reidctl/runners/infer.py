"""Run a model over a preprocessed set and write a result directory (docs/formats.md §2, §3).

Layers, lowest first:

* :func:`read_tensor` - one raw tensor file, checked against the expected size;
* :func:`infer_entries` - a list of manifest entries through an active runner, the next
  batch read by a background thread while the current one runs; returns the stacked outputs
  (the unit a distributed engine calls per shard);
* :func:`run_inference` - the whole ``reidctl infer``: checks, runner lifecycle, result
  directory (staged beside the target and renamed into place, ``run.json`` written last).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from reidctl import __version__
from reidctl.artifacts import (
    FEATURES_DIR,
    MANIFEST_NAME,
    MODEL_JSON_NAME,
    RESULT_FORMAT,
    RUN_NAME,
    ManifestEntry,
    read_manifest,
    read_prep_meta,
    tool_info,
)
from reidctl.errors import (
    BackendUnavailableError,
    FormatError,
    InputError,
    OutputExistsError,
    ShapeMismatchError,
)
from reidctl.io import sha256_file, write_json_atomic
from reidctl.runners import get_runner, runner_for_file
from reidctl.runners.base import Runner
from reidctl.runners.facts import derive_facts, output_specs, sidecar_or_none, with_feature
from reidctl.runners.options import check_options as check_options  # re-exported
from reidctl.specs import TensorSpec

DUMP_DIR = "dump"
DUMP_FORMATS = ("bin", "txt")


# --------------------------------------------------------------------------- tensors


def _read_into(path: Path, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous) with the raw bytes of ``path``; the size must match."""
    try:
        with open(path, "rb", buffering=0) as f:
            n = f.readinto(memoryview(out).cast("B"))
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FormatError(
            f"tensor file missing: {path}; the preprocessed set is incomplete, re-run "
            "`reidctl preprocess`"
        ) from None
    except OSError as e:
        raise FormatError(f"cannot read tensor file {path}: {e.strerror}") from e
    if n != out.nbytes or size != out.nbytes:
        what = "truncated" if size < out.nbytes else "too large"
        raise FormatError(
            f"tensor file {path} is {what}: {size} bytes, expected {out.nbytes} "
            f"({list(out.shape)} {out.dtype}); re-run `reidctl preprocess` for this set"
        )


def read_tensor(
    path: str | os.PathLike[str], dtype: str | np.dtype, shape: Sequence[int]
) -> np.ndarray:
    """Read one raw little-endian C-order tensor file of ``shape`` and ``dtype``.

    Raises :class:`FormatError` naming the file when it is missing, truncated or too large.
    """
    out = np.empty(tuple(shape), dtype=np.dtype(dtype).newbyteorder("<"))
    _read_into(Path(path), out)
    return out.astype(out.dtype.newbyteorder("="), copy=False)


def _read_batch(
    prep_dir: Path, entries: Sequence[ManifestEntry], dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    batch = np.empty((len(entries), *shape), dtype=dtype)
    for i, e in enumerate(entries):
        _read_into(prep_dir / e.bin, batch[i])
    return batch


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- inference


def infer_entries(
    runner: Runner,
    prep_dir: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    batch_size: int = 32,
    *,
    dtype: str | None = None,
    shape: Sequence[int] | None = None,
    input_name: str | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``entries`` (tensor files under ``prep_dir``) through an active ``runner``.

    Reads ``batch_size`` tensors at a time on a background thread, one batch ahead of the
    runner, so file I/O overlaps inference. ``dtype`` and ``shape`` (``[C, H, W]``) default
    to ``prep_dir/meta.json``; ``input_name`` to the model's single input. With
    ``progress`` a tqdm bar (images/s) goes to stderr. Returns ``{output name: array}``
    with row ``i`` belonging to ``entries[i]``.
    """
    prep_dir = Path(prep_dir)
    if batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    if dtype is None or shape is None:
        meta = read_prep_meta(prep_dir)
        dtype = dtype or str(meta.get("dtype", "float32"))
        shape = shape or meta["shape"]
    if input_name is None:
        input_name = single_input(runner).name
    np_dtype, chw = np.dtype(dtype), tuple(int(d) for d in shape)
    chunks = list(_chunks(entries, batch_size))
    results: dict[str, np.ndarray] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(entries), unit="img", desc=f"infer ({runner.name})", leave=False)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reidctl-read") as pool:

            def read(chunk: Sequence[ManifestEntry]) -> Any:
                return pool.submit(_read_batch, prep_dir, chunk, np_dtype, chw)

            pending = read(chunks[0]) if chunks else None
            row = 0
            for i, chunk in enumerate(chunks):
                batch = pending.result()  # type: ignore[union-attr]
                if i + 1 < len(chunks):
                    pending = read(chunks[i + 1])
                out = runner.infer_rows({input_name: batch})
                if not results:
                    results = {
                        k: np.empty((len(entries), *v.shape[1:]), dtype=v.dtype)
                        for k, v in out.items()
                    }
                for k, v in out.items():
                    results[k][row : row + len(chunk)] = v
                row += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return results


def single_input(runner: Runner) -> TensorSpec:
    """The model's only input; :class:`InputError` for multi-input models."""
    specs = runner.input_specs()
    if len(specs) != 1:
        raise InputError(
            f"{runner.model_file} has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
            "reidctl infer feeds one image tensor per row"
        )
    return specs[0]


def check_input_matches(spec: TensorSpec, meta: dict[str, Any], model_file: str) -> None:
    """The model input ``[batch, C, H, W]`` / dtype must match the tensors' ``meta.json``."""
    shape = [int(d) for d in meta.get("shape", [])]
    dtype = str(meta.get("dtype", "float32"))
    model_row = list(spec.shape[1:])
    fixed_match = len(model_row) == len(shape) and all(
        not isinstance(m, int) or m == s for m, s in zip(model_row, shape, strict=True)
    )
    if not fixed_match or np.dtype(spec.dtype) != np.dtype(dtype):
        raise ShapeMismatchError(
            f"model {model_file} input {spec.name!r} expects {list(spec.shape)} {spec.dtype}, "
            f"but the preprocessed tensors are [batch, {', '.join(map(str, shape))}] {dtype} "
            "(meta.json); preprocess again with the model's settings "
            "(`reidctl preprocess ... --model-config <model>.json`)"
        )


# --------------------------------------------------------------------------- results


def is_result_dir(path: Path) -> bool:
    return any((path / n).exists() for n in (RUN_NAME, MODEL_JSON_NAME, FEATURES_DIR))


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass --force to replace it"
            )
        if not is_result_dir(out_dir):
            raise OutputExistsError(
                f"{out_dir} is not a reidctl result directory (no run.json, model.json or "
                "features/); refusing to replace it even with --force: choose another -o"
            )


def write_dump(
    dump_dir: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    outputs: dict[str, np.ndarray],
    fmt: str = "bin",
    index_base: int = 1,
) -> int:
    """Write the vendor tool's layout: ``<stem>_<k>.<fmt>`` per entry and output.

    ``k`` counts the model outputs from ``index_base`` (1: the Ascend ``benchmark`` tool,
    0: ``ais_bench``). ``bin`` is raw little-endian float32, ``txt`` whitespace-separated
    numbers, one line per row of the output's last axis. Returns the number of files.
    """
    if fmt not in DUMP_FORMATS:
        raise InputError(f"unknown dump format {fmt!r}; valid: {', '.join(DUMP_FORMATS)}")
    dump_dir = Path(dump_dir)
    dump_dir.mkdir(parents=True, exist_ok=True)
    arrays = [a.astype("<f4", copy=False) for a in outputs.values()]
    n = 0
    for i, e in enumerate(entries):
        for k, arr in enumerate(arrays, start=index_base):
            path = dump_dir / f"{e.stem}_{k}.{fmt}"
            if fmt == "bin":
                arr[i].tofile(path)
            else:
                row = arr[i]
                np.savetxt(path, row.reshape(-1, row.shape[-1] if row.ndim else 1), fmt="%.8g")
            n += 1
    return n


def runner_class(model_file: Path, backend: str | None) -> type[Runner]:
    """The runner class for ``backend`` (by name) or, when ``None``, for the file's suffix.

    Raises :class:`BackendUnavailableError` with the install hint when the back end's
    package is missing here, :class:`UnknownNameError` / :class:`InputError` for an unknown
    name or suffix.
    """
    cls = get_runner(backend) if backend else runner_for_file(model_file)
    ok, why = cls.availability()
    if not ok:
        raise BackendUnavailableError(
            f"back end {cls.name!r} is not available here: {why}; install: {cls.install_hint} "
            "(`reidctl backends` lists what is available)"
        )
    return cls


def load_inference_inputs(
    model_file: Path, prep_dir: Path, dump: str | None, batch_size: int
) -> tuple[dict[str, Any], list[ManifestEntry]]:
    """Check an inference request before any work: returns ``(meta.json, manifest entries)``."""
    if dump is not None and dump not in DUMP_FORMATS:
        raise InputError(f"unknown dump format {dump!r}; valid: {', '.join(DUMP_FORMATS)}")
    if batch_size < 1:
        raise InputError(f"--bs must be a positive batch size, got {batch_size}")
    if not model_file.is_file():
        raise FormatError(f"model file not found: {model_file}")
    meta = read_prep_meta(prep_dir)
    entries = read_manifest(prep_dir)
    if not entries:
        raise FormatError(f"{prep_dir / MANIFEST_NAME} lists no tensors")
    return meta, entries


def run_inference(
    model_file: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    backend: str | None = None,
    batch_size: int = 32,
    dump: str | None = None,
    index_base: int = 1,
    force: bool = False,
    *,
    feature: str | None = None,
    progress: bool = False,
    **runner_options: Any,
) -> dict[str, Any]:
    """Run ``model_file`` over the preprocessed set ``prep_dir``; write ``out_dir``.

    ``backend`` defaults to the runner for the file's suffix (``.onnx`` -> ``ort``).
    ``batch_size`` rows are read and run at a time (engines with fixed batch sizes split or
    pad, see :meth:`Runner.infer_rows`). ``dump`` (``"bin"``/``"txt"``) also writes the
    vendor-tool layout ``dump/<stem>_<k>.<ext>``, ``k`` from ``index_base``. ``feature``
    overrides the retrieval feature recorded in ``model.json``. ``runner_options`` go to the
    runner (``threads``, ``device``, ``fp16``, ``channels_last``, ``precision``, ``model``,
    ``weights``, ...); unset (``None``/``False``) ones are ignored.

    The result directory is assembled under a temporary name beside ``out_dir`` and renamed
    into place at the end, with ``run.json`` written last; an existing non-empty ``out_dir``
    is refused without ``force``. Returns the ``run.json`` dictionary.
    """
    model_file, prep_dir, out_dir = Path(model_file), Path(prep_dir), Path(out_dir)
    meta, entries = load_inference_inputs(model_file, prep_dir, dump, batch_size)
    _check_out_dir(out_dir, force)
    cls = runner_class(model_file, backend)
    options = check_options(cls, runner_options)
    sidecar = sidecar_or_none(model_file)

    t_start = time.perf_counter()
    with cls(str(model_file), **options) as runner:
        spec = single_input(runner)
        check_input_matches(spec, meta, str(model_file))
        setup_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        outputs = infer_entries(
            runner,
            prep_dir,
            entries,
            batch_size,
            dtype=str(meta.get("dtype", "float32")),
            shape=meta["shape"],
            input_name=spec.name,
            progress=progress,
        )
        wall_s = time.perf_counter() - t0
        device = runner.device_name()
        inputs = runner.input_specs()
        latencies = runner.latencies_s

    for name in outputs:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise FormatError(f"output name {name!r} cannot be used as a file name")
    facts = sidecar or derive_facts(
        model_file, inputs, output_specs(outputs), meta.get("preprocess"), options.get("model")
    )
    facts = with_feature(facts, feature)
    run = {
        "format": RESULT_FORMAT,
        "backend": cls.name,
        "device": device,
        "options": {k: v for k, v in sorted(options.items())},
        "model_file": str(model_file.resolve()),
        "model_sha256": sha256_file(model_file),
        "prep_dir": str(prep_dir.resolve()),
        "batch_size": batch_size,
        "num_images": len(entries),
        "wall_s": round(wall_s, 4),
        "setup_s": round(setup_s, 4),
        "images_per_s": round(len(entries) / wall_s, 2) if wall_s > 0 else None,
        "mean_batch_latency_ms": round(1000 * float(np.mean(latencies)), 3),
        "outputs": list(outputs),
        "feature": facts["feature"],
        "dump": None if dump is None else {"format": dump, "index_base": index_base},
        "versions": {"reidctl": __version__, "numpy": np.__version__, **cls.versions()},
        "tool": tool_info(),
    }
    write_results(out_dir, prep_dir, entries, outputs, facts, run, dump, index_base)
    return run


def write_results(
    out_dir: Path,
    prep_dir: Path,
    entries: Sequence[ManifestEntry],
    outputs: dict[str, np.ndarray],
    facts: dict[str, Any],
    run: dict[str, Any],
    dump: str | None,
    index_base: int,
) -> None:
    """Write a complete result directory (docs/formats.md section 3) at ``out_dir``.

    ``outputs`` rows follow ``entries`` (the manifest of ``prep_dir``, copied as is);
    ``facts`` becomes ``model.json`` and ``run`` ``run.json``, written last. The directory
    is staged under a temporary name beside ``out_dir`` and renamed into place; an existing
    ``out_dir`` is replaced (callers check ``--force`` first).
    """
    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    old = None
    try:
        (stage / FEATURES_DIR).mkdir()
        for name, arr in outputs.items():
            np.save(stage / FEATURES_DIR / f"{name}.npy", arr)
        shutil.copyfile(prep_dir / MANIFEST_NAME, stage / MANIFEST_NAME)
        write_json_atomic(stage / MODEL_JSON_NAME, facts)
        if dump is not None:
            write_dump(stage / DUMP_DIR, entries, outputs, dump, index_base)
        write_json_atomic(stage / RUN_NAME, run)  # last: marks the directory complete
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=parent))
            os.replace(out_dir, old / out_dir.name)
        try:
            os.replace(stage, out_dir)
        except OSError:
            if old is not None:  # put the previous results back
                os.replace(old / out_dir.name, out_dir)
            raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
