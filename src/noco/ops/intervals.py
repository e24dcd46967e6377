"""1-D interval algebra on tensors: temporal IoU, greedy NMS, per-class NMS and Gaussian Soft-NMS.

Everything here is vectorized PyTorch that runs on any device. Segments are ``[N, 2]`` tensors of
``(start, end)``. No function loops in Python over segments: the NMS variants loop over *rounds*,
and every round is a tensor operation over all undecided segments.

Tie rules (deterministic): segments of equal score are ranked by their input position (the
first one ranks higher), exactly as a stable descending sort would order them.
"""

from __future__ import annotations

import torch

__all__ = ["pairwise_tiou", "nms", "batched_nms", "soft_nms"]

# Largest number of floats an intermediate [rows, cols] IoU block may hold (memory guard).
_BLOCK_ELEMS = 1 << 22
# Blocks up to this size are computed densely (cheaper than building index pairs).
_DENSE_ELEMS = 1 << 16


def _check_segs(segs: torch.Tensor, name: str = "segs") -> torch.Tensor:
    if segs.dim() != 2 or segs.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [N, 2], got {tuple(segs.shape)}")
    if not segs.is_floating_point():
        segs = segs.float()
    return segs


def _check_finite(segs: torch.Tensor, scores: torch.Tensor) -> None:
    if not (bool(torch.isfinite(segs).all()) and bool(torch.isfinite(scores).all())):
        raise ValueError("segments and scores must be finite (found NaN or inf)")


