"""Federated digits: 100 clients, IID vs label skew (Dirichlet 0.1), against centralised.

Run: ``.venv/bin/python experiments/federated/run.py [--rounds 200] [--out DIR]``.

Every setting is ``configs/digits_federated.yaml`` with overrides (the experiment is the
config; this script only varies it and collects the results): FedAvg on an IID and a
Dirichlet(0.1) partition, FedProx, SCAFFOLD and FedAdam on the skewed one, DP-FedAvg on the
IID one, and the same model trained centrally (``train_and_evaluate``) for as many epochs as
the federated runs see examples. Writes ``results.md`` (a markdown table),
``results.json`` and ``accuracy_vs_round.png`` (validation accuracy of the global model
against the round) to ``--out`` (default ``experiments/federated/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data  # noqa: E402
from jaxtrain.federated import run_federated  # noqa: E402
from jaxtrain.logging import read_metrics  # noqa: E402
from jaxtrain.train import train_and_evaluate  # noqa: E402

CONFIG = ROOT / "configs" / "digits_federated.yaml"
IID = ["federated.partition=iid"]
SKEWED = ["federated.partition=dirichlet", "federated.alpha=0.1"]
SETTINGS = {  # key -> (label, overrides); "centralised" is trained without federation
    "centralised": ("centralised", []),
    "fedavg_iid": ("FedAvg, IID", IID),
    "fedavg_dirichlet": ("FedAvg, Dirichlet(0.1)", SKEWED),
    "fedprox_dirichlet": (
        "FedProx (mu=0.1), Dirichlet(0.1)",
        [*SKEWED, "federated.algorithm=fedprox", "federated.mu=0.1"],
    ),
    "scaffold_dirichlet": ("SCAFFOLD, Dirichlet(0.1)", [*SKEWED, "federated.algorithm=scaffold"]),
    "fedadam_dirichlet": (
        "FedAdam (server lr 0.01), Dirichlet(0.1)",
        [*SKEWED, "federated.algorithm=fedopt", "federated.server_optimizer={name: adam}"],
    ),
    "dp_fedavg_iid": (
        "DP-FedAvg (C=0.5, sigma=1, 50/round), IID",
        [
            *IID,
            "federated.clients_per_round=50",
            "federated.dp={clip_norm: 0.5, noise_multiplier: 1.0, delta: 0.001}",
        ],
    ),
}


def _curve(run_dir: Path) -> tuple[list[int], list[float]]:
    records = [r for r in read_metrics(run_dir) if r["split"] == "validation"]
    return [r["step"] for r in records], [r["accuracy"] for r in records]


def run_setting(key: str, overrides: list[str], data, out: Path) -> dict:
    """One federated setting through ``run_federated``; its row of the table and its curve."""
    config = load_config(CONFIG, overrides)
    run_dir = out / key
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_federated(config, run_dir, data, progress=False)
    rounds, accuracy = _curve(run_dir)
    reached = [r for r, a in zip(rounds, accuracy, strict=True) if a >= 0.8]
    return {
        "test_accuracy": result["test"]["accuracy"],
        "best_validation_accuracy": max(accuracy),
        "rounds_to_80": reached[0] if reached else None,
        "epsilon": result["epsilon"],
        "wall_s": time.perf_counter() - started,
        "curve": {"round": rounds, "accuracy": accuracy},
    }


def run_centralised(overrides: list[str], data, out: Path, examples: float) -> dict:
    """The same model and client optimizer trained on the pooled split, for the number of
    epochs that matches the examples the federated runs process."""
    config = load_config(CONFIG, overrides)
    epochs = max(1, round(examples / len(data.splits["train"])))
    steps = epochs * len(data.splits["train"]) // config.data.batch_size
    config = load_config(
        CONFIG, [*overrides, f"train.epochs={epochs}", f"train.eval_every={max(1, steps // 10)}"]
    )
    run_dir = out / "centralised"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = train_and_evaluate(config, run_dir, data=data, progress=False)
    validation = [r for r in read_metrics(run_dir) if r["split"] == "validation"]
    return {
        "test_accuracy": result.test["accuracy"],
        "best_validation_accuracy": max(r["accuracy"] for r in validation),
        "final_validation_accuracy": validation[-1]["accuracy"],
        "rounds_to_80": None,
        "epsilon": None,
        "wall_s": time.perf_counter() - started,
        "epochs": epochs,
    }


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def write_table(rows: list[dict], rounds: int, path: Path) -> None:
    lines = [
        f"| setting | test accuracy | best validation accuracy | first round >= 0.80 "
        f"(of {rounds}) | epsilon | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {_cell(row['test_accuracy'])} | "
            f"{_cell(row['best_validation_accuracy'])} | {_cell(row['rounds_to_80'])} | "
            f"{_cell(row['epsilon'], 2)} | {_cell(row['wall_s'], 1)} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for row in rows:
        if "curve" in row:
            ax.plot(row["curve"]["round"], row["curve"]["accuracy"], label=row["setting"])
        else:
            label = f"{row['setting']} (final validation accuracy)"
            ax.axhline(row["final_validation_accuracy"], color="black", linestyle="--", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("validation accuracy (global model)")
    ax.set_title("digits, 100 clients, 10 per round, 1 local epoch")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "federated" / "results")
    parser.add_argument("--hidden", type=int, default=None, help="override the MLP width")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma-separated: {', '.join(SETTINGS)}"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    common = [f"federated.rounds={args.rounds}", "federated.checkpoint_every=50"]
    common.append(f"federated.eval_every={max(1, min(10, args.rounds // 20))}")
    if args.hidden:
        common.append(f"model.hidden=[{args.hidden}]")
    config = load_config(CONFIG, common)
    data = prepare_data(config.data)
    # Examples a federated run processes: rounds x clients per round x mean client size.
    per_round = config.federated.clients_per_round * len(data.splits["train"]) / 100
    rows = []
    with tempfile.TemporaryDirectory() as runs:  # run directories: checkpoints, logs, reports
        for key in args.settings.split(","):
            label, overrides = SETTINGS[key]
            if key == "centralised":
                row = run_centralised(common, data, Path(runs), args.rounds * per_round)
            else:
                row = run_setting(key, [*common, *overrides], data, Path(runs))
            rows.append({"setting": label, **row})
            print(f"{label}: test accuracy {row['test_accuracy']:.4f} ({row['wall_s']:.1f} s)")
    write_table(rows, args.rounds, args.out / "results.md")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    plot(rows, args.out / "accuracy_vs_round.png")
    print((args.out / "results.md").read_text())
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
