"""Likely label errors by confident learning (Northcutt, Jiang & Chuang, 2021).

Out-of-fold probabilities come from k small models trained at once: the toolkit's one train
step scanned over full-batch Adam steps on a fold-masked, weighted loss, vmapped over the
folds, so the k-fold cross-validation is a single XLA program. The suspects are exactly those of
cleanlab's ``cleanlab.filter.find_label_issues(labels, pred_probs,
filter_by="confident_learning")`` on the same probabilities (tested for equality).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.config.prepare import LabelErrorsConfig
from jaxtrain.data.split import fold_ids

# cleanlab's constants (cleanlab/internal/constants.py), so that the flags are the same.
TOLERANCE = 1e-6  # a probability within this of a threshold reaches it
THRESHOLD_FLOOR = 2 * TOLERANCE  # thresholds are clipped from below to this
ABSENT_THRESHOLD = 2.0  # a class no example is labelled with: no probability reaches it


class LabelSuspects(NamedTuple):
    """Examples whose given label the out-of-fold model confidently contradicts.

    indices: int64 [m] positions in the inputs, most suspicious first (largest margin);
    given, predicted: int32 [m] labels; margin: float32 [m], p(predicted) - p(given);
    thresholds: float32 [K], per-class mean self-confidence (``ABSENT_THRESHOLD`` for a class
    no example carries, at least ``THRESHOLD_FLOOR``); confident_joint: int64 [K, K] counts of
    (given, confidently predicted) pairs; probabilities: float32 [n, K], the out-of-fold
    probabilities the suspects come from (None when given by the caller).
    """

    indices: np.ndarray
    given: np.ndarray
    predicted: np.ndarray
    margin: np.ndarray
    thresholds: np.ndarray
    confident_joint: np.ndarray
    probabilities: np.ndarray | None = None


def make_fit(
    num_classes: int,
    *,
    hidden: int = 64,
    steps: int = 300,
    learning_rate: float = 0.05,
    l2: float = 1e-4,
):
    """``fit(key, x, y, weights) -> params``: pure, jittable and vmappable.

    x: f32[n, d]; y: i32[n]; weights: f32[n] (0 leaves an example out). A multinomial
    logistic regression (``hidden`` 0) or a tanh MLP with one hidden layer, trained for
    ``steps`` full-batch Adam steps on the weighted mean cross-entropy plus ``l2`` times the
    squared norm of the weight matrices: the toolkit's one train step
    (:func:`jaxtrain.train.step.make_train_step`) scanned over the full batch.
    """
    # Imported here: the data layer sits below train, whose package imports data.
    from jaxtrain.train.scan import scan_steps
    from jaxtrain.train.state import TrainState
    from jaxtrain.train.step import make_train_step
    from jaxtrain.train.tasks import classification

    tx = optax.adam(learning_rate)

    def penalty(params):
        return l2 * sum(jnp.sum(w**2) for name, w in params.items() if name[0] == "w")

    step = make_train_step(_Logits(), tx, classification(num_classes), penalty)

    def fit(key: jax.Array, x: jax.Array, y: jax.Array, weights: jax.Array):
        params = _init(key, x.shape[1], num_classes, hidden)
        n = x.shape[0]
        # The step's weighted mean is mean(w * loss); scaled so that it is the weighted
        # average sum(w * loss) / sum(w) over the examples a fold keeps.
        data = {"inputs": x, "labels": y, "weights": weights * n / jnp.maximum(weights.sum(), 1)}
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {}, key)
        plan = {"rows": jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (steps, n))}
        state, _ = scan_steps(step, state, data, plan)
        return state.params

    return fit


class _Logits:
    """The fold models as the step's ``model``: ``apply({"params": p}, x) -> logits``."""

    def apply(self, variables, inputs, train=False, rngs=None, **_):
        return predict_logits(variables["params"], inputs)


def _init(key: jax.Array, features: int, classes: int, hidden: int) -> dict:
    if hidden == 0:
        return {"w": jnp.zeros((features, classes)), "b": jnp.zeros(classes)}
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (features, hidden)) / jnp.sqrt(features),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, classes)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(classes),
    }


