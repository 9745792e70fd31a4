"""Grid, random, TPE and TPE + Hyperband on one space for jobs/mnist.yaml: the best validation
accuracy reached as a function of compute spent (epochs trained), over several seeds.

    DELTAJOBS_DATA_ROOT=../shared/data python benchmarks/bench_search.py --seeds 3 --trials 16 \\
        --epochs 6 --subset 20000 --out docs/search-bench.json --plot docs/search-bench.png

Every search runs in this process, one trial after another, through the same pieces the workers
use (`deltajobs.sweep.search`: sampler, pruner, suggest; the trainer's `on_epoch` reporting), so
the epochs counted are the epochs a cluster would pay for. The grid has one point per value
combination of the space's grid version (lr 3 x weight decay 2 x batch 3 x width 2 = 36 points);
random and TPE run `--trials` trials; each seed is a new sampler seed (and training seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from common import add_data_root

RANGES = ["train.lr=1e-4:1e-2:log", "train.weight_decay=0:0.1"]
CHOICES = ["train.batch_size=64,128,256", "train.model_args.hidden=[128],[256, 128]"]
GRID = ["train.lr=1e-4,1e-3,1e-2", "train.weight_decay=0,0.1", *CHOICES]
METHODS = {
    "grid": ("grid", "none"),
    "random": ("random", "none"),
    "tpe": ("tpe", "none"),
    "tpe+hyperband": ("tpe", "hyperband"),
}


def run_search(method: str, seed: int, args: argparse.Namespace, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one search to the end; one record per trial: params, epochs run, best val_acc, state."""
    from deltajobs.schema import from_dict
    from deltajobs.sweep.plan import with_params
    from deltajobs.sweep.search import load_study, parse_search, suggest, tell
    from deltajobs.train.api import run_training
    from deltajobs.train.config import TrainConfig

    sampler, pruner = METHODS[method]
    ranges, choices = ([], GRID) if sampler == "grid" else (RANGES, CHOICES)
    trials = None if sampler == "grid" else args.trials
    search = parse_search(sampler, trials, ranges, choices, pruner, "val_acc", seed, None, None)
    search = dataclasses.replace(search, max_epochs=args.epochs)
    records = []
    with TemporaryDirectory() as tmp:
        study = load_study(Path(tmp), search, worker=0)
        for _ in range(search.trials):
            trial = study.ask()
            params = suggest(trial, search)
            train = with_params({"train": base}, params)["train"] | {"seed": seed}
            config = from_dict(TrainConfig, train, "train")
            pruned: list[bool] = []  # set once the pruner says so; the trainer then stops at its next step

            def report(record: dict[str, Any], trial: Any = trial, pruned: list[bool] = pruned) -> None:
                trial.report(record["val_acc"], record["epoch"])
                if trial.should_prune():
                    pruned.append(True)

            results = run_training(
                config, Path(tmp) / f"t{trial.number}", should_stop=lambda pruned=pruned: bool(pruned),
                log=lambda line: None, on_epoch=report,
            )  # fmt: skip
            history = results["history"]
            best = max(h["val_acc"] for h in history)
            if pruned and results["status"] == "interrupted":
                tell(study, trial, state="PRUNED")
            else:
                tell(study, trial, history[-1]["val_acc"])
            records.append({"params": params, "epochs": len(history), "val_acc": best, "pruned": bool(pruned)})
            print(f"  {method} seed {seed} trial {trial.number}: {len(history)} epochs, val_acc {best:.4f}", flush=True)
    return records


def curve(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(epochs spent so far, best val_acc so far) after each trial."""
    spent, best, points = 0, 0.0, []
    for record in records:
        spent += record["epochs"]
        best = max(best, record["val_acc"])
        points.append((spent, best))
    return points


def epochs_to_reach(points: list[tuple[int, float]], target: float) -> float:
    return next((float(spent) for spent, best in points if best >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_root(parser)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16, help="trials of random and TPE searches")
    parser.add_argument("--epochs", type=int, default=6, help="train.epochs: each trial's most")
    parser.add_argument("--subset", type=int, default=20000, help="train.train_subset (time: epochs cost less)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=None, help="write every record as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="best val_acc against epochs, per method")
    args = parser.parse_args()
    import yaml

    base = yaml.safe_load((Path(__file__).resolve().parent.parent / "jobs" / "mnist.yaml").read_text())["train"]
    base |= {"data_root": args.data_root, "epochs": args.epochs, "train_subset": args.subset, "threads": args.threads}
    started = time.time()
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for method in args.methods.split(","):
        seeds = [0] if method == "grid" else list(range(args.seeds))  # the grid does not depend on a seed
        runs[method] = [run_search(method, seed, args, base) for seed in seeds]
    grid_best = max(r["val_acc"] for r in runs["grid"][0]) if "grid" in runs else None
    grid_epochs = sum(r["epochs"] for r in runs["grid"][0]) if "grid" in runs else None
    print(f"\n{'method':<15}{'best val_acc':>14}{'epochs':>8}{'to grid best-0.1pt':>20}  (medians over seeds)")
    summary = {}
    for method, seeds in runs.items():
        best = statistics.median(max(r["val_acc"] for r in records) for records in seeds)
        spent = statistics.median(sum(r["epochs"] for r in records) for records in seeds)
        reach = (
            statistics.median(epochs_to_reach(curve(records), grid_best - 0.001) for records in seeds)
            if grid_best is not None
            else math.inf
        )
        summary[method] = {"best_val_acc": best, "epochs": spent, "epochs_to_grid_best": reach}
        print(f"{method:<15}{best:>14.4f}{spent:>8.0f}{reach:>20.0f}")
    print(f"grid: best {grid_best}, {grid_epochs} epochs; wall {time.time() - started:.0f} s", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs, "grid_epochs": grid_epochs}, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        for color, (method, seeds) in zip(("black", "tab:blue", "tab:orange", "tab:green"), runs.items(), strict=False):
            for i, records in enumerate(seeds):
                xs, ys = zip(*curve(records), strict=True)
                ax.step(xs, [100 * y for y in ys], where="post", color=color, alpha=0.8,
                        label=method if i == 0 else None)  # fmt: skip
        ax.set(xlabel="epochs trained (compute)", ylabel="best validation accuracy so far (%)")
        ax.set_title("Search on jobs/mnist.yaml: best val_acc against compute")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
