"""``--centroids`` / ``--per-camera`` against the Centroids-ReID reference code, on real features.

The reference (mikwieczorek/centroids-reid) is re-implemented here in numpy, loop for loop:
``validation_create_centroids`` (modelling/bases.py), ``R1_mAP.compute``
(utils/reid_metric.py: L2 normalisation of queries and centroids, squared Euclidean
distance, argsort) and ``eval_func`` (utils/eval_reid.py). Its gallery camera ids are taken
as ``camids[inds]`` from the query + gallery array (``BUGGY``) or, as intended,
``camids[num_query:][inds]``. The features are the real OSNet x0.25's on market1501-mini;
the gallery also holds the 32 train images (16 identities without a query), and a few rows
are relabelled as distractors (pid 0) and junk (pid -1).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from reidctl.evaluate import EvalSettings
from reidctl.evaluate.pipeline import evaluate_features_detailed

pytestmark = [pytest.mark.shared, pytest.mark.slow]

DISTRACTORS = ("0002", "0007")  # train identities relabelled pid 0
JUNK = ("0010", "0013_c5s1_000551")  # relabelled pid -1 (a train id, a test id's image)


def _load(path: Path) -> np.ndarray:
    import cv2

    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    img = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return img.transpose(2, 0, 1).astype(np.float32)


def _pid(name: str, gallery: bool) -> int:
    if gallery and name.startswith(DISTRACTORS):
        return 0
    if gallery and name.startswith(JUNK):
        return -1
    return int(name.split("_")[0])


@pytest.fixture(scope="module")
def real(market_mini: Path, osnet_weights: Path) -> dict[str, np.ndarray]:
    """Raw (unnormalised) OSNet x0.25 features and labels: 32 queries, 64 gallery rows."""
    torch = pytest.importorskip("torch")
    from reidctl.models.loading import create_model

    model = create_model("osnet_x0_25", weights=osnet_weights).module
    out: dict[str, np.ndarray] = {}
    folders = {"q": ["query"], "g": ["bounding_box_test", "bounding_box_train"]}
    for key, names in folders.items():
        files = [f for n in names for f in sorted((market_mini / n).glob("*.jpg"))]
        with torch.no_grad():
            y = model(torch.from_numpy(np.stack([_load(f) for f in files])))
        out[key] = (y[0] if isinstance(y, tuple | list) else y).numpy()
        out[key + "_pids"] = np.array([_pid(f.name, key == "g") for f in files])
        out[key + "_cams"] = np.array([int(f.name.split("_")[1][1]) for f in files])
    assert (out["g_pids"] == 0).sum() == 4 and (out["g_pids"] == -1).sum() == 3
    return out


# --------------------------------------------------------------------------- the reference


def ref_centroids(emb, labels, camids, num_query, respect_camids, fixed=True):
    """``validation_create_centroids``: returns (embeddings, labels, camids) of the queries
    followed by the centroids (camids: lists with respect_camids, else dummy 0 / 1)."""
    emb_q, labels_q = emb[:num_query], labels[:num_query]
    emb_g, labels_g = emb[num_query:], labels[num_query:]
    labels2idx, labels2idx_q = defaultdict(list), defaultdict(list)
    for idx, label in enumerate(labels_g):
        labels2idx[label].append(idx)
    for idx, label in enumerate(labels_q):
        labels2idx_q[label].append(idx)
    c_emb, c_labels, c_camids = [], [], []
    for label in sorted(np.unique(list(labels2idx.keys()))):
        combos = set()
        inds, inds_q = labels2idx[label], labels2idx_q[label]
        if respect_camids:
            sel_g = camids[num_query:][inds] if fixed else camids[inds]
            sel_q = camids[inds_q]
            for cur in sorted(np.unique(sel_q)):
                camid_inds = np.where(sel_g != cur)[0]
                if camid_inds.shape[0] == 0:
                    continue
                used = sorted(np.unique([c for c in sel_g if c != cur]))
                if tuple(used) not in combos:
                    combos.add(tuple(used))
                    c_emb.append(emb_g[inds][camid_inds].sum(0) / len(camid_inds))
                    c_camids.append(used)
                    c_labels.append(label)
        else:
            c_labels.append(label)
            c_emb.append(emb_g[inds].sum(0) / len(inds))
    all_emb = np.concatenate([emb_q, np.stack(c_emb)])
    all_labels = np.hstack([labels_q, np.array(c_labels)])
    if respect_camids:
        all_camids = [[c] for c in camids[:num_query]] + c_camids
    else:
        all_camids = np.hstack([np.zeros(len(labels_q)), np.ones(len(c_labels))])
    return all_emb, all_labels, all_camids


def ref_eval(emb, labels, camids, num_query, respect_camids):
    """``R1_mAP.compute`` (FEAT_NORM on, Euclidean) and ``eval_func``: (cmc, mAP, per-query
    AP with NaN for queries left out, number of centroids)."""
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    qf, gf = emb[:num_query], emb[num_query:]
    q_pids, g_pids = labels[:num_query], labels[num_query:]
    if respect_camids:
        q_camids, g_camids = camids[:num_query], camids[num_query:]
    else:
        q_camids, g_camids = np.asarray(camids[:num_query]), np.asarray(camids[num_query:])
    distmat = (qf**2).sum(1)[:, None] + (gf**2).sum(1)[None, :] - 2 * qf @ gf.T
    indices = np.argsort(distmat, axis=1, kind="stable")
    max_rank = min(50, len(g_pids))
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, aps = [], np.full(num_query, np.nan)
    for q in range(num_query):
        order = indices[q]
        if respect_camids:
            g_cams = [g_camids[i] for i in order]
            remove = np.array(
                [
                    (gp == q_pids[q]) & (q_camids[q][0] in gc)
                    for gp, gc in zip(g_pids[order], g_cams, strict=True)
                ]
            )
        else:
            remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        orig = matches[q][~remove]
        if not np.any(orig):
            continue
        cmc = orig.cumsum()
        cmc[cmc > 1] = 1
        # the reference's galleries are longer than max_rank; this one, after removals, may
        # not be: a found match stays found at the later ranks
        all_cmc.append(np.pad(cmc[:max_rank], (0, max(0, max_rank - len(cmc))), mode="edge"))
        tmp = np.array([x / (i + 1.0) for i, x in enumerate(orig.cumsum())]) * orig
        aps[q] = tmp.sum() / orig.sum()
    cmc = np.asarray(all_cmc, np.float32).sum(0) / len(all_cmc)
    return cmc, float(np.nanmean(aps)), aps, len(g_pids)


def reference(real, respect_camids, fixed=True, drop_junk=True):
    """The reference's whole evaluation; ``drop_junk`` as its Market-1501 reader does."""
    keep = real["g_pids"] != -1 if drop_junk else np.ones(len(real["g_pids"]), bool)
    emb = np.concatenate([real["q"], real["g"][keep]])
    labels = np.concatenate([real["q_pids"], real["g_pids"][keep]])
    camids = np.concatenate([real["q_cams"], real["g_cams"][keep]])
    nq = len(real["q_pids"])
    out = ref_centroids(emb, labels, camids, nq, respect_camids, fixed)
    return ref_eval(*out, nq, respect_camids)


