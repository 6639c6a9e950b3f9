"""Over- or underfitting, read off the logged curves: a pure function with stated rules.

The verdict compares the training and validation loss curves of a run with the loss of a
trivial predictor (class frequencies, the training mean, a unigram model):

- **underfitting**: the final training loss is still above ``UNDERFIT_FRACTION`` (half) of
  the trivial baseline's loss: the model has not learned much more than the label prior.
- **overfitting**: the validation loss bottomed out before the end and has since risen by
  more than ``OVERFIT_RISE`` (5%) of its minimum while the training loss kept falling; the
  evidence names the step of the minimum and the train/validation gap.
- **good fit** otherwise. The gap between final validation and training loss is always
  reported, since a large but stable gap is worth a look even when the curve is flat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

UNDERFIT_FRACTION = 0.5
OVERFIT_RISE = 0.05
_TAIL = 3  # training log points averaged for the "final" training loss


def _curve(records: Sequence[Mapping[str, Any]], split: str) -> list[tuple[int, float]]:
    return [
        (int(r["step"]), float(r["loss"]))
        for r in records
        if r.get("split") == split and r.get("loss") is not None  # None: a non-finite mean
    ]


def diagnose(records: Sequence[Mapping[str, Any]], baseline_loss: float | None) -> dict[str, Any]:
    """``{"verdict": "overfitting"|"underfitting"|"good fit"|"unknown", "evidence": str, ...}``
    from ``metrics.jsonl`` records (``step``, ``split``, ``loss``) and the trivial predictor's
    loss on the training split (same units as the training loss)."""
    train = _curve(records, "train")
    validation = _curve(records, "validation")
    if not train or not validation:
        return {"verdict": "unknown", "evidence": "no training or validation curve was logged"}
    final_train = sum(loss for _, loss in train[-_TAIL:]) / len(train[-_TAIL:])
    best_step, best_val = min(validation, key=lambda point: point[1])
    last_step, final_val = validation[-1]
    facts = {
        "final_train_loss": final_train,
        "final_validation_loss": final_val,
        "best_validation_loss": best_val,
        "best_validation_step": best_step,
        "gap": final_val - final_train,
        "baseline_loss": baseline_loss,
    }
    if baseline_loss is not None and baseline_loss > 0:
        facts["train_loss_vs_baseline"] = final_train / baseline_loss
        if final_train > UNDERFIT_FRACTION * baseline_loss:
            evidence = (
                f"training loss {final_train:.4f} is {final_train / baseline_loss:.0%} of the "
                f"trivial predictor's {baseline_loss:.4f} (more than "
                f"{UNDERFIT_FRACTION:.0%}): train longer, raise capacity or the learning rate"
            )
            return {"verdict": "underfitting", "evidence": evidence, **facts}
    # The training loss when validation was best (the first logged one if validation
    # bottomed out before the first training log point).
    at_best = [loss for step, loss in train if step <= best_step] or [train[0][1]]
    train_kept_falling = final_train < at_best[-1]
    rise = (final_val - best_val) / best_val if best_val > 0 else 0.0
    if best_step < last_step and rise > OVERFIT_RISE and train_kept_falling:
        evidence = (
            f"validation loss rose {rise:.0%} from its minimum {best_val:.4f} at step "
            f"{best_step} to {final_val:.4f} at step {last_step} while training loss fell to "
            f"{final_train:.4f} (gap {final_val - final_train:.4f}): stop earlier (early "
            "stopping), regularise or add data"
        )
        return {"verdict": "overfitting", "evidence": evidence, **facts}
    if rise > OVERFIT_RISE:  # risen, but the training loss rose with it: not memorisation
        evidence = (
            f"validation loss rose {rise:.0%} from its minimum {best_val:.4f} at step "
            f"{best_step}, but training loss did not fall meanwhile ({at_best[-1]:.4f} -> "
            f"{final_train:.4f}): unstable optimisation rather than overfitting; lower the "
            f"learning rate; train/validation gap {final_val - final_train:.4f}"
        )
    else:
        evidence = (
            f"validation loss {final_val:.4f} is within {OVERFIT_RISE:.0%} of its minimum "
            f"{best_val:.4f}; train/validation gap {final_val - final_train:.4f}"
        )
    if baseline_loss:
        evidence += f"; training loss {final_train / baseline_loss:.0%} of the trivial baseline"
    return {"verdict": "good fit", "evidence": evidence, **facts}
