"""The whole life cycle on one dataset: raw data with planted defects -> preparation report ->
five model families on the same splits -> a sweep per family -> the winner, chosen on
validation, evaluated once on the test split with bootstrap intervals -> table and plots.

Run: ``.venv/bin/python experiments/lifecycle/run.py [--quick] [--out DIR]``.

The raw data is scikit-learn's digits with missing pixels, flipped labels and exact duplicate
rows planted with a fixed seed (``planted.py``), written as a TFDS dataset. Every family's
config (``configs/*.yaml``) has the same ``data:`` section, so all five are prepared, split
and normalised identically. Gradient families (linear, MLP, CNN) are swept with
``jaxtrain.sweep.run_sweep`` (one vmapped program per sweep); trees and forests are fitted
once per grid point (their greedy fit is not a training step to vmap). The family whose best
member has the highest validation accuracy wins; it is retrained as an ordinary run with the
winning settings (``train_and_evaluate`` / ``fit_and_evaluate``), and only that run sees the
test split in this study. Writes ``results.md``, ``results.json``, ``preparation.md`` and
PNG plots to ``--out`` (default ``experiments/lifecycle/results``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    cell,
    figure,
    markdown_table,
    read_json,
    save,
    study_arguments,
    timed,
    write_json,
)
from planted import write_dataset  # noqa: E402

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data, write_data_report  # noqa: E402
from jaxtrain.models import is_fitted  # noqa: E402
from jaxtrain.sweep import run_sweep  # noqa: E402
from jaxtrain.sweep.space import expand  # noqa: E402
from jaxtrain.train import train_and_evaluate  # noqa: E402
from jaxtrain.train.fit import fit_and_evaluate  # noqa: E402

FAMILIES = ("linear", "decision_tree", "random_forest", "mlp", "cnn")
LABELS = {
    "linear": "logistic regression",
    "decision_tree": "decision tree",
    "random_forest": "random forest",
    "mlp": "MLP",
    "cnn": "CNN",
}


def load_family(family: str, data_dir: Path, quick: dict | None):
    overrides = [f"data.data_dir={data_dir}"]
    if quick is not None:
        overrides += [*quick.get("all", []), *quick.get(family, [])]
    return load_config(HERE / "configs" / f"{family}.yaml", overrides)


def preparation(data, truth: dict, out: Path) -> dict:
    """What preparation found, against what was planted (``truth``), as a table and a dict."""
    report = data.report
    steps = {s["rule"]: s for s in report.steps}
    train_rows = set(data.rows["train"].tolist())
    suspects = {s["row"] for s in report.label_suspects}
    flipped = set(truth["flipped"])
    dropped_before = set(steps["missing"]["rows"]) | set(truth["duplicates"])
    in_train = flipped & (train_rows | suspects) - dropped_before
    found = flipped & suspects
    summary = {
        "rows_in": report.rows_in,
        "splits": report.splits,
        "missing": {
            "planted": len(truth["missing"]),
            "found": steps["missing"]["found"],
            "same_rows": sorted(steps["missing"]["rows"]) == sorted(truth["missing"]),
        },
        "duplicates": {  # the report names the later copy of each pair: the planted copy
            "planted": len(truth["duplicates"]),
            "found": steps["duplicates"]["found"],
            "same_rows": sorted(steps["duplicates"]["rows"]) == sorted(truth["duplicates"]),
        },
        "label_errors": {
            "planted": len(flipped),
            "planted_in_training_split": len(in_train),
            "suspects": len(suspects),
            "true_suspects": len(found),
            "recall": len(found) / max(1, len(in_train)),
            "precision": len(found) / max(1, len(suspects)),
        },
        "flipped_held_out": {
            name: len(flipped & set(data.rows[name].tolist())) for name in ("validation", "test")
        },
        "conflicts": steps["conflicts"]["found"],
        "leakage": report.leakage["found"],
        "steps": [
            {k: s[k] for k in ("rule", "action", "found", "rows_in", "rows_out")}
            for s in report.steps
        ],
    }
    label = summary["label_errors"]
    lines = [
        "# Preparation: planted defects against what the report found",
        "",
        f"Raw rows: {report.rows_in} (1,797 digits + {len(truth['duplicates'])} copies); "
        f"splits after cleaning: {report.splits}.",
        "",
        markdown_table(
            ["defect", "planted", "found", "action"],
            [
                ["missing pixels (rows)", len(truth["missing"]), steps["missing"]["found"], "drop"],
                [
                    "exact duplicate rows",
                    len(truth["duplicates"]),
                    steps["duplicates"]["found"],
                    "drop (keep first)",
                ],
                [
                    "flipped labels (training split)",
                    f"{label['planted_in_training_split']} (of {label['planted']} in all)",
                    f"{label['suspects']} suspects, {label['true_suspects']} planted "
                    f"(recall {label['recall']:.2f}, precision {label['precision']:.2f})",
                    "drop suspects",
                ],
                ["conflicting duplicates", 0, summary["conflicts"], "report"],
                ["examples in two splits (after cleaning)", 0, summary["leakage"], "error"],
            ],
        ),
        "Rows through each rule:",
        "",
        markdown_table(
            ["rule", "action", "found", "rows in", "rows out"],
            [
                [s["rule"], s["action"], s["found"], s["rows_in"], s["rows_out"]]
                for s in summary["steps"]
            ],
        ),
        "Flipped labels in the validation and test splits stay (the detector looks at the "
        "training split only), so held-out accuracy is measured against partly wrong labels: "
        f"{summary['flipped_held_out']['validation']} of {report.splits['validation']} "
        f"validation and {summary['flipped_held_out']['test']} of {report.splits['test']} test "
        "labels are planted flips, so a classifier that always predicted the true digit would "
        f"score {1 - summary['flipped_held_out']['test'] / report.splits['test']:.4f} on test.",
        "",
        "The toolkit's own report of this preparation: `data_report.md`.",
        "",
    ]
    (out / "preparation.md").write_text("\n".join(lines))
    write_data_report(out, report)
    return summary


def sweep_family(config, family: str, runs: Path) -> dict:
    """Every member of the family's ``sweep:``; the best by validation accuracy."""
    row: dict = {"family": family}
    with timed(row):
        if is_fitted(config.model):  # a grid of fits, one after another
            members = [m for g in expand(config, family) for m in g.members]
            data = prepare_data(members[0].config.data)
            scores = []
            for member in members:
                run_dir = runs / family / f"member_{member.index}"
                run_dir.mkdir(parents=True)
                fit_and_evaluate(member.config, run_dir, data)
                validation = read_json(run_dir / "metrics.json")["validation"]
                scores.append(validation["accuracy"])
            best = max(range(len(members)), key=lambda i: (scores[i], -i))
            row.update(
                program=f"grid of {len(members)} fits",
                settings=[m.settings for m in members],
                scores=scores,
                best_settings=members[best].settings,
            )
        else:
            run_dir = runs / family
            run_dir.mkdir(parents=True)
            result = run_sweep(config, run_dir, progress=False)
            members = result["members"]
            row.update(
                program=f"vmapped sweep of {len(members)} ({result['groups']} program(s))",
                settings=[m["settings"] for m in members],
                scores=[m["best_value"] for m in members],
                best_settings=result["best"]["settings"],
            )
    row["best_validation_accuracy"] = max(row["scores"])
    return row