def predict_logits(params: dict, x: jax.Array) -> jax.Array:
    """x: f32[n, d] -> logits f32[n, K]."""
    if "w" in params:
        return x @ params["w"] + params["b"]
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    folds: np.ndarray,
    seed: int = 0,
    **fit_options,
) -> np.ndarray:
    """Each example's class probabilities f32[n, K] from the model that did not see it.

    x: float [n, d] features (standardised here); y: int [n]; folds: int [n] in 0..k-1.
    The k models are trained by ``jax.vmap(fit)`` over fold masks: one program, one compile.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    scale = x.std(0)
    x = jnp.asarray((x - x.mean(0)) / np.where(scale > 0, scale, 1.0), jnp.float32)
    k = int(folds.max()) + 1
    masks = jnp.asarray(folds[None, :] != np.arange(k)[:, None], jnp.float32)  # [k, n]
    keys = jax.random.split(jax.random.key(seed), k)
    fit = make_fit(num_classes, **fit_options)

    @jax.jit
    def all_folds(keys, x, y, masks):
        params = jax.vmap(fit, in_axes=(0, None, None, 0))(keys, x, y, masks)
        return jax.nn.softmax(jax.vmap(predict_logits, in_axes=(0, None))(params, x))

    probabilities = np.asarray(all_folds(keys, x, jnp.asarray(y, jnp.int32), masks))  # [k, n, K]
    return probabilities[folds, np.arange(len(y))]


def confident_learning(probabilities: np.ndarray, labels: np.ndarray) -> LabelSuspects:
    """Suspects from out-of-fold ``probabilities`` [n, K] and given ``labels`` int [n].

    The rule is cleanlab's ``find_label_issues(filter_by="confident_learning")``:

    1. Per class j the threshold t_j is the mean probability of j over the examples labelled
       j (its self-confidence), clipped from below at ``THRESHOLD_FLOOR``; a class that no
       example is labelled with gets ``ABSENT_THRESHOLD`` (2: never reached).
    2. Class j is confident for an example when ``p_j >= t_j - TOLERANCE``. An example with
       one confident class takes it as its confident label; with several, its most probable
       class overall; with none, it has no confident label and is never a suspect.
    3. Suspects are the examples whose confident label differs from the given one (the
       off-diagonal of the confident joint) ...
    4. ... except those whose given label is (within ``TOLERANCE``) their most probable class:
       ``[.5, .45, .05]`` labelled 0 is not a suspect even if class 1 is confident.

    Suspects are ranked by the margin p(confident) - p(given), largest first (ties: by
    position). Raises ValueError for labels outside ``[0, K)`` or probabilities that are not
    finite or not [n, K].
    """
    p = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if p.ndim != 2 or labels.shape != (p.shape[0],):
        raise ValueError(
            "confident_learning: probabilities must be [n, K] and labels [n]; got "
            f"{p.shape} and {labels.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("confident_learning: probabilities hold NaN or infinite values")
    n, num_classes = p.shape
    if labels.dtype.kind not in "iub":
        raise ValueError(f"confident_learning: labels must be class ids; got dtype {labels.dtype}")
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(outside):
        raise ValueError(
            f"confident_learning: label {labels[outside[0]]} (position {outside[0]}) is not a "
            f"class id in [0, {num_classes})"
        )
    labels = labels.astype(np.int64)
    thresholds = np.array(
        [
            p[labels == j, j].mean() if np.any(labels == j) else ABSENT_THRESHOLD
            for j in range(num_classes)
        ]
    )
    thresholds = np.maximum(thresholds, THRESHOLD_FLOOR)
    above = p >= thresholds[None, :] - TOLERANCE
    count = above.sum(axis=1)
    confident = np.where(count > 1, p.argmax(axis=1), above.argmax(axis=1))
    has_confident = count > 0
    joint = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(joint, (labels[has_confident], confident[has_confident]), 1)
    favoured = p.copy()
    favoured[np.arange(n), labels] += TOLERANCE
    agrees = favoured.argmax(axis=1) == labels
    suspect = has_confident & (confident != labels) & ~agrees
    indices = np.flatnonzero(suspect)
    margin = p[indices, confident[indices]] - p[indices, labels[indices]]
    order = np.argsort(-margin, kind="stable")
    indices = indices[order]
    return LabelSuspects(
        indices.astype(np.int64),
        labels[indices].astype(np.int32),
        confident[indices].astype(np.int32),
        margin[order].astype(np.float32),
        thresholds.astype(np.float32),
        joint,
    )


def find_label_errors(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    **fit_options,
) -> LabelSuspects:
    """Confident learning on ``folds``-fold (stratified, seeded) out-of-fold probabilities.

    x: float [n, ...] (flattened); y: int [n] given labels. ``fit_options``: ``hidden``,
    ``steps``, ``learning_rate``, ``l2`` of :func:`make_fit`.
    """
    assignment = fold_ids(len(y), folds, seed, labels=y)
    probabilities = out_of_fold_probabilities(x, y, num_classes, assignment, seed, **fit_options)
    return confident_learning(probabilities, y)._replace(probabilities=probabilities)


def training_split_suspects(
    rows: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    options: LabelErrorsConfig,
    seed: int,
    stored: list[dict] | None = None,
) -> tuple[list[dict], dict, dict[str, np.ndarray] | None]:
    """Label suspects of the training split as JSON (``row``, ``given``, ``predicted``,
    ``margin``), the report record, and the evidence they were derived from: ``{"rows",
    "labels", "probabilities", "class_names"}`` arrays (source rows, given ids, out-of-fold
    probabilities f32[n, K]), so ``confident_learning(probabilities, labels)`` re-derives
    them. ``stored`` suspects (from a run's statistics) are reused instead of refitting (no
    evidence then). rows: int [n] source rows; features: [n, ...]; labels: int [n]."""
    evidence = None
    if stored is not None:
        present = set(rows.tolist())
        suspects = [s for s in stored if s["row"] in present]
    else:
        found = find_label_errors(
            np.asarray(features, np.float32).reshape(len(rows), -1),
            labels,
            len(class_names),
            folds=options.folds,
            seed=seed,
            hidden=options.hidden,
            steps=options.steps,
            learning_rate=options.learning_rate,
            l2=options.l2,
        )
        suspects = [
            {
                "row": int(rows[i]),
                "given": class_names[g],
                "predicted": class_names[p],
                "margin": round(float(m), 6),
            }
            for i, g, p, m in zip(
                found.indices, found.given, found.predicted, found.margin, strict=True
            )
        ]
        evidence = {
            "rows": np.asarray(rows, np.int64),
            "labels": np.asarray(labels, np.int32),
            "probabilities": np.asarray(found.probabilities, np.float32),
            "class_names": np.asarray(class_names, str),
        }
    dropped = len(suspects) if options.action == "drop" else 0
    record = {
        "rule": "label_errors",
        "action": options.action,
        "method": 'cleanlab find_label_issues(filter_by="confident_learning")',
        "found": len(suspects),
        "rows_in": len(rows),
        "rows_out": len(rows) - dropped,
        "rows": [s["row"] for s in suspects],
    }
    return suspects, record, evidence
