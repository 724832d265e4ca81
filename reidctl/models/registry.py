"""The model registry: names -> :class:`ModelSpec`, without importing torch.

A spec carries every fact later stages need (input size, preprocessing, named outputs, which
output is the retrieval feature, whether it is L2-normalised, export tolerance). The network
itself is built by ``builder``, a ``"module:function"`` string imported on demand, so listing
models or reading their preprocessing never imports torch.

Adding a model: write ``reidctl/models/<family>.py`` with a builder
``def build(variant: str, num_classes: int | None) -> torch.nn.Module`` whose module returns a
tuple of outputs in ``output_names`` order, then add one :func:`register_model` call below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reidctl.errors import UnknownNameError
from reidctl.specs import PreprocessSpec, TensorSpec


@dataclass(frozen=True)
class ModelSpec:
    """Facts about a registered model.

    ``outputs`` lists every output the module can return, in order; ``optional_outputs``
    names those present only when the checkpoint provides them (e.g. ``logits`` when it has
    a classifier). ``builder`` is ``"package.module:function"``; the function is called as
    ``fn(name, num_classes)`` and returns an ``nn.Module`` with an ``output_names`` attribute.
    ``tolerance`` bounds the export check: max |onnx - torch| / max |torch| per output.

    ``num_cameras`` > 0 marks a camera-aware model (side information embedding, SIE): its
    module takes a second input ``camera`` (int64 ``[batch]``, the 0-based camera index as
    the training code indexes its SIE table). The value is the camera count of the
    randomly initialised model; with a checkpoint, the checkpoint's SIE table decides (a
    checkpoint trained without SIE gives a one-input model).
    """

    name: str
    description: str
    builder: str
    outputs: tuple[TensorSpec, ...]
    feature: str
    l2_normalize: bool = True
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    optional_outputs: tuple[str, ...] = ()
    tolerance: float = 1e-4
    reference: str = ""
    num_cameras: int = 0

    @property
    def input(self) -> TensorSpec:
        """The image input ``[batch, 3, H, W]`` float32."""
        p = self.preprocess
        return TensorSpec("image", ("batch", 3, p.height, p.width), "float32")

    @property
    def camera_input(self) -> TensorSpec | None:
        """The camera input ``[batch]`` int64 of a camera-aware model, else ``None``."""
        return CAMERA_INPUT if self.num_cameras > 0 else None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Every input in graph order: ``image``, then ``camera`` for camera-aware models."""
        cam = self.camera_input
        return (self.input,) if cam is None else (self.input, cam)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "optional_outputs": list(self.optional_outputs),
            "feature": self.feature,
            "l2_normalize": self.l2_normalize,
            "preprocess": self.preprocess.to_dict(),
            "tolerance": self.tolerance,
            "reference": self.reference,
        }
        if self.num_cameras > 0:
            d["inputs"] = [t.to_dict() for t in self.inputs]
            d["num_cameras"] = self.num_cameras
        return d


#: the second input of camera-aware models: 0-based camera index per image
CAMERA_INPUT = TensorSpec("camera", ("batch",), "int64")

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    if spec.feature not in {o.name for o in spec.outputs}:
        raise ValueError(f"{spec.name}: feature {spec.feature!r} is not among its outputs")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; :class:`UnknownNameError` lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, _REGISTRY) from None


def list_models() -> list[str]:
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- the zoo


def _feat(name: str, *dims: int | str) -> TensorSpec:
    return TensorSpec(name, ("batch", *dims))


