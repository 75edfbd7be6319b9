"""Cost of one search step (weight step + architecture step) per relaxation, against one plain
training step of the space's largest sub-network on the same batch, measured side by side.

Rounds interleave every contender (plain, softmax, gumbel, single-path, ...) so that machine noise hits
all of them alike; each figure is the median over rounds of the per-round ratio to the plain step.

    python benchmarks/supernet_step.py [--space seed-cnn] [--batch 64] [--rounds 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hwnas.config import SearchConfig
from hwnas.relax import RELAXATIONS
from hwnas.search.loop import SearchState, arch_step, weight_step
from hwnas.space import get_space


def largest_arch(space):
    """The arch with the most multiply-accumulates: by enumeration where the space is small, else the
    last (largest) non-skip value of every choice."""
    if space.size <= 5000:
        return max(space.enumerate(), key=lambda a: _macs(space, a))
    return {c.label: c.values[-2] if c.values[-1] == "skip" else c.values[-1] for c in space.choices}


def _macs(space, arch) -> int:
    model = space.build(arch).eval()
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *space.input_shape))
    for h in hs:
        h.remove()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="seed-cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = get_space(args.space)
    x = torch.randn(args.batch, *space.input_shape)
    y = torch.randint(0, space.num_classes, (args.batch,))
    arch = largest_arch(space)
    plain = space.build(arch).train()
    opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def plain_step():
        loss = F.cross_entropy(plain(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    dataset = "fake" if space.input_shape != (1, 28, 28) else "digits"
    states = {r: SearchState(SearchConfig(space=args.space, relaxation=r, dataset=dataset), torch.device("cpu"))
              for r in RELAXATIONS.names()}

    def search_step(st):
        weight_step(st, x, y)
        arch_step(st, x, y)

    contenders = {"plain": plain_step, **{r: (lambda st=st: search_step(st)) for r, st in states.items()}}
    for fn in contenders.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ratios = {r: statistics.median(t / p for t, p in zip(times[r], times["plain"], strict=True)) for r in states}
    result = {
        "space": args.space, "batch": args.batch, "rounds": args.rounds, "threads": args.threads,
        "largest_arch": arch, "plain_step_ms_median": 1000 * statistics.median(times["plain"]),
        "search_step_ms_median": {r: 1000 * statistics.median(times[r]) for r in states},
        "ratio_to_plain_step": ratios,
        "goal": "single-path <= 1.5x", "goal_met": ratios["single-path"] <= 1.5,
    }
    print(f"space {args.space}, batch {args.batch}, {args.rounds} interleaved rounds, {args.threads} thread(s)")
    print(f"largest sub-network {arch}: plain training step {result['plain_step_ms_median']:.1f} ms (median)")
    print(f"{'relaxation':<12} {'step ms':>9} {'x plain':>8}")
    for r in states:
        print(f"{r:<12} {result['search_step_ms_median'][r]:>9.1f} {ratios[r]:>8.2f}")
    out = Path(args.out or f"benchmarks/results/supernet_step_{args.space}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
