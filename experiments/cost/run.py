"""Cost: FLOPs, throughput, MFU and energy of each model family at two sizes, and how one
training step's time grows with batch size and model width.

Run: ``.venv/bin/python experiments/cost/run.py [--quick] [--out DIR]``.

``study.yaml`` holds everything. Part 1 trains (or fits) each family at a small and a large
size on digits for a few epochs as an ordinary run and reads the run's ``cost`` section of
``metrics.json``: FLOPs per step from the compiled XLA program (and an analytic count for
dense models), the measured step time, examples/s, achieved FLOP/s, MFU against the peak
measured in the same process (the best jitted float32 matmul on this CPU) and an energy
estimate (an assumed power times the training time). Trees and forests are fitted in one
call with no steps: their row gives the fit time and the same energy estimate, and no FLOPs.
Part 2 times one jitted ``train_step`` of an MLP at growing batch sizes and widths (the
fastest of ``repeats`` runs after a compiling one: the run least disturbed by other jobs on
the machine) and reads its FLOPs and MFU from ``jaxtrain.cost.step_cost_report``. Times
are wall-clock on a shared machine and vary from run to run; FLOPs and parameter counts do
not. Writes ``results.md``, ``results.json`` and ``scaling.png`` to ``--out``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import yaml
from matplotlib.ticker import NullFormatter, ScalarFormatter

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

from jaxtrain import cost  # noqa: E402
from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data, train_batches  # noqa: E402
from jaxtrain.models import is_fitted  # noqa: E402
from jaxtrain.train import train_and_evaluate  # noqa: E402
from jaxtrain.train.fit import fit_and_evaluate  # noqa: E402
from jaxtrain.train.loop import build_pieces  # noqa: E402
from jaxtrain.train.step import make_train_step  # noqa: E402


def family_row(config, data, run_dir: Path) -> dict:
    """One short run of ``config``; its cost in the table's terms."""
    run_dir.mkdir(parents=True)
    row: dict = {}
    with timed(row):
        if is_fitted(config.model):
            fit_and_evaluate(config, run_dir, data)
        else:
            train_and_evaluate(config, run_dir, data=data, progress=False)
    metrics = read_json(run_dir / "metrics.json")
    accuracy = metrics["test"]["accuracy"]
    if is_fitted(config.model):
        watts, assumption = cost.default_power_w()
        seconds = metrics["training"].get("fit_s") or row["wall_s"]
        return {
            "params": None,
            "flops_xla": None,
            "flops_analytic": None,
            "step_time_s": None,
            "examples_per_s": len(data.splits["train"]) / seconds,
            "mfu": None,
            "energy_j": cost.energy_estimate(seconds, watts)["joules"],
            "train_s": seconds,
            "test_accuracy": accuracy,
            "power": assumption,
        }
    c = metrics["cost"]
    return {
        "params": c["params"],
        "flops_xla": c["flops_per_step"]["xla"],
        "flops_analytic": c["flops_per_step"]["analytic"],
        "step_time_s": c["step_time_s"],
        "examples_per_s": c["examples_per_s"],
        "mfu": c.get("mfu"),
        "energy_j": c["energy"]["joules"],
        "train_s": metrics["training"]["wall_time_s"],
        "test_accuracy": accuracy,
        "peak_flops": c["peak_flops"],
        "power": c["assumptions"]["power"],
    }


def step_cost(base, data, hidden: list[int], batch_size: int, repeats: int) -> dict:
    """The cost of one jitted training step of ``base`` with an MLP of ``hidden`` units."""
    config = load_config(
        base, [f"model={{name: mlp, hidden: {hidden}}}", f"data.batch_size={batch_size}"]
    )
    pieces = build_pieces(config, data)
    step = jax.jit(make_train_step(pieces.model, pieces.tx, pieces.task))
    batch = next(iter(train_batches(data.splits["train"], batch_size, 1, 0)))
    jax.block_until_ready(step(pieces.state, batch))  # compile
    times = []
    for _ in range(repeats):  # keep the fastest run: the least disturbed by other jobs
        started = time.perf_counter()
        jax.block_until_ready(step(pieces.state, batch))
        times.append(time.perf_counter() - started)
    report = cost.step_cost_report(
        step,
        pieces.state,
        batch,
        batch_size=batch_size,
        step_time_s=min(times),
        params=pieces.state.params,
    )
    return {
        "hidden": hidden,
        "batch_size": batch_size,
        "params": report["params"],
        "flops_xla": report["flops_per_step"]["xla"],
        "step_time_s": report["step_time_s"],
        "examples_per_s": report["examples_per_s"],
        "mfu": report["mfu"],
    }


