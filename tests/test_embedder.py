"""reidctl.Embedder: the CLI's preprocessing and inference from Python, bit for bit."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidctl import Embedder
from reidctl.cli import main
from reidctl.errors import FormatError, InputError, ShapeMismatchError
from reidctl.preprocess.transform import BadImageError

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, market_mini: Path, osnet_weights: Path):
    """Real OSNet x0.25 exported, market1501-mini preprocessed and run by the CLI (ort)."""
    from reidctl.convert.onnx import onnx_from_torch

    work = tmp_path_factory.mktemp("embedder")
    model = work / "osnet.onnx"
    onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(1,))
    prep, res = work / "prep", work / "res"
    args = ["preprocess", "market1501", "--root", str(market_mini)]
    assert main([*args, "--model-config", f"{model}.json", "-o", str(prep)]) == 0
    assert main(["infer", str(model), str(prep), "-o", str(res), "--threads", "1"]) == 0
    entries = [json.loads(line) for line in (prep / "manifest.jsonl").read_text().splitlines()]
    paths = [market_mini / e["source"] for e in entries]
    features = np.load(res / "features" / "feature.npy")
    return model, paths, features


@pytest.fixture(scope="module")
def emb(chain):
    with Embedder(chain[0], threads=1) as e:
        yield e


def test_package_import_stays_light() -> None:
    code = (
        "import sys, reidctl; "
        "names = ('torch', 'onnxruntime', 'onnx', 'cv2', 'numpy'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_paths_bytes_and_bgr_arrays_equal_the_cli_bit_for_bit(chain, emb) -> None:
    _, paths, features = chain
    assert features.shape == (len(paths), 512) and features.dtype == np.float32
    kinds = {
        "paths": paths,
        "str paths": [str(p) for p in paths],
        "bytes": [p.read_bytes() for p in paths],
        "BGR arrays": [cv2.imread(str(p)) for p in paths],
    }
    for kind, images in kinds.items():
        raw = emb.embed(images, normalize=False)
        assert raw.dtype == np.float32 and raw.shape == features.shape, kind
        assert np.array_equal(raw, features), kind


def test_rgb_arrays_and_pil_images(chain, emb) -> None:
    pil = pytest.importorskip("PIL.Image")
    _, paths, features = chain
    few = paths[:5]
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in few]
    assert np.array_equal(emb.embed(rgb, color="rgb", normalize=False), features[:5])
    images = [pil.fromarray(a) for a in rgb]
    assert np.array_equal(emb.embed(images, normalize=False), features[:5])
    # RGB arrays read as BGR are different inputs: the colour order matters
    assert not np.array_equal(emb.embed(rgb, normalize=False), features[:5])


def test_the_tensors_equal_preprocess_output(chain, emb, tmp_path: Path) -> None:
    from reidctl.artifacts import PrepSet

    prep = PrepSet.open(chain[0].parent / "prep")
    assert np.array_equal(emb.preprocess_images(chain[1]), prep.read_batch(range(len(prep))))


def test_ort_rows_do_not_depend_on_the_batch_composition(chain) -> None:
    """Rows equal the CLI's (batch 32) at other batch sizes, so the CLI comparison above
    needs no shared batching; it holds for onnxruntime's CPU kernels (docs/python-api.md)."""
    model, paths, features = chain
    for bs in (1, 5, 64):
        with Embedder(model, threads=1, batch_size=bs) as e:
            assert np.array_equal(e.embed(paths, normalize=False), features), bs
    with Embedder(model, threads=1) as e:  # the same crop in different company
        order = np.random.default_rng(0).permutation(len(paths))
        got = e.embed([paths[i] for i in order], normalize=False)
        assert np.array_equal(got, features[order])


