"""The optimal matching cost, exactly (small n) or from below (any n), for the matching bench and tests.

``optimum``: the minimum total squared distance of a one-to-one assignment, by scipy's
``linear_sum_assignment`` on the dense float64 cost matrix (n up to ~4,096: n^2 doubles, seconds).

``lower_bound``: a proven lower bound of that minimum, from the LP dual of the assignment.

Why it is a lower bound. Identical targets are merged into one target ``j`` of multiplicity ``m_j``
(assigning the copies is a transport plan with those capacities and the same cost). For the cost
``C[i, j] = |s_i - t_j|^2`` and ANY potentials ``v`` of the targets, every one-to-one assignment ``pi``
(``m_j`` sources on target ``j``) satisfies

    sum_i C[i, pi(i)] = sum_i (C[i, pi(i)] - v[pi(i)]) + sum_j m_j v[j]
                     >= sum_i min_j (C[i, j] - v[j]) + sum_j m_j v[j]  =:  F(v)

(each term of the first sum is at least that source's minimum over all targets). So ``F(v)`` is below the
optimum for every ``v`` (weak duality), and equal to it at the optimal duals (the assignment LP is
integral). How ``v`` is found decides only how tight the bound is, never whether it holds: ``F`` is
always evaluated exactly, in float64, over all ``n x U`` pairs.

How ``v`` is found: block-coordinate ascent on the concave ``F``, each step an exact maximisation over
a block of coordinates by POT's network simplex (``ot.emd``, an independent exact solver):

* offsets: ``v += o[group(j)]`` for a partition of the targets into groups; the best ``o`` is the dual
  of the transport of the sources (mass 1) to the groups (mass ``sum m_j``) at costs
  ``min_{j in group} (C[i, j] - v[j])``;
* a block ``B`` of targets, all other potentials fixed: with ``a_i = min_{j not in B} (C[i, j] - v[j])``,
  the best ``v_B`` is the dual of the transport of the sources to ``B`` plus an "elsewhere" sink of cost
  ``a_i`` (``v_B`` = the duals of ``B`` minus the dual of the sink). It is solved for the ``~2 |B|``
  sources nearest to choosing ``B``, which keeps every step small, and kept only if ``F`` rises over
  all sources (else with twice as many sources, up to all of them, where it is exact).

The blocks are k-means clusters of the targets (scipy), re-drawn at each sweep so that their borders
move; the sweeps stop when one raises ``F`` by less than ``tol`` of its value. Nothing can hang: at most
``max_sweeps`` sweeps, each a few dense passes and a few small network-simplex solves per block,
whatever the duplicates or ties. Measured tightness: within 2e-4 of scipy's optimum at n <= 4,096 on the
bench's problems (bench/bench_matching.py prints it; tests/test_alignment_hard.py checks n = 512).
"""

from __future__ import annotations

import math

import numpy as np
import ot
import scipy.cluster.vq
import scipy.optimize
import torch

_ROWS = 1024  # sources per slice of the dense passes


def optimum(source: torch.Tensor, target: torch.Tensor) -> float:
    """Minimum total squared distance of a one-to-one assignment (scipy's LSA, dense float64)."""
    c = (torch.cdist(source.double(), target.double()) ** 2).numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(c)
    return float(c[rows, cols].sum())


