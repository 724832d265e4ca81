"""``metrics.json`` (docs/formats.md section 4): :class:`Metrics`, its only reader and writer."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidctl.artifacts.common import check_format, read_json, tool_info
from reidctl.errors import FormatError
from reidctl.io import write_json_atomic

if TYPE_CHECKING:
    from reidctl.evaluate.rank import RankResult

METRICS_FORMAT = "reidctl.metrics/1"
METRICS_FIX = "re-run `reidctl eval ... --json` to re-create it"


@dataclass
class Metrics:
    """Accuracy as fractions in [0, 1] (``to_dict`` gives the metrics.json fields)."""

    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    cmc: list[float]
    num_query: int
    num_valid_query: int
    num_gallery: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_rank(cls, r: RankResult, num_gallery: int, settings: dict[str, Any]) -> Metrics:
        return cls(
            rank1=r.rank(1),
            rank5=r.rank(5),
            rank10=r.rank(10),
            mAP=float(r.mAP),
            mINP=float(r.mINP),
            cmc=[float(v) for v in r.cmc],
            num_query=r.num_query,
            num_valid_query=r.num_valid,
            num_gallery=num_gallery,
            settings=settings,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "metrics") -> Metrics:
        """From the metrics.json fields (other keys, e.g. ``format``, are ignored)."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
            raise FormatError(f"{source} lacks metrics fields ({e}); {METRICS_FIX}") from e

    def save(self, path: str | os.PathLike[str], **extra: Any) -> Path:
        """Write ``metrics.json`` at ``path`` atomically (``extra`` keys added, e.g. the
        index a top-k evaluation used)."""
        write_json_atomic(
            path, {"format": METRICS_FORMAT, "tool": tool_info(), **self.to_dict(), **extra}
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Metrics:
        """Read ``metrics.json``; :class:`FormatError` (exit code 2) when missing, invalid or
        of an unknown or newer format."""
        d = read_json(path, "metrics file")
        check_format(d, path, METRICS_FORMAT, METRICS_FIX)
        return cls.from_dict(d, str(path))
