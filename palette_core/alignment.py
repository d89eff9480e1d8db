"""Zero-shot colour alignment (Color Alignment in Diffusion, CVPR 2025, §3 "zero-shot"; docs/design.md §9).

The condition is the palette rendered as an image whose colour areas follow the weights, cut into
blocks that are shuffled (the paper's random permutation ψ, at block scale so the VAE sees flat
colour rather than pixel noise), blurred (bilinear down x3 and up: the paper blurs to keep high
frequencies out of the latents) and VAE-encoded: a set of latent vectors. While sigma is above the
stop point, the predicted clean latent x̂0 is replaced by a one-to-one assignment of its vectors to
the condition vectors (the paper's g(x̂0, c), each condition vector used exactly once).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_colors, check_weights
from .errors import InputShapeError
from .latent_family import SDXL, LatentFamily
from .render import stripe_widths

LATENT_SCALE = SDXL.downscale  # SDXL's VAE: one latent vector per 8x8 pixels
DEFAULT_BLOCK = 32  # pixels per shuffled block side (4x4 latent vectors)
DEFAULT_BLUR = 3  # bilinear down-sampling factor of the blur

Encoder = Callable[[Tensor], Tensor]


def check_palette_weights(colors: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate one palette (docs/design.md §3): ``(colors [K, 3], weights [K])`` normalised, zero weights dropped."""
    c, batched = check_colors(colors)
    if batched:
        raise InputShapeError(f"colors: shape {tuple(c.shape)}; expected one palette [N, 3]")
    w = check_weights(weights, c)[0]
    keep = w > 0
    return c[0][keep], w[keep]


def condition_image(
    colors: Tensor,
    weights: Tensor | None,
    height: int,
    width: int,
    block: int = DEFAULT_BLOCK,
    seed: int = 0,
) -> Tensor:
    """``[height, width, 3]``: the palette as shuffled ``block``-pixel squares, counts by weight (docs/design.md §9).

    Block counts follow the weights by largest remainder over the whole block grid, so proportions are
    exact to one block; the grid is shuffled with ``seed`` (the paper's ψ at block scale) and cropped.
    """
    if height < 1 or width < 1 or block < 1:
        raise InputShapeError(f"height, width, block: {height}, {width}, {block}; all must be >= 1")
    c, w = check_palette_weights(colors, weights)
    gh, gw = -(-height // block), -(-width // block)
    counts = stripe_widths(w, gh * gw).to(c.device)
    labels = torch.repeat_interleave(torch.arange(c.shape[0], device=c.device), counts)
    g = torch.Generator().manual_seed(seed)
    labels = labels[torch.randperm(gh * gw, generator=g).to(c.device)].reshape(gh, gw)
    grid = labels.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width]
    return c[grid]


def blur(image: Tensor, factor: int = DEFAULT_BLUR) -> Tensor:
    """Bilinear down-sampling by ``factor`` and back up (the paper's pre-encoding blur), ``[B, H, W, 3]``."""
    if factor <= 1:
        return image
    x = image.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="bilinear", antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).clamp(0, 1)