def evaluate_winner(config, family: str, settings: dict, out: Path) -> dict:
    """The winning family retrained as an ordinary run with its best settings; the one
    evaluation on the test split in this study."""
    member = next(m for g in expand(config, family) for m in g.members if m.settings == settings)
    run_dir = out / "winner_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    data = prepare_data(member.config.data)
    row: dict = {}
    with timed(row):
        if is_fitted(member.config.model):
            fit_and_evaluate(member.config, run_dir, data)
        else:
            train_and_evaluate(member.config, run_dir, data=data, progress=False)
    metrics = read_json(run_dir / "metrics.json")
    intervals = metrics["analysis"]["intervals"]
    # Keep the report, metrics and plots; drop checkpoints (reproducible, and large).
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    for name in ("metrics.jsonl", ".lock"):
        (run_dir / name).unlink(missing_ok=True)
    return {
        "family": family,
        "settings": settings,
        "validation_accuracy": metrics["validation"]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_accuracy_interval": [intervals["accuracy"]["low"], intervals["accuracy"]["high"]],
        "test_f1_macro": metrics["test"]["f1_macro"],
        "test_roc_auc": metrics["analysis"]["roc_auc_ovr_macro"],
        "test_roc_auc_interval": [intervals["roc_auc"]["low"], intervals["roc_auc"]["high"]],
        "test_examples": len(data.splits["test"]),
        "wall_s": row["wall_s"],
    }