def plot_scaling(scaling: dict, path: Path) -> None:
    fig = figure(9.5, 3.8)
    batch_ax, width_ax = fig.subplots(1, 2)
    rows = scaling["batch"]
    batch_ax.plot(
        [r["batch_size"] for r in rows],
        [r["step_time_s"] * 1e3 for r in rows],
        marker="o",
        label="step time",
    )
    batch_ax.set_xscale("log", base=2)
    batch_ax.set_yscale("log")
    batch_ax.set_xlabel("batch size (MLP 256x256)")
    batch_ax.set_ylabel("step time (ms)")
    twin = batch_ax.twinx()
    twin.plot(
        [r["batch_size"] for r in rows],
        [r["examples_per_s"] for r in rows],
        marker="s",
        color="#ff7f0e",
        label="examples/s",
    )
    twin.set_ylabel("examples/s", color="#ff7f0e")
    batch_ax.set_title("step time against batch size")
    rows = scaling["width"]
    widths = [r["hidden"][0] for r in rows]
    width_ax.plot(widths, [r["step_time_s"] * 1e3 for r in rows], marker="o", label="step time")
    middle = rows[len(rows) // 2]
    width_ax.plot(
        widths,
        [middle["step_time_s"] * 1e3 * r["flops_xla"] / middle["flops_xla"] for r in rows],
        linestyle="--",
        color="grey",
        label="proportional to FLOPs",
    )
    width_ax.legend(fontsize=8, loc="upper left")
    width_ax.set_xscale("log", base=2)
    width_ax.set_yscale("log")
    width_ax.set_xlabel(f"width w (MLP w x w, batch {rows[0]['batch_size']})")
    width_ax.set_ylabel("step time (ms)")
    twin = width_ax.twinx()
    twin.plot(widths, [r["mfu"] for r in rows], marker="s", color="#2ca02c")
    twin.set_ylabel("MFU", color="#2ca02c")
    width_ax.set_title("step time against width")
    for ax in (batch_ax, width_ax):
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    save(fig, path)


def write_results(results: dict, out: Path) -> None:
    rows = []
    for r in results["families"]:
        rows.append(
            [
                r["family"],
                f"{r['size']}: `{r['setting']}`",
                "-" if r["params"] is None else f"{r['params']:,}",
                "-" if r["flops_xla"] is None else f"{r['flops_xla']:.3g}",
                "-" if r["flops_analytic"] is None else f"{r['flops_analytic']:.3g}",
                "-" if r["step_time_s"] is None else f"{r['step_time_s'] * 1e3:.2f}",
                f"{r['examples_per_s']:,.0f}",
                "-" if r["mfu"] is None else f"{r['mfu'] * 100:.2g}%",
                f"{r['energy_j']:.1f}",
                f"{r['train_s']:.1f}",
                f"{r['test_accuracy']:.4f}",
            ]
        )
    scale = []
    for kind in ("batch", "width"):
        for r in results["scaling"][kind]:
            scale.append(
                [
                    kind,
                    str(r["batch_size"]),
                    "x".join(map(str, r["hidden"])),
                    f"{r['params']:,}",
                    f"{r['flops_xla']:.3g}",
                    f"{r['step_time_s'] * 1e3:.3f}",
                    f"{r['examples_per_s']:,.0f}",
                    f"{r['mfu'] * 100:.2g}%",
                ]
            )
    first = next(r for r in results["families"] if r.get("peak_flops"))
    lines = [
        "# Cost: FLOPs, throughput, MFU and energy" + (" (--quick)" if results["quick"] else ""),
        "",
        f"Device: {results['device']}. Peak: {first['peak_flops']:.3g} FLOP/s (the best "
        f"jitted float32 matmul measured in the same process). Energy: {first['power']}, times "
        "the training (or fit) time. Digits, 3 epochs; step time is the training loop's own "
        "measurement (evaluations included). Times come from a shared 2-core machine and "
        "vary between runs; FLOPs and parameters do not.",
        "",
        markdown_table(
            [
                "family",
                "size",
                "params",
                "FLOPs/step (XLA)",
                "FLOPs/step (analytic)",
                "step (ms)",
                "examples/s",
                "MFU",
                "energy (J)",
                "train/fit (s)",
                "test accuracy",
            ],
            rows,
        ),
        "Trees and forests are fitted in one jitted call, not in steps: their row gives the "
        "fit time, the training examples per second of fitting and the energy estimate.",
        "",
        "## One training step against batch size and width",
        "",
        markdown_table(
            [
                "axis",
                "batch",
                "hidden",
                "params",
                "FLOPs/step (XLA)",
                "step (ms)",
                "examples/s",
                "MFU",
            ],
            scale,
        ),
        "![scaling](scaling.png)",
        "",
        f"Whole study: {results['wall_s']:.0f} s wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, quick_help="3 families, 2 points (tests)")
    study = yaml.safe_load((HERE / "study.yaml").read_text())
    families, scaling, train = study["families"], dict(study["scaling"]), study["train"]
    if args.quick:
        quick = study["quick"]
        families = {k: families[k] for k in quick["families"]}
        train = [*train, *quick["train"]]
        scaling.update({k: quick[k] for k in ("batch_sizes", "widths", "repeats")})
    base = ROOT / study["config"]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": str(jax.devices()[0]), "quick": args.quick, "families": []}
    timing: dict = {}
    with timed(timing), tempfile.TemporaryDirectory() as runs:
        data = prepare_data(load_config(base).data)
        for family, sizes in families.items():
            for size, overrides in sizes.items():
                config = load_config(base, [*train, *overrides])
                row = family_row(config, data, Path(runs) / f"{family}_{size}")
                setting = "; ".join(o.replace("model=", "") for o in overrides)
                results["families"].append(
                    {"family": family, "size": size, "setting": setting, **row}
                )
                print(
                    f"{family} {size}: {row['examples_per_s']:,.0f} examples/s, "
                    f"energy {row['energy_j']:.1f} J"
                )
        width = scaling["model"]["hidden"]
        results["scaling"] = {
            "batch": [
                step_cost(base, data, width, b, scaling["repeats"]) for b in scaling["batch_sizes"]
            ],
            "width": [
                step_cost(base, data, [w, w], scaling["batch_for_widths"], scaling["repeats"])
                for w in scaling["widths"]
            ],
        }
    results["wall_s"] = timing["wall_s"]
    write_results(results, args.out)
    plot_scaling(results["scaling"], args.out / "scaling.png")
    write_json(args.out / "results.json", results)
    print((args.out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