def resize_condition(cond: Tensor, n: int, seed: int = 0) -> Tensor:
    """Resample condition vectors ``[m, d]`` to ``[n, d]`` keeping proportions (each repeated ~n/m times)."""
    m = cond.shape[0]
    if m == n:
        return cond
    if m == 0 or n < 1:
        raise InputShapeError(f"cannot resize {m} condition vectors to {n}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(m, generator=g).to(cond.device)
    idx = (torch.arange(n, device=cond.device) * m) // n  # every vector n/m times, rounded evenly
    return cond[order[idx]]


def condition_latents(
    encode: Encoder,
    colors: Tensor,
    weights: Tensor | None,
    h: int,
    w: int,
    block: int = DEFAULT_BLOCK,
    blur_factor: int = DEFAULT_BLUR,
    seed: int = 0,
    family: LatentFamily = SDXL,
) -> Tensor:
    """The condition vectors ``[h * w, C]`` for an ``h x w`` latent: render, shuffle, blur, encode (docs/design.md §9).

    ``encode(image [1, d*h, d*w, 3]) -> latent [1, C, h', w']`` (``d`` = ``family.downscale``, ``C`` =
    ``family.channels``) must return latents in the same space as the x̂0 they will replace (in ComfyUI:
    the VAE latent through ``process_latent_in``).
    """
    d = family.downscale
    img = condition_image(colors, weights, h * d, w * d, block, seed)
    z = encode(blur(img.unsqueeze(0), blur_factor)).detach()  # a constant of the sampling run
    if z.ndim != 4 or z.shape[0] != 1 or z.shape[1] != family.channels:
        raise InputShapeError(
            f"encode returned shape {tuple(z.shape)}; expected a {family.name} latent [1, {family.channels}, h, w]: "
            "the VAE must belong to the same model family as the model"
        )
    return resize_condition(z[0].flatten(1).T.contiguous(), h * w, seed)


# ----------------------------------------------------------------------------------------------------
# The one-to-one matching g(x̂0, c).
#
# Condition vectors come from a few palette colours, so they form a few tight clusters (flat colour
# areas) plus the blends at block borders. The squared cost splits exactly as
#   |s - t|^2 = |s - c_k|^2 + |t - c_k|^2 - 2 <s - c_k, t - c_k>     for t in cluster k (centroid c_k),
# so the assignment is solved in two levels: (1) an exact transport of the n sources to the K cluster
# centroids with the clusters' sizes as capacities (entropic warm start, then successive shortest paths
# on the K-node cluster graph, which makes it exact), and (2) inside each cluster a recursive bisection
# that recovers the cross term: sources and targets are both sorted along the principal axis of the
# targets and cut at the same rank, and each half is cut again along its own axis (a k-d tree built on
# the targets and shared by the sources) down to groups of at most four pairs, which are matched exactly.
# Pairing by rank along one axis is the optimal 1-D matching; the recursion captures every direction in
# which a cluster spreads, which one axis does not when x̂0 carries no trace of the clusters. Within
# about 5% of the exact optimum on clustered, heavy-tailed and anisotropic targets against unstructured
# sources, within 1% on the project's own condition latents (bench/bench_matching.py).
# ----------------------------------------------------------------------------------------------------

# The bisection recovers what coarser clusters lose inside them: 16 are within ~1% of 32 in cost and
# make the transport (n x K costs, K-node repair) about a third cheaper (bench/bench_matching.py).
DEFAULT_CLUSTERS = 16
_KMEANS_ITERS = 12
_KMEANS_FIT = 4096
# Entropic warm start of the cluster-level transport (temperatures relative to the std of the costs):
# enough that the exact repair afterwards moves only a few dozen sources (measured in bench/).
_SINKHORN_ITERS = 40
_SINKHORN_LOW = 0.03
_OVERRELAX = 1.5
_COARSE_LEVEL = 1024  # cold starts solve nested random subsets down to this many sources first
_NEWTON_STEPS = 3
_NEWTON_BAND = 0.1  # quantile of the best-to-second-best margins that counts as "on a boundary"


@dataclass(frozen=True)
class BisectionTree:
    """The targets' side of the recursive bisection inside the clusters (docs/training-free.md), built once.

    ``levels``: per level, the segment of each position ``[n]`` and the cutting axis of each segment
    ``[S, d]``; ``order``: the targets in position order ``[n]``; ``counts``, ``start``: the final segments
    (at most ``_LEAF`` pairs each). It depends on the targets and their clusters alone.
    """

    levels: tuple[tuple[Tensor, Tensor], ...]
    order: Tensor
    counts: Tensor
    start: Tensor


@dataclass(frozen=True)
class TargetClusters:
    """k-means clusters of the target vectors: centroids ``[K, d]``, labels ``[n]``, sizes ``[K]``, axes ``[K, d]``.

    ``tree``: the targets' side of the bisection (:class:`BisectionTree`), computed here so that every
    matching against the same targets reuses it.
    """

    centroids: Tensor
    labels: Tensor
    sizes: Tensor
    axes: Tensor
    tree: BisectionTree | None = None


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def _principal_axes(x: Tensor, labels: Tensor, centroids: Tensor) -> Tensor:
    k, d = centroids.shape
    dev = x - centroids[labels]
    cov = torch.zeros(k, d, d, dtype=x.dtype, device=x.device)
    cov.index_add_(0, labels, dev[:, :, None] * dev[:, None, :])
    # eigh is reliable in float64 even for rank-deficient covariances (clusters of identical vectors)
    return torch.linalg.eigh(cov.double())[1][:, :, -1].to(x.dtype)


def cluster_targets(target: Tensor, k: int = DEFAULT_CLUSTERS, seed: int = 0) -> TargetClusters:
    """k-means (k-means++ start, Lloyd steps) of the target vectors ``[n, d]``; empty clusters dropped.

    Compute once per condition and pass to :func:`match` to reuse it across sampling steps.
    """
    x = _check_vectors(target, "target")
    n = x.shape[0]
    k = max(1, min(k, n))
    g = torch.Generator().manual_seed(seed)
    # the centroids are fitted on a random subset (plenty for a few dozen clusters); every vector is labelled after
    fit = x if n <= _KMEANS_FIT else x[torch.randperm(n, generator=g)[:_KMEANS_FIT].to(x.device)]
    first = int(torch.randint(fit.shape[0], (1,), generator=g))
    picks = [first]
    d2 = ((fit - fit[first]) ** 2).sum(1)
    for _ in range(k - 1):
        total = float(d2.sum())
        if not total > 0:  # fewer distinct vectors than clusters
            break
        u = torch.rand((), generator=g, dtype=torch.float64) * total
        nxt = min(fit.shape[0] - 1, int(torch.searchsorted(torch.cumsum(d2.double(), 0), u.to(x.device))))
        picks.append(nxt)
        d2 = torch.minimum(d2, ((fit - fit[nxt]) ** 2).sum(1))
    c = fit[picks].clone()
    for _ in range(_KMEANS_ITERS):
        labels = _sq_dist(fit, c).argmin(1)
        counts = torch.bincount(labels, minlength=c.shape[0]).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, fit)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
    labels = _sq_dist(x, c).argmin(1)
    sizes = torch.bincount(labels, minlength=c.shape[0])
    keep = sizes > 0
    remap = torch.cumsum(keep.long(), 0) - 1
    c, labels, sizes = c[keep], remap[labels], sizes[keep]
    axes = _principal_axes(x, labels, c)
    return TargetClusters(c, labels, sizes, axes, _target_tree(x, labels, axes))


