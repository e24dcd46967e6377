"""noco.ops.intervals against hand-computed cases and brute-force pure-Python references."""

import math

import pytest
import torch

from noco.ops.intervals import batched_nms, nms, pairwise_tiou, soft_nms


# ----------------------------------------------------------------------------- references
def ref_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(segs, scores, labels, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    kept = []
    for i in order:
        if all(not (labels[j] == labels[i] and ref_iou(segs[j], segs[i]) > thr) for j in kept):
            kept.append(i)
    return kept


def ref_soft_nms(segs, scores, labels, sigma, min_score, max_num):
    cur = {i: s for i, s in enumerate(scores) if s >= min_score}
    out = []
    while cur and len(out) < max_num:
        best = max(cur, key=lambda i: (cur[i], -i))
        s = cur.pop(best)
        out.append((best, s))
        for i in list(cur):
            if labels[i] == labels[best]:
                cur[i] *= math.exp(-ref_iou(segs[i], segs[best]) ** 2 / sigma)
                if cur[i] < min_score:
                    del cur[i]
    return out


def rand_case(seed, n, num_classes=3, span=100.0, max_len=20.0):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * span
    length = torch.rand(n, generator=g, dtype=torch.float64) * max_len
    segs = torch.stack([start, start + length], 1)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return segs, scores, labels


# ----------------------------------------------------------------------------- tIoU
def test_pairwise_tiou_hand_cases():
    a = torch.tensor([[0.0, 10.0], [5.0, 5.0], [2.0, 4.0]])
    b = torch.tensor([[5.0, 15.0], [10.0, 20.0], [5.0, 5.0], [0.0, 10.0]])
    got = pairwise_tiou(a, b)
    want = torch.tensor([
        [5 / 15, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],      # identical points: union 0 -> 0
        [0.0, 0.0, 0.0, 0.2],
    ])
    assert got.shape == (3, 4)
    assert torch.allclose(got, want, atol=1e-7)
    assert pairwise_tiou(torch.zeros(0, 2), b).shape == (0, 4)


def test_pairwise_tiou_matches_reference_and_dtype():
    segs, _, _ = rand_case(0, 40)
    got = pairwise_tiou(segs[:25], segs[25:])
    assert got.dtype == torch.float64
    ref = torch.tensor([[ref_iou(a, b) for b in segs[25:].tolist()] for a in segs[:25].tolist()], dtype=torch.float64)
    assert torch.allclose(got, ref, atol=1e-12)
    assert torch.allclose(got, pairwise_tiou(segs[25:], segs[:25]).T)


# ----------------------------------------------------------------------------- NMS
def test_nms_hand_case_chain():
    # 0 suppresses 1 (IoU 8/12); 1 would suppress 2 (IoU 8/12) but is itself suppressed, and
    # IoU(0, 2) = 6/14 <= 0.5, so 2 is kept.
    segs = torch.tensor([[0.0, 10.0], [2.0, 12.0], [4.0, 14.0], [50.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = nms(segs, scores, 0.5)
    assert keep.tolist() == [3, 0, 2]
    # threshold is strict: IoU exactly 0.5 is not suppressed
    segs2 = torch.tensor([[0.0, 4.0], [1.0, 3.0]])
    assert nms(segs2, torch.tensor([0.5, 0.4]), 0.5).tolist() == [0, 1]
    assert nms(segs2, torch.tensor([0.5, 0.4]), 0.49).tolist() == [0]


def test_nms_ties_are_stable():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    assert nms(segs, torch.tensor([0.5, 0.5, 0.5]), 0.3).tolist() == [0]
    assert nms(segs, torch.tensor([0.5, 0.7, 0.7]), 0.3).tolist() == [1]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.1, 0.45, 0.7])
def test_nms_matches_greedy_reference(seed, thr):
    segs, scores, labels = rand_case(seed, 300)
    if seed % 2:
        scores = torch.round(scores * 10) / 10  # many ties
    zeros = [0] * 300
    want = ref_nms(segs.tolist(), scores.tolist(), zeros, thr)
    assert nms(segs, scores, thr).tolist() == want
    want_b = ref_nms(segs.tolist(), scores.tolist(), labels.tolist(), thr)
    assert batched_nms(segs, scores, labels, thr).tolist() == want_b


def test_nms_long_chain_and_small_window():
    # A dense chain: each segment overlaps its successors; greedy depth is large.
    n = 400
    start = torch.arange(n, dtype=torch.float64) * 0.3
    segs = torch.stack([start, start + 1.0], 1)
    scores = torch.linspace(1.0, 0.1, n, dtype=torch.float64)
    want = ref_nms(segs.tolist(), scores.tolist(), [0] * n, 0.5)
    assert nms(segs, scores, 0.5).tolist() == want
    # same chain in random input order (the ranking, not the input order, defines the chain)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    assert nms(segs[perm], scores[perm], 0.5).tolist() == torch.argsort(perm)[want].tolist()


def test_batched_nms_classes_independent_and_empty():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.5, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 0])
    assert batched_nms(segs, scores, labels, 0.5).tolist() == [0, 1]
    # large coordinates: no offset trick, so no precision loss between classes
    big = segs + 1e6
    assert batched_nms(big, scores, labels, 0.5).tolist() == [0, 1]
    assert batched_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