def reidctl(real, per_camera):
    s = EvalSettings(centroids=True, per_camera=per_camera)
    args = (real["q"], real["g"], real["q_pids"], real["g_pids"], real["q_cams"], real["g_cams"])
    return evaluate_features_detailed(*args, s)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("per_camera", [False, True])
def test_equals_the_reference_code(real, per_camera):
    cmc, mAP, aps, n_centroids = reference(real, respect_camids=per_camera)
    ev = reidctl(real, per_camera)
    r = ev.result
    assert ev.metrics.num_gallery == n_centroids
    np.testing.assert_allclose(r.cmc[: len(cmc)], cmc, atol=1e-6)
    np.testing.assert_allclose(r.ap, aps, atol=1e-6)  # NaN where the reference skipped
    assert r.mAP == pytest.approx(mAP, abs=1e-9)
    assert r.num_valid == int(np.isfinite(aps).sum())


def test_global_centroids_shape(real):
    ev = reidctl(real, per_camera=False)
    # 16 test ids + 13 train ids + one centroid of all distractors; junk in none
    assert ev.metrics.num_gallery == 30 and ev.g_pids.tolist().count(0) == 1
    assert -1 not in ev.g_pids
    members = ev.g_members[ev.g_pids.tolist().index(0)]
    assert sorted(real["g_pids"][members].tolist()) == [0, 0, 0, 0]
    # raw features averaged, then normalised (not the mean of normalised features)
    g = real["g"][members]
    want = g.mean(0) / np.linalg.norm(g.mean(0))
    dist = ev.distmat[0, ev.g_pids.tolist().index(0)]
    q = real["q"][0] / np.linalg.norm(real["q"][0])
    assert dist == pytest.approx(np.linalg.norm(q - want), abs=1e-5)


def test_junk_is_dropped_as_the_reference_reader_does(real):
    # fed junk, the reference's centroid function would build a pid -1 centroid, a wrong
    # match for every query; its Market-1501 reader drops junk first, and so does reidctl
    emb = np.concatenate([real["q"], real["g"]])
    labels = np.concatenate([real["q_pids"], real["g_pids"]])
    cams = np.concatenate([real["q_cams"], real["g_cams"]])
    _, c_labels, _ = ref_centroids(emb, labels, cams, 32, respect_camids=False)
    assert -1 in c_labels[32:]
    assert (
        reference(real, False, drop_junk=False)[3] == reidctl(real, False).metrics.num_gallery + 1
    )


def test_upstream_camera_indexing_bug(real):
    """``camids[inds]`` takes the gallery camera ids from the wrong rows (the first rows of
    the query + gallery array): centroids are cut and tagged by cameras their images do not
    have, so some that hold the query's camera are kept and some that do not are removed.
    reidctl follows the intended protocol; the published code ranks differently."""
    cmc_fixed, map_fixed, _, n_fixed = reference(real, True, fixed=True)
    cmc_bug, map_bug, _, n_bug = reference(real, True, fixed=False)
    ev = reidctl(real, per_camera=True)
    assert ev.rank1 == pytest.approx(cmc_fixed[0]) and ev.mAP == pytest.approx(map_fixed)
    assert (cmc_bug[0], map_bug, n_bug) != (cmc_fixed[0], map_fixed, n_fixed)
    print(
        f"per-camera centroids, reference fixed: rank-1 {cmc_fixed[0]:.4f} mAP {map_fixed:.4f} "
        f"({n_fixed} centroids); as published: rank-1 {cmc_bug[0]:.4f} mAP {map_bug:.4f} "
        f"({n_bug} centroids)"
    )
