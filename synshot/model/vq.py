"""Vector quantiser with EMA codebook updates, straight-through gradients and dead-code restart.

EMA updates (VQ-VAE-2 style) are used instead of a codebook loss because they are stable at large
batch sizes; codes whose EMA usage falls below a threshold are re-seeded from current encoder
outputs so the codebook keeps being used. Under ``torch.distributed`` the EMA statistics are
all-reduced and re-seeded codes broadcast from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """Quantise ``(B, D, h, w)`` latents to the nearest of ``num_codes`` codes.

    Returns ``(quantised_st, loss, indices, stats)``: ``quantised_st`` carries straight-through
    gradients to the input, ``loss`` = commitment * ||z - sg(q)||^2, ``stats`` holds perplexity,
    usage fraction (codes used in this batch / num_codes) and the number of restarted codes.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 0.25,
        dead_threshold: float = 1e-2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.eps, self.commitment, self.dead_threshold = decay, eps, commitment, dead_threshold
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        embed = torch.randn(num_codes, dim, generator=gen) / dim**0.5
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _apply(self, fn, *args, **kwargs):
        """Keep the codebook and its EMA statistics in float32 under ``.half()`` / bf16 engines."""
        out = super()._apply(fn, *args, **kwargs)
        for name in ("embed", "cluster_size", "embed_avg"):
            buf = getattr(self, name)
            if buf.dtype != torch.float32:
                setattr(self, name, buf.float())
        return out

    def _codes(self, flat: Tensor) -> Tensor:
        dists = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.embed.t()
            + self.embed.pow(2).sum(1)[None]
        )
        return dists.argmin(1)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, onehot: Tensor) -> Tensor:
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        if _dist_on():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.embed.copy_(self.embed_avg / size[:, None])
        return self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor) -> Tensor:
        """Re-seed codes with EMA usage below the threshold from random encoder outputs."""
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.zeros((), device=flat.device)
        # Deterministic choice: a generator seeded by (seed, step), identical on every rank.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        pick = torch.randint(0, flat.shape[0], (n_dead,), generator=gen).to(flat.device)
        noise = torch.randn(n_dead, self.dim, generator=gen).to(flat) * 1e-3
        new = flat[pick] + noise * flat.std().clamp_min(1e-6)
        if _dist_on():
            dist.broadcast(new, src=0)
        self.embed[dead] = new
        self.embed_avg[dead] = new  # with cluster_size 1 below, embed = embed_avg
        self.cluster_size[dead] = 1.0
        return torch.tensor(float(n_dead), device=flat.device)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects (B, {self.dim}, h, w), got {tuple(z.shape)}")
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d).float()
        idx = self._codes(flat)
        onehot = F.one_hot(idx, self.num_codes).type(flat.dtype)
        q = self.embed[idx].view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype).clone()
        restarted = torch.zeros((), device=z.device)
        if self.training:  # update after quantising: this batch is encoded with the old codebook
            restarted = self._ema_update(flat, onehot)
            self.steps += 1
        loss = self.commitment * F.mse_loss(z, q.detach())
        q_st = z + (q - z).detach()
        probs = onehot.mean(0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        usage = (onehot.sum(0) > 0).float().mean()
        stats = {"perplexity": perplexity.detach(), "usage": usage.detach(), "restarted": restarted}
        return q_st, loss, idx.view(b, h, w), stats