# ----------------------------------------------------------------------------- Soft-NMS
def test_soft_nms_hand_case():
    segs = torch.tensor([[0.0, 10.0], [5.0, 15.0], [0.0, 10.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    s, sc, lb = soft_nms(segs, scores, labels, sigma=0.5, min_score=1e-3)
    # 0 picked (0.9); 1 decays by exp(-(1/3)^2/0.5) -> 0.8*0.8007 = 0.6406 < 0.7 of class 1
    d = 0.8 * math.exp(-((1 / 3) ** 2) / 0.5)
    assert lb.tolist() == [0, 1, 0]
    assert torch.allclose(sc, torch.tensor([0.9, 0.7, d], dtype=torch.float64))
    assert torch.equal(s, segs[[0, 2, 1]])


def test_soft_nms_drops_below_min_score_and_max_num():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0], [40.0, 41.0]])
    scores = torch.tensor([0.9, 0.002, 0.5, 0.0005])
    labels = torch.zeros(4, dtype=torch.long)
    s, sc, lb = soft_nms(segs, scores, labels, sigma=0.5, min_score=1e-3)
    # 1 decays to 0.002*exp(-2) = 2.7e-4 < 1e-3 -> dropped; 3 is below min_score from the start
    assert torch.equal(s, segs[[0, 2]])
    s, sc, lb = soft_nms(segs, scores, labels, max_num=1)
    assert torch.equal(s, segs[[0]]) and sc.tolist() == [pytest.approx(0.9)]
    s, sc, lb = soft_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert s.shape == (0, 2) and sc.numel() == 0 and lb.numel() == 0


