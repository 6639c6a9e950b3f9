"""Overfitting: one model on shrinking training sets, with and without regularisation and
early stopping; learning curves and the toolkit's diagnosis of every run.

Run: ``.venv/bin/python experiments/overfitting/run.py [--quick] [--out DIR]``.

``study.yaml`` names the config (``configs/mlp.yaml``: a 256x256 MLP on breast_cancer, no
regularisation, 80 epochs), the training-set fractions and the variants (overrides). Each
variant runs ``jaxtrain.learning_curve.learning_curve`` (what ``jaxtrain learning-curve``
runs): the same config on stratified shares of the training split with the validation and
test splits fixed. Every run's ``metrics.json`` carries the diagnosis (overfitting when the
validation loss rose more than 5% above its minimum while the training loss kept falling).
jaxtrain always evaluates the test split on the best checkpoint (lowest validation loss here),
so without early stopping the *final* model is the overfitted one; the table shows both.
Writes ``results.md``, ``results.json``, ``learning_curves.png`` and ``loss_curves.png`` to
``--out`` (default ``experiments/overfitting/results``).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    ROOT,
    figure,
    markdown_table,
    read_json,
    save,
    study_arguments,
    timed,
    write_json,
)

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data  # noqa: E402
from jaxtrain.learning_curve import learning_curve  # noqa: E402
from jaxtrain.logging import read_metrics  # noqa: E402


def run_variant(config, data, fractions: list[float], run_dir: Path) -> list[dict]:
    """One learning curve; per fraction the numbers of the table and the loss curves."""
    run_dir.mkdir(parents=True)
    curve = learning_curve(config, run_dir, data, fractions, progress=False)
    rows = []
    for point in curve["rows"]:
        child = run_dir / point["run_dir"]
        metrics = read_json(child / "metrics.json")
        records = read_metrics(child)
        train = [r for r in records if r["split"] == "train"]
        validation = [r for r in records if r["split"] == "validation"]
        best = min(validation, key=lambda r: r["loss"])
        rows.append(
            {
                "fraction": point["fraction"],
                "train_examples": point["train_examples"],
                "steps": metrics["training"]["steps"],
                "early_stopped": metrics["training"]["early_stopped"] is not None,
                "final_train_loss": train[-1]["loss"],
                "final_train_accuracy": train[-1]["accuracy"],
                "best_validation_loss": best["loss"],
                "best_step": best["step"],
                "final_validation_loss": validation[-1]["loss"],
                "validation_accuracy": metrics["validation"]["accuracy"],
                "test_accuracy": metrics["test"]["accuracy"],
                "diagnosis": metrics["diagnosis"]["verdict"],
                "evidence": metrics["diagnosis"]["evidence"],
                "curves": {
                    "train": [[r["step"], r["loss"]] for r in train],
                    "validation": [[r["step"], r["loss"]] for r in validation],
                },
            }
        )
    return rows


def write_results(results: dict, wall: float, out: Path, quick: bool) -> None:
    table = []
    for variant, rows in results["variants"].items():
        for r in rows:
            table.append(
                [
                    variant,
                    f"{r['fraction']:g} ({r['train_examples']})",
                    f"{r['steps']}" + (" (stopped)" if r["early_stopped"] else ""),
                    f"{r['final_train_loss']:.4f}",
                    f"{r['best_validation_loss']:.4f} @ {r['best_step']}",
                    f"{r['final_validation_loss']:.4f}",
                    f"{r['test_accuracy']:.4f}",
                    r["diagnosis"],
                ]
            )
    smallest = min(results["fractions"])
    evidence = [
        f"- **{variant}**, fraction {smallest:g}: {rows[0]['diagnosis']}: {rows[0]['evidence']}"
        for variant, rows in results["variants"].items()
    ]
    lines = [
        "# Overfitting: training-set size, regularisation, early stopping"
        + (" (--quick)" if quick else ""),
        "",
        "breast_cancer (validation 85 rows, test 114 rows, fixed); the training split cut to a "
        "stratified fraction. Test accuracy is the best checkpoint's (lowest validation loss); "
        "the final validation loss is where training ended.",
        "",
        markdown_table(
            [
                "variant",
                "fraction (rows)",
                "steps",
                "last train loss",
                "best validation loss @ step",
                "final validation loss",
                "test accuracy",
                "diagnosis",
            ],
            table,
        ),
        "The diagnosis at the smallest training set:",
        "",
        *evidence,
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![loss curves](loss_curves.png)",
        "",
        f"Whole study: {wall:.0f} s wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))


def _paired(ax, sizes, rows, variant: str, solid: tuple[str, str], dashed: tuple[str, str]):
    """Two curves of one variant in one colour: ``solid`` (key, label) with dots, ``dashed``
    with crosses."""
    line = ax.plot(sizes, [r[solid[0]] for r in rows], marker="o", label=f"{variant}: {solid[1]}")[
        0
    ]
    ax.plot(
        sizes,
        [r[dashed[0]] for r in rows],
        marker="x",
        linestyle="--",
        color=line.get_color(),
        label=f"{variant}: {dashed[1]}",
    )


def plot_learning_curves(results: dict, path: Path) -> None:
    fig = figure(9.0, 3.8)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for variant, rows in results["variants"].items():
        sizes = [r["train_examples"] for r in rows]
        _paired(loss_ax, sizes, rows, variant, ("final_validation_loss", "final"),
                ("best_validation_loss", "best"))  # fmt: skip
        _paired(acc_ax, sizes, rows, variant, ("test_accuracy", "test"),
                ("final_train_accuracy", "train"))  # fmt: skip
    loss_ax.set_xlabel("training examples")
    loss_ax.set_ylabel("validation loss")
    loss_ax.set_yscale("log")
    loss_ax.set_title("final (solid) and best (dashed) validation loss")
    loss_ax.legend(fontsize=7)
    acc_ax.set_xlabel("training examples")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_title("test (best checkpoint) and final training accuracy")
    acc_ax.legend(fontsize=7)
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
    save(fig, path)


def plot_loss_curves(results: dict, path: Path) -> None:
    variants = list(results["variants"].items())
    fig = figure(9.0, 2.6 * ((len(variants) + 1) // 2))
    axes = fig.subplots((len(variants) + 1) // 2, 2, squeeze=False).ravel()
    for ax, (variant, rows) in zip(axes, variants, strict=False):
        row = rows[0]  # the smallest training set
        for split, style in (("train", "-"), ("validation", "-")):
            steps, losses = zip(*row["curves"][split], strict=True)
            ax.plot(steps, losses, style, label=split)
        ax.axvline(row["best_step"], color="grey", linestyle=":", label="best checkpoint")
        ax.set_yscale("log")
        ax.set_title(f"{variant}, {row['train_examples']} rows: {row['diagnosis']}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    save(fig, path)


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, quick_help="2 sizes, 2 variants (tests)")
    study = yaml.safe_load((HERE / "study.yaml").read_text())
    variants, fractions, common = study["variants"], study["fractions"], []
    if args.quick:
        quick = study["quick"]
        variants = {k: variants[k] for k in quick["variants"]}
        fractions, common = quick["fractions"], quick["overrides"]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"fractions": fractions, "variants": {}, "quick": args.quick}
    timing: dict = {}
    with timed(timing), tempfile.TemporaryDirectory() as runs:
        data = prepare_data(load_config(ROOT / study["config"], common).data)
        for index, (variant, overrides) in enumerate(variants.items()):
            config = load_config(ROOT / study["config"], [*common, *overrides])
            rows = run_variant(config, data, fractions, Path(runs) / f"variant_{index}")
            results["variants"][variant] = rows
            print(
                f"{variant}: "
                + ", ".join(
                    f"{r['train_examples']} rows -> {r['diagnosis']} "
                    f"(test {r['test_accuracy']:.3f})"
                    for r in rows
                )
            )
    results["wall_s"] = timing["wall_s"]
    write_results(results, timing["wall_s"], args.out, args.quick)
    plot_learning_curves(results, args.out / "learning_curves.png")
    plot_loss_curves(results, args.out / "loss_curves.png")
    for rows in results["variants"].values():  # keep the per-step curves that are plotted
        for row in rows[1:]:
            row.pop("curves")
    write_json(args.out / "results.json", results)
    print((args.out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
