"""Transfer learning: is a pretrained start worth it on little data? Two workflows.

Run: ``.venv/bin/python experiments/transfer/run.py [--part digits|lm|all]
[--seeds 0 1 ... 7] [--settings scratch,full,...] [--quick] [--out DIR]`` (digits: about 20
minutes on 2 shared CPU cores; ``--quick``: tiny models).

(a) Digits: ``configs/transfer_digits_pretrain.yaml`` trains the CNN on digits 0-4 (with
augmentation and dropout, for features that transfer); then
``configs/transfer_digits_finetune.yaml`` fine-tunes it on digits 5-9 with 20 training
examples per class (100 in all), under several strategies, against the same model trained
from scratch on the same 100 examples (``transfer=null``). Each data seed draws other
20-per-class examples and other held-out splits (the same for every strategy). The two arms
compared, from scratch and the fine-tune recipe (pretrained convolutions, new dense layers,
everything training), each get the same learning-rate grid, and each picks its rate by mean
validation accuracy over the seeds (validation loss breaks ties); the test split is only
reported. The other strategies run at the config's rate. The comparison is paired: per seed,
fine-tune minus scratch, with its mean and a 95% t interval.

(b) Language model: ``configs/transfer_lm_pretrain.yaml`` pretrains a byte-level Transformer
on ``pydoc_text``; ``configs/transfer_lm_finetune.yaml`` (every weight) and
``configs/transfer_lm_lora.yaml`` (rank-8 adapters only) fine-tune it on
``stdlib_docstrings``; compared with the pretrained model as it is and the same model
trained from scratch for the same steps. The LoRA run's merged export is loaded into the
plain model as a weights file and must give the LoRA run's test loss.

Every setting is a config plus overrides through ``jaxtrain.runner.train`` (the experiment
is the configs; this script varies them and collects the results). Writes ``results.md``,
``results.json`` and ``digits_accuracy.png`` to ``--out`` (default
``experiments/transfer/results``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import scipy.stats  # noqa: E402

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.runner import train  # noqa: E402
from jaxtrain.train.evaluate import evaluate  # noqa: E402
from jaxtrain.train.loop import build_pieces  # noqa: E402
from jaxtrain.train.step import make_eval_step  # noqa: E402

CONFIGS = ROOT / "configs"
DIGITS_PRETRAIN = CONFIGS / "transfer_digits_pretrain.yaml"
DIGITS_FINETUNE = CONFIGS / "transfer_digits_finetune.yaml"
LM_PRETRAIN = CONFIGS / "transfer_lm_pretrain.yaml"
LM_FINETUNE = CONFIGS / "transfer_lm_finetune.yaml"
LM_LORA = CONFIGS / "transfer_lm_lora.yaml"

QUICK = {  # --quick: tiny models, one epoch or two (what tests can afford)
    "digits": ["model.features=[8]", "model.dense=16", "train.epochs=2"],
    "lm": [
        "data.sequence_length=32",
        "data.batch_size=128",
        "model.d_model=32",
        "model.num_layers=1",
        "train.epochs=1",
    ],
}
EXTRA: dict[str, list[str]] = {"digits": [], "lm": []}  # QUICK's entries with --quick
SCRATCH_LM = ["transfer=null", "optimizer.learning_rate=0.003"]  # the pretraining rate
DIGITS_SETTINGS = {  # key -> (label, overrides of transfer_digits_finetune.yaml)
    "scratch": ("from scratch (same model, same 100 examples)", ["transfer=null"]),
    "full": ("pretrained convolutions, new dense layers, full fine-tune (the config)", []),
    "full_dense": (
        "pretrained convolutions and dense layer, new head, full fine-tune",
        ["transfer.head=[Dense_1]"],
    ),
    "head": (
        "pretrained, head only (Dense_1; the rest frozen)",
        ["transfer.train=head", "transfer.head=[Dense_1]"],
    ),
    "dense_head": (
        "pretrained convolutions frozen, new dense layers (Dense_0, Dense_1)",
        ["transfer.train=head"],
    ),
    "llrd": (
        "pretrained convolutions, new dense layers, layer-wise decay 0.5",
        ["transfer.layer_decay=0.5"],
    ),
    "gradual": (
        "pretrained convolutions, new dense layers, gradual unfreezing (5 epochs per stage)",
        ["transfer.train=head", "transfer.unfreeze={epochs_per_stage: 5}"],
    ),
}
TUNED = ("scratch", "full")  # the two arms compared; each picks its rate on validation
LEARNING_RATES = [0.001, 0.003, 0.01]  # the grid both arms get (--quick: two of them)


def _run(config: Path, overrides: list[str], runs: Path) -> tuple[dict, float, Path]:
    started = time.perf_counter()
    extra = EXTRA["lm" if config.name.startswith("transfer_lm") else "digits"]
    result = train(config, [*extra, *overrides], runs_dir=runs, progress=False)
    if result.status != "finished":
        raise RuntimeError(f"{config.name} {overrides}: {result.status}")
    return result.test, time.perf_counter() - started, result.run_dir


def digits(
    seeds: Sequence[int], runs: Path, settings: Sequence[str] = tuple(DIGITS_SETTINGS)
) -> dict:
    """Pretrain once; every strategy on every data seed (the two compared arms at every rate
    of the grid, each keeping the rate with the best mean validation accuracy); the paired
    test-accuracy difference, fine-tune minus scratch, per seed."""
    test, seconds, pretrained = _run(DIGITS_PRETRAIN, [], runs)
    print(f"pretrained on digits 0-4: test accuracy {test['accuracy']:.4f} ({seconds:.0f} s)")
    rates = LEARNING_RATES[:2] if EXTRA["digits"] else LEARNING_RATES
    default_rate = load_config(DIGITS_FINETUNE).optimizer.learning_rate
    rows = []
    for key in settings:
        label, overrides = DIGITS_SETTINGS[key]
        source = [] if key == "scratch" else [f"transfer.init_from={pretrained}"]
        grid = {}
        for rate in rates if key in TUNED else [default_rate]:
            runs_at = [
                _digits_run([*overrides, *source, f"optimizer.learning_rate={rate}"], s, runs)
                for s in seeds
            ]
            grid[rate] = runs_at
            print(
                f"{label}, learning rate {rate}: validation "
                f"{statistics.fmean(r['validation'] for r in runs_at):.4f}, test "
                f"{statistics.fmean(r['test'] for r in runs_at):.4f}"
            )
        rate = max(grid, key=lambda r: (_mean(grid[r], "validation"), -_mean(grid[r], "loss")))
        chosen = grid[rate]
        accuracies = [r["test"] for r in chosen]
        rows.append(
            {
                "key": key,
                "setting": label,
                "learning_rate": rate,
                "grid": {
                    str(r): {
                        "validation": _mean(g, "validation"),
                        "validation_loss": _mean(g, "loss"),
                        "test": _mean(g, "test"),
                    }
                    for r, g in grid.items()
                },
                "validation": [r["validation"] for r in chosen],
                "accuracy": accuracies,
                "mean": statistics.fmean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "wall_s": _mean(chosen, "seconds"),
            }
        )
    by_key = {row["key"]: row for row in rows}
    differences = [
        f - s
        for f, s in zip(by_key["full"]["accuracy"], by_key["scratch"]["accuracy"], strict=True)
    ]
    return {
        "pretrain_test_accuracy": _pretrain_accuracy(pretrained),
        "seeds": list(seeds),
        "learning_rates": rates,
        "rows": rows,
        "paired": {"difference": differences, **_interval(differences)},
    }


def _digits_run(overrides: list[str], seed: int, runs: Path) -> dict:
    test, seconds, run_dir = _run(DIGITS_FINETUNE, [*overrides, f"data.seed={seed}"], runs)
    validation = json.loads((run_dir / "metrics.json").read_text())["validation"]
    return {
        "validation": validation["accuracy"],
        "loss": validation["loss"],
        "test": test["accuracy"],
        "seconds": seconds,
    }


def _mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in runs)


def _interval(values: list[float]) -> dict:
    """Mean and a two-sided 95% Student-t interval (the seeds as independent draws)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    t = scipy.stats.t.ppf(0.975, len(values) - 1)
    half = t * statistics.stdev(values) / len(values) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half}