def pairwise_tiou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Temporal IoU of every segment in ``a [N, 2]`` with every one in ``b [M, 2]`` -> ``[N, M]``.

    ``IoU = |a ∩ b| / (|a| + |b| - |a ∩ b|)``; 0 where the union is 0 (two identical points).
    The result has the promoted floating dtype of the inputs.
    """
    a = _check_segs(a, "a")
    b = _check_segs(b, "b")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)
    a_s, a_e = a[:, 0:1], a[:, 1:2]
    b_s, b_e = b[:, 0][None, :], b[:, 1][None, :]
    inter = (torch.minimum(a_e, b_e) - torch.maximum(a_s, b_s)).clamp_min(0)
    union = (a_e - a_s) + (b_e - b_s) - inter
    pos = union > 0
    return torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), torch.zeros_like(union))


def _paired_tiou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (same shape ``[..., 2]``) -> ``[...]``."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    pos = union > 0
    return torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), torch.zeros_like(union))


class _StartIndex:
    """Segments sorted by (length bucket, label, start), to find the same-label segments that may
    overlap a given one (or reach IoU > thr with it) without an N^2 scan.

    Bucket ``b`` holds lengths within a factor 2 (``[L/2^(k+1), L/2^k)``, the last bucket also
    everything shorter); inside it, a segment overlapping ``i`` starts in
    ``(start_i - maxlen_b, end_i)``, and ``IoU > thr`` further implies
    ``|start_i - start_j| <= (1/thr - 1) * len_i`` (union - intersection = |d start| + |d end|) and
    ``thr * len_i <= len_j <= len_i / thr``. So the candidates of ``i`` are one contiguous run of
    the sorted keys per bucket, found by ``searchsorted`` on float64 keys with bounds widened by a
    margin (a superset: callers apply the exact test). Work scales with the nearby pairs.
    """

    NUM_BUCKETS = 16

    def __init__(self, segs: torch.Tensor, labels: torch.Tensor | None, thr: float):
        n = segs.shape[0]
        dev = segs.device
        nb = self.NUM_BUCKETS
        s64 = segs.double()
        start = s64[:, 0]
        lens = (s64[:, 1] - start).clamp_min(0)
        lab = torch.zeros(n, dtype=torch.long, device=dev) if labels is None else labels.to(torch.long)
        self.n = n
        self.device = dev
        if n == 0:
            return
        self.lab_values, lab_rank = torch.unique(lab, return_inverse=True)
        num_lab = int(lab_rank.max()) + 1
        maxlen = float(lens.max())
        tiny = max(maxlen, 1e-300) * 2.0 ** -(nb - 1)
        ratio = torch.clamp(lens, min=tiny) / max(maxlen, 1e-300)
        bucket = (nb - 1 + torch.floor(torch.log2(ratio))).clamp(0, nb - 1).long()  # nb-1: longest
        self.b_max = torch.zeros(nb, dtype=torch.float64, device=dev).scatter_reduce(0, bucket, lens, "amax")
        self.b_min = torch.full((nb,), float("inf"), dtype=torch.float64, device=dev).scatter_reduce(0, bucket, lens, "amin")
        self.used = torch.nonzero(torch.isfinite(self.b_min)).reshape(-1)
        lo_c = float(start.min())
        self.lo_c = lo_c
        span = float(start.max()) - lo_c
        self.off = span + 2.0 * maxlen + 1.0
        self.num_lab = num_lab
        self.lab_rank = lab_rank
        self.rel = start - lo_c
        self.lens = lens
        self.thr = thr
        self.margin = 1e-9 * self.off * nb * (num_lab + 1) + 1e-12
        key = (bucket * num_lab + lab_rank).double() * self.off + self.rel
        self.order = torch.argsort(key)
        self.sorted_key = key[self.order]

    def pairs(self, q: torch.Tensor, max_pairs: int | None = None):
        """Yield chunks ``(qi, j)``: for each index in ``q``, every candidate partner ``j`` (q too)."""
        if q.numel() == 0 or self.n == 0:
            return
        yield from self._runs(self.rel[q], self.lens[q], self.lab_rank[q], q, max_pairs)

    def query(self, segs: torch.Tensor, labels: torch.Tensor | None = None, max_pairs: int | None = None):
        """Like :meth:`pairs` for segments outside the index: yields ``(row of segs, j)`` chunks.

        Rows whose label is absent from the index have no partner. The runs are still a superset
        of the true partners (keys of a far-away query may reach into a neighbouring label block;
        callers check labels exactly)."""
        if segs.shape[0] == 0 or self.n == 0:
            return
        s64 = segs.double()
        lens = (s64[:, 1] - s64[:, 0]).clamp_min(0)
        nq = segs.shape[0]
        if labels is None:
            rank = torch.zeros(nq, dtype=torch.long, device=self.device)
            known = torch.ones(nq, dtype=torch.bool, device=self.device)
        else:
            labels = labels.to(torch.long)
            rank = torch.searchsorted(self.lab_values, labels).clamp_max(self.lab_values.numel() - 1)
            known = self.lab_values[rank] == labels
        rows = torch.nonzero(known).reshape(-1)
        yield from self._runs(s64[rows, 0] - self.lo_c, lens[rows], rank[rows], rows, max_pairs)

    def _runs(self, rel, lens, lab_rank, owner_ids, max_pairs):
        if owner_ids.numel() == 0:
            return
        max_pairs = max_pairs or _BLOCK_ELEMS
        dev = self.device
        thr = self.thr
        used = self.used  # non-empty buckets only
        nb = used.numel()
        lq = lens[:, None]  # [Q, 1]
        bmax = self.b_max[used][None, :]  # [1, B]
        if thr > 0:
            factor = 1.0 / thr - 1.0
            down = torch.minimum(lq * factor, bmax)
            up = torch.minimum(lq * factor, lq).expand(-1, nb)
            usable = (bmax >= thr * lq) & (self.b_min[used][None, :] <= lq / thr)
        else:
            down, up = bmax.expand(lq.shape[0], -1), lq.expand(-1, nb)
            usable = None
        base = (used[None, :] * self.num_lab + lab_rank[:, None]).double() * self.off
        k = base + rel[:, None]
        lo = torch.searchsorted(self.sorted_key, (k - down - self.margin).contiguous(), side="left")
        hi = torch.searchsorted(self.sorted_key, (k + up + self.margin).contiguous(), side="right")
        cnt = (hi - lo).clamp_min(0)
        if usable is not None:
            cnt = torch.where(usable, cnt, torch.zeros_like(cnt))
        cnt = cnt.reshape(-1)
        lo = lo.reshape(-1)
        owner = owner_ids[:, None].expand(-1, nb).reshape(-1)
        csum = torch.cumsum(cnt, 0)
        total = int(csum[-1])
        if total == 0:
            return
        edges = [0, cnt.numel()]
        if total > max_pairs:
            marks = torch.arange(max_pairs, total, max_pairs, device=dev, dtype=csum.dtype)
            edges = [0] + [int(x) + 1 for x in torch.searchsorted(csum, marks).tolist()] + [cnt.numel()]
        for r0, r1 in zip(edges[:-1], edges[1:]):
            if r1 <= r0:
                continue
            c = cnt[r0:r1]
            rows = torch.repeat_interleave(torch.arange(r0, r1, device=dev), c)
            if rows.numel() == 0:
                continue
            first = torch.cumsum(c, 0) - c
            within = torch.arange(rows.numel(), device=dev) - torch.repeat_interleave(first, c)
            yield owner[rows], self.order[lo[rows] + within]


def _greedy_nms_sorted(segs: torch.Tensor, labels: torch.Tensor | None, thr: float, max_window: int = 1024):
    """Exact greedy NMS of segments already sorted by rank (position 0 = best).

    Returns the kept positions, ascending. Greedy semantics: position ``i`` is kept iff no kept
    ``j < i`` (same label when ``labels`` is given) has ``IoU(j, i) > thr``.

    Rounds: the window is the first ``W`` undecided positions -- a prefix of the undecided ones, so
    every undecided predecessor of a windowed position is in the window. Windowed positions with
    no conflicting (IoU > thr) undecided predecessor in the window are decided *kept* (all their
    predecessors are decided, and a kept one would already have removed them); then every
    undecided position conflicting with a newly kept one is decided *removed* (none of them ranks
    above a new keep: that keep would have been blocked), found through a :class:`_StartIndex`.
    Each round keeps at least the first undecided position; the number of rounds is bounded by
    the depth of the suppression chain. ``W`` adapts to the number kept in the last round.
    """
    if thr < 0:
        raise ValueError(f"iou_threshold must be >= 0, got {thr}")
    n = segs.shape[0]
    dev = segs.device
    index = _StartIndex(segs, labels, thr)
    alive = torch.ones(n, dtype=torch.bool, device=dev)  # undecided
    undecided = torch.arange(n, device=dev)
    kept = []
    win = 64
    while undecided.numel():
        w = undecided[:win]
        nw = w.numel()
        if nw * nw <= _DENSE_ELEMS:  # small window: one dense block is cheapest
            conflict = pairwise_tiou(segs[w], segs[w]) > thr
            if labels is not None:
                conflict &= labels[w][:, None] == labels[w][None, :]
            new = ~torch.triu(conflict, diagonal=1).any(0)  # [j, i] with j ranking above i
        else:
            blocked = torch.zeros(n, dtype=torch.bool, device=dev)
            for q, j in index.pairs(w):
                hit = alive[j] & (j < q) & (_paired_tiou(segs[q], segs[j]) > thr)
                if labels is not None:
                    hit &= labels[q] == labels[j]
                blocked[q[hit]] = True
            new = ~blocked[w]
        new_pos = w[new]
        kept.append(new_pos)
        alive[new_pos] = False
        k = int(new_pos.numel())
        win = min(max_window, max(16, 4 * k))
        rest = undecided[nw:]
        rest = torch.cat([w[~new], rest]) if k < nw else rest
        if k * rest.numel() <= _DENSE_ELEMS:  # few keeps: dense [k, rest] block
            hit = pairwise_tiou(segs[new_pos], segs[rest]) > thr
            if labels is not None:
                hit &= labels[new_pos][:, None] == labels[rest][None, :]
            alive[rest[hit.any(0)]] = False
        else:
            for q, j in index.pairs(new_pos):
                hit = alive[j] & (_paired_tiou(segs[q], segs[j]) > thr)
                if labels is not None:
                    hit &= labels[q] == labels[j]
                alive[j[hit]] = False
        undecided = undecided[alive[undecided]]
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=dev)
    return torch.sort(torch.cat(kept)).values


def _rank_order(scores: torch.Tensor) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)


def nms(segs: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept segments in descending-score order (ties: input order).

    A segment is suppressed when its IoU with a higher-ranked *kept* segment is ``> iou_threshold``.
    """
    return batched_nms(segs, scores, None, iou_threshold)