def _cost(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ((s * s).sum(1)[:, None] + (t * t).sum(1)[None, :] - 2.0 * s @ t.T).clamp_min_(0.0)


def dual_objective(s: torch.Tensor, t: torch.Tensor, mult: torch.Tensor, v: torch.Tensor) -> float:
    """``F(v) = sum_j m_j v_j + sum_i min_j (C[i, j] - v_j)`` (the module docstring), exact over all pairs."""
    s, t, v = s.double(), t.double(), v.double()
    total = float((mult.double() * v).sum())
    for i in range(0, s.shape[0], _ROWS):
        total += float((_cost(s[i : i + _ROWS], t) - v[None, :]).min(1).values.sum())
    return total


def _partition(t: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, int]:
    """k-means labels ``[U]`` of the targets (empty clusters dropped, labels consecutive) and their number."""
    _, lab = scipy.cluster.vq.kmeans2(t.numpy(), min(k, t.shape[0]), iter=5, seed=seed, minit="++")
    _, lab = np.unique(lab, return_inverse=True)
    return torch.from_numpy(lab.reshape(-1)).long(), int(lab.max()) + 1


def _group_min(s: torch.Tensor, t: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``[n, k]``: each source's minimum of ``C - v`` over each group of targets."""
    out = torch.empty(s.shape[0], k, dtype=torch.float64)
    for i in range(0, s.shape[0], _ROWS):
        red = _cost(s[i : i + _ROWS], t) - v[None, :]
        init = torch.full((red.shape[0], k), math.inf, dtype=torch.float64)
        out[i : i + _ROWS] = init.scatter_reduce_(1, labels.expand(red.shape[0], -1), red, "amin")
    return out


def _offsets(gmin: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """The exact best offsets ``o [k]`` of the groups: duals of the sources-to-groups transport (``ot.emd``)."""
    _, log = ot.emd(np.ones(gmin.shape[0]), sizes.numpy(), gmin.numpy(), numItermax=10**9, log=True)
    return torch.from_numpy(log["v"])


def _block_step(
    s: torch.Tensor,
    t: torch.Tensor,
    mult: torch.Tensor,
    v: torch.Tensor,
    members: torch.Tensor,
    inside: torch.Tensor,
    outside: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New potentials of the targets ``members`` (the others fixed) that raise ``F``, and the sources' new ``inside``.

    ``inside``, ``outside``: each source's minimum of ``C - v`` over the block and over all other targets.
    The exact step on the ``q`` sources nearest to choosing the block is kept only if ``F`` rises over all
    sources (a source left out may now prefer the block); else ``q`` doubles, and at ``n`` it is exact.
    """
    n, need = s.shape[0], float(mult[members].sum())
    block = _cost(s, t[members])  # [n, |B|]
    before = torch.minimum(inside, outside).sum()
    q = min(n, int(2 * need) + 32)
    while True:
        rows = torch.topk(inside - outside, q, largest=False).indices  # the sources nearest to choosing the block
        cost = torch.cat([block[rows], outside[rows, None]], 1).numpy()
        sinks = np.concatenate([mult[members].numpy(), [q - need]])
        _, log = ot.emd(np.ones(q), sinks, cost, numItermax=10**9, log=True)
        dual = torch.from_numpy(log["v"])
        new_v = dual[:-1] - dual[-1]
        new_inside = (block - new_v[None, :]).min(1).values
        gain = float((mult[members] * (new_v - v[members])).sum() + torch.minimum(new_inside, outside).sum() - before)
        if gain >= 0.0 or q == n:
            return (new_v, new_inside) if gain >= 0.0 else (v[members], inside)
        q = min(n, 2 * q)


def lower_bound(
    source: torch.Tensor, target: torch.Tensor, max_sweeps: int = 40, tol: float = 1e-5, blocks: int = 0, seed: int = 0
) -> float:
    """A proven lower bound of the optimal matching cost: ``F(v)`` (module docstring) at ascended duals ``v``.

    Sweeps of: exact offsets of the blocks, then an ascent step on each block in turn (blocks: ``blocks``
    k-means clusters of the targets, default ~U/128 and at least 1, re-drawn each sweep), until a sweep raises ``F`` by
    less than ``tol`` of its value (or ``max_sweeps``). Deterministic.
    """
    s = source.detach().cpu().double()
    t, mult = torch.unique(target.detach().cpu().double(), dim=0, return_counts=True)
    mult = mult.double()
    v = torch.zeros(t.shape[0], dtype=torch.float64)
    if t.shape[0] == 1:
        return dual_objective(s, t, mult, v)
    # one block (under ~192 distinct targets) makes the step the exact dual of the whole problem; two blocks
    # of a small problem can stall the ascent (4 % below the optimum at 11 targets)
    nblocks = blocks or max(1, round(t.shape[0] / 128))
    value = -math.inf
    for sweep in range(max_sweeps):
        labels, k = _partition(t, nblocks, seed + sweep)
        gmin = _group_min(s, t, v, labels, k)
        sizes = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, mult)
        off = _offsets(gmin, sizes)
        v, gmin = v + off[labels], gmin - off[None, :]
        for b in range(k):
            members = torch.nonzero(labels == b).flatten()
            rest = gmin.clone()
            rest[:, b] = math.inf
            v[members], gmin[:, b] = _block_step(s, t, mult, v, members, gmin[:, b], rest.min(1).values)
        last, value = value, float((mult * v).sum()) + float(gmin.min(1).values.sum())  # F(v): gmin is exact
        if value - last <= tol * abs(value):
            break
    return dual_objective(s, t, mult, v)
