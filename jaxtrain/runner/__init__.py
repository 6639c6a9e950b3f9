"""Runner verbs: from a config file (or a run directory) to a finished run directory.

Every check a user's mistake can fail (config, what the verb honours, dataset, batch size,
the runs folder) runs before the run directory is created, so a bad invocation writes
nothing. ``run_dirs`` makes and locks run directories, ``checks`` holds the checks,
``verbs`` the verbs that train, ``inspect`` those that read a finished run.
"""

from jaxtrain.runner.inspect import evaluate_run, generate_text, report_run
from jaxtrain.runner.run_dirs import (
    CONFIG_FILE,
    LOCK_FILE,
    RUNS_DIR_ENV,
    RunError,
    default_runs_dir,
    environment,
    new_run_dir,
    run_lock,
    start_run,
)
from jaxtrain.runner.verbs import (
    check_determinism,
    federated_run,
    learning_curve_run,
    sweep_run,
    train,
)

__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "RUNS_DIR_ENV",
    "RunError",
    "check_determinism",
    "default_runs_dir",
    "environment",
    "evaluate_run",
    "federated_run",
    "generate_text",
    "learning_curve_run",
    "new_run_dir",
    "report_run",
    "run_lock",
    "start_run",
    "sweep_run",
    "train",
]
