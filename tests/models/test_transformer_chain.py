"""Real data through the chain with a camera-aware transformer: TransReID DeiT-S at random
weights in the project's checkpoint format, with an SIE table of 6 cameras (Market-1501's),
on the 96-image market1501-mini set: export -> preprocess -> infer (the camera from the
manifest) -> eval -> bench, the float16 conversion, and the camera-agnostic export.

Expected features come from a bare onnxruntime session fed with the preprocessed tensors
and ``camid - 1`` computed here.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reidctl.artifacts import PrepSet, ResultDir
from reidctl.cli import main
from tests.models.test_transreid import transreid_checkpoint

pytestmark = [pytest.mark.shared, pytest.mark.slow]

NAME = "transreid_deit_small"
CAMERAS = 6


@pytest.fixture(scope="module")
def chain(tmp_path_factory, market_mini: Path) -> dict[str, Path]:
    """The checkpoint, its two-input and one-input exports and the preprocessed set."""
    from reidctl.convert.onnx import onnx_from_torch

    base = tmp_path_factory.mktemp("deit")
    weights = base / "transformer_120.pth"
    torch.save(transreid_checkpoint(NAME, 16, False, CAMERAS, seed=11), weights)
    model, agnostic = base / "deit.onnx", base / "deit-agnostic.onnx"
    onnx_from_torch(NAME, model, weights=weights, validate_batches=(1, 3))
    onnx_from_torch(
        NAME,
        agnostic,
        weights=weights,
        validate_batches=(2,),
        options={"camera_agnostic": True},
    )
    prep = base / "prep"
    args = ["preprocess", "market1501", "--root", str(market_mini), "--model-config", str(model)]
    assert main([*args, "-o", str(prep)]) == 0
    return {"weights": weights, "model": model, "agnostic": agnostic, "prep": prep, "base": base}


def _session(model: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def test_camera_from_the_manifest_through_infer_eval_bench(chain, capsys) -> None:
    model, prep_dir, base = chain["model"], chain["prep"], chain["base"]
    prep = PrepSet.open(prep_dir)
    assert prep.meta["first_camera"] == 1 and prep.meta["layout"] == "market1501"
    camids = np.array([e.camid for e in prep.entries])
    assert set(camids.tolist()) == {1, 2, 3, 4, 5, 6}

    results = base / "results"
    assert main(["infer", str(model), str(prep_dir), "-o", str(results), "--threads", "2"]) == 0
    run = json.loads((results / "run.json").read_text())
    assert run["camera"]["index"] == "camid - 1" and run["camera"]["num_cameras"] == CAMERAS
    feats = np.asarray(ResultDir.open(results).features())
    assert feats.shape == (len(prep.entries), 384)

    # an independent run over rows spread across the set, every camera among them
    rows = sorted({int(np.flatnonzero(camids == c)[-1]) for c in range(1, CAMERAS + 1)} | {0})
    sess = _session(model)
    batch = prep.read_batch(rows)
    cams = (camids[rows] - 1).astype(np.int64)
    (ref,) = sess.run(None, {"image": batch, "camera": cams})
    np.testing.assert_allclose(feats[rows], ref, rtol=0, atol=1e-5)
    # another camera gives another feature: the camera input is live
    (moved,) = sess.run(None, {"image": batch, "camera": (cams + 1) % CAMERAS})
    assert np.abs(moved - ref).max(axis=1).min() > 1e-3

    # offsets that leave the 6 rows are refused, naming the image, before any inference
    capsys.readouterr()
    bad = base / "bad"
    for offset, camid in (("0", 6), ("2", 1)):
        args = ["infer", str(model), str(prep_dir), "-o", str(bad), "--camera-offset", offset]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "market1501-mini/" in err and f"_c{camid}s" in err and "camera rows (0..5" in err
        assert not bad.exists()

    # eval reads the result directory as for any model
    assert main(["eval", str(results), "--json", str(base / "metrics.json")]) == 0
    metrics = json.loads((base / "metrics.json").read_text())
    assert metrics["num_query"] == 32 and metrics["num_valid_query"] == 30
    assert 0.0 <= metrics["mAP"] <= 1.0

    # bench synthesises valid camera indices from the sidecar
    code = main(["bench", str(model), "--backend", "ort", "--bs", "1,4", "--iters", "2",
                 "--warmup", "1", "--threads", "2", "--out", str(base / "bench")])  # fmt: skip
    assert code == 0
    rows = json.loads((base / "bench" / "bench.json").read_text())["results"]
    assert sorted(r["batch_size"] for r in rows) == [1, 4]
    assert all(r["skipped"] is None and r["images_per_s"] > 0 for r in rows)


def test_embedder_cameras_follow_the_same_rule(chain, market_mini: Path) -> None:
    from reidctl.embedder import Embedder
    from reidctl.errors import InputError

    prep = PrepSet.open(chain["prep"])
    results = chain["base"] / "results"
    if not (results / "run.json").is_file():
        assert main(["infer", str(chain["model"]), str(chain["prep"]), "-o", str(results)]) == 0
    feats = np.asarray(ResultDir.open(results).features())
    rows = [1, 8, 20, 33, 46, 60]
    paths = [market_mini / prep.entries[i].source for i in rows]
    with Embedder(chain["model"], threads=2) as emb:
        assert emb.camera_aware and emb.num_cameras == CAMERAS and emb.first_camera == 1
        cams = [prep.entries[i].camid - emb.first_camera for i in rows]
        got = emb.embed(paths, cameras=cams, normalize=False)
        np.testing.assert_allclose(got, feats[rows], rtol=0, atol=1e-5)
        with pytest.raises(InputError, match=r"cameras\[0\] is camera index 6, outside"):
            emb.embed(paths[:1], cameras=[CAMERAS])


@pytest.mark.filterwarnings("ignore::reidctl.convert.fp16.Float16NotRunWarning")
def test_fp16_keeps_layernorm_and_softmax_in_float32(chain) -> None:
    out = chain["base"] / "deit.fp16.onnx"
    assert main(["convert", "fp16", str(chain["model"]), "-o", str(out), "--data",
                 str(chain["prep"])]) == 0  # fmt: skip
    m = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.value_info, *m.graph.input]}
    dtype.update({t.name: t.data_type for t in m.graph.initializer})
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for node in m.graph.node:
        if node.input:  # Constant nodes have none
            seen[node.op_type][dtype.get(node.input[0])] += 1
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    # 12 blocks x 2 norms + the final norm; one attention softmax per block
    assert seen["LayerNormalization"] == {f32: 25}
    assert seen["Softmax"] == {f32: 12}
    assert seen["MatMul"][f16] > 0 and seen["MatMul"][f32] == 0  # the rest is float16
    assert {i.name: i.type.tensor_type.elem_type for i in m.graph.input} == {
        "image": f32,
        "camera": onnx.TensorProto.INT64,
    }
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["camera"]["num_cameras"] == CAMERAS
    assert side["conversion"]["validation"]["results"][0]["mean_cosine"] > 0.999


def test_camera_agnostic_export_runs_the_chain_with_one_input(chain, capsys) -> None:
    model, prep_dir, base = chain["agnostic"], chain["prep"], chain["base"]
    assert [i.name for i in onnx.load(str(model)).graph.input] == ["image"]
    results = base / "results-agnostic"
    assert main(["infer", str(model), str(prep_dir), "-o", str(results), "--threads", "2"]) == 0
    assert "camera" not in json.loads((results / "run.json").read_text())
    feats = np.asarray(ResultDir.open(results).features())
    prep = PrepSet.open(prep_dir)
    (ref,) = _session(model).run(None, {"image": prep.read_batch([0, 7, 50])})
    np.testing.assert_allclose(feats[[0, 7, 50]], ref, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["eval", str(results)]) == 0
    args = ["infer", str(model), str(prep_dir), "-o", str(base / "r2"), "--camera-offset", "1"]
    assert main(args) == 2
    assert "applies to camera-aware models" in capsys.readouterr().err
