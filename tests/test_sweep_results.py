"""A sweep's report and plots: log axes from the declared distribution, legends, the best
member highlighted, and the dataset, model and sizes filled in."""

from __future__ import annotations

from pathlib import Path

from jaxtrain.config import load_config
from jaxtrain.sweep.results import curves_figure, settings_figure, write_results

SWEEP = """
name: tiny_sweep
data: {name: digits, batch_size: 32}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 2}
sweep:
  samples: 3
  axes:
    optimizer.learning_rate: {distribution: log_uniform, low: 0.001, high: 0.1}
    optimizer.weight_decay: {distribution: uniform, low: 0.0001, high: 0.5}
    seed: [0, 1]
"""


def _summary():
    settings = [(0.001, 0.0001, 0), (0.01, 0.2, 1), (0.1, 0.5, 0)]
    rows = [
        {"member": i, "group": 0, "settings": {"optimizer.learning_rate": lr,
         "optimizer.weight_decay": wd, "seed": seed}, "best_value": value, "best_step": 40,
         "step": 84 if status == "finished" else 42, "status": status, "hyperparams": {},
         "history": [{"step": 42, "train_loss": 1.0, "validation_accuracy": value - 0.1},
                     {"step": 84, "train_loss": 0.5, "validation_accuracy": value}]}
        for i, ((lr, wd, seed), value, status) in enumerate(
            zip(settings, [0.8, 0.95, 0.6], ["finished", "finished", "stopped at rung 1"],
                strict=True))
    ]  # fmt: skip
    best = {"member": 1, "group": 0, "step": 84, "settings": rows[1]["settings"],
            "validation": {"accuracy": 0.95}, "test": {"accuracy": 0.9}}  # fmt: skip
    return {"metric": "accuracy", "mode": "max", "groups": 1, "members": rows, "best": best,
            "wall_time_s": 3.0}  # fmt: skip


def test_plot_axes_follow_the_declared_distribution_and_the_best_is_marked(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP)
    config = load_config(tmp_path / "s.yaml")
    summary = _summary()
    fig = settings_figure(summary["members"], config.sweep.axes, "accuracy", 1)
    lr, wd, seed = fig.axes
    assert lr.get_xscale() == "log"  # log_uniform
    assert wd.get_xscale() == "linear"  # uniform, even though it spans more than 3 decades
    assert seed.get_xscale() == "linear"
    legend = [t.get_text() for t in lr.get_legend().get_texts()]
    assert legend == ["ran to the end", "stopped early", "best: member 1"]
    curves = curves_figure(summary["members"], "accuracy", 1).axes[0]
    labels = [t.get_text() for t in curves.get_legend().get_texts()]
    assert "best: member 1" in labels and "other members (stopped early)" in labels
    best_line = next(line for line in curves.get_lines() if line.get_label() == "best: member 1")
    assert best_line.get_linewidth() > max(
        line.get_linewidth() for line in curves.get_lines() if line is not best_line
    )


def test_the_sweep_report_fills_dataset_model_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP)
    config = load_config(tmp_path / "s.yaml")
    write_results(tmp_path, config, _summary())
    report = (tmp_path / "report.md").read_text()
    summary = report.split("## Summary")[1].split("##")[0]
    assert "n/a" not in summary
    assert "| dataset | digits |" in summary and "| classes | 10 |" in summary
    assert "| model | mlp |" in summary
    # An MLP 64 -> 8 -> 10 by hand: 64*8 + 8 + 8*10 + 10 weights and biases.
    assert f"| parameters | {64 * 8 + 8 + 8 * 10 + 10:,} |" in summary
    # digits: 1,797 images, 20% test, 15% validation (largest remainder per class).
    sizes = summary.split("| examples | ")[1].split(" |")[0]
    counts = dict(part.split() for part in sizes.split(", "))
    assert sum(int(n) for n in counts.values()) == 1797
    assert abs(int(counts["test"]) - 0.2 * 1797) <= 10
    assert "| members | 3 |" in summary and "| best member | 1 |" in summary
    assert (tmp_path / "sweep_settings.png").stat().st_size > 1000