def _pretrain_accuracy(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"]


def zero_shot_loss(config_path: Path, overrides: list[str]) -> dict:
    """The pretrained LM, untrained on the new corpus, on that corpus' test split."""
    config = load_config(config_path, [*EXTRA["lm"], *overrides])
    pieces = build_pieces(config)
    eval_step = jax.jit(make_eval_step(pieces.model, pieces.task))
    split = pieces.data.splits["test"]
    return evaluate(eval_step, pieces.state, split, config.data.eval_batch_size, pieces.task)


def lm(runs: Path) -> dict:
    """Pretrain on pydoc_text; then pretrained-only, full, LoRA and scratch on the docstrings."""
    test, seconds, pretrained = _run(LM_PRETRAIN, [], runs)
    print(f"LM pretrained on pydoc_text: test loss {test['loss']:.4f} ({seconds:.0f} s)")
    source = [f"transfer.init_from={pretrained}"]
    rows = [{"setting": "pretrained on pydoc_text only (no fine-tuning)", "wall_s": 0.0}]
    rows[0].update(_losses(zero_shot_loss(LM_FINETUNE, source)))
    for label, config, overrides in (
        ("pretrained, full fine-tune", LM_FINETUNE, source),
        ("pretrained, LoRA (rank 8, adapters only)", LM_LORA, source),
        (
            "from scratch (same steps)",
            LM_FINETUNE,
            ["transfer=null", "optimizer.learning_rate=0.003"],
        ),
    ):
        test, seconds, run_dir = _run(config, overrides, runs)
        row = {"setting": label, "wall_s": seconds, **_losses(test)}
        report = run_dir / "transfer_report.json"
        if report.is_file():
            trains = json.loads(report.read_text())["trains"]
            row["trained_parameters"] = _count(run_dir, trains)
        if config == LM_LORA:
            row["merged_export_test_loss"] = _merged_loss(run_dir)
        rows.append(row)
        print(f"{label}: test loss {test['loss']:.4f} ({seconds:.0f} s)")
    return {"pretrain_test_loss": _pretrain_loss(pretrained), "rows": rows}


def _pretrain_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test"]["loss"]


def _losses(metrics: dict) -> dict:
    return {"test_loss": metrics["loss"], "bits_per_byte": metrics["bits_per_byte"]}


def _count(run_dir: Path, trains: list[str]) -> int:
    """Scalars in the trained parameters (from the run's final checkpoint shapes)."""
    import orbax.checkpoint as ocp

    from jaxtrain.transfer.load import checkpoint_folder, variables_flat

    folder, _ = checkpoint_folder(run_dir, "latest")
    state = ocp.StandardCheckpointer().restore((folder / "state").absolute())
    flat = variables_flat(state["params"], {})
    return int(sum(flat[p].size for p in trains))


def _merged_loss(run_dir: Path) -> float:
    """The LoRA run's ``lora_merged.safetensors`` loaded into the plain model (a weights
    file, every entry by its own path): its test loss."""
    from safetensors.numpy import load_file

    merged = run_dir / "lora_merged.safetensors"
    names = "{" + ", ".join(f'"{k}": "{k}"' for k in load_file(str(merged))) + "}"
    return zero_shot_loss(LM_FINETUNE, [f"transfer.init_from={merged}", f"transfer.names={names}"])[
        "loss"
    ]


def write_results(results: dict, out: Path) -> None:
    lines = []
    if "digits" in results:
        d = results["digits"]
        lines += [
            "## (a) CNN: pretrain on digits 0-4, fine-tune on digits 5-9 (20 examples per class)",
            "",
            f"Pretrained model's test accuracy on digits 0-4: {d['pretrain_test_accuracy']:.4f}. "
            f"Accuracy on digits 5-9 (about 135 validation and 180 test images), mean over "
            f"data seeds {d['seeds']} (each seed: other 100 training examples and other "
            f"held-out splits); test as mean ± std. The first two rows each picked their "
            f"learning rate from {d['learning_rates']} by mean validation accuracy; the "
            f"others ran at the config's rate:",
            "",
            "| setting | learning rate | validation accuracy | test accuracy | test, per seed "
            "| wall time per run (s) |",
            "|---|---|---|---|---|---|",
        ]
        for row in d["rows"]:
            seeds = ", ".join(f"{a:.3f}" for a in row["accuracy"])
            lines.append(
                f"| {row['setting']} | {row['learning_rate']:g} | "
                f"{statistics.fmean(row['validation']):.4f} | "
                f"{row['mean']:.4f} ± {row['std']:.4f} | {seeds} | {row['wall_s']:.1f} |"
            )
        tuned = [r for r in d["rows"] if r["key"] in TUNED]
        lines += [
            "",
            "The learning-rate grid of the two compared arms (means over the seeds):",
            "",
            "| setting | learning rate | validation accuracy | validation loss | test accuracy |",
            "|---|---|---|---|---|",
        ]
        for row in tuned:
            for rate, g in row["grid"].items():
                picked = " (picked)" if float(rate) == row["learning_rate"] else ""
                lines.append(
                    f"| {row['key']} | {float(rate):g}{picked} | {g['validation']:.4f} | "
                    f"{g['validation_loss']:.4f} | {g['test']:.4f} |"
                )
        paired = d["paired"]
        points = ", ".join(f"{100 * x:+.1f}" for x in paired["difference"])
        lines += [
            "",
            f"Paired difference, fine-tune recipe minus from scratch, test accuracy per seed "
            f"(points): {points}; mean {100 * paired['mean']:+.2f} points, 95% t interval "
            f"[{100 * paired['low']:+.2f}, {100 * paired['high']:+.2f}] "
            f"({sum(x > 0 for x in paired['difference'])} of {len(paired['difference'])} "
            f"seeds ahead, {sum(x < 0 for x in paired['difference'])} behind).",
            "",
        ]
    if "lm" in results:
        m = results["lm"]
        lines += [
            "## (b) Transformer LM: pretrain on pydoc_text, fine-tune on stdlib_docstrings",
            "",
            f"Pretrained model's test loss on pydoc_text: {m['pretrain_test_loss']:.4f}. "
            "Held-out (test split) loss on stdlib_docstrings, nats per byte:",
            "",
            "| setting | test loss | bits per byte | trained parameters | wall time (s) |",
            "|---|---|---|---|---|",
        ]
        for row in m["rows"]:
            trained = row.get("trained_parameters", "all" if row["wall_s"] else "-")
            lines.append(
                f"| {row['setting']} | {row['test_loss']:.4f} | {row['bits_per_byte']:.3f} | "
                f"{trained} | {row['wall_s']:.1f} |"
            )
        lora = next((r for r in m["rows"] if "merged_export_test_loss" in r), None)
        if lora:
            lines += [
                "",
                f"The LoRA run's merged export (`lora_merged.safetensors`), loaded into the plain "
                f"model: test loss {lora['merged_export_test_loss']:.4f} (LoRA model: "
                f"{lora['test_loss']:.4f}).",
            ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))


