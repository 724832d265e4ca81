"""The on-disk artefacts that connect the stages (see docs/formats.md), one module each.

* :mod:`~reidctl.artifacts.sidecar`: model sidecar ``<model file>.json`` (:class:`ModelSidecar`)
* :mod:`~reidctl.artifacts.prep`: preprocessed set ``PREP/`` (:class:`PrepSet`, manifest,
  the only code that opens tensor files)
* :mod:`~reidctl.artifacts.results`: result directory ``RESULTS/`` (:class:`ResultDir`,
  :class:`RunRecord`; the only code that knows ``features/``)
* :mod:`~reidctl.artifacts.metrics`: ``metrics.json`` (:class:`Metrics`)
* :mod:`~reidctl.artifacts.common`: the tool record, JSON reading and the format-tag rule
* :mod:`~reidctl.artifacts.npz`: deterministic ``.npz`` writing
"""

from reidctl.artifacts.common import check_format, read_json, read_tagged, tool_info
from reidctl.artifacts.metrics import METRICS_FORMAT, Metrics
from reidctl.artifacts.npz import write_npz_deterministic
from reidctl.artifacts.prep import (
    INFO_NAME,
    MANIFEST_NAME,
    META_NAME,
    PREP_FORMAT,
    ManifestEntry,
    PrepSet,
    check_prep_fits_model,
    finalize_prep_set,
    manifest_line,
    read_manifest,
    read_prep_meta,
    read_tensor,
    tensor_complete,
    write_manifest,
    write_tensor,
)
from reidctl.artifacts.results import (
    MODEL_JSON_NAME,
    RESULT_FORMAT,
    RUN_NAME,
    ResultDir,
    RunRecord,
    check_output_names,
    check_replaceable,
    is_result_dir,
)
from reidctl.artifacts.sidecar import (
    SIDECAR_FORMAT,
    ModelSidecar,
    facts_from_dict,
    facts_to_dict,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

__all__ = [
    "INFO_NAME",
    "MANIFEST_NAME",
    "META_NAME",
    "METRICS_FORMAT",
    "MODEL_JSON_NAME",
    "PREP_FORMAT",
    "RESULT_FORMAT",
    "RUN_NAME",
    "SIDECAR_FORMAT",
    "ManifestEntry",
    "Metrics",
    "ModelSidecar",
    "PrepSet",
    "ResultDir",
    "RunRecord",
    "check_format",
    "check_output_names",
    "check_prep_fits_model",
    "check_replaceable",
    "facts_from_dict",
    "facts_to_dict",
    "finalize_prep_set",
    "is_result_dir",
    "manifest_line",
    "read_json",
    "read_manifest",
    "read_prep_meta",
    "read_sidecar",
    "read_tagged",
    "read_tensor",
    "sidecar_path",
    "tensor_complete",
    "tool_info",
    "write_manifest",
    "write_npz_deterministic",
    "write_sidecar",
    "write_tensor",
]
