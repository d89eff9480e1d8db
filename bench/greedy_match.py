"""The reference matching: greedy random-priority nearest-neighbour assignment (Color Alignment in Diffusion).

The paper's zero-shot g(x̂0, c) uses each condition vector once by greedy matching with random
priority via repeated nearest-neighbour searches. This is that method, vectorised the way one would
write it with a batched NN search: in each round every unmatched source finds its nearest unmatched
target; a target claimed by several sources goes to the one with the highest (random) priority;
winners are removed and the round repeats. The highest-priority source of each round always gets its
true nearest neighbour, as in the sequential form.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK = 1 << 24  # distance-matrix entries per slice


def _nearest(src: Tensor, tgt: Tensor) -> Tensor:
    rows = max(1, _CHUNK // max(1, tgt.shape[0]))
    t2 = (tgt * tgt).sum(1)
    out = torch.empty(src.shape[0], dtype=torch.long, device=src.device)
    for i in range(0, src.shape[0], rows):
        s = src[i : i + rows]
        out[i : i + rows] = torch.argmin(t2[None, :] - 2.0 * s @ tgt.T, dim=1)
    return out


def greedy_match(source: Tensor, target: Tensor, seed: int = 0) -> tuple[Tensor, int]:
    """``(perm, rounds)``: ``target[perm]`` assigned to ``source`` row by row, and the NN rounds it took."""
    n = source.shape[0]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).to(source.device)  # sources in priority order
    free_s = order
    free_t = torch.arange(n, device=source.device)
    perm = torch.full((n,), -1, dtype=torch.long, device=source.device)
    rounds = 0
    while free_s.numel() > 0:
        rounds += 1
        nn = _nearest(source[free_s], target[free_t])  # positions in free_t
        # first claimant (highest priority: free_s stays in priority order) of each claimed target wins
        first = torch.full((free_t.numel(),), free_s.numel(), dtype=torch.long, device=source.device)
        first.scatter_reduce_(0, nn, torch.arange(free_s.numel(), device=source.device), reduce="amin")
        won = first[nn] == torch.arange(free_s.numel(), device=source.device)
        perm[free_s[won]] = free_t[nn[won]]
        taken = torch.zeros(free_t.numel(), dtype=torch.bool, device=source.device)
        taken[nn[won]] = True
        free_s, free_t = free_s[~won], free_t[~taken]
    return perm, rounds
