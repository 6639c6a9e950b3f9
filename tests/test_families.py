"""Every model family through the runner: parity with scikit-learn, tasks, errors.

The references are independent: scikit-learn's estimators fitted on the very splits the run
used (re-created from the run's config), its metrics on the run's predictions, and the
unigram byte model for the language model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.tree import DecisionTreeClassifier

from jaxtrain.config import load_config
from jaxtrain.data import prepare_data
from jaxtrain.data.dataset import byte_windows
from jaxtrain.data.sources import DatasetError, load_text_file
from jaxtrain.runner import evaluate_run, generate_text, train
from tests.support import CONFIGS, ROOT

_TINY_LM = [
    "data.sequence_length=32",
    "data.batch_size=128",
    "train.epochs=1",
    "model.d_model=32",
    "model.num_layers=1",
]

# Each config shortened so the whole family sweep stays quick on two cores.
SHORT = {
    "breast_cancer_logistic.yaml": ["train.epochs=60", "train.eval_every=30"],
    "breast_cancer_mlp.yaml": ["train.epochs=2", "train.eval_every=12"],
    "credit_fairness.yaml": ["train.epochs=1"],
    "csv_cleaning.yaml": ["train.epochs=3", "train.eval_every=7"],
    "diabetes_linear_gd.yaml": ["train.epochs=20", "train.eval_every=10"],
    "diabetes_ridge.yaml": [],
    "digits_lr_sweep.yaml": [  # its model, centrally; the sweep itself: tests/test_sweep.py
        "train.epochs=1",
        "sweep=null",
        "model.features=[8]",
        "model.dense=16",
    ],
    "digits_cnn.yaml": ["train.epochs=1"],
    "digits_dpsgd.yaml": ["train.epochs=1", "model.hidden=[16]"],
    "digits_federated.yaml": [
        "train.epochs=1",
        "federated=null",
    ],  # centrally; federated: tests/test_federated.py
    "digits_forest.yaml": ["model.n_estimators=8", "model.max_depth=6"],
    "digits_resnet.yaml": ["train.epochs=1", "data.batch_size=128"],
    "digits_vit.yaml": ["train.epochs=1", "data.batch_size=128"],
    "pydoc_lm.yaml": [
        "data.sequence_length=32",
        "data.batch_size=128",
        "train.epochs=1",
        "model.d_model=32",
        "model.num_layers=1",
        "train.eval_every=50",
    ],
    "wine_tree.yaml": [],
    # Transfer: each config's data and model here, from scratch (transfer=null) or shortened;
    # pretraining, then loading: tests/test_transfer.py.
    "transfer_digits_pretrain.yaml": ["train.epochs=1", "model.features=[8]", "model.dense=16"],
    "transfer_digits_finetune.yaml": ["transfer=null", "train.epochs=2", "model.features=[8]"],
    "transfer_lm_pretrain.yaml": [*_TINY_LM, "train.eval_every=50"],
    "transfer_lm_finetune.yaml": ["transfer=null", *_TINY_LM],
    "transfer_lm_lora.yaml": ["transfer=null", *_TINY_LM],
}


def test_every_config_is_covered_by_the_family_sweep() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SHORT)


# The default suite trains two small configs end to end; every other shipped config is slow
# here (each family has its own fast tests: test_models, test_trees, test_transformer, ...).
FAST_CONFIGS = ("breast_cancer_mlp.yaml", "diabetes_ridge.yaml")


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_CONFIGS else pytest.param(n, marks=pytest.mark.slow) for n in sorted(SHORT)],
)
def test_every_config_trains_and_evaluates(name, tmp_path) -> None:
    result = train(CONFIGS / name, SHORT[name], runs_dir=tmp_path, progress=False)
    assert result.status == "finished"
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert np.isfinite(summary["test"]["loss"])
    assert (result.run_dir / "report.md").is_file()
    again = evaluate_run(result.run_dir)["test"]
    assert again["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6)


def _split(config_path: Path, overrides=()):
    config = load_config(config_path, list(overrides))
    return config, prepare_data(config.data)


def _raw_targets(data, split: str) -> np.ndarray:
    scaler = data.target_normalizer
    return data.splits[split].labels * scaler.scale[0] + scaler.shift[0]


def test_closed_form_run_equals_sklearn_ridge_and_its_metrics(tmp_path) -> None:
    result = train(CONFIGS / "diabetes_ridge.yaml", runs_dir=tmp_path, progress=False)
    config, data = _split(CONFIGS / "diabetes_ridge.yaml")
    n = len(data.splits["train"])
    ridge = Ridge(alpha=n * config.model.l2 / 2).fit(
        data.splits["train"].inputs, _raw_targets(data, "train")
    )
    expected = ridge.predict(data.splits["test"].inputs)
    truth = _raw_targets(data, "test")
    test = json.loads((result.run_dir / "metrics.json").read_text())["test"]
    # float32 arithmetic against scikit-learn's float64 on targets of size ~150.
    assert test["mse"] == pytest.approx(mean_squared_error(truth, expected), rel=1e-5)
    assert test["mae"] == pytest.approx(mean_absolute_error(truth, expected), rel=1e-5)
    assert test["r2"] == pytest.approx(r2_score(truth, expected), rel=1e-5)
    assert test["rmse"] == pytest.approx(np.sqrt(mean_squared_error(truth, expected)), rel=1e-5)


@pytest.mark.slow
def test_gradient_linear_regression_reaches_the_ridge_coefficients(tmp_path) -> None:
    path = CONFIGS / "diabetes_linear_gd.yaml"
    result = train(path, runs_dir=tmp_path, progress=False)
    config, data = _split(path)
    n = len(data.splits["train"])
    ridge = Ridge(alpha=n * config.model.l2 / 2).fit(
        data.splits["train"].inputs, _raw_targets(data, "train")
    )
    kernel = np.asarray(result.state.params["dense"]["kernel"])[:, 0]
    # The model learns standardised targets: its kernel times the target scale is Ridge's.
    coefficients = kernel * data.target_normalizer.scale[0]
    np.testing.assert_allclose(coefficients, ridge.coef_, rtol=1e-3, atol=1e-2)


@pytest.mark.slow
def test_logistic_regression_matches_sklearn(tmp_path) -> None:
    path = CONFIGS / "breast_cancer_logistic.yaml"
    result = train(path, runs_dir=tmp_path, progress=False)
    config, data = _split(path)
    n = len(data.splits["train"])
    reference = LogisticRegression(C=2 / (config.model.l2 * n), max_iter=10_000, tol=1e-10)
    reference.fit(data.splits["train"].inputs, data.splits["train"].labels)
    kernel = np.asarray(result.state.params["dense"]["kernel"])
    bias = np.asarray(result.state.params["dense"]["bias"])
    # Two softmax logits: only their difference matters, and it is scikit-learn's one logit.
    np.testing.assert_allclose(kernel[:, 1] - kernel[:, 0], reference.coef_[0], atol=2e-3)
    assert bias[1] - bias[0] == pytest.approx(reference.intercept_[0], abs=2e-3)
    test = json.loads((result.run_dir / "metrics.json").read_text())["test"]
    expected = reference.score(data.splits["test"].inputs, data.splits["test"].labels)
    assert test["accuracy"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_multinomial_logistic_regression_matches_sklearn(tmp_path) -> None:
    path = CONFIGS / "breast_cancer_logistic.yaml"
    _, data = _split(path, ["data.name=wine"])
    n = len(data.splits["train"])
    c = 0.5
    overrides = ["data.name=wine", f"data.batch_size={n}", f"model.l2={1 / (c * n)}"]
    result = train(path, overrides, runs_dir=tmp_path, progress=False)
    reference = LogisticRegression(C=c, max_iter=10_000, tol=1e-10)
    reference.fit(data.splits["train"].inputs, data.splits["train"].labels)
    kernel = np.asarray(result.state.params["dense"]["kernel"])
    # Multinomial: K logits, identified up to a shared shift; scikit-learn's are centred.
    centred = kernel - kernel.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(centred, reference.coef_.T, atol=5e-3)
    expected = reference.score(data.splits["test"].inputs, data.splits["test"].labels)
    assert result.test["accuracy"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_transformer_lm_trains_with_bfloat16_compute() -> None:
    from jaxtrain.data import train_batches
    from jaxtrain.train import build_pieces, make_train_step

    config = load_config(
        CONFIGS / "pydoc_lm.yaml",
        ["model.compute_dtype=bfloat16", "model.d_model=32", "data.sequence_length=32"],
    )
    pieces = build_pieces(config)
    step = jax.jit(make_train_step(pieces.model, pieces.tx, pieces.task))
    batches = iter(train_batches(pieces.data.splits["train"], 16, 1, 0))
    state, first = step(pieces.state, next(batches))
    for _ in range(20):
        state, metrics = step(state, next(batches))
    leaves = jax.tree.leaves(state.params)
    assert all(leaf.dtype == np.float32 for leaf in leaves)  # parameters stay float32
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) < float(first["loss"])


def test_tree_run_is_within_two_points_of_sklearn(tmp_path) -> None:
    from jaxtrain.models.trees import fit_tree, predict_tree

    path = CONFIGS / "wine_tree.yaml"
    result = train(path, runs_dir=tmp_path, progress=False)
    depth = load_config(path).model.max_depth
    ours, theirs = [], []
    # Wine's test split holds 36 rows (one row = 2.8 points) and CART breaks ties between
    # equally good splits arbitrarily, so compare the mean over five seeded splits.
    for seed in range(5):
        _, data = _split(path, [f"data.seed={seed}"])
        train_split, test_split = data.splits["train"], data.splits["test"]
        tree = fit_tree(
            train_split.inputs, train_split.labels, jax.random.key(0),
            task="classification", num_classes=3, criterion="gini", max_depth=depth,
        )  # fmt: skip
        predicted = np.asarray(predict_tree(tree, test_split.inputs)).argmax(1)
        ours.append(float(np.mean(predicted == test_split.labels)))
        reference = DecisionTreeClassifier(max_depth=depth, random_state=seed)
        reference.fit(train_split.inputs, train_split.labels)
        theirs.append(reference.score(test_split.inputs, test_split.labels))
        if seed == 0:  # the run evaluated exactly this fit
            assert result.test["accuracy"] == pytest.approx(ours[0], abs=1e-12)
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.02, (ours, theirs)


@pytest.mark.slow
def test_forest_run_is_within_two_points_of_sklearn(tmp_path) -> None:
    path = CONFIGS / "digits_forest.yaml"
    overrides = ["model.n_estimators=40"]
    result = train(path, overrides, runs_dir=tmp_path, progress=False)
    config, data = _split(path, overrides)
    train_split, test_split = data.splits["train"], data.splits["test"]
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    scores = [
        RandomForestClassifier(n_estimators=40, max_depth=config.model.max_depth, random_state=seed)
        .fit(flat(train_split.inputs), train_split.labels)
        .score(flat(test_split.inputs), test_split.labels)
        for seed in range(3)
    ]
    # A forest's accuracy moves with its seed; compare against scikit-learn's mean.
    assert abs(result.test["accuracy"] - float(np.mean(scores))) <= 0.02


def _corpus_file(tmp_path: Path, size: int = 120_000) -> Path:
    from jaxtrain.data.text import pydoc_corpus

    path = tmp_path / "corpus.txt"
    path.write_text(pydoc_corpus()[:size], encoding="utf-8")
    return path


def _lm_yaml(tmp_path: Path, corpus: Path) -> Path:
    path = tmp_path / "lm.yaml"
    path.write_text(
        f"""
