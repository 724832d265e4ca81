"""The ``reidctl bench`` stage: throughput and latency by back end and batch size.

Everything here is a plain function a notebook can call::

    from reidctl.bench import BenchSettings, run_bench, format_table
    result = run_bench(["model.onnx"], ["ort", "openvino"], BenchSettings(batch_sizes=(1, 8)))
    print(format_table(result))

Each cell (model, back end, batch size) feeds one batch (synthetic, seeded, of the model's
input shape; or real tensors from a preprocessed set) to a runner again and again, after a
warm-up, and keeps the wall time of every call (``Runner.last_latency_s``). Every cell is
measured in ``repeat`` repeats, all cells interleaved (A B C, C B A, A B C ...), so drift in
the machine's load or clock spreads over every cell and a ratio (``--vs``) compares figures
taken moments apart. Throughput is ``batch * calls / sum of call times`` of each repeat, in
images per second, reported as the median over the repeats with its min..max and spread
(``(max - min) / median``; above 10 % the cell is flagged); latencies are per call (per
batch), in milliseconds, over all calls. The load average at the start and end of a run is
recorded, with a warning when it exceeds the cores.

Modules: :mod:`~reidctl.bench.settings` (what and how long), :mod:`~reidctl.bench.feeds`
(the batches), :mod:`~reidctl.bench.measure` (timing and the run),
:mod:`~reidctl.bench.machine` (where), :mod:`~reidctl.bench.result` (the figures),
:mod:`~reidctl.bench.report` (tables, CSV, plot, files).
"""

from reidctl.bench.feeds import (
    concrete_shape,
    data_feeds,
    index_bounds,
    load_prep_tensors,
    synthetic_feeds,
)
from reidctl.bench.machine import (
    cpu_flags,
    cpu_model,
    gpu_names,
    load_average,
    machine_info,
    package_versions,
)
from reidctl.bench.measure import (
    cache_dir,
    default_model_file,
    interleaved_order,
    load_sidecars,
    make_runner,
    measure,
    model_labels,
    run_bench,
)
from reidctl.bench.report import (
    CSV_FIELDS,
    UNSTABLE_MARK,
    check_outputs,
    draw_throughput,
    format_latency_table,
    format_load,
    format_table,
    output_paths,
    plot_throughput,
    table_legend,
    to_csv,
    write_outputs,
)
from reidctl.bench.result import BenchRecord, BenchResult, LatencyStats
from reidctl.bench.settings import (
    BENCH_FORMAT,
    DEFAULT_BATCH_SIZES,
    DEFAULT_MODEL,
    DEFAULT_REPEAT,
    SPREAD_LIMIT,
    BenchSettings,
    parse_int_list,
    parse_name_list,
)
from reidctl.platform import VERSION_PACKAGES

__all__ = [
    "BENCH_FORMAT",
    "CSV_FIELDS",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_MODEL",
    "DEFAULT_REPEAT",
    "SPREAD_LIMIT",
    "UNSTABLE_MARK",
    "VERSION_PACKAGES",
    "BenchRecord",
    "BenchResult",
    "BenchSettings",
    "LatencyStats",
    "cache_dir",
    "check_outputs",
    "concrete_shape",
    "cpu_flags",
    "cpu_model",
    "data_feeds",
    "default_model_file",
    "draw_throughput",
    "format_latency_table",
    "format_load",
    "format_table",
    "gpu_names",
    "index_bounds",
    "interleaved_order",
    "load_average",
    "load_prep_tensors",
    "load_sidecars",
    "machine_info",
    "make_runner",
    "measure",
    "model_labels",
    "output_paths",
    "package_versions",
    "parse_int_list",
    "parse_name_list",
    "plot_throughput",
    "run_bench",
    "synthetic_feeds",
    "table_legend",
    "to_csv",
    "write_outputs",
]
