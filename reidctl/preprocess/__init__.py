"""The preprocess stage: dataset layouts -> ``.bin`` tensors, info file, labels manifest.

* :mod:`reidctl.preprocess.layouts` - the dataset layouts (scan only, no decoding);
* :mod:`reidctl.preprocess.transform` - one image -> one tensor (OpenCV);
* :mod:`reidctl.preprocess.engine` - planning, the output directory rules, the pool;
* :mod:`reidctl.preprocess.config` - where the preprocessing settings come from;
* :mod:`reidctl.preprocess.synthetic` - a small synthetic Market-1501-style dataset.
"""

from reidctl.preprocess.config import resolve_dtype, resolve_preprocess
from reidctl.preprocess.engine import (
    BadFile,
    PrepSummary,
    ShardResult,
    finalize_output,
    plan_entries,
    prepare_output_dir,
    preprocess_dataset,
    process_shard,
    run_state,
    write_tensors,
)
from reidctl.preprocess.layouts import get_layout, list_layouts, scan_layout
from reidctl.preprocess.transform import DTYPES, ImageTransform, TensorSettings, decode_image

__all__ = [
    "DTYPES",
    "BadFile",
    "ImageTransform",
    "PrepSummary",
    "ShardResult",
    "TensorSettings",
    "decode_image",
    "finalize_output",
    "get_layout",
    "list_layouts",
    "plan_entries",
    "prepare_output_dir",
    "preprocess_dataset",
    "process_shard",
    "resolve_dtype",
    "resolve_preprocess",
    "run_state",
    "scan_layout",
    "write_tensors",
]