name: tiny_lm
data: {{name: corpus, path: {corpus}, sequence_length: 64, batch_size: 32,
        validation_fraction: 0.1, test_fraction: 0.1}}
model: {{name: transformer_lm, d_model: 64, num_heads: 4, num_layers: 2}}
optimizer: {{name: adamw, learning_rate: 0.003, grad_clip_norm: 1.0}}
train: {{epochs: 3, eval_every: 50, log_every: 10}}
"""
    )
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    config = _lm_yaml(tmp, _corpus_file(tmp))
    return train(config, runs_dir=tmp / "runs", progress=False)


@pytest.fixture(scope="module")
def tiny_lm_run(tmp_path_factory):
    """The same corpus and architecture at a tenth of the cost: what the tests that need a
    trained language-model run, not a good one, use."""
    tmp = tmp_path_factory.mktemp("tiny_lm")
    config = _lm_yaml(tmp, _corpus_file(tmp))
    shorter = ["train.epochs=1", "model.d_model=32", "model.num_layers=1"]
    return train(config, shorter, runs_dir=tmp / "runs", progress=False)


@pytest.mark.slow
def test_language_model_beats_the_unigram_baseline_on_held_out_text(lm_run) -> None:
    summary = json.loads((lm_run.run_dir / "metrics.json").read_text())
    baseline = summary["baselines"]["unigram_bits_per_byte"]
    bits = summary["test"]["bits_per_byte"]
    assert 4.0 < baseline < 5.5  # English bytes under a unigram model
    assert bits < baseline - 1.0, (bits, baseline)
    assert summary["test"]["bits_per_byte"] == pytest.approx(summary["test"]["loss"] / np.log(2))


@pytest.mark.slow
def test_generate_continues_the_prompt_through_the_cli(lm_run) -> None:
    prompt = "The value of "
    args = [str(lm_run.run_dir), "--prompt", prompt, "--max-new-tokens", "40", "--seed", "3"]
    command = [sys.executable, "-m", "jaxtrain", "generate", *args]
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(prompt)
    assert len(first.stdout.rstrip("\n").encode()) >= len(prompt) + 20  # U+FFFD may merge bytes
    greedy = generate_text(lm_run.run_dir, prompt, max_new_tokens=40, temperature=0.0)
    assert greedy == generate_text(
        lm_run.run_dir, prompt, max_new_tokens=40, temperature=0.0, seed=9
    )


def test_generate_slides_past_the_context_and_refuses_non_language_runs(
    tiny_lm_run, tmp_path
) -> None:
    from jaxtrain.runner import RunError

    lm_run = tiny_lm_run
    # Past data.sequence_length the window slides (tests/test_generate_window.py pins how).
    text = generate_text(lm_run.run_dir, "x" * 60, max_new_tokens=10, temperature=0.0)
    assert text.startswith("x" * 60) and len(text.encode("utf-8", "replace")) >= 60
    with pytest.raises(RunError, match="--prompt is empty"):
        generate_text(lm_run.run_dir, "")
    tree = train(CONFIGS / "wine_tree.yaml", runs_dir=tmp_path, progress=False)
    with pytest.raises(RunError, match="not transformer_lm"):
        generate_text(tree.run_dir, "x")


def test_text_splits_keep_documents_whole_and_targets_are_the_next_byte(tmp_path) -> None:
    paragraphs = [f"paragraph {i} " + "abc" * (i % 7 + 1) for i in range(60)]
    path = tmp_path / "doc.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    raw = load_text_file(path)
    assert bytes(raw.splits["train"].inputs).decode() == path.read_text()
    config = load_config(_lm_yaml(tmp_path, path), ["data.sequence_length=8"])
    data = prepare_data(config.data)
    # Windows step by their length, so their rows laid end to end (plus the last target byte)
    # are the split's text.
    texts = {
        name: bytes(np.append(s.inputs.ravel(), s.labels[-1, -1]).astype(np.uint8)).decode()
        for name, s in data.splits.items()
    }
    assert sum(len(t) for t in texts.values()) > 0.9 * len(path.read_text())
    for i in range(len(paragraphs)):
        homes = [name for name, text in texts.items() if f"paragraph {i} " in text]
        assert len(homes) <= 1, (i, homes)  # never on two sides of a split
    windows = byte_windows(np.arange(20, dtype=np.uint8), 6)
    assert windows.inputs.shape == (3, 6)
    np.testing.assert_array_equal(windows.labels, windows.inputs + 1)


def test_missing_text_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_text_file(tmp_path / "nope.txt")


BAD_PAIRINGS = [  # (data section, model section, the key and complaint expected)
    ("{name: digits}", "{name: transformer_lm}", "model.name: transformer_lm does not do"),
    ("{name: wine}", "{name: decision_tree, criterion: squared_error}", "model.criterion"),
    ("{name: wine}", "{name: linear, solver: closed_form}", "model.solver: closed_form"),
    ("{name: pydoc_text}", "{name: decision_tree}", "decision_tree does not do language_model"),
    ("{name: wine}", "{name: resnet}", "rank 3"),
    ("{name: diabetes}", "{name: mlp}\ntrain: {checkpoint: {monitor: accuracy}}", "monitor"),
]


@pytest.mark.parametrize(("data", "model", "message"), BAD_PAIRINGS)
def test_a_model_that_does_not_fit_the_data_is_one_line_exit_2(
    data, model, message, tmp_path, capsys
) -> None:
    # In process: the CLI's main() is what `jaxtrain` runs (tests/test_config.py starts the
    # console script itself once); a subprocess here would only pay JAX's import again.
    from jaxtrain.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(f"name: bad\ndata: {data}\nmodel: {model}\n")
    capsys.readouterr()
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "r")]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and str(config) in stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_forest_is_the_same_whether_trees_are_vmapped_together_or_one_at_a_time() -> None:
    from sklearn.datasets import load_breast_cancer

    from jaxtrain.models.trees import fit_forest

    x, y = load_breast_cancer(return_X_y=True)
    settings = dict(n_estimators=6, max_depth=4, task="classification", num_classes=2)
    together = fit_forest(x, y, jax.random.key(1), trees_per_step=None, **settings)
    one_by_one = fit_forest(x, y, jax.random.key(1), trees_per_step=1, **settings)
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(one_by_one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_language_model_flops_agree_with_the_analytic_count(tiny_lm_run) -> None:
    lm_run = tiny_lm_run
    cost = json.loads((lm_run.run_dir / "metrics.json").read_text())["cost"]
    flops = cost["flops_per_step"]
    # Attention, MLP and head matmuls x3 for a train step, against XLA's count (measured 2.5%).
    assert flops["xla"] == pytest.approx(flops["analytic"], rel=0.1)
    assert cost["flops_warning"] is None