def _sinkhorn(cost: Tensor, log_sizes: Tensor, w: Tensor, eps_from: float, eps_to: float, iters: int) -> Tensor:
    """Over-relaxed log-domain Sinkhorn on the semi-dual, the temperature annealed geometrically."""
    for t in range(iters):
        eps = eps_from * (eps_to / eps_from) ** (t / max(1, iters - 1))
        log_mass = torch.logsumexp(torch.log_softmax((w[None, :] - cost) / eps, dim=1), dim=0)
        w = w + _OVERRELAX * eps * (log_sizes - log_mass)
    return w


def _two_smallest(x: Tensor) -> tuple[Tensor, Tensor]:
    """The two smallest entries of each row of ``x [n, K]`` (K >= 2) and their columns, ``[n, 2]`` each."""
    first, i1 = x.min(1)
    second, i2 = x.scatter(1, i1[:, None], torch.inf).min(1)  # two mins: a few times faster than topk here
    return torch.stack([first, second], 1), torch.stack([i1, i2], 1)


def _excess(cost: Tensor, w: Tensor, sizes: Tensor) -> int:
    counts = torch.bincount((cost - w[None, :]).argmin(1), minlength=cost.shape[1])
    return int((counts - sizes).clamp_min(0).sum())


def cluster_potentials(cost: Tensor, sizes: Tensor) -> Tensor:
    """Approximate dual potentials ``w [K]`` of the source-to-cluster transport (entropic, annealed).

    Over-relaxed Sinkhorn (Thibault et al. 2017) annealed from 0.1 of the cost spread down to a
    fraction of the median best-to-second-best margin.
    """
    k = cost.shape[1]
    if k == 1:
        return torch.zeros(1, dtype=cost.dtype, device=cost.device)
    two = _two_smallest(cost)[0]
    margin = float((two[:, 1] - two[:, 0]).median()) + 1e-12
    w = torch.zeros(k, dtype=cost.dtype, device=cost.device)
    hi = max(0.1 * float(cost.std()), margin)
    return _sinkhorn(cost, torch.log(sizes.to(cost.dtype)), w, hi, _SINKHORN_LOW * margin, _SINKHORN_ITERS)


