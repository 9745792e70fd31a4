"""Does the MLP's hand-derived step train as well as autograd? The same recipe, many seeds.

    python benchmarks/bench_step_accuracy.py --data-root ../shared/data --seeds 12 --epochs 10

The two steps agree to float rounding and then diverge as any two float orders do, so a single
run says little: this trains the reference's recipe (MLP, AdamW 1e-3 at a constant rate, batch 64)
with `train.fused_step` true and false for each seed and compares test accuracy per epoch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from common import add_data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_root(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    from deltajobs.train.api import run_training
    from deltajobs.train.config import TrainConfig

    accuracy: dict[bool, list[list[float]]] = {True: [], False: []}  # fused -> per seed, per epoch (%)
    for seed in range(args.seeds):
        for fused in (True, False):
            config = TrainConfig(
                data_root=args.data_root, epochs=args.epochs, batch_size=64, optimizer="adamw", lr=1e-3,
                threads=args.threads, seed=seed, fused_step=fused,
            )  # fmt: skip
            results = run_training(config, tempfile.mkdtemp(prefix="bench-step-"), log=lambda line: None)
            assert results["step"] == ("fused" if fused else "autograd")
            accuracy[fused].append([100 * h["test_acc"] for h in results["history"]])
            print(f"seed {seed} {results['step']:8s}", [round(a, 2) for a in accuracy[fused][-1]], flush=True)

    late = range(args.epochs // 2 - 1, args.epochs)  # the second half, where both have settled
    gaps = [
        statistics.mean(ours[e] - theirs[e] for e in late)
        for ours, theirs in zip(accuracy[True], accuracy[False], strict=True)
    ]
    error = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan")
    print(
        f"\nmean test accuracy over epochs {late.start + 1}-{args.epochs}, hand-derived minus autograd: "
        f"{statistics.mean(gaps):+.3f} +/- {error:.3f} points (standard error, {args.seeds} seeds)"
    )
    for fused, name in ((True, "hand-derived"), (False, "autograd")):
        runs = accuracy[fused]
        print(
            f"{name:12s} final {statistics.mean(run[-1] for run in runs):.2f}%  "
            f"98.0% reached within {args.epochs} epochs by {sum(max(run) >= 98.0 for run in runs)} of {len(runs)} seeds"
        )


if __name__ == "__main__":
    main()
