"""Camera-aware models: the side information embedding (SIE) and its export settings.

TransReID and CLIP-ReID learn one embedding row per training camera (``sie_embed`` /
``cv_embed``) and add ``coefficient * row[camera]`` to the tokens. A camera-aware module
(see :mod:`reidctl.models.registry`) exposes:

* ``num_cameras``: rows of its SIE table (0: trained without SIE, one input);
* ``takes_camera``: whether ``forward(image, camera)`` needs the camera (``camera`` int64
  ``[batch]``, 0-based as the training code indexes the table: ``camid - first_camera``);
* ``configure(**options) -> dict``: export settings (SIE coefficient, camera-agnostic mode,
  family options), returning the effective settings recorded in the sidecar;
* ``ignored_keys``: checkpoint key prefixes it drops by name, with their tensor counts;
* ``output_shapes``: each output's shape without the batch axis (it follows the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidctl.errors import InputError

#: how a manifest's ``camid`` becomes the camera input; recorded in the sidecar
CAMERA_INDEX_RULE = "camid - first_camera"


@dataclass
class SieMode:
    """How the SIE table is used at inference.

    ``coefficient`` scales the row (``SIE_COE``). ``agnostic``: no camera input; then
    ``fixed_camera`` K adds row K to every image (a reidctl extension), ``None`` adds none.
    """

    coefficient: float = 3.0
    agnostic: bool = False
    fixed_camera: int | None = None

    def set(
        self,
        model: str,
        num_cameras: int,
        coefficient: float | None,
        camera_agnostic: bool,
        sie_camera: int | None,
    ) -> None:
        """Apply export options, checking them against the table size; :class:`InputError`."""
        if coefficient is not None:
            self.coefficient = float(coefficient)
        if sie_camera is not None and not camera_agnostic:
            raise InputError(
                "--sie-camera chooses the SIE row of a --camera-agnostic export; "
                "add --camera-agnostic or drop --sie-camera"
            )
        if camera_agnostic and num_cameras == 0:
            raise InputError(
                f"{model}: these weights have no SIE table (trained without a camera input), "
                "so the model already has one input; drop --camera-agnostic"
            )
        if sie_camera is not None and not 0 <= sie_camera < num_cameras:
            raise InputError(
                f"--sie-camera {sie_camera} is out of range: the SIE table has {num_cameras} "
                f"cameras (0..{num_cameras - 1}, 0-based)"
            )
        self.agnostic = bool(camera_agnostic)
        self.fixed_camera = sie_camera

    def takes_camera(self, num_cameras: int) -> bool:
        return num_cameras > 0 and not self.agnostic

    def describe(self, num_cameras: int) -> dict[str, Any]:
        """The sidecar's ``camera`` block."""
        d: dict[str, Any] = {"num_cameras": num_cameras, "sie_coefficient": self.coefficient}
        if num_cameras == 0:
            d["sie"] = False
        elif self.agnostic:
            d["camera_agnostic"] = True
            d["sie_camera"] = self.fixed_camera
        else:
            d["input"] = "camera"
            d["index"] = CAMERA_INDEX_RULE
        return d


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """A reference project's YAML config as nested dicts (PyYAML, no yacs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        import yaml
    except ImportError as e:
        raise InputError("--config needs PyYAML: pip install pyyaml") from e
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read config {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise InputError(f"config {path} is not a YAML mapping (MODEL:, INPUT:, TEST: ...)")
    return cfg


def config_value(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``config_value(cfg, "MODEL.SIE_COE")``: the value, or ``default`` when absent."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def check_config_agrees(path: str | Path, key: str, config: Any, weights: Any) -> None:
    """A config fact the checkpoint also determines must agree with it."""
    if config is not None and config != weights:
        raise InputError(
            f"config {path}: {key} is {config!r} but the weights say {weights!r}; "
            "use the config the checkpoint was trained with"
        )


def check_config_facts(path: str | Path, cfg: dict[str, Any], facts: dict[str, Any]) -> None:
    """Each ``{KEY: value the weights fix}`` of ``facts`` against the config's ``KEY``
    (YAML lists and tuples compared as lists); a key the config lacks is not checked."""
    for key, fact in facts.items():
        value = config_value(cfg, key)
        check_config_agrees(
            path, key, list(value) if isinstance(value, list | tuple) else value, fact
        )


#: sidecar ``model_settings`` names -> ``configure`` parameters
_SETTING_OPTIONS = {
    "shift": "jpm_shift",
    "shuffle_groups": "jpm_groups",
    "divide_length": "jpm_divide",
    "rearrange": "rearrange",
    "neck_feat": "neck_feat",
    "semantic_weight": "semantic_weight",
}


def options_from_sidecar(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The ``configure`` options that rebuild an exported model's settings from its sidecar
    (``model_settings`` and ``camera``), so that PyTorch runs what the ONNX graph runs."""
    opts: dict[str, Any] = {}
    settings = sidecar.get("model_settings")
    if isinstance(settings, dict):
        opts.update({o: settings[k] for k, o in _SETTING_OPTIONS.items() if k in settings})
    cam = sidecar.get("camera")
    if isinstance(cam, dict) and int(cam.get("num_cameras") or 0) > 0:
        if "sie_coefficient" in cam:
            opts["sie_coe"] = float(cam["sie_coefficient"])
        if cam.get("camera_agnostic"):
            opts["camera_agnostic"] = True
            opts["sie_camera"] = cam.get("sie_camera")
    return opts