def plot_preparation(prep: dict, path: Path) -> None:
    fig = figure(6.5, 3.6)
    ax = fig.add_subplot()
    label = prep["label_errors"]
    names = ["missing pixels", "exact duplicates", "flipped labels\n(training split)"]
    planted = [
        prep["missing"]["planted"],
        prep["duplicates"]["planted"],
        label["planted_in_training_split"],
    ]
    found = [prep["missing"]["found"], prep["duplicates"]["found"], label["true_suspects"]]
    false = [0, 0, label["suspects"] - label["true_suspects"]]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], planted, 0.4, label="planted", color="#999999")
    ax.bar([x + 0.2 for x in xs], found, 0.4, label="found (planted)", color="#1f77b4")
    ax.bar(
        [x + 0.2 for x in xs],
        false,
        0.4,
        bottom=found,
        label="found (not planted)",
        color="#ff7f0e",
    )
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("rows")
    ax.set_title("Data preparation: planted defects and what the report found")
    ax.legend(fontsize=8)
    save(fig, path)


def plot_comparison(rows: list[dict], winner: dict, path: Path) -> None:
    fig = figure(7.5, 4.2)
    ax = fig.add_subplot()
    for x, row in enumerate(rows):
        scores = row["scores"]
        ax.scatter(
            [x] * len(scores),
            scores,
            color="#999999",
            s=14,
            zorder=2,
            label="sweep members (validation)" if x == 0 else None,
        )
        ax.scatter(
            [x],
            [row["best_validation_accuracy"]],
            color="#1f77b4",
            s=40,
            zorder=3,
            label="best member (validation)" if x == 0 else None,
        )
    x = [r["family"] for r in rows].index(winner["family"])
    low, high = winner["test_accuracy_interval"]
    ax.errorbar(
        [x + 0.15],
        [winner["test_accuracy"]],
        yerr=[[winner["test_accuracy"] - low], [high - winner["test_accuracy"]]],
        fmt="D",
        color="#d62728",
        capsize=4,
        label="winner on test (95% bootstrap)",
        zorder=4,
    )
    ax.set_xticks(range(len(rows)), [LABELS[r["family"]] for r in rows])
    best = min(min(s for s in r["scores"]) for r in rows)
    ax.set_ylim(max(0.0, min(best, low) - 0.02), 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title("Five families on the same cleaned splits")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save(fig, path)


def write_results(
    prep: dict, rows: list[dict], winner: dict, wall: float, out: Path, quick: bool
) -> None:
    table = markdown_table(
        ["family", "search", "best settings", "best validation accuracy", "wall time (s)"],
        [
            [
                LABELS[r["family"]] + (" **(winner)**" if r["family"] == winner["family"] else ""),
                r["program"],
                ", ".join(
                    f"{k.split('.')[-1]}={cell(v, 4)}" for k, v in r["best_settings"].items()
                ),
                cell(r["best_validation_accuracy"]),
                cell(r["wall_s"], 1),
            ]
            for r in rows
        ],
    )
    low, high = winner["test_accuracy_interval"]
    settings = ", ".join(f"{k}={cell(v)}" for k, v in winner["settings"].items())
    auc_low, auc_high = winner["test_roc_auc_interval"]
    ceiling = 1 - prep["flipped_held_out"]["test"] / winner["test_examples"]
    lines = [
        "# Life cycle on digits with planted defects" + (" (--quick)" if quick else ""),
        "",
        "## 1. Preparation",
        "",
        f"{prep['missing']['found']} rows with missing pixels and "
        f"{prep['duplicates']['found']} exact duplicates dropped (planted: "
        f"{prep['missing']['planted']} and {prep['duplicates']['planted']}); "
        f"{prep['label_errors']['suspects']} label suspects dropped from the training split, "
        f"{prep['label_errors']['true_suspects']} of them planted flips (recall "
        f"{prep['label_errors']['recall']:.2f}, precision "
        f"{prep['label_errors']['precision']:.2f}). Details: [preparation.md](preparation.md).",
        "",
        "![preparation](preparation.png)",
        "",
        "## 2. Five families, one sweep each, chosen on validation",
        "",
        table,
        "## 3. The winner, evaluated once on the test split",
        "",
        f"**{LABELS[winner['family']]}** ({settings}), retrained as an ordinary run: "
        f"test accuracy "
        f"**{winner['test_accuracy']:.4f}** (95% bootstrap interval {low:.4f}-{high:.4f}, "
        f"{winner['test_examples']} examples), macro F1 {winner['test_f1_macro']:.4f}, "
        f"ROC-AUC (one-vs-rest) {cell(winner['test_roc_auc'])} ({auc_low:.4f}-{auc_high:.4f}); "
        f"validation accuracy {winner['validation_accuracy']:.4f}. "
        f"{prep['flipped_held_out']['test']} test labels are planted flips, so always "
        f"predicting the true digit would score {ceiling:.4f} against them. Its run report: "
        "[winner_run/report.md](winner_run/report.md).",
        "",
        "![comparison](comparison.png)",
        "",
        f"Whole study: {wall:.0f} s wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, quick_help="a tiny version (tests)")
    quick = yaml.safe_load((HERE / "quick.yaml").read_text()) if args.quick else None
    args.out.mkdir(parents=True, exist_ok=True)
    timing: dict = {}
    with timed(timing), tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        truth = write_dataset(scratch / "tfds")
        configs = {f: load_family(f, scratch / "tfds", quick) for f in FAMILIES}
        for family, config in configs.items():
            if config.data != configs["linear"].data:
                raise SystemExit(f"configs/{family}.yaml: its data section differs from linear's")
        data = prepare_data(configs["linear"].data)
        prep = preparation(data, truth, args.out)
        print(f"preparation: {prep['splits']}, label suspects {prep['label_errors']['suspects']}")
        rows = []
        for family, config in configs.items():
            row = sweep_family(config, family, scratch / "runs")
            rows.append(row)
            print(
                f"{family}: best validation accuracy {row['best_validation_accuracy']:.4f} "
                f"({row['program']}, {row['wall_s']:.1f} s)"
            )
        # Ties go to the family listed first (the simpler one).
        winner_row = max(rows, key=lambda r: r["best_validation_accuracy"])
        winner = evaluate_winner(
            configs[winner_row["family"]],
            winner_row["family"],
            winner_row["best_settings"],
            args.out,
        )
    print(
        f"winner {winner['family']}: test accuracy {winner['test_accuracy']:.4f} "
        f"{winner['test_accuracy_interval']}"
    )
    plot_preparation(prep, args.out / "preparation.png")
    plot_comparison(rows, winner, args.out / "comparison.png")
    write_results(prep, rows, winner, timing["wall_s"], args.out, args.quick)
    result = {
        "preparation": prep,
        "families": rows,
        "winner": winner,
        "wall_s": timing["wall_s"],
        "quick": args.quick,
    }
    write_json(args.out / "results.json", result)
    print((args.out / "results.md").read_text())
    return result


if __name__ == "__main__":
    main()