@pytest.mark.parametrize("seed", range(5))
def test_soft_nms_matches_sequential_reference(seed):
    segs, scores, labels = rand_case(100 + seed, 250, num_classes=3, span=60.0)
    max_num = [1000, 100, 37, 1000, 250][seed]
    sigma = [0.5, 0.5, 0.3, 0.9, 0.5][seed]
    min_score = [1e-3, 1e-3, 0.05, 1e-3, 0.2][seed]
    ref = ref_soft_nms(segs.tolist(), scores.tolist(), labels.tolist(), sigma, min_score, max_num)
    for window in (256, 16, 1):
        s, sc, lb = soft_nms(segs, scores, labels, sigma=sigma, min_score=min_score, max_num=max_num, max_window=window)
        assert len(ref) == sc.numel()
        idx = [i for i, _ in ref]
        assert torch.equal(s, segs[idx])
        assert torch.equal(lb, labels[idx])
        assert torch.allclose(sc, torch.tensor([v for _, v in ref], dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_soft_nms_voting():
    segs = torch.tensor([[0.0, 10.0], [1.0, 11.0], [0.0, 8.0], [1.0, 11.0], [30.0, 40.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.6, 0.3, 0.8, 0.5], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 0])
    plain = soft_nms(segs, scores, labels)
    voted = soft_nms(segs, scores, labels, voting_thresh=0.7)
    assert torch.equal(plain[1], voted[1]) and torch.equal(plain[2], voted[2])
    # segment 0 (first selected) votes with 1 (IoU 9/11=0.818) and 2 (IoU 0.8); class 1 excluded
    w = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)
    want0 = (w[:, None] * segs[:3]).sum(0) / w.sum()
    assert torch.allclose(voted[0][0], want0)
    # class 1 and the isolated class-0 segment vote only with themselves
    pos_c1 = voted[2].tolist().index(1)
    assert torch.equal(voted[0][pos_c1], segs[3])
    far = [i for i, s in enumerate(plain[0].tolist()) if s[0] == 30.0][0]
    assert torch.equal(voted[0][far], segs[4])
    assert torch.equal(soft_nms(segs, scores, labels, voting_thresh=0)[0], plain[0])


# ----------------------------------------------------------------------------- sparse paths
def mixed_case(seed, n=300):
    """Lengths over several orders of magnitude, zero-length segments, duplicates, 3 classes."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * 100
    length = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * 8 - 4)  # 0.018 .. 55
    length[::17] = 0.0
    segs = torch.stack([start, start + length], 1)
    segs[5::23] = segs[4::23][: segs[5::23].shape[0]]
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    return segs, scores, labels


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_start_index_finds_every_partner(thr):
    from noco.ops.intervals import _StartIndex

    segs, _, labels = mixed_case(7)
    iou = pairwise_tiou(segs, segs)
    want = (iou > thr) & (labels[:, None] == labels[None, :])
    if thr == 0:  # any positive overlap
        inter = torch.minimum(segs[:, None, 1], segs[None, :, 1]) - torch.maximum(segs[:, None, 0], segs[None, :, 0])
        want = (inter > 0) & (labels[:, None] == labels[None, :])
    index = _StartIndex(segs, labels, thr)
    q = torch.arange(0, segs.shape[0], 2)
    found = torch.zeros_like(want)
    chunks = 0
    for a, b in index.pairs(q, max_pairs=23):  # tiny chunks: exercises the chunking
        chunks += 1
        found[a, b] = True
    assert chunks > 3
    assert bool((want[q] <= found[q]).all())  # a superset of the true partners...
    assert not found[1::2].any()
    assert int(found.sum()) < 0.5 * segs.shape[0] * q.numel()  # ...far from all pairs


@pytest.mark.parametrize("seed", range(3))
def test_sparse_paths_agree_with_reference(seed, monkeypatch):
    import noco.ops.intervals as iv

    monkeypatch.setattr(iv, "_DENSE_ELEMS", 0)  # force the index-pair code paths
    monkeypatch.setattr(iv, "_BLOCK_ELEMS", 211)
    segs, scores, labels = mixed_case(seed)
    for thr in (0.0, 0.5):
        want = ref_nms(segs.tolist(), scores.tolist(), labels.tolist(), thr)
        assert batched_nms(segs, scores, labels, thr).tolist() == want
    ref = ref_soft_nms(segs.tolist(), scores.tolist(), labels.tolist(), 0.5, 1e-3, 1000)
    s, sc, lb = soft_nms(segs, scores, labels, max_window=64)
    assert torch.equal(s, segs[[i for i, _ in ref]])
    assert torch.allclose(sc, torch.tensor([v for _, v in ref], dtype=torch.float64), rtol=1e-9, atol=1e-12)


def ref_voting(kept, kept_labels, segs, scores, labels, thr):
    out = []
    for k, c in zip(kept, kept_labels):
        num = [0.0, 0.0]
        den = 0.0
        for s, w, l in zip(segs, scores, labels):
            if l == c and ref_iou(k, s) >= thr:
                num[0] += w * s[0]
                num[1] += w * s[1]
                den += w
        out.append([num[0] / den, num[1] / den] if den > 0 else list(k))
    return out


@pytest.mark.parametrize("dense", [True, False])
def test_voting_matches_reference(dense, monkeypatch):
    import noco.ops.intervals as iv

    if not dense:
        monkeypatch.setattr(iv, "_BLOCK_ELEMS", 101)
    segs, scores, labels = mixed_case(11, n=200)
    plain = soft_nms(segs, scores, labels, max_num=80)
    voted = soft_nms(segs, scores, labels, max_num=80, voting_thresh=0.6)
    want = ref_voting(plain[0].tolist(), plain[2].tolist(), segs.tolist(), scores.tolist(), labels.tolist(), 0.6)
    assert torch.allclose(voted[0], torch.tensor(want, dtype=torch.float64), atol=1e-9)
    assert not torch.equal(voted[0], plain[0])


def test_bad_inputs_raise():
    segs = torch.tensor([[0.0, 1.0], [float("nan"), 2.0]])
    with pytest.raises(ValueError, match="finite"):
        nms(segs, torch.tensor([0.5, 0.4]), 0.5)
    with pytest.raises(ValueError, match="finite"):
        soft_nms(torch.zeros(2, 2), torch.tensor([0.5, float("inf")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        pairwise_tiou(torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=">= 0"):
        nms(torch.zeros(2, 2), torch.zeros(2), -0.1)


@pytest.mark.parametrize("thr", [0.0, 0.1, 0.5])
def test_start_index_query_external_segments(thr):
    from noco.ops.intervals import _StartIndex

    segs, _, labels = mixed_case(8)
    q_segs, _, q_labels = mixed_case(9, n=120)
    q_segs = q_segs * 1.3 - 10  # some queries start before / end after every indexed segment
    q_labels[::7] = 5  # a label the index does not hold: no partners
    iou = pairwise_tiou(q_segs, segs)
    inter = torch.minimum(q_segs[:, None, 1], segs[None, :, 1]) - torch.maximum(q_segs[:, None, 0], segs[None, :, 0])
    want = ((iou >= thr) if thr > 0 else (inter > 0)) & (q_labels[:, None] == labels[None, :])
    found = torch.zeros_like(want)
    for a, b in _StartIndex(segs, labels, thr).query(q_segs, q_labels, max_pairs=50):
        found[a, b] = True
    assert bool((want <= found).all())
    assert not found[::7].any()
    assert int(found.sum()) < 0.5 * found.numel()
