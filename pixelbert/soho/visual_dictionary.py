"""SOHO's visual dictionary (VD): each visual feature is replaced by its nearest codebook entry.

- Lookup: ``f(v) = argmin_j ||v - d_j||``; the output is ``d_f(v)`` in the forward pass while the gradient goes
  to ``v`` unchanged (straight-through: ``v + sg[d - v]``), so the CNN still learns end to end.
- Update (training mode only, no gradients): each entry is the moving average of the features mapped to it,
  ``d_j <- m d_j + (1 - m) mean(v : f(v) = j)``, kept as moving sums and counts with Laplace smoothing as in the
  authors' release.
- Dead-entry guard: an entry no feature chose for ``dead_after`` consecutive updates is re-seeded from a random
  current feature (a randomly initialised codebook otherwise keeps most entries unused forever).
- Several processes (torchrun): each rank sees different features, yet every rank must hold the same dictionary.
  The per-entry feature counts and sums are all-reduced before the moving-average step, so every rank applies the
  update of the global batch; dead entries follow from those global counts, and their new values are features
  of the global batch at positions drawn on rank 0 (each rank contributes the rows it holds). The result is the
  1-process update on all ranks' features concatenated in rank order (up to the order of float sums), on every
  rank bit for bit. ``replicated_buffers`` tells the training loop to check, not overwrite, these buffers.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pixelbert.config import DictionaryConfig


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dictionary_usage(counts: Tensor) -> dict[str, float]:
    """Usage of a dictionary from per-entry assignment counts [K]: entries in use and perplexity.

    Perplexity ``exp(H(p))`` of the assignment distribution is the effective number of entries: K when all are
    used equally, 1 when everything maps to one entry (collapse).
    """
    total = float(counts.sum())
    if total <= 0:
        return {"entries_in_use": 0, "perplexity": 0.0, "size": int(counts.numel())}
    p = counts.double() / total
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    return {"entries_in_use": int((counts > 0).sum()), "perplexity": round(math.exp(entropy), 3),
            "size": int(counts.numel())}


class VisualDictionary(nn.Module):
    """A ``config.size`` x ``dim`` codebook. ``forward(x [M, dim]) -> (quantized [M, dim], codes [M])``."""

    replicated_buffers = True
    """Kept identical on every rank by the update's own collectives (see harness.distributed.sync_buffers)."""

    def __init__(self, config: DictionaryConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.size = config.size
        self.dim = dim
        self.momentum = config.momentum
        """Moving-average momentum in force; pre-training lowers it early on with :meth:`set_epoch`."""
        self.generator: torch.Generator | None = None
        """Random source of the dead-entry re-seeding (set for reproducible runs)."""
        self.register_buffer("embed", torch.randn(config.size, dim))  # random init, as in SOHO
        self.register_buffer("cluster_size", torch.zeros(config.size))  # moving count of features per entry
        self.register_buffer("embed_sum", torch.zeros(config.size, dim))  # moving sum of those features
        # Entries start "dead": the first training update re-seeds every entry the batch did not choose.
        self.register_buffer("idle_updates", torch.full((config.size,), config.dead_after, dtype=torch.long))
        self.reseeded = 0
        """Entries re-seeded by the dead-entry guard since construction (for the run record)."""

    def set_epoch(self, epoch: int) -> None:
        """Apply the pre-training momentum schedule for ``epoch`` (1-based)."""
        self.momentum = self.config.momentum_at(epoch)

    @torch.no_grad()
    def nearest(self, x: Tensor) -> Tensor:
        """[M, dim] -> index of the nearest entry (squared Euclidean distance) [M]."""
        x = x.float()
        distances = (x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t() + self.embed.pow(2).sum(1)[None, :])
        return distances.argmin(dim=1)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Nearest entries of ``x`` [M, dim] (straight-through) and their codes; in training the entries move
        toward the features assigned to them, of the ``valid`` [M] rows only when given (not padding)."""
        codes = self.nearest(x.detach())
        if self.training:
            if valid is None:
                self.update(x.detach(), codes)
            else:
                self.update(x.detach()[valid], codes[valid])
        quantized = self.embed[codes].to(x.dtype)
        return x + (quantized - x).detach(), codes  # straight-through: value d, gradient to x

    @torch.no_grad()
    def update(self, x: Tensor, codes: Tensor) -> None:
        """One moving-average step from features ``x`` [M, dim] assigned to ``codes`` [M] (this rank's share of
        the global batch when a process group is running)."""
        x = x.float()
        counts = torch.bincount(codes, minlength=self.size).float()
        sums = torch.zeros_like(self.embed).index_add_(0, codes, x)
        if _distributed():
            # The global batch's statistics, identical on every rank: the averaging over ranks happens here,
            # explicitly, not through DDP's broadcast of rank 0's buffers.
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        m = self.momentum
        self.cluster_size.mul_(m).add_(counts, alpha=1 - m)
        self.embed_sum.mul_(m).add_(sums, alpha=1 - m)
        # Laplace smoothing keeps never-chosen entries from dividing by zero (the authors' release does the same).
        n = self.cluster_size.sum()
        eps = 1e-5
        smoothed = (self.cluster_size + eps) / (n + self.size * eps) * n
        self.embed.copy_(self.embed_sum / smoothed.clamp_min(eps)[:, None])
        self.idle_updates.add_(1).masked_fill_(counts > 0, 0)
        self._reseed_dead(x)

    def _reseed_dead(self, x: Tensor) -> None:
        # ``dead`` comes from the all-reduced counts, so every rank takes this branch (and its collectives) alike.
        dead = (self.idle_updates >= self.config.dead_after).nonzero().flatten()
        if dead.numel() == 0:
            return
        local = x.shape[0]
        offset, total = 0, local
        if _distributed():
            sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, torch.tensor([local], dtype=torch.long, device=x.device))
            counts = [int(s) for s in sizes]
            offset, total = sum(counts[:dist.get_rank()]), sum(counts)
        if total == 0:
            return
        device = self.generator.device if self.generator is not None else x.device
        # Positions in the global batch (all ranks' features in rank order). Every rank draws, so the generators
        # stay in step; rank 0's draw is the one used, so a rank whose generator differs cannot diverge.
        pick = torch.randint(total, (dead.numel(),), generator=self.generator, device=device).to(x.device)
        if _distributed():
            dist.broadcast(pick, src=0)
            mine = (pick >= offset) & (pick < offset + local)
            rows = torch.zeros(dead.numel(), self.dim, device=x.device)
            rows[mine] = x[pick[mine] - offset]
            dist.all_reduce(rows)  # one rank holds each row, the others add zeros: exact
        else:
            rows = x[pick]
        self.embed[dead] = rows
        # As if one feature had just been mapped there, so the next update keeps the new entry.
        self.embed_sum[dead] = rows
        self.cluster_size[dead] = 1.0
        self.idle_updates[dead] = 0
        self.reseeded += int(dead.numel())