def test_normalised_as_the_facts_say(chain, emb) -> None:
    _, paths, features = chain
    assert emb.normalize is True  # the osnet sidecar says l2_normalize
    out = emb.embed(paths[:8])
    ref = features[:8] / np.linalg.norm(features[:8].astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_empty_input_and_typed_errors(emb, chain) -> None:
    empty = emb.embed([])
    assert empty.shape == (0, 512) and empty.dtype == np.float32
    good = cv2.imread(str(chain[1][0]))
    with pytest.raises(ShapeMismatchError, match=r"images\[1\] has shape \[128, 64\]"):
        emb.embed([good, good[:, :, 0]])
    with pytest.raises(ShapeMismatchError, match=r"images\[2\] has dtype float32"):
        emb.embed([good, good, good.astype(np.float32)])
    with pytest.raises(BadImageError, match=r"images\[0\]: truncated JPEG"):
        data = chain[1][0].read_bytes()
        emb.embed([data[: len(data) * 2 // 3]])
    with pytest.raises(BadImageError, match=r"images\[0\] .*nope\.jpg: cannot read"):
        emb.embed([chain[1][0].parent / "nope.jpg"])
    with pytest.raises(InputError, match=r"images\[0\] is a int"):
        emb.embed([3])
    with pytest.raises(InputError, match="takes no 'camera' input"):
        emb.embed([good], cameras=[0])
    with pytest.raises(InputError, match="unknown colour order"):
        emb.embed([good], color="yuv")


def test_tracklets_pool_raw_features_then_normalise(chain, emb) -> None:
    _, paths, _ = chain
    arrays = [cv2.imread(str(p)) for p in paths[:10]]
    tracklets = [arrays[0:3], arrays[3:4], arrays[4:10]]
    raw = emb.embed(arrays, normalize=False)
    bounds = [(0, 3), (3, 4), (4, 10)]
    for pool, fn in (("mean", np.mean), ("max", np.max)):
        pooled = np.stack([fn(raw[a:b].astype(np.float64), axis=0) for a, b in bounds])
        ref = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        got = emb.embed_tracklets(tracklets, pool=pool)
        assert got.shape == (3, 512) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-7)
        unnorm = emb.embed_tracklets(tracklets, pool=pool, normalize=False)
        np.testing.assert_allclose(unnorm, pooled, rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match=r"tracklets\[1\] is empty"):
        emb.embed_tracklets([arrays[:2], []])
    with pytest.raises(InputError, match="unknown pool"):
        emb.embed_tracklets([arrays[:2]], pool="median")


def test_model_copied_without_its_sidecar_keeps_its_facts(chain, tmp_path: Path) -> None:
    model, paths, features = chain
    bare = tmp_path / "copied.onnx"
    shutil.copy(model, bare)
    with Embedder(bare, threads=1) as e:
        assert e.facts_source == "metadata" and e.normalize is True
        assert e.preprocess.height == 256 and e.feature == "feature"
        assert np.array_equal(e.embed(paths[:4], normalize=False), features[:4])


def test_sidecar_and_metadata_must_agree(chain, tmp_path: Path) -> None:
    model = chain[0]
    copy = tmp_path / "m.onnx"
    shutil.copy(model, copy)
    side = json.loads(Path(f"{model}.json").read_text())
    side["l2_normalize"] = False
    side["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    Path(f"{copy}.json").write_text(json.dumps(side))
    with pytest.raises(FormatError, match=r"disagree on l2_normalize, preprocess\.mean"):
        Embedder(copy)
    assert main(["infer", str(copy), str(model.parent / "prep"), "-o", str(tmp_path / "r")]) == 2


def test_model_without_facts_is_refused_with_the_fix(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = tmp_path / "foreign.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 4),), str(model), dynamo=False)
    with pytest.raises(FormatError, match="reidctl adopt"):
        Embedder(model)


def test_wrong_batch_size_is_refused(chain) -> None:
    with pytest.raises(InputError, match="batch_size"):
        Embedder(chain[0], batch_size=0)


def test_bytes_io_of_a_png(emb, chain) -> None:
    """Encoded PNG bytes (lossless) give the features of the array they encode."""
    arr = cv2.imread(str(chain[1][0]))
    ok, png = cv2.imencode(".png", arr)
    assert ok
    buf = io.BytesIO(png.tobytes())
    assert np.array_equal(emb.embed([buf.getvalue()]), emb.embed([arr]))


def test_in_place_row_normalisation_equals_the_evaluations_bit_for_bit() -> None:
    from reidctl.embedder import l2_rows
    from reidctl.evaluate.distance import l2_normalize

    rng = np.random.default_rng(7)
    for shape in [(1, 512), (32, 2048), (5, 3)]:
        x = (rng.standard_normal(shape) * rng.uniform(1e-3, 1e3)).astype(np.float32)
        x[-1] = 0.0  # a zero row stays zero
        expected = l2_normalize(x)
        got = l2_rows(x)
        assert got is x  # in place
        np.testing.assert_array_equal(got, expected)
        assert not got[-1].any()


def test_threads_sharing_one_embedder_get_their_own_rows(chain) -> None:
    """The reused input buffer is per thread: concurrent calls do not overwrite each other."""
    from concurrent.futures import ThreadPoolExecutor

    model, paths, features = chain
    crops = [cv2.imread(str(p)) for p in paths[:24]]
    with Embedder(model, batch_size=4, threads=1) as e:
        with ThreadPoolExecutor(3) as pool:
            parts = list(pool.map(lambda k: e.embed(crops[k::3], normalize=False), range(3)))
        one = e.embed(crops[:1], normalize=False)  # a smaller call after a larger one
    for k in range(3):
        assert np.array_equal(parts[k], features[:24][k::3])
    assert np.array_equal(one, features[:1])


def test_rows_of_one_call_are_not_overwritten_by_the_next(chain, emb) -> None:
    """A call that fits one batch returns the runner's rows without a second copy: they must
    still be the caller's own, untouched by later calls; and ``runner`` is the one it feeds."""
    _, paths, features = chain
    first = emb.embed(paths[:3], normalize=False)
    kept = first.copy()
    emb.embed(paths[3:6], normalize=False)
    emb.embed(paths[:3])
    assert np.array_equal(first, kept) and np.array_equal(first, features[:3])
    assert first.flags.c_contiguous and first.flags.writeable and first.dtype == np.float32
    assert emb.runner.name == emb.backend == "ort"
    n = len(emb.runner.latencies_s)
    emb.embed(paths[:1])
    assert len(emb.runner.latencies_s) == n + 1


def test_two_streams_equal_the_cli_bit_for_bit(chain) -> None:
    model, paths, features = chain
    with Embedder(model, batch_size=8, streams=2) as e:
        assert e.runner.concurrency == 2
        raw = e.embed(paths, normalize=False)  # 8 batches, two at a time
        one = e.embed(paths[:5], normalize=False)  # a single batch
    assert np.array_equal(raw, features)
    assert np.array_equal(one, features[:5])
