"""Accuracy of every model recipe in jobs/, trained here through `run_training`.

    python benchmarks/bench_models.py --data-root ../shared/data --threads 2 [--epochs cnn=3 vit=2]
        [--only mlp moe] [--out benchmarks/results/models.json]

Each job spec is resolved exactly as `deltajobs train JOB` would (so the recipe is jobs/<model>.yaml);
`--epochs MODEL=N` shortens a recipe where this machine is too slow for it, and the table says so.
Prints one Markdown row per model and writes the full results (history included) as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from common import add_data_root

# model -> (its job spec in jobs/, the test accuracy its recipe must reach)
JOBS = {
    "mlp": ("mnist", 0.98),
    "cnn": ("cnn", 0.992),
    "resnet": ("resnet", 0.993),
    "lstm": ("lstm", 0.985),
    "gru": ("gru", 0.985),
    "vit": ("vit", 0.98),
    "gnn": ("gnn", 0.90),
    "moe": ("moe", 0.98),
}


def run_one(model: str, data_root: str, threads: int, epochs: int | None) -> dict[str, Any]:
    from deltajobs.spec.resolve import Overrides, resolve_job
    from deltajobs.spec.settings import load_settings
    from deltajobs.train.api import run_training

    sets = [f"train.data_root={data_root}", f"train.threads={threads}"]
    resolved = resolve_job(JOBS[model][0], Overrides(sets=sets), load_settings(), "delta", require_account=False)
    config = resolved.spec.train
    recipe_epochs = config.epochs
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    results = run_training(
        config, Path(tempfile.mkdtemp(prefix=f"bench-{model}-")), log=lambda line: print(line, flush=True)
    )
    return {**results, "recipe_epochs": recipe_epochs, "job": JOBS[model][0]}


def row(model: str, results: dict[str, Any]) -> str:
    shortened = "" if results["epochs"] == results["recipe_epochs"] else f" (recipe: {results['recipe_epochs']})"
    target = JOBS[model][1]
    load = ""
    if "expert_load_max_over_mean" in results:
        load = f"; max expert load {results['expert_load_max_over_mean']:.2f}x mean"
    return (
        f"| {model} | jobs/{results['job']}.yaml | {results['params']:,} | {results['device']} | "
        f"{results['epochs']}{shortened} | {results['train_seconds']:.0f} | {results['test_acc'] * 100:.2f}% | "
        f"{target * 100:.1f}% {'met' if results['test_acc'] >= target else 'not met'}{load} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_root(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", choices=list(JOBS), default=list(JOBS))
    parser.add_argument("--epochs", nargs="*", default=[], help="MODEL=N: train N epochs instead of the recipe's")
    parser.add_argument("--out", type=Path, default=None, help="write all results here as JSON")
    args = parser.parse_args()
    epochs = {name: int(n) for name, n in (item.split("=") for item in args.epochs)}

    everything = {}
    for model in args.only:
        everything[model] = run_one(model, args.data_root, args.threads, epochs.get(model))
        print(row(model, everything[model]), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(everything, indent=1))
    print("\n| model | recipe | params | device | epochs | seconds | test acc | target |")
    print("|---|---|---|---|---|---|---|---|")
    for model, results in everything.items():
        print(row(model, results))


if __name__ == "__main__":
    main()
