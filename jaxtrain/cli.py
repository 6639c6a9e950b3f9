"""The command line: train, eval, report, compare, generate, sweep, federated, learning-curve
(exit 2: mistakes)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each verb's own parser."""
    parser = argparse.ArgumentParser(prog="jaxtrain", description=__doc__)
    parser.add_argument("--version", action="version", version=f"jaxtrain {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="train and evaluate an experiment config")
    train.add_argument("config", nargs="?", help="YAML file under configs/")
    train.add_argument("overrides", nargs="*", help="key.sub=value settings applied on top")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    train.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--check-determinism",
        type=int,
        metavar="N",
        help="run the first N steps twice, compare parameter digests, exit 0 if equal (no run)",
    )

    train.add_argument(
        "--no-report",
        action="store_true",
        help="skip the analysis stage (plots, report.md); `jaxtrain report RUN_DIR` runs it later",
    )

    evaluate = verbs.add_parser(
        "eval", help="evaluate a run's checkpoint on a split, or score a new table with it"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--split",
        action="append",
        choices=("train", "validation", "test"),
        help="split to evaluate (repeatable; default validation and test)",
    )
    evaluate.add_argument(
        "--checkpoint", default="best", help="best (default), latest or a step number"
    )
    evaluate.add_argument(
        "--data",
        metavar="PATH",
        help="score this .csv/.parquet (the run's columns) with the run's fitted preprocessing",
    )
    evaluate.add_argument(
        "--predictions",
        metavar="OUT.csv",
        help="write per-example predictions and class probabilities to this CSV",
    )

    report = verbs.add_parser(
        "report", help="re-run a finished run's analysis stage: plots, metrics.json, report.md"
    )
    report.add_argument("run_dir")

    compare = verbs.add_parser(
        "compare",
        help="table of the config keys that differ and the best metrics (with intervals), "
        "one figure of the learning curves; runs, globs, run folders or sweep directories",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or globs")
    compare.add_argument(
        "--out",
        default="compare",
        help="folder for compare.md, compare.json and compare.png (default ./compare)",
    )

    federated = verbs.add_parser(
        "federated", help="simulate federated training of a config's federated: section"
    )
    federated.add_argument("config", nargs="?", help="YAML file with a federated: section")
    federated.add_argument("overrides", nargs="*", help="key.sub=value settings applied on top")
    federated.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    federated.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    federated.add_argument("--no-progress", action="store_true", help="no progress bar")

    sweep = verbs.add_parser("sweep", help="train a config's sweep: section as vmapped programs")
    sweep.add_argument("config", nargs="?", help="YAML file with a sweep: section")
    sweep.add_argument("overrides", nargs="*", help="key.sub=value settings applied on top")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="continue a stopped sweep")
    sweep.add_argument("--runs-dir", help="where sweep directories go (default ./runs)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")

    curve = verbs.add_parser(
        "learning-curve", help="train on growing shares of the training split, plot the metric"
    )
    curve.add_argument("config", help="YAML file under configs/")
    curve.add_argument("overrides", nargs="*", help="key.sub=value settings applied on top")
    curve.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 1.0],
        help="shares of the training split (default 0.1 0.25 0.5 1.0)",
    )
    curve.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="train every point for exactly N steps (a fixed budget; default: train.epochs "
        "over each share)",
    )
    curve.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="K",
        help="train every point K times (init seed and subsample seed + 0..K-1); the table, "
        "plot and verdict then show 95%% intervals over the seeds",
    )
    curve.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    curve.add_argument("--no-progress", action="store_true", help="no progress bar")

    generate = verbs.add_parser("generate", help="continue a prompt with a language-model run")
    generate.add_argument("run_dir")
    generate.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
    generate.add_argument("--max-new-tokens", type=int, default=100, help="bytes to generate")
    generate.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy"
    )
    generate.add_argument("--top-k", type=int, default=20, help="sample among the k likeliest")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    return parser, verbs.choices