register_model(
    ModelSpec(
        name="aligned_reid",
        description="AlignedReID: ResNet-50 (last stride 2), global feature + 8 local stripes",
        builder="reidctl.models.aligned_reid:build",
        outputs=(_feat("global_feat", 2048), _feat("local_feat", 8, 128), _feat("logits", "C")),
        optional_outputs=("logits",),
        feature="global_feat",
        l2_normalize=True,
        # the reference's own statistics (script/experiment/train.py: im_mean), not ImageNet's
        preprocess=PreprocessSpec(mean=(0.486, 0.459, 0.408)),
        tolerance=1e-4,
        reference="huanghoujing/AlignedReID-Re-Production-Pytorch",
    )
)
register_model(
    ModelSpec(
        name="centroids_reid",
        description="Centroids-ReID: BoT ResNet-50 (last stride 1, BNNeck), feature after BN",
        builder="reidctl.models.centroids_reid:build",
        outputs=(_feat("feature", 2048),),
        feature="feature",
        l2_normalize=True,
        tolerance=1e-4,
        reference="mikwieczorek/centroids-reid",
    )
)
register_model(
    ModelSpec(
        name="trinet",
        description="TriNet (Hermans et al. 2017): ResNet-50, FC 1024, BN, ReLU, FC 128",
        builder="reidctl.models.trinet:build",
        outputs=(_feat("embedding", 128),),
        feature="embedding",
        l2_normalize=False,
        tolerance=1e-4,
        reference="DAAF-ReID test network; Hermans et al., In Defense of the Triplet Loss",
    )
)
for _variant in ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25"):
    register_model(
        ModelSpec(
            name=_variant,
            description=f"OSNet {_variant[6:].replace('_', '.')} (Zhou et al. 2019), 512-d fc",
            builder="reidctl.models.osnet:build",
            outputs=(_feat("feature", 512),),
            feature="feature",
            l2_normalize=True,
            tolerance=1e-4,
            reference="KaiyangZhou/deep-person-reid (torchreid)",
        )
    )
register_model(
    ModelSpec(
        name="resnet50",
        description="ResNet-50 global-average-pool embedder (2048-d)",
        builder="reidctl.models.resnet:build_embedder",
        outputs=(_feat("feature", 2048),),
        feature="feature",
        l2_normalize=True,
        tolerance=1e-4,
    )
)

# ------------------------------------------------------- transformer ReID (camera input)

_HALF = PreprocessSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_TRANSREID = "damo-cv/TransReID"
register_model(
    ModelSpec(
        name="transreid_vit_base",
        description=(
            "TransReID ViT-B/16: SIE camera embedding, JPM (feature cat(global, 4 local/4), "
            "3840-d; 768-d without JPM); stride 16 or 12 and cameras follow the checkpoint"
        ),
        builder="reidctl.models.transreid:build",
        outputs=(_feat("feature", 3840),),
        feature="feature",
        l2_normalize=True,
        preprocess=_HALF,
        tolerance=1e-4,
        reference=_TRANSREID,
        num_cameras=6,
    )
)
register_model(
    ModelSpec(
        name="transreid_vit_small",
        description=(
            "TransReID ViT-S (timm's original: 768 wide, 8 blocks), 768-d class token; "
            "SIE, JPM and stride follow the checkpoint"
        ),
        builder="reidctl.models.transreid:build",
        outputs=(_feat("feature", 768),),
        feature="feature",
        l2_normalize=True,
        preprocess=_HALF,
        tolerance=1e-4,
        reference=_TRANSREID,
    )
)
register_model(
    ModelSpec(
        name="transreid_deit_small",
        description=(
            "TransReID DeiT-S (384 wide, 12 blocks), 384-d class token; SIE and stride "
            "follow the checkpoint"
        ),
        builder="reidctl.models.transreid:build",
        outputs=(_feat("feature", 384),),
        feature="feature",
        l2_normalize=True,
        preprocess=_HALF,
        tolerance=1e-4,
        reference=_TRANSREID,
    )
)
_CLIPREID = "Syliz517/CLIP-ReID"
register_model(
    ModelSpec(
        name="clipreid_vit_b16",
        description=(
            "CLIP-ReID ViT-B/16 image encoder (QuickGELU, 16x8 position grid), SIE on the "
            "class token; feature cat(class token 768, projection 512)"
        ),
        builder="reidctl.models.clipreid:build",
        outputs=(_feat("feature", 1280),),
        feature="feature",
        l2_normalize=True,
        preprocess=_HALF,  # configs/person/vit_clipreid.yml
        tolerance=1e-4,
        reference=_CLIPREID,
        num_cameras=6,
    )
)
register_model(
    ModelSpec(
        name="clipreid_rn50",
        description=(
            "CLIP-ReID RN50 image encoder (CLIP's modified ResNet-50, layer 4 stride 1); "
            "feature cat(average pool 2048, attention pool 1024)"
        ),
        builder="reidctl.models.clipreid:build",
        outputs=(_feat("feature", 3072),),
        feature="feature",
        l2_normalize=True,
        preprocess=PreprocessSpec(),  # configs/person/cnn_clipreid.yml: ImageNet mean/std
        tolerance=1e-4,
        reference=_CLIPREID,
    )
)

