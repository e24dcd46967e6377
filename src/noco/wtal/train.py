"""Training, prediction and the proposal pool of the WTAL base model.

Weak supervision is enforced structurally: ``train_wtal`` reads nothing of the dataset but
``dataset.weak(train_subset)`` (video ids, lengths, fps, video-level class ids), the features and
the dataset's settings; it never calls ``ground_truth``/``subset`` and never sees a segment.

Epoch selection (no test data, no segments): ``val_fraction`` of the training videos is held
out; after each evaluated epoch the model is scored on them by the training objective (fg + bg +
abg losses from video-level labels, without dropout, test-time sampling). The lowest loss wins.
The held-out video-level classification mAP is recorded too, but is not the criterion: on
thumos14-sim it saturates within a few epochs (0.93-0.99) while the background losses, which
shape the attention and hence localisation, keep improving; selecting by it picked epoch 4 of 40
in one run, whose proposals all stayed below the 0.5 baseline confidence. The best epoch is saved as ``wtal.pt``; ``last.pt`` holds
the latest epoch with the optimizer and RNG states for ``resume``.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..errors import NocoError
from ..io import atomic_save_torch, check_writable_dir, load_checkpoint
from ..labels.instances import Instances
from .config import WtalConfig, make_config
from .model import WtalModel, multi_hot, wtal_losses
from .proposals import VideoMeta, nms_detections, select_classes, video_proposals

log = logging.getLogger("noco")

CKPT_KIND = "noco-wtal"
BEST_NAME = "wtal.pt"
LAST_NAME = "last.pt"
SELECTION = "held-out training videos: lowest loss (video-level labels only); video mAP recorded"


@contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads (0: unchanged), restoring the setting after.

    On a shared 2-core machine, intra-op threads spinning at every op made training 3-7x and
    proposal post-processing up to 20x slower than one thread."""
    old = torch.get_num_threads()
    if n <= 0 or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# weak view of a dataset
# --------------------------------------------------------------------------------------------
class _WeakData:
    """The only part of a dataset the training loop can reach: weak videos and their features."""

    def __init__(self, dataset, subset: str, cache_bytes: int = 2 << 30):
        self.videos = list(dataset.weak(subset))
        self._features = dataset.features
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_left = cache_bytes

    def features(self, vid: str) -> torch.Tensor:
        x = self._cache.get(vid)
        if x is not None:
            return x
        x = torch.from_numpy(np.array(self._features(vid), dtype=np.float32, copy=True))
        if x.numel() * 4 <= self._cache_left:
            self._cache[vid] = x
            self._cache_left -= x.numel() * 4
        return x


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0.0 <= val_fraction < 1.0:
        raise NocoError(f"val_fraction must be in [0, 1), found {val_fraction}")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    g = torch.Generator().manual_seed(int(seed) + 7919)
    perm = torch.randperm(n, generator=g).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def sample_indices(num_snippets: int, length: int, generator: torch.Generator | None) -> torch.Tensor:
    """Training sampling of ``length`` snippet indices from ``num_snippets``.

    Longer videos: one random index in each of ``length`` equal bins (random-perturbed sampling;
    ``generator=None`` takes each bin's centre, i.e. uniform sampling). Shorter or equal videos:
    every snippet, in order (the caller pads and masks).
    """
    t = int(num_snippets)
    if t <= length:
        return torch.arange(t)
    edges = torch.arange(length + 1, dtype=torch.float64) * (t / length)
    if generator is None:
        off = torch.full((length,), 0.5, dtype=torch.float64)
    else:
        off = torch.rand(length, generator=generator, dtype=torch.float64)
    idx = torch.floor(edges[:-1] + off * (edges[1:] - edges[:-1])).long()
    return idx.clamp(0, t - 1)


def _pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(int(s.shape[0]) for s in seqs)
    d = seqs[0].shape[1]
    x = torch.zeros(len(seqs), n, d)
    valid = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):  # per video of a batch
        x[i, : s.shape[0]] = s
        valid[i, : s.shape[0]] = True
    return x, valid


