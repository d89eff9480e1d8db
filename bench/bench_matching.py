"""The matcher on harder distributions: cost against the optimum and speed against the greedy reference.

``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_matching.py`` (about 10 minutes; ``--sizes``/``--kinds`` for less).

Problems (bench/synthetic_latents.py), all ``[n, 4]`` like SDXL latents:

* ``project``: x̂0-like sources against the condition latents of a random 5-colour palette (the case the
  matcher was built for: the sources carry the clusters' structure);
* ``condition``, ``clustered``, ``heavy-tailed``, ``anisotropic``: unstructured sources (a Gaussian with the
  targets' mean and covariance, no clusters: x̂0 early in sampling, or a prompt far from the palette) against
  condition latents, isotropic Gaussian clusters, Student-t clusters (tight cores, far outliers) and
  elongated clusters, of uneven sizes.

Quality: total squared distance of ``match()`` and of the greedy reference (bench/greedy_match.py) over
the optimum: scipy's ``linear_sum_assignment`` for n <= 4,096, above that the proven lower bound of
bench/matching_bound.py, so the ratios shown there are upper bounds of the true ones. At n <= 4,096 the
bound is also checked against the optimum (its tightness). Target: ours <= 1.10 everywhere.

Speed at n = 16,384 (a 1024x1024 SDXL latent): ``match()`` cold (clusters and transport from scratch)
against the greedy reference's sequential form, interleaved (ours, greedy, ours, ...), best of
``--repeat`` each, on one problem of each kind. Target: >= 5x. One torch thread by default: on a shared
machine a second OpenMP thread stalls whenever the other core is busy, which makes the small, many
kernels of the matcher erratic (``--threads 2`` where the cores are free); the greedy reference is
single-threaded numpy either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.greedy_match import greedy_match  # noqa: E402
from bench.matching_bound import lower_bound, optimum  # noqa: E402
from bench.synthetic_latents import HARD_KINDS, hard_problem, project_problem  # noqa: E402
from palette_core import alignment as A  # noqa: E402

KINDS = ("project", *HARD_KINDS)
EXACT_UP_TO = 4096  # scipy's dense LSA above this takes minutes and n^2 doubles of memory


def problem(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return project_problem(n, seed) if kind == "project" else hard_problem(kind, n, seed)


def cost(s: torch.Tensor, t: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((s.double() - t.double()[perm]) ** 2).sum())


def quality(kinds, sizes, seeds, sweeps) -> list[tuple]:
    rows = []
    for n in sizes:
        for kind in kinds:
            for seed in seeds:
                s, t = problem(kind, n, seed)
                t0 = time.perf_counter()
                bound = lower_bound(s, t, max_sweeps=sweeps)
                t_bound = time.perf_counter() - t0
                exact = optimum(s, t) if n <= EXACT_UP_TO else None
                ref = exact if exact is not None else bound
                ours = cost(s, t, A.match(s, t)) / ref
                greedy = cost(s, t, greedy_match(s, t, seed)[0]) / ref
                tight = f"{(exact - bound) / exact:.1e}" if exact is not None else "-"
                rows.append((n, kind, seed, ours, greedy, "optimum" if exact is not None else "bound", tight))
                print(
                    f"n={n} {kind} seed={seed}: ours {ours:.4f}, greedy {greedy:.3f} x the "
                    f"{rows[-1][5]}; bound below the optimum by {tight} ({t_bound:.0f} s)",
                    flush=True,
                )
    return rows


def speed(kinds, n, repeat) -> list[tuple]:
    rows = []
    for kind in kinds:
        s, t = problem(kind, n, 0)
        A.match(s, t)  # warm-up: first-call allocations
        ours, greedy = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            A.match(s, t)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            greedy_match(s, t, 0)
            greedy.append(time.perf_counter() - t0)
        rows.append((kind, min(ours), min(greedy)))
        print(
            f"n={n} {kind}: ours {min(ours) * 1e3:.0f} ms, greedy {min(greedy) * 1e3:.0f} ms -> "
            f"{min(greedy) / min(ours):.1f}x (target >= 5x)",
            flush=True,
        )
    return rows


def table(quality_rows, speed_rows, n_speed) -> str:
    lines = [
        "| n | problem | ours / optimum | greedy / optimum | optimum from | bound's gap |",
        "| ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for n, kind, seed, ours, greedy, ref, tight in quality_rows:
        lines.append(f"| {n:,} | {kind} (seed {seed}) | {ours:.3f} | {greedy:.2f} | {ref} | {tight} |")
    lines += ["", f"| problem (n = {n_speed:,}) | ours | greedy | speed-up |", "| --- | ---: | ---: | ---: |"]
    for kind, ours, greedy in speed_rows:
        lines.append(f"| {kind} | {ours * 1e3:.0f} ms | {greedy * 1e3:.0f} ms | {greedy / ours:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-sweeps", type=int, default=40, help="ascent sweeps of the lower bound, at most")
    parser.add_argument("--speed-n", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    speed_rows = speed(args.kinds, args.speed_n, args.repeat)
    quality_rows = [] if args.skip_quality else quality(args.kinds, args.sizes, args.seeds, args.max_sweeps)
    print()
    print(table(quality_rows, speed_rows, args.speed_n))


if __name__ == "__main__":
    main()