def plot(results: dict, path: Path) -> None:
    rows = results["digits"]["rows"]
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.scatter([i] * len(row["accuracy"]), row["accuracy"], color="grey", s=12)
        ax.errorbar(i, row["mean"], yerr=row["std"], fmt="o", color="C0", capsize=4)
    ax.set_xticks(range(len(rows)), [r["key"] for r in rows])
    ax.set_ylabel("test accuracy, digits 5-9")
    ax.set_title("20 examples per class: pretrained on 0-4 vs from scratch")
    ax.grid(True, alpha=0.3)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("digits", "lm", "all"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument(
        "--settings",
        type=lambda text: text.split(","),
        default=list(DIGITS_SETTINGS),
        help=f"digits strategies, comma-separated, from {','.join(DIGITS_SETTINGS)}",
    )
    parser.add_argument("--quick", action="store_true", help="tiny models (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "transfer" / "results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.settings) - set(DIGITS_SETTINGS))
    if unknown or not set(TUNED) <= set(args.settings):
        parser.error(f"--settings: needs {', '.join(TUNED)}; unknown: {unknown or 'none'}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        EXTRA.update(QUICK)
    previous = args.out / "results.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    with tempfile.TemporaryDirectory() as runs:
        if args.part in ("digits", "all"):
            results["digits"] = digits(args.seeds, Path(runs), args.settings)
            plot(results, args.out / "digits_accuracy.png")
        if args.part in ("lm", "all"):
            results["lm"] = lm(Path(runs))
    write_results(results, args.out)
    print((args.out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