def _test_view(x: torch.Tensor, cfg: WtalConfig) -> torch.Tensor:
    """Inference input of one video: all snippets ("full") or uniform sampling ("uniform")."""
    if cfg.test_sampling == "uniform" and x.shape[0] > cfg.num_segments:
        return x[sample_indices(x.shape[0], cfg.num_segments, None)]
    return x


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def video_map(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes with at least one positive of the (non-interpolated) AP of video scores.

    ``scores`` [V, K], ``labels`` [V, K] in {0, 1}. Ties are broken pessimistically (negatives
    first) so that a constant score cannot look perfect. NaN when no class has a positive.
    """
    if scores.numel() == 0:
        return float("nan")
    lab = labels.to(torch.float64)
    s = scores.to(torch.float64)
    # sort by score (desc); among equal scores negatives come first (two stable sorts)
    o1 = torch.argsort(lab, dim=0, stable=True)  # negatives first
    s1 = torch.gather(s, 0, o1)
    o2 = torch.argsort(s1, dim=0, descending=True, stable=True)
    idx = torch.gather(o1, 0, o2)
    y = torch.gather(lab, 0, idx)  # [V, K] sorted labels
    tp = torch.cumsum(y, dim=0)
    rank = torch.arange(1, y.shape[0] + 1, dtype=torch.float64)[:, None]
    npos = y.sum(dim=0)
    ap = (y * tp / rank).sum(dim=0) / npos.clamp(min=1)
    has = npos > 0
    if not bool(has.any()):
        return float("nan")
    return float(ap[has].mean())


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _model_for(cfg: WtalConfig, feat_dim: int, num_classes: int, device) -> WtalModel:
    return WtalModel(feat_dim, num_classes, cfg).to(device)


@torch.no_grad()
def _evaluate(model: WtalModel, data: _WeakData, idxs: list[int], cfg: WtalConfig, device) -> dict[str, float]:
    model.eval()
    k = model.num_classes
    scores, labels, losses = [], [], []
    for b in range(0, len(idxs), cfg.batch_size):
        vids = [data.videos[i] for i in idxs[b: b + cfg.batch_size]]
        x, valid = _pad([_test_view(data.features(v.id), cfg) for v in vids])
        y = multi_hot([v.class_ids for v in vids], k)
        out = model(x.to(device), valid.to(device))
        losses.append(float(wtal_losses(out, y.to(device), cfg)["total"]) * len(vids))
        scores.append(out["fg_score"][:, :k].cpu())
        labels.append(y)
    n = max(len(idxs), 1)
    return {
        "map": video_map(torch.cat(scores), torch.cat(labels)) if idxs else float("nan"),
        "loss": sum(losses) / n,
    }


def _better(cur: dict, best: dict | None) -> bool:
    """Lower held-out loss wins (ties: higher held-out video mAP, then the earlier epoch)."""
    if best is None:
        return True
    if cur["loss"] < best["loss"] - 1e-12:
        return True
    cm, bm = cur.get("map", float("nan")), best.get("map", float("nan"))
    return abs(cur["loss"] - best["loss"]) <= 1e-12 and not math.isnan(cm) and (math.isnan(bm) or cm > bm)


def _check_resume(ck: dict, cfg: WtalConfig, settings: dict, seed: int, val_fraction: float, path: Path,
                  world: int = 1) -> None:
    """Same config (``epochs`` may grow; ``batch_size`` may change only so as to keep the global
    batch ``batch_size x world size``), dataset, seed and val_fraction. Another world size is allowed."""
    if ck.get("kind") != CKPT_KIND:
        raise NocoError(f"{path}: not a WTAL training checkpoint (kind {ck.get('kind')!r})")
    old = dict(ck.get("config", {}))
    new = cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in ("epochs", "batch_size") and old.get(k) != new.get(k))
    if diff:
        raise NocoError(f"{path}: cannot resume, the config differs in: {', '.join(diff)}")
    old_world = int(ck.get("world_size", 1))
    old_bs = int(old.get("batch_size", cfg.batch_size))
    if old_bs != cfg.batch_size and old_bs * old_world != cfg.batch_size * world:
        raise NocoError(f"{path}: cannot resume, the config differs in: batch_size ({old_bs} x {old_world} "
                        f"process(es) in the checkpoint, {cfg.batch_size} x {world} now; batch_size may only "
                        f"change so as to keep the global batch)")
    if ck.get("dataset") != settings:
        raise NocoError(f"{path}: cannot resume, the checkpoint was trained on a dataset with other settings")
    if int(ck.get("seed", -1)) != int(seed) or abs(float(ck.get("val_fraction", -1)) - float(val_fraction)) > 1e-12:
        raise NocoError(f"{path}: cannot resume with another seed or val_fraction "
                        f"(checkpoint: seed {ck.get('seed')}, val_fraction {ck.get('val_fraction')})")


def train_wtal(
    dataset,
    cfg: WtalConfig | None = None,
    out_dir: str | Path = "wtal",
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    val_fraction: float = 0.1,
    *,
    resume: bool | str = False,
    progress: bool | None = None,
    tensorboard: str | Path | None = None,
) -> Path:
    """Train the WTAL base model on ``dataset.weak(dataset.train_subset)``; returns the path of the
    selected checkpoint (``out_dir/wtal.pt``).

    ``resume``: False starts afresh (overwriting ``out_dir``'s checkpoints); True continues from
    ``out_dir/last.pt`` (a run with another config, dataset, seed or val_fraction is a NocoError;
    ``epochs`` may grow); ``"auto"`` continues when compatible and otherwise starts afresh with a
    warning (for callers that cache by config). ``device``: None = CUDA when available.
    ``tensorboard``: a folder for TensorBoard scalars (epoch train loss, held-out loss and video mAP).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is trained with DistributedDataParallel (nccl on
    CUDA, gloo on the CPU): ``cfg.batch_size`` is per process, every global batch of
    ``batch_size x world size`` videos is split into disjoint contiguous shards (the last, partial
    batch too; a rank left without a video contributes a zero-weighted one), and each rank's loss is
    weighted by its share, so the gradients are those of one process with the global batch. Snippet
    sampling is drawn for the whole global batch on every rank (the sampler does not depend on the
    world size); dropout draws per process. Rank 0 evaluates, selects and writes the checkpoints;
    the other ranks wait (barrier). The result equals one process with ``batch_size x world size``
    up to float rounding when dropout is off, and in distribution otherwise."""
    cfg = (cfg or make_config("cpu")).validate()
    with torch_threads(cfg.num_threads):
        return _train_wtal(dataset, cfg, out_dir, device, seed, val_fraction, resume, progress, tensorboard)


def _train_wtal(dataset, cfg: WtalConfig, out_dir, device, seed: int, val_fraction: float,
                resume: bool | str, progress: bool, tensorboard=None) -> Path:
    from ..detector.train import _seed, all_gather_objects, barrier, init_distributed

    if resume not in (True, False, "auto"):
        raise NocoError(f"resume must be True, False or 'auto', found {resume!r}")
    cfg = (cfg or make_config("cpu")).validate()
    world, rank, device = init_distributed(device)
    out_dir = check_writable_dir(out_dir) if rank == 0 else Path(out_dir)
    settings = dataset.settings()
    classes = list(dataset.classes)
    k = len(classes)
    feat_dim = int(dataset.feat_dim)
    data = _WeakData(dataset, dataset.train_subset)
    if not data.videos:
        raise NocoError(f"training subset {dataset.train_subset!r} has no videos")
    if not any(len(v.class_ids) for v in data.videos):
        raise NocoError(f"training subset {dataset.train_subset!r}: no video has a class label")
    train_idx, val_idx = _split(len(data.videos), val_fraction, seed)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    model = _model_for(cfg, feat_dim, k, device)
    if rank > 0:  # dropout differs between ranks; rank 0 keeps the single-process stream
        torch.manual_seed(_seed(seed, 11, 0, rank))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, step, best, history = 0, 0, None, []
    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME
    ck = None
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path, map_location="cpu")
        try:
            _check_resume(ck, cfg, settings, seed, val_fraction, last_path, world)
        except NocoError as e:
            if resume != "auto":
                raise
            if rank == 0:
                log.warning(f"wtal: {e}; training from scratch")
            ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = int(ck["epoch"]), int(ck["step"])
        best = ck.get("best") or None
        history = list(ck.get("history", []))
        per_rank = ck["rng"].get("torch_ranks") or []
        if len(per_rank) == world:
            torch.set_rng_state(per_rank[rank])
        elif rank == 0:
            torch.set_rng_state(ck["rng"]["torch"])
        else:
            torch.manual_seed(_seed(seed, 11, start_epoch, rank))
        gen.set_state(ck["rng"]["sampler"])
        old_global = int(ck["config"].get("batch_size", cfg.batch_size)) * int(ck.get("world_size", 1))
        if rank == 0:
            log.info(f"wtal: resuming {last_path} after epoch {start_epoch}")
            if old_global != cfg.batch_size * world:
                log.warning(f"wtal: the global batch changes from {old_global} to {cfg.batch_size * world} "
                            f"({cfg.batch_size} x {world} processes)")
    elif resume and rank == 0:
        log.info(f"wtal: nothing to resume in {out_dir}, training from scratch")

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(epoch: int, with_optimizer: bool, rank_states: list | None = None) -> dict[str, Any]:
        ck = {
            "kind": CKPT_KIND,
            "config": cfg.to_dict(),
            "dataset": settings,
            "classes": classes,
            "feat_dim": feat_dim,
            "num_classes": k,
            "model": {n: t.detach().cpu() for n, t in model.state_dict().items()},
            "epoch": epoch,
            "step": step,
            "seed": int(seed),
            "val_fraction": float(val_fraction),
            "world_size": world,
            "train_videos": [data.videos[i].id for i in train_idx],
            "val_videos": [data.videos[i].id for i in val_idx],
            "selection": SELECTION,
            "best": best or {},
            "history": history,
        }
        if with_optimizer:
            ck["optimizer"] = opt.state_dict()
            ck["rng"] = {"torch": torch.get_rng_state(), "sampler": gen.get_state()}
            if rank_states:
                ck["rng"]["torch_ranks"] = rank_states
        return ck

    global_batch = cfg.batch_size * world
    steps_per_epoch = math.ceil(len(train_idx) / global_batch)
    bar = None
    if progress is None:
        from ..data.dataset import _stderr_is_tty

        progress = _stderr_is_tty()
    if progress and rank == 0 and start_epoch < cfg.epochs:
        from tqdm import tqdm

        bar = tqdm(total=(cfg.epochs - start_epoch) * steps_per_epoch, desc="wtal train", unit="step",
                   leave=False, dynamic_ncols=True)
    if rank == 0 and world > 1:
        log.info(f"wtal: DistributedDataParallel on {world} processes ({device.type}), global batch "
                 f"{global_batch} = {cfg.batch_size} x {world}")
    from ..scalars import Scalars

    scalars = Scalars(tensorboard, rank)
    t_start = time.time()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            net.train()
            perm = torch.randperm(len(train_idx), generator=gen).tolist()
            run_loss, run_n = 0.0, 0
            for b in range(0, len(perm), global_batch):
                gvids = [data.videos[train_idx[i]] for i in perm[b: b + global_batch]]
                # every rank draws the snippets of the whole global batch, in order: the sampler's
                # stream is the single-process one whatever the world size
                gidx = [sample_indices(int(v.num_snippets), cfg.num_segments, gen) for v in gvids]
                n = len(gvids)
                lo, hi = min(rank * cfg.batch_size, n), min((rank + 1) * cfg.batch_size, n)
                mine = list(range(lo, hi)) or [0]  # no video left for this rank: one with weight 0
                seqs = []
                for j in mine:  # per video of this rank's shard
                    x = data.features(gvids[j].id)
                    if x.shape[0] != int(gvids[j].num_snippets):
                        raise NocoError(f"video {gvids[j].id}: field 'num_snippets' is {gvids[j].num_snippets} "
                                        f"but its features have {x.shape[0]} snippets")
                    seqs.append(x[gidx[j]])
                x, valid = _pad(seqs)
                y = multi_hot([gvids[j].class_ids for j in mine], k)
                out = net(x.to(device), valid.to(device))
                losses = wtal_losses(out, y.to(device), cfg)
                total = losses["total"]
                if world > 1:  # DDP averages over ranks: weight each shard's mean by its share
                    total = total * ((hi - lo) * world / n)
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                if world > 1:  # the global batch's mean loss, the same on every rank
                    s = losses["total"].detach() * (hi - lo)
                    torch.distributed.all_reduce(s)
                    lv = float(s) / n
                else:
                    lv = float(losses["total"].detach())
                if not math.isfinite(lv):
                    raise NocoError(f"wtal: the training loss became {lv} at epoch {epoch + 1}, step {step} "
                                    f"(lower lr, currently {cfg.lr})")
                run_loss += lv * n
                run_n += n
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{run_loss / run_n:.4f}")
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": run_loss / max(run_n, 1)}
            rank_states = all_gather_objects(torch.get_rng_state()) if world > 1 else None
            if rank == 0:
                evaluate_now = ((epoch + 1) % cfg.eval_every == 0) or epoch + 1 == cfg.epochs
                if val_idx and evaluate_now:
                    ev = _evaluate(model, data, val_idx, cfg, device)
                    rec.update(val_map=ev["map"], val_loss=ev["loss"])
                    cur = {"epoch": epoch + 1, "map": ev["map"], "loss": ev["loss"]}
                    is_best = _better(cur, best)
                else:
                    cur = {"epoch": epoch + 1, "map": float("nan"), "loss": float("nan")}
                    is_best = not val_idx  # without held-out videos the last epoch is the model
                history.append(rec)
                for tag in ("train_loss", "val_loss", "val_map"):
                    if tag in rec:
                        scalars.add(f"wtal/{tag}", rec[tag], epoch + 1)
                scalars.flush()
                if is_best:
                    best = cur
                    atomic_save_torch(best_path, checkpoint(epoch + 1, with_optimizer=False))
                atomic_save_torch(last_path, checkpoint(epoch + 1, with_optimizer=True, rank_states=rank_states))
                log.debug(f"wtal epoch {epoch + 1}: {rec}")
            else:
                history.append(rec)
            barrier()  # the other ranks wait for rank 0's evaluation and checkpoints
    finally:
        if bar is not None:
            bar.close()
        scalars.close()
    if rank == 0 and not best_path.is_file():
        # e.g. resumed a finished run whose best file was deleted: the last epoch stands in
        atomic_save_torch(best_path, checkpoint(start_epoch, with_optimizer=False))
    barrier()
    if rank == 0:
        msg = f"wtal: trained {cfg.epochs} epochs ({time.time() - t_start:.1f} s this run)"
        if best and best.get("epoch"):
            msg += (f"; selected epoch {best['epoch']} (held-out loss {best.get('loss', float('nan')):.4f}, "
                    f"video mAP {best.get('map', float('nan')):.4f})")
        log.info(msg)
    return best_path


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
def load_wtal(ckpt: str | Path | Mapping, dataset=None, device="cpu",
              overrides: dict[str, Any] | None = None) -> tuple[WtalModel, WtalConfig, dict]:
    """Model and config of a WTAL checkpoint (path or loaded dict); checks it fits ``dataset``."""
    where = str(ckpt) if not isinstance(ckpt, Mapping) else "checkpoint"
    ck = load_checkpoint(ckpt) if not isinstance(ckpt, Mapping) else dict(ckpt)
    if ck.get("kind") != CKPT_KIND or "model" not in ck or "config" not in ck:
        raise NocoError(f"{where}: not a WTAL checkpoint (made by `noco wtal train`)")
    cfg_d = dict(ck["config"])
    cfg_d.update(overrides or {})
    cfg = make_config(None, cfg_d)
    if dataset is not None:
        mine, theirs = dataset.settings(), dict(ck.get("dataset", {}))
        bad = []
        for key, val in mine.items():
            if theirs.get(key) != val:
                a, b = theirs.get(key), val
                if key == "classes":
                    a = f"{len(a or [])} classes {list(a or [])[:3]}..."
                    b = f"{len(b)} classes {list(b)[:3]}..."
                bad.append(f"'{key}' is {a} in the checkpoint but {b} in the dataset")
        if bad:
            raise NocoError(f"{where}: WTAL checkpoint does not match the dataset: " + "; ".join(bad))
    model = WtalModel(int(ck["feat_dim"]), int(ck["num_classes"]), cfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise NocoError(f"{where}: model weights do not fit the config ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return model, cfg, ck


@torch.no_grad()
def infer_video(model: WtalModel, feats: torch.Tensor, cfg: WtalConfig, device="cpu"):
    """One video: returns ``(cas [N, K], fg_att [N], video_scores [K])`` on the CPU, where ``cas`` is
    ASM-Loc's test-time CAS: ``softmax over K+1 of (snippet logits * fg attention)``, background
    column dropped, and ``video_scores`` the fg video score (softmax over K+1, background dropped)."""
    model.eval()
    x = _test_view(torch.as_tensor(feats, dtype=torch.float32), cfg)
    out = model(x[None].to(device))
    k = model.num_classes
    att = out["fg_att"][0].cpu()
    cas = torch.softmax(out["cas"][0].cpu() * att[:, None], dim=-1)[:, :k]
    return cas, att, out["fg_score"][0, :k].cpu()


def _run(ckpt, dataset, subset, device, progress, overrides, mode: str) -> dict[str, Instances]:
    from ..detector.train import resolve_device

    device = resolve_device(device)  # None: CUDA when available; a bad name is a NocoError
    with torch_threads(1):  # many small ops: one thread is fastest (see torch_threads)
        return _run_inner(ckpt, dataset, subset, device, progress, overrides, mode)


def _run_inner(ckpt, dataset, subset, device, progress, overrides, mode: str) -> dict[str, Instances]:
    model, cfg, ck = load_wtal(ckpt, dataset, device, overrides)
    videos = list(dataset.weak(subset))
    it: Iterable = videos
    if progress:
        from tqdm import tqdm

        it = tqdm(videos, desc=f"wtal {mode}", unit="video", leave=False, dynamic_ncols=True)
    out: dict[str, Instances] = {}
    for v in it:  # per video
        feats = torch.from_numpy(np.array(dataset.features(v.id), dtype=np.float32, copy=True))
        cas, att, vs = infer_video(model, feats, cfg, device)
        if mode == "predict":
            classes = select_classes(vs, cfg.class_threshold)
        else:
            classes = torch.as_tensor(sorted(set(int(c) for c in v.class_ids)), dtype=torch.long)
        pool = video_proposals(
            cas, att, classes, vs, VideoMeta(int(feats.shape[0]), float(v.duration), float(v.fps)),
            feat_stride=int(dataset.feat_stride), num_frames=int(dataset.num_frames),
            cas_thresholds=cfg.cas_thresholds, att_thresholds=cfg.att_thresholds,
            upsample_factor=cfg.upsample, min_points=cfg.min_points, flank_ratio=cfg.oic_flank,
            gamma=cfg.oic_gamma, score_mapping=cfg.score_mapping, oic_scale=cfg.oic_scale,
            min_score=None if mode == "predict" else cfg.pool_min_score,
        )
        if mode == "predict":
            pool = nms_detections(pool, cfg.nms_threshold, cfg.max_detections)
        out[v.id] = pool
    return out


def predict_wtal(ckpt, dataset, subset: str | None = None, *, device="cpu", progress: bool = False,
                 overrides: dict[str, Any] | None = None) -> dict[str, Instances]:
    """Post-NMS detections on ``subset`` (default: the test subset). Classes are chosen from the
    model's video scores (> ``class_threshold``, else the best one); video labels are not used.
    The network runs on ``device`` (None: CUDA when available), proposals on the CPU."""
    return _run(ckpt, dataset, subset or dataset.test_subset, device, progress, overrides, "predict")


def propose_wtal(ckpt, dataset, subset: str | None = None, *, device="cpu", progress: bool = False,
                 overrides: dict[str, Any] | None = None) -> dict[str, Instances]:
    """The dense pre-NMS proposal pool O on ``subset`` (default: the training subset), restricted to
    each video's known video-level classes. Scores are confidences (``score_mapping``/``oic_scale``),
    weights 1; proposals whose confidence is not above ``pool_min_score`` are left out (with the
    default 0 these are the runs whose OIC is <= 0: CALA's weight ``s * IoU`` of them is 0 anyway)."""
    subset = subset or dataset.train_subset
    if subset == dataset.test_subset and subset != dataset.train_subset:
        log.warning(f"wtal propose: subset {subset!r} is the test subset; its video-level labels are used")
    return _run(ckpt, dataset, subset, device, progress, overrides, "propose")


def filter_baseline(pool: Mapping[str, Instances], conf: float = 0.5, nms: float = 0.45) -> dict[str, Instances]:
    """Ablation row (a) labels: proposals with confidence > ``conf`` after per-class NMS at ``nms``;
    every weight 1 (the same filter the pipeline uses: ``noco.labels.cala.baseline_filter_all``)."""
    from ..labels.cala import baseline_filter_all

    return baseline_filter_all(pool, conf=conf, nms=nms)

