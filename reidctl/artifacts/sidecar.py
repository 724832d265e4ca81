"""The model sidecar ``<model file>.json`` (docs/formats.md section 1).

Written by export and every convert, read by every later stage: :class:`ModelSidecar` is
its only reader and writer. ``model.json`` in a result directory holds the same record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reidctl.artifacts.common import check_format, read_json, tool_info
from reidctl.errors import FormatError, UnknownNameError
from reidctl.io import dumps_json, write_text_atomic
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec

SIDECAR_FORMAT = "reidctl.model/1"
SIDECAR_FIX = "re-create it with `reidctl export` (or the `reidctl convert` that wrote it)"
_FACT_KEYS = ("model", "preprocess", "inputs", "outputs", "feature", "l2_normalize")
_ENVELOPE = ("format", "tool")


def sidecar_path(model_file: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (the same rule for engines, OM and XML files)."""
    p = Path(model_file)
    return p.with_name(p.name + ".json")


def facts_from_dict(d: Mapping[str, Any], source: str = "sidecar") -> ModelFacts:
    """Build :class:`ModelFacts` from a sidecar or ``model.json`` dictionary."""
    try:
        return ModelFacts(
            model=str(d["model"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            feature=str(d["feature"]),
            l2_normalize=bool(d["l2_normalize"]),
            extra={k: v for k, v in d.items() if k not in _FACT_KEYS and k not in _ENVELOPE},
        )
    except KeyError as e:
        raise FormatError(f"{source} lacks the field {e.args[0]!r}; {SIDECAR_FIX}") from e
    except TypeError as e:
        raise FormatError(f"{source} holds an invalid field ({e}); {SIDECAR_FIX}") from e


def facts_to_dict(facts: ModelFacts) -> dict[str, Any]:
    """The JSON fields of ``facts`` (``extra`` first, the core fields over it)."""
    d: dict[str, Any] = dict(facts.extra)
    d.update(
        model=facts.model,
        preprocess=facts.preprocess.to_dict(),
        inputs=[t.to_dict() for t in facts.inputs],
        outputs=[t.to_dict() for t in facts.outputs],
        feature=facts.feature,
        l2_normalize=facts.l2_normalize,
    )
    return d


@dataclass(frozen=True)
class ModelSidecar:
    """A model's sidecar: :class:`ModelFacts` (what inference and evaluation need) plus the
    record of where the model came from (``weights``, ``opset``, ``static_batch``,
    ``validation``, ``source``, ``conversion``, ``model_file``, ``model_sha256``, ...) in
    ``fields``, verbatim. ``format`` and ``tool`` are written by :meth:`save`, not kept."""

    facts: ModelFacts
    fields: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- views
    @property
    def model(self) -> str:
        return self.facts.model

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.facts.preprocess

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.facts.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.facts.outputs

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.facts.outputs]

    @property
    def feature(self) -> str:
        return self.facts.feature

    @property
    def l2_normalize(self) -> bool:
        return self.facts.l2_normalize

    @property
    def weights(self) -> dict[str, Any] | None:
        w = self.fields.get("weights")
        return w if isinstance(w, dict) else None

    @property
    def static_batch(self) -> int | None:
        b = self.fields.get("static_batch")
        return b if isinstance(b, int) else None

    @property
    def conversion(self) -> dict[str, Any] | None:
        return self.fields.get("conversion")

    @property
    def model_sha256(self) -> str | None:
        return self.fields.get("model_sha256")

    # ---------------------------------------------------------------- changes
    def with_feature(self, feature: str | None) -> ModelSidecar:
        """This sidecar with ``feature`` as the retrieval feature (checked against outputs)."""
        if feature is None:
            return self
        if feature not in self.output_names:
            raise UnknownNameError("output", feature, self.output_names)
        return replace(self, facts=replace(self.facts, feature=feature))

    def with_batch_dim(self, batch: int | str) -> ModelSidecar:
        """Inputs and outputs with ``batch`` as their first axis (a converted engine's)."""

        def fix(specs: Sequence[TensorSpec]) -> tuple[TensorSpec, ...]:
            return tuple(replace(t, shape=(batch, *t.shape[1:])) for t in specs)

        facts = replace(self.facts, inputs=fix(self.inputs), outputs=fix(self.outputs))
        return replace(self, facts=facts)

    def with_fields(self, drop: Sequence[str] = (), **updates: Any) -> ModelSidecar:
        """``fields`` without the keys in ``drop``, then ``updates`` set."""
        rest = {k: v for k, v in self.fields.items() if k not in drop}
        rest.update(updates)
        return replace(self, fields=rest)

    # ---------------------------------------------------------------- (de)serialising
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "sidecar") -> ModelSidecar:
        """From the JSON fields (``format`` and ``tool`` ignored; :meth:`load` checks them)."""
        facts = facts_from_dict(d, source)
        return cls(replace(facts, extra={}), dict(facts.extra))

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields, without ``format`` and ``tool``."""
        d = dict(self.fields)
        d.update(facts_to_dict(self.facts))
        return d

    def to_json(self) -> str:
        """The file's text: ``format`` and ``tool`` of this version plus :meth:`to_dict`."""
        return dumps_json({"format": SIDECAR_FORMAT, "tool": tool_info(), **self.to_dict()})

    @classmethod
    def read(cls, path: str | os.PathLike[str], what: str = "model sidecar") -> ModelSidecar:
        """Read a sidecar-format JSON file at ``path`` (a sidecar or ``model.json``)."""
        d = read_json(path, what)
        check_format(d, path, SIDECAR_FORMAT, SIDECAR_FIX)
        return cls.from_dict(d, f"{what} {path}")

    @classmethod
    def load(cls, model_file: str | os.PathLike[str]) -> ModelSidecar:
        """The sidecar of ``model_file`` (``<model_file>.json``); :class:`FormatError` (exit
        code 2) when it is missing, invalid, untagged or of an unknown or newer format."""
        return cls.read(sidecar_path(model_file))

    @classmethod
    def load_or_none(cls, model_file: str | os.PathLike[str]) -> ModelSidecar | None:
        """:meth:`load`, or ``None`` when the model file has no sidecar (a malformed one is
        still an error)."""
        return cls.load(model_file) if sidecar_path(model_file).is_file() else None

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write this record to ``path`` atomically (a sidecar or ``model.json``)."""
        write_text_atomic(path, self.to_json())
        return Path(path)

    def save(self, model_file: str | os.PathLike[str]) -> Path:
        """Write ``<model_file>.json`` atomically; returns its path."""
        return self.write(sidecar_path(model_file))


def sidecar_preprocess(path: str | os.PathLike[str]) -> PreprocessSpec:
    """The ``preprocess`` block of the sidecar at ``path`` (a ``.json`` sidecar, or a model
    file whose sidecar is beside it); only that block needs to be present."""
    p = Path(path)
    if p.suffix != ".json" and sidecar_path(p).is_file():
        p = sidecar_path(p)
    d = read_json(p, "model sidecar")
    check_format(d, p, SIDECAR_FORMAT, SIDECAR_FIX)
    if not isinstance(d.get("preprocess"), dict):
        raise FormatError(
            f"model sidecar {p} has no 'preprocess' object; re-export the model with "
            "`reidctl export` or give --model / --size, --mean, --std instead"
        )
    return PreprocessSpec.from_dict(d["preprocess"])


def read_sidecar(model_file: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON view of :meth:`ModelSidecar.load` (format tag checked), with the file's
    ``format`` and ``tool``: for code that reports or compares the file as written."""
    path = sidecar_path(model_file)
    d = read_json(path, "model sidecar")
    check_format(d, path, SIDECAR_FORMAT, SIDECAR_FIX)
    ModelSidecar.from_dict(d, f"model sidecar {path}")  # the facts must be complete
    return d


def write_sidecar(
    model_file: str | os.PathLike[str], sidecar: ModelSidecar | Mapping[str, Any]
) -> Path:
    """:meth:`ModelSidecar.save` (a JSON-shaped mapping is checked by building one)."""
    if not isinstance(sidecar, ModelSidecar):
        sidecar = ModelSidecar.from_dict(sidecar, f"sidecar for {model_file}")
    return sidecar.save(model_file)