_SOLIDER = "tinyvision/SOLIDER-REID"
for _variant, _size, _dim in (
    ("solider_swin_tiny", "Swin-T", 768),
    ("solider_swin_small", "Swin-S", 768),
    ("solider_swin_base", "Swin-B", 1024),
):
    register_model(
        ModelSpec(
            name=_variant,
            description=(
                f"SOLIDER-REID {_size} (window 7, shifted windows, semantic weight 0.2 by "
                f"default), {_dim}-d pooled feature before the BN neck"
            ),
            builder="reidctl.models.solider:build",
            outputs=(_feat("feature", _dim),),
            feature="feature",
            l2_normalize=True,  # TEST.FEAT_NORM: 'yes'
            # configs/market/swin_*.yml: SIZE_TEST [384, 128], PIXEL_MEAN/STD 0.5
            preprocess=PreprocessSpec(
                height=384, width=128, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
            ),
            tolerance=1e-4,
            reference=_SOLIDER,
        )
    )

# fast-reid, LightMBN and torchreid MobileNetV2 (CNN families)
_FASTREID = {
    # name: (description, input height)
    "fastreid_bot_r50": ("fast-reid BagTricks: ResNet-50, last stride 1, GAP, BNNeck", 256),
    "fastreid_bot_r50_ibn": (
        "fast-reid BagTricks: ResNet-50 IBN-a, last stride 1, GAP, BNNeck",
        256,
    ),
    "fastreid_agw_r50": ("fast-reid AGW: ResNet-50, non-local, GeM (p=3), BNNeck", 256),
    "fastreid_sbs_r50_ibn": (
        "fast-reid SBS: ResNet-50 IBN-a, non-local, GeM with learned p, BNNeck",
        384,
    ),
    "fastreid_mgn_r50_ibn": (
        "fast-reid MGN: ResNet-50 IBN-a, 3 branches, 8 heads of 256-d GeM-P + BNNeck",
        384,
    ),
}
for _name, (_desc, _height) in _FASTREID.items():
    register_model(
        ModelSpec(
            name=_name,
            description=_desc,
            builder="reidctl.models.fastreid:build",
            outputs=(_feat("feature", 2048),),
            feature="feature",
            l2_normalize=True,
            # fast-reid normalises in the model with PIXEL_MEAN/STD (0..255): ImageNet's
            # statistics by default; a checkpoint that carries pixel_mean/pixel_std overrides
            # these in the exported sidecar. Its test transform resizes with PIL bicubic.
            preprocess=PreprocessSpec(height=_height, width=128, interpolation="bicubic"),
            tolerance=1e-4,
            reference="JDAI-CV/fast-reid (configs/Market1501)",
        )
    )
for _variant, _dim in (("mobilenetv2_x1_0", 1280), ("mobilenetv2_x1_4", 1792)):
    register_model(
        ModelSpec(
            name=_variant,
            description=f"MobileNetV2 {_variant[13:].replace('_', '.')} (torchreid), "
            f"{_dim}-d global average pool",
            builder="reidctl.models.mobilenetv2:build",
            outputs=(_feat("feature", _dim),),
            feature="feature",
            l2_normalize=True,
            tolerance=1e-4,
            reference="KaiyangZhou/deep-person-reid (torchreid)",
        )
    )
register_model(
    ModelSpec(
        name="lmbn_n",
        description="LightMBN LMBN_n: OSNet trunk, global/part/channel branches, 7 x 512-d",
        builder="reidctl.models.lightmbn:build",
        outputs=(_feat("feature", 3584),),
        feature="feature",
        l2_normalize=True,
        preprocess=PreprocessSpec(height=384, width=128),
        tolerance=1e-4,
        reference="jixunbo/LightMBN (model/lmbn_n.py); boxmot",
    )
)