def _laplacian_step(cost: Tensor, w: Tensor, sizes: Tensor) -> Tensor:
    """One Newton step on the hard capacity constraints (semi-discrete OT, Kitagawa-Mérigot-Thibert 2019).

    d(count_k)/d(w_l) is minus the density of sources on the boundary between clusters k and l: a graph
    Laplacian, estimated from the sources whose best and second-best clusters are within a small margin.
    """
    k = cost.shape[1]
    two, idx = _two_smallest(cost - w[None, :])
    margin = two[:, 1] - two[:, 0]
    sample = margin[: 1 << 16].float()
    band = float(torch.kthvalue(sample, max(1, int(_NEWTON_BAND * sample.numel()))).values) + 1e-12
    near = margin < band
    edges = torch.zeros(k, k, dtype=torch.float64, device=cost.device)
    edges.index_put_((idx[near, 0], idx[near, 1]), torch.ones_like(margin[near], dtype=torch.float64), accumulate=True)
    edges = edges + edges.T
    lap = (torch.diag(edges.sum(1)) - edges) / band
    counts = torch.bincount(idx[:, 0], minlength=k).double()
    step = torch.linalg.lstsq(lap.cpu(), (sizes.double() - counts).cpu().unsqueeze(1)).solution.squeeze(1)
    return w + step.to(w.device, w.dtype)


def _scaled_sizes(sizes: Tensor, m: int) -> Tensor:
    """Capacities for ``m`` of the sources: proportional to ``sizes``, each at least 1, summing to ``m``."""
    exact = sizes.double() * m / float(sizes.sum())
    out = torch.floor(exact).long().clamp_min(1)
    order = torch.argsort(exact - torch.floor(exact), descending=True).tolist()
    while int(out.sum()) < m:
        out[order[0]] += 1
        order = order[1:] + order[:1]
    while int(out.sum()) > m:
        out[int(torch.argmax(out))] -= 1
    return out