def _version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    from importlib import metadata

    try:
        return metadata.version("jaxtrain")
    except metadata.PackageNotFoundError:
        from jaxtrain import __version__

        return __version__


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order (``train CONFIG --no-progress
    train.epochs=3``): argparse's intermixed parsing, run on the verb's own parser because
    it cannot see through subparsers."""
    parser, verbs = _parsers()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in verbs:
        return parser.parse_args(argv)  # --help, or argparse's message for a missing verb
    args = verbs[argv[0]].parse_intermixed_args(argv[1:])
    args.verb = argv[0]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.verb == "compare":  # reads files only: no JAX
        return _compare(args)
    from jaxtrain.config import ConfigError, load_config
    from jaxtrain.config.messages import printable
    from jaxtrain.config.verbs import check_verb
    from jaxtrain.runner.run_dirs import RunError, check_runs_dir

    try:  # a config mistake is reported before JAX, TFDS and Orbax are imported (seconds)
        if getattr(args, "config", None) and not getattr(args, "resume", None):
            config = load_config(args.config, list(args.overrides))
            check_verb(config, args.verb, args.config)
        if hasattr(args, "runs_dir") and not getattr(args, "resume", None):
            check_runs_dir(args.runs_dir)
    except (ConfigError, RunError) as err:
        print(f"jaxtrain: error: {printable(str(err))}", file=sys.stderr)
        return 2
    # Imported after parsing so `--help` and argument errors stay instant.
    from jaxtrain.checkpoint import CorruptCheckpoint
    from jaxtrain.compilation_cache import enable_compilation_cache
    from jaxtrain.data import DatasetError
    from jaxtrain.files import DamagedFile
    from jaxtrain.logging.quiet import quiet_library_warnings
    from jaxtrain.runner import (
        check_determinism,
        evaluate_run,
        federated_run,
        generate_text,
        learning_curve_run,
        report_run,
        sweep_run,
        train,
    )
    from jaxtrain.train.loop import NonFiniteError

    enable_compilation_cache()  # a second run of the same config skips compiling
    quiet_library_warnings()  # known, harmless library messages stay off the console
    try:
        if args.verb == "train" and args.check_determinism is not None:
            if args.config is None:
                raise ConfigError("--check-determinism needs a config file")
            report = check_determinism(args.config, list(args.overrides), args.check_determinism)
            print(json.dumps(report))
            return 0 if report["deterministic"] else 1
        if args.verb == "train":
            config, overrides = _config_and_overrides(args)
            result = train(
                config,
                overrides,
                runs_dir=args.runs_dir,
                resume=args.resume,
                progress=not args.no_progress,
                report=not args.no_report,
            )
            if result.status == "stopped":
                print(
                    f"stopped at step {result.step}/{result.total_steps}; continue with: "
                    f"jaxtrain train --resume {result.run_dir}"
                )
                return 0
            print(f"run directory: {result.run_dir}")
            print(json.dumps(_headline(result.test)))
        elif args.verb == "federated":
            config, overrides = _config_and_overrides(args)
            result = federated_run(
                config,
                overrides,
                runs_dir=args.runs_dir,
                resume=args.resume,
                progress=not args.no_progress,
            )
            if result["status"] == "stopped":
                print(
                    f"stopped at round {result['round']}/{result['rounds']}; continue with: "
                    f"jaxtrain federated --resume {result['run_dir']}"
                )
                return 0
            print(f"run directory: {result['run_dir']}")
            print(json.dumps({**_headline(result["test"]), "epsilon": result["epsilon"]}))
        elif args.verb == "sweep":
            run_dir, result = sweep_run(
                args.config,
                list(args.overrides),
                runs_dir=args.runs_dir,
                resume=args.resume,
                progress=not args.no_progress,
            )
            best = result["best"]
            print(f"sweep directory: {run_dir}")
            print(
                json.dumps(
                    {
                        "best_member": best["member"],
                        **best["settings"],
                        f"validation_{result['metric']}": best["validation"][result["metric"]],
                        **_headline(best["test"]),
                    }
                )
            )
        elif args.verb == "learning-curve":
            run_dir, result = learning_curve_run(
                args.config,
                list(args.overrides),
                args.fractions,
                runs_dir=args.runs_dir,
                progress=not args.no_progress,
                steps=args.steps,
                seeds=args.seeds,
            )
            print(f"run directory: {run_dir}")
            print(result["verdict"])
        elif args.verb == "generate":
            print(
                generate_text(
                    args.run_dir,
                    args.prompt,
                    max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_k=args.top_k,
                    seed=args.seed,
                )
            )
        elif args.verb == "report":
            print(f"report: {report_run(args.run_dir)}")
        else:
            result = evaluate_run(
                args.run_dir,
                splits=tuple(args.split) if args.split else None,
                checkpoint=args.checkpoint,
                data_path=args.data,
                predictions=args.predictions,
            )
            print(json.dumps(_eval_headline(result)))
    except (ConfigError, DatasetError, RunError, CorruptCheckpoint, DamagedFile) as err:
        print(f"jaxtrain: error: {printable(str(err))}", file=sys.stderr)  # one line
        return 2
    except NonFiniteError as err:  # not the user's typo, but a clear end all the same
        print(f"jaxtrain: training failed: {err}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from jaxtrain.compare import CompareError, compare
    from jaxtrain.config.messages import printable

    try:
        result = compare(args.runs, args.out)
    except CompareError as err:
        print(f"jaxtrain: error: {printable(str(err))}", file=sys.stderr)
        return 2
    print("\n".join(result["table"]))
    print(f"figure: {result['files']['compare.png']}")
    return 0


def _config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """With ``--resume`` the first positional word may already be an override
    (``jaxtrain train --resume RUN train.epochs=40``), not a config file."""
    config, overrides = args.config, list(args.overrides)
    if args.resume and config and "=" in config:
        return None, [config, *overrides]
    return config, overrides


def _eval_headline(result: dict) -> dict:
    """``{"step", "<split>_accuracy", ...}`` for every evaluated split (``data_`` for a file)."""
    line = {"step": result["step"]}
    for key, prefix in (("train", "train"), ("validation", "validation"), ("test", "test"),
                        ("metrics", "data")):  # fmt: skip
        if key in result:
            line.update({f"{prefix}{k[4:]}": v for k, v in _headline(result[key]).items()})
    if "predictions" in result:
        line["predictions"] = result["predictions"]["file"]
    return line


def _headline(test: dict) -> dict:
    """The test metrics a verb prints (strict JSON: a non-finite value is null)."""
    keys = ("accuracy", "f1_macro", "r2", "rmse", "bits_per_byte", "loss")
    return {f"test_{k}": _rounded(test[k]) for k in keys if k in test}


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


if __name__ == "__main__":
    sys.exit(main())
