"""Training: the train state, optimizers, losses, the pure steps and the host loop."""

from jaxtrain.train.callbacks import Callback, chain, stop_at_step, stop_on_signals
from jaxtrain.train.evaluate import evaluate
from jaxtrain.train.loop import RunResult, train_and_evaluate
from jaxtrain.train.optim import build_optimizer, build_schedule
from jaxtrain.train.parallel import Placement, build_placement
from jaxtrain.train.pieces import Pieces, build_pieces, build_step
from jaxtrain.train.scan import make_fused_steps, scan_steps
from jaxtrain.train.state import TrainState, count_params, create_train_state
from jaxtrain.train.step import make_eval_step, make_train_step

__all__ = [
    "Callback",
    "Pieces",
    "Placement",
    "RunResult",
    "TrainState",
    "build_optimizer",
    "build_pieces",
    "build_placement",
    "build_schedule",
    "build_step",
    "chain",
    "count_params",
    "create_train_state",
    "evaluate",
    "make_eval_step",
    "make_fused_steps",
    "make_train_step",
    "scan_steps",
    "stop_at_step",
    "stop_on_signals",
    "train_and_evaluate",
]