def assign_to_clusters(cost: Tensor, sizes: Tensor, warm: Tensor | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Exact transport of ``n`` sources to clusters of capacities ``sizes`` (sum n): ``(assignment [n], duals [K])``.

    Potentials come from ``warm`` (e.g. the previous sampling step's duals) or, cold, from the exact
    solution for a random quarter of the sources (recursively; Sinkhorn at the smallest level); a few
    Newton steps on the capacity constraints remove most of the remaining imbalance, and the
    successive-shortest-path repair makes the result exact.
    """
    n, k = cost.shape
    if warm is None:
        if n > _COARSE_LEVEL and k > 1:
            m = max(_COARSE_LEVEL, n // 4)
            rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m].to(cost.device)
            warm = assign_to_clusters(cost[rows], _scaled_sizes(sizes, m), None, seed + 1)[1]
        else:
            warm = cluster_potentials(cost, sizes)
    w = warm.to(cost.device, cost.dtype)
    excess = _excess(cost, w, sizes)
    for _ in range(_NEWTON_STEPS if k > 1 else 0):
        if excess == 0:
            break
        cand = _laplacian_step(cost, w, sizes)
        cand_excess = _excess(cost, cand, sizes)
        if cand_excess >= excess:
            break
        w, excess = cand, cand_excess
    return _exact_capacities(cost, w, sizes)


def _exact_capacities(cost: Tensor, w: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
    """Assignment ``[n]`` of sources to clusters with exactly ``sizes`` each, optimal for the cluster costs.

    Starts from ``argmin_k cost - w`` (optimal for its own counts, by complementary slackness) and
    moves one unit per step from an over-full to an under-full cluster along a shortest path of the
    K-node graph whose arc u -> v costs the cheapest reduced cost of moving a member of u to v
    (successive shortest paths; the potentials keep every reduced cost >= 0). Arc costs split as
    ``B[u, v] + w[u] - w[v]`` with ``B[u, v] = min over members i of u of cost[i, v] - cost[i, u]``,
    kept up to date incrementally. Runs on the CPU in float64. Returns the assignment and the final
    potentials, exact duals of it (every source sits in an ``argmin_k cost - w``): the best warm start for
    a similar problem.
    """
    c = cost.detach().to("cpu", torch.float64).numpy()
    pot = w.detach().to("cpu", torch.float64).numpy().copy()
    n, k = c.shape
    assign = np.argmin(c - pot[None, :], axis=1)
    excess = np.bincount(assign, minlength=k) - sizes.cpu().numpy()
    if (excess > 0).any():
        _ClusterFlow(c, assign, pot).balance(excess)
    return torch.as_tensor(assign, device=cost.device), torch.as_tensor(pot, dtype=w.dtype, device=w.device)


class _ClusterFlow:
    """State of the successive-shortest-path repair: memberships and the arc table ``B`` with its argmins."""

    def __init__(self, c: np.ndarray, assign: np.ndarray, pot: np.ndarray) -> None:
        self.c, self.assign, self.pot = c, assign, pot
        k = c.shape[1]
        self.members = [np.flatnonzero(assign == u) for u in range(k)]
        self.b = np.full((k, k), np.inf)
        self.arg = np.zeros((k, k), dtype=np.int64)
        for u in range(k):
            self._rebuild(u, np.arange(k))

    def _moves(self, idx: np.ndarray, u: int, cols: np.ndarray) -> np.ndarray:
        return self.c[idx[:, None], cols[None, :]] - self.c[idx, u][:, None]

    def _rebuild(self, u: int, cols: np.ndarray) -> None:
        idx = self.members[u]
        if idx.size == 0:
            self.b[u, cols] = np.inf
            return
        block = self._moves(idx, u, cols)
        best = np.argmin(block, axis=0)
        self.b[u, cols] = block[best, np.arange(cols.size)]
        self.arg[u, cols] = idx[best]

    def _move(self, i: int, src: int, dst: int) -> None:
        self.assign[i] = dst
        self.members[src] = self.members[src][self.members[src] != i]
        self.members[dst] = np.append(self.members[dst], i)
        stale = np.flatnonzero(self.arg[src] == i)  # arcs out of src whose cheapest member just left
        if stale.size:
            self._rebuild(src, stale)
        gain = self.c[i] - self.c[i, dst]  # the newcomer may be the cheapest member of dst for some arcs
        better = gain < self.b[dst]
        self.b[dst, better] = gain[better]
        self.arg[dst, better] = i

    def balance(self, excess: np.ndarray) -> None:
        while (excess > 0).any():
            arcs = np.maximum(self.b + self.pot[:, None] - self.pot[None, :], 0.0)  # rounding: tiny negatives
            dist, pred, v = _shortest_to_deficit(arcs, excess)
            self.pot += np.minimum(dist, dist[v])
            path = [v]
            while pred[path[-1]] >= 0:
                path.append(int(pred[path[-1]]))
            moves = [(int(self.arg[src, dst]), src, dst) for dst, src in zip(path[:-1], path[1:])]
            for i, src, dst in moves:
                self._move(i, src, dst)
            excess[path[-1]] -= 1
            excess[v] += 1


def _shortest_to_deficit(arcs: np.ndarray, excess: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Shortest distances from every over-full cluster (Bellman-Ford, dense, non-negative arcs) and the
    nearest under-full cluster; near-exact potentials keep the paths short, so few sweeps are needed."""
    k = arcs.shape[0]
    dist = np.where(excess > 0, 0.0, np.inf)
    pred = np.full(k, -1)
    cols = np.arange(k)
    for _ in range(k):
        cand = dist[:, None] + arcs
        best = np.argmin(cand, axis=0)
        new = cand[best, cols]
        better = new < dist
        if not better.any():
            break
        dist[better] = new[better]
        pred[better] = best[better]
    deficit = np.flatnonzero(excess < 0)
    return dist, pred, int(deficit[np.argmin(dist[deficit])])


def _check_vectors(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError(f"{name}: {shape}; expected a non-empty [n, d] tensor of latent vectors")
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise InputShapeError(f"{name}: contains NaN or infinite values")
    return x


def _match(s: Tensor, t: Tensor, clusters: TargetClusters, warm: Tensor | None) -> tuple[Tensor, Tensor]:
    cost = _sq_dist(s.float(), clusters.centroids.to(device=s.device, dtype=torch.float32))
    sizes = clusters.sizes.to(s.device)
    assign, w = assign_to_clusters(cost, sizes, warm)
    work = torch.promote_types(s.dtype, torch.float32)
    s, t = s.to(work), t.to(device=s.device, dtype=work)
    tree = clusters.tree or _target_tree(t, clusters.labels.to(s.device), clusters.axes.to(s.device))
    src_order, tgt_order = _bisection_orders(s, t, assign, tree)
    perm = torch.empty_like(src_order)
    perm[src_order] = tgt_order
    return perm, w


def _target_tree(t: Tensor, groups: Tensor, axes: Tensor) -> BisectionTree:
    """The recursive bisection on the targets (:class:`BisectionTree`); :func:`_bisection_orders` adds the sources.

    Each segment (a group, then its halves) is sorted along one axis and cut at the middle rank, until no
    segment holds more than ``_LEAF`` targets. The axis is the principal axis of the segment's targets
    (``axes`` for the groups themselves) while there are at most ``_EIGH_SEGMENTS`` segments; deeper, each
    segment takes the next principal axis of its nearest ancestor that had its own, in turn (a k-d tree).
    """
    order = torch.argsort(groups, stable=True)
    seg = groups[order]
    pos = torch.arange(seg.shape[0], device=seg.device)
    basis = axes.to(t.dtype)[:, None, :]  # [S, r, d]: principal axes, largest variance first
    owner = torch.arange(basis.shape[0], device=seg.device)  # each segment's entry in basis
    turn = 0  # levels since basis was computed
    levels = []
    while True:
        counts = torch.bincount(seg)
        start = torch.cumsum(counts, 0) - counts
        if int(counts.max()) <= _LEAF:
            return BisectionTree(tuple(levels), order, counts, start)
        ts = t[order]
        if turn and (counts.shape[0] <= _EIGH_SEGMENTS or basis.shape[1] == 1):
            basis, owner, turn = _segment_bases(ts, seg, counts), torch.arange(counts.shape[0], device=seg.device), 0
        ax = basis[owner, turn % basis.shape[1]]
        levels.append((seg, ax))
        order = order[_segment_sort(seg, (ts * ax[seg]).sum(1))]
        big = counts[seg] > _LEAF  # smaller segments are left whole: their order does not matter (exact leaves)
        upper = ((pos - start[seg] >= (counts[seg] + 1) // 2) & big).long()
        key = 2 * seg + upper
        new = torch.cumsum(torch.cat([key.new_zeros(1), (key[1:] != key[:-1]).long()]), 0)
        parent = torch.zeros(int(new[-1]) + 1, dtype=torch.long, device=seg.device)
        parent[new] = seg
        owner, seg = owner[parent], new
        turn += 1


def _bisection_orders(s: Tensor, t: Tensor, src_groups: Tensor, tree: BisectionTree) -> tuple[Tensor, Tensor]:
    """Orders of the sources and targets, ``src_order[p]`` paired with ``tgt_order[p]``, by recursive bisection.

    Groups ``0..K-1`` hold as many sources as targets. At each level of the targets' ``tree`` the sources of
    every segment are sorted along its axis, so a cut at the same rank splits both sides alike (rank
    matching, the optimal 1-D matching, at every scale); the final segments of at most ``_LEAF`` pairs are
    then matched exactly.
    """
    dev = s.device
    src_order = torch.argsort(src_groups, stable=True)
    for seg, ax in tree.levels:
        seg = seg.to(dev)
        src_order = src_order[_segment_sort(seg, (s[src_order] * ax.to(dev, s.dtype)[seg]).sum(1))]
    tgt_order = _exact_leaves(s, t, src_order, tree.order.to(dev), tree.counts.to(dev), tree.start.to(dev))
    return src_order, tgt_order


_LEAF = 4  # segments of up to this many pairs are matched exactly (4! = 24 pairings each)
_EIGH_SEGMENTS = 256  # principal axes per segment while there are at most this many segments
_PAIRINGS = torch.tensor(list(itertools.permutations(range(_LEAF))))


def _segment_bases(x: Tensor, seg: Tensor, counts: Tensor) -> Tensor:
    """Principal axes ``[S, d, d]`` of each segment of ``x`` (rows grouped by ``seg``), largest variance first."""
    nseg, d = counts.shape[0], x.shape[1]
    mean = torch.zeros(nseg, d, dtype=x.dtype, device=x.device).index_add_(0, seg, x) / counts[:, None].to(x.dtype)
    dev = x - mean[seg]
    cov = torch.zeros(nseg, d, d, dtype=x.dtype, device=x.device).index_add_(0, seg, dev[:, :, None] * dev[:, None, :])
    # float64: eigh is reliable for rank-deficient covariances (identical targets)
    return torch.linalg.eigh(cov.double())[1].flip(-1).transpose(1, 2).to(x.dtype)


def _segment_sort(seg: Tensor, key: Tensor) -> Tensor:
    """Stable order by ``key`` inside each run of ``seg`` (non-decreasing): one sort of 64-bit ``(seg, key)``."""
    k = key.double()
    k = k - k.min()
    q = (k * ((2.0**32 - 1) / max(float(k.max()), 1e-300))).long()  # keys to 32-bit ranks, order kept
    return torch.argsort((seg << 32) | q, stable=True)


def _exact_leaves(s: Tensor, t: Tensor, src_order: Tensor, tgt_order: Tensor, counts: Tensor, start: Tensor) -> Tensor:
    """``tgt_order`` with every segment of at most ``_LEAF`` pairs re-paired at its minimum cost (all pairings)."""
    multi = torch.nonzero(counts > 1).flatten()
    if multi.numel() == 0:
        return tgt_order
    slot = torch.arange(_LEAF, device=s.device)
    idx = start[multi, None] + slot  # [L, LEAF] positions; beyond the segment: padding
    real = slot[None, :] < counts[multi, None]
    idx = torch.where(real, idx, start[multi, None])
    a, b = s[src_order[idx]], t[tgt_order[idx]]
    cost = ((a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2.0 * a @ b.transpose(1, 2)).clamp_min(0.0)
    both = real[:, :, None] & real[:, None, :]
    big = torch.finfo(cost.dtype).max / (4 * _LEAF)  # a real-padding pair: never chosen (finite: 0 * big = 0)
    cost = torch.where(both, cost, torch.where(real[:, :, None] | real[:, None, :], big, 0.0))
    pairings = _PAIRINGS.to(s.device)
    # total cost of each of the 24 pairings: one product with their 0/1 incidence matrix [LEAF * LEAF, 24]
    incidence = torch.zeros(_LEAF * _LEAF, pairings.shape[0], dtype=cost.dtype, device=s.device)
    incidence[slot[None, :] * _LEAF + pairings, torch.arange(pairings.shape[0], device=s.device)[:, None]] = 1.0
    best = pairings[(cost.reshape(-1, _LEAF * _LEAF) @ incidence).argmin(1)]  # source slot r takes target best[r]
    out = tgt_order.clone()
    out[idx[real]] = tgt_order[torch.gather(idx, 1, best)[real]]
    return out


def match(
    source: Tensor,
    target: Tensor,
    clusters: TargetClusters | None = None,
    *,
    k: int = DEFAULT_CLUSTERS,
    seed: int = 0,
) -> Tensor:
    """One-to-one assignment ``perm`` (LongTensor ``[n]``): ``target[perm]`` goes to ``source`` row by row.

    Minimises the total squared distance approximately (the paper's g(x̂0, c); docs/design.md §9): exact
    transport of the sources to k-means clusters of the targets, then a recursive bisection of each
    cluster along its principal axes. Always a permutation. ``clusters`` (:func:`cluster_targets`) may be cached.
    """
    s = _check_vectors(source, "source")
    t = _check_vectors(target, "target")
    if s.shape != t.shape:
        raise InputShapeError(f"source {tuple(s.shape)} and target {tuple(t.shape)} must have the same shape [n, d]")
    if clusters is None:
        clusters = cluster_targets(t, k, seed)
    elif clusters.labels.shape[0] != t.shape[0]:
        raise InputShapeError(f"clusters were built for {clusters.labels.shape[0]} targets, not {t.shape[0]}")
    return _match(s, t, clusters, None)[0]


class AlignmentCondition:
    """The condition vectors of one latent size with their clusters, aligning x̂0 batches (paper §3 zero-shot).

    Keeps the transport potentials of the last call per batch index: consecutive sampling steps give
    similar problems, so they warm-start the next one.
    """

    def __init__(self, vectors: Tensor, k: int = DEFAULT_CLUSTERS, seed: int = 0) -> None:
        self.vectors = _check_vectors(vectors, "condition vectors")
        self.k, self.seed = k, seed
        self.clusters = cluster_targets(self.vectors, k, seed)
        self._warm: dict[int, Tensor] = {}
        self._regions: dict[int, AlignmentCondition] = {}

    def region(self, n: int) -> AlignmentCondition:
        """The condition for a region of ``n`` latent vectors: the vectors resampled to ``n`` in proportion (cached)."""
        if n == self.vectors.shape[0]:
            return self
        if n not in self._regions:
            self._regions[n] = AlignmentCondition(resize_condition(self.vectors, n, self.seed), self.k, self.seed)
        return self._regions[n]

    def align(self, x0: Tensor, strength: float = 1.0, mask: Tensor | None = None) -> Tensor:
        """x̂0 ``[B, C, h, w]`` with its vectors replaced by their matched condition vectors, blended by ``strength``.

        With ``mask [B, h, w]`` (docs/regions.md) only the vectors where the mask is above 0 take part: they are
        matched to the condition resampled to their number and blended by ``strength x mask``; every other
        vector is returned unchanged.
        """
        if x0.ndim != 4 or x0.shape[1] != self.vectors.shape[1] or x0.shape[2] * x0.shape[3] != self.vectors.shape[0]:
            raise InputShapeError(
                f"x0: shape {tuple(x0.shape)}; expected [B, {self.vectors.shape[1]}, h, w] with h*w = "
                f"{self.vectors.shape[0]} (the size the condition was built for)"
            )
        if not 0.0 <= strength <= 1.0:
            raise InputShapeError(f"strength: {strength} must be in [0, 1]")
        if mask is not None:
            return self._align_region(x0, strength, mask)
        target = self.vectors.to(device=x0.device, dtype=x0.dtype)
        out = torch.empty_like(x0)
        for b in range(x0.shape[0]):
            src = x0[b].flatten(1).T
            perm, self._warm[b] = _match(_check_vectors(src, "x0"), target, self.clusters, self._warm.get(b))
            out[b] = target[perm].T.reshape(x0.shape[1:])
        return out if strength == 1.0 else torch.lerp(x0, out, strength)

    def _align_region(self, x0: Tensor, strength: float, mask: Tensor) -> Tensor:
        if mask.shape != (x0.shape[0], *x0.shape[2:]):
            raise InputShapeError(f"mask: shape {tuple(mask.shape)}; expected {(x0.shape[0], *x0.shape[2:])}")
        out = x0.clone()
        for b in range(x0.shape[0]):
            weight = mask[b].flatten().to(device=x0.device, dtype=x0.dtype)
            inside = torch.nonzero(weight > 0).flatten()
            if inside.numel() == 0:
                continue
            region = self.region(int(inside.numel()))
            target = region.vectors.to(device=x0.device, dtype=x0.dtype)
            src = x0[b].flatten(1).T[inside]
            perm, region._warm[b] = _match(_check_vectors(src, "x0"), target, region.clusters, region._warm.get(b))
            t = (strength * weight[inside]).unsqueeze(1)
            flat = out[b].flatten(1)  # a view: writing it writes out[b]
            flat[:, inside] = torch.lerp(src, target[perm], t).T
        return out