def batched_nms(segs: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS run independently per label; kept indices in descending-score order overall.

    Segments of different labels never suppress each other (an exact label mask, not the
    coordinate-offset trick, so float precision of large offsets cannot change a decision).
    ``labels=None`` is plain :func:`nms`.
    """
    segs = _check_segs(segs)
    n = segs.shape[0]
    scores = scores.reshape(-1)
    if scores.shape[0] != n:
        raise ValueError(f"scores has {scores.shape[0]} entries for {n} segments")
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=segs.device)
    _check_finite(segs, scores)
    order = _rank_order(scores)
    lab = None
    if labels is not None:
        labels = labels.reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"labels has {labels.shape[0]} entries for {n} segments")
        lab = labels[order]
    pos = _greedy_nms_sorted(segs[order], lab, float(iou_threshold))
    return order[pos]


def soft_nms(
    segs: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    max_num: int = 2000,
    voting_thresh: float | None = None,
    max_window: int = 256,
):
    """Per-class Gaussian Soft-NMS (TriDet / ActionFormer post-processing).

    Sequential definition (what this computes exactly): candidates with ``score < min_score`` are
    dropped up front; then repeatedly the remaining candidate with the highest current score
    (ties: lowest input index) is selected, every other remaining candidate of the same class is
    decayed by ``exp(-IoU^2 / sigma)``, and those whose score falls below ``min_score`` are dropped.
    Returns ``(segs, scores, labels)`` of the first ``max_num`` selections, in selection order
    (= descending selected score, ties by input index), with the score each had when selected.

    Vectorized evaluation: classes are independent, and a candidate whose key (score, -index)
    beats every remaining overlapping candidate of its class is selected before any of them
    whatever else happens, with its current score. So each round selects all such "local maxima"
    at once -- every class's best candidate, plus those found among the top-``W`` remaining scores
    (``W`` adapts to how many the last round found, up to ``max_window``) -- and applies their
    decays together (decays commute). A round is a few tensor ops over the remaining candidates.

    ``voting_thresh`` (TriDet's score voting; off when None or 0): each selected segment's
    boundaries become the original-score-weighted mean of the ORIGINAL candidates of its class
    whose IoU with it is ``>= voting_thresh`` (the selected segment itself always counts).
    """
    segs = _check_segs(segs)
    dev = segs.device
    n = segs.shape[0]
    scores = scores.reshape(-1).to(segs.dtype)
    labels = labels.reshape(-1).to(device=dev, dtype=torch.long)
    if scores.shape[0] != n or labels.shape[0] != n:
        raise ValueError(f"segs, scores and labels disagree in length ({n}, {scores.shape[0]}, {labels.shape[0]})")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    _check_finite(segs, scores)
    empty = (segs.new_zeros((0, 2)), scores.new_zeros(0), labels.new_zeros(0))
    if n == 0 or max_num <= 0:
        return empty

    cls = torch.unique(labels, return_inverse=True)[1]  # compact class ids 0..L-1
    num_cls = int(cls.max()) + 1
    big = n + 1
    rem = torch.nonzero(scores >= min_score).reshape(-1)  # original indices, ascending
    cur = scores[rem].clone()
    alive = torch.zeros(n, dtype=torch.bool, device=dev)  # remaining, by original index
    alive[rem] = True
    index = _StartIndex(segs, cls, 0.0)
    sel_idx, sel_score = [], []
    n_sel = 0
    win_size = 16
    while rem.numel():
        u = rem.numel()
        # Early stop: enough selections and no remaining score can reach the max_num-th best.
        if n_sel >= max_num:
            kth = torch.topk(torch.cat(sel_score), max_num).values[-1]
            if bool(cur.max() < kth):
                break
        rc = cls[rem]
        # 1) each class's best remaining candidate (ties: lowest original index)
        cmax = torch.full((num_cls,), -float("inf"), dtype=cur.dtype, device=dev).scatter_reduce(0, rc, cur, "amax")
        first = torch.where(cur == cmax[rc], rem, torch.full_like(rem, big))
        first = torch.full((num_cls,), big, dtype=rem.dtype, device=dev).scatter_reduce(0, rc, first, "amin")
        pick = rem == first[rc]
        # 2) local maxima among the top-W scores (every candidate outranking one of them is in
        #    the window too, so the dense window block decides them)
        if u > 1 and win_size > 1:
            if u > win_size:
                thr_w = torch.topk(cur, win_size).values[-1]
                win = torch.nonzero(cur >= thr_w).reshape(-1)
            else:
                win = torch.arange(u, device=dev)
            if win.numel() <= 4 * max_window:  # (a huge block of tied scores: class maxima only)
                wi, wc = rem[win], cur[win]
                over = (pairwise_tiou(segs[wi], segs[wi]) > 0) & (rc[win][:, None] == rc[win][None, :])
                better = (wc[:, None] > wc[None, :]) | ((wc[:, None] == wc[None, :]) & (wi[:, None] < wi[None, :]))
                pick[win] |= ~(over & better).any(0)
        pw = torch.nonzero(pick).reshape(-1)
        k = int(pw.numel())
        win_size = min(max_window, max(16, 4 * k))
        sel_idx.append(rem[pw])
        sel_score.append(cur[pw])
        n_sel += k
        # 3) decay the rest by every pick of their class (product of Gaussian factors), drop low
        rest = torch.nonzero(~pick).reshape(-1)
        if rest.numel() == 0:
            break
        picked = rem[pw]
        alive[picked] = False
        rest_idx = rem[rest]
        if k * rest.numel() <= _DENSE_ELEMS:  # few picks: dense [k, rest] block
            iou = pairwise_tiou(segs[picked], segs[rest_idx])
            iou = torch.where(cls[picked][:, None] == rc[rest][None, :], iou, torch.zeros_like(iou))
            sq = (iou * iou).sum(0)
        else:
            sq = torch.zeros(n, dtype=cur.dtype, device=dev)
            for q, j in index.pairs(picked):
                m = alive[j] & (cls[q] == cls[j])
                q, j = q[m], j[m]
                iou = _paired_tiou(segs[q], segs[j])
                sq.index_add_(0, j, iou * iou)
            sq = sq[rest_idx]
        newc = cur[rest] * torch.exp(-sq / sigma)
        ok = newc >= min_score
        alive[rem[rest[~ok]]] = False
        rem, cur = rem[rest[ok]], newc[ok]
    if not sel_idx:
        return empty
    idx = torch.cat(sel_idx)
    sc = torch.cat(sel_score)
    # Global selection order = merge of the per-class sequences by (score desc, index asc).
    o = torch.argsort(idx)
    idx, sc = idx[o], sc[o]
    o = torch.argsort(sc, descending=True, stable=True)[:max_num]
    idx, sc = idx[o], sc[o]
    out_segs = segs[idx]
    out_labels = labels[idx]
    if voting_thresh:
        out_segs = _score_voting(idx, out_segs, segs, scores, labels, float(voting_thresh))
    return out_segs, sc, out_labels


def _score_voting(kept_idx, kept_segs, segs, scores, labels, thr: float) -> torch.Tensor:
    """Each kept segment (original index ``kept_idx``) becomes the score-weighted mean of the
    original same-class candidates whose IoU with it is >= thr."""
    if not 0 < thr <= 1:
        raise ValueError(f"voting_thresh must be in (0, 1], got {thr}")
    k = kept_idx.numel()
    if k == 0:
        return kept_segs.clone()
    index = _StartIndex(segs, labels, thr)
    slot = torch.full((segs.shape[0],), -1, dtype=torch.long, device=segs.device)
    slot[kept_idx] = torch.arange(k, device=segs.device)
    w_scores = scores.clamp_min(0).to(segs.dtype)
    tot = torch.zeros(k, dtype=segs.dtype, device=segs.device)
    acc = torch.zeros(k, 2, dtype=segs.dtype, device=segs.device)
    for q, j in index.pairs(kept_idx):
        hit = (labels[q] == labels[j]) & (_paired_tiou(segs[q], segs[j]) >= thr)
        q, j = slot[q[hit]], j[hit]
        w = w_scores[j]
        tot.index_add_(0, q, w)
        acc.index_add_(0, q, w[:, None] * segs[j])
    voted = acc / torch.where(tot > 0, tot, torch.ones_like(tot))[:, None]
    return torch.where((tot > 0)[:, None], voted, kept_segs)
