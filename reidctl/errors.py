"""Typed errors. Library code raises these; only the CLI turns them into exit codes.

Exit codes: 2 for an unusable invocation or input (bad arguments, unknown names, missing or
invalid files), 1 when the work ran but found bad data (corrupt images, a failed accuracy
guard, outputs that disagree with the reference).
"""

from __future__ import annotations

from collections.abc import Iterable


class ReidctlError(Exception):
    """Base class of every error reidctl raises on purpose."""

    exit_code: int = 2


class InputError(ReidctlError):
    """An argument, file or directory that cannot be used as given (exit code 2)."""


class UnknownNameError(InputError):
    """A name (model, layout, back end, output) that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")


class CheckpointError(InputError):
    """A weights file that is missing, unreadable or does not fit the model."""


class FormatError(InputError):
    """An artefact (sidecar, manifest, tensor file, result directory) that is missing or invalid."""


class ShapeMismatchError(InputError):
    """Tensors whose shape or dtype do not match what the model expects."""


class PreprocessMismatchError(InputError):
    """A preprocessed set made with other preprocessing than the model's sidecar states."""


class OutputExistsError(InputError):
    """The output exists and --force was not given."""


class BackendUnavailableError(InputError):
    """A back end whose package or device is missing; the message carries the install hint."""


class BadDataError(ReidctlError):
    """The work ran but found bad data (exit code 1)."""

    exit_code = 1


class ValidationError(BadDataError):
    """Exported or converted model outputs differ from the reference beyond the tolerance."""


class AccuracyGuardError(BadDataError):
    """An accuracy guard (e.g. --max-map-drop) failed."""
