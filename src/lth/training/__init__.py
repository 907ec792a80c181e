"""Training: one loop over N units (:func:`train_many`; :func:`train` is N = 1) on an engine
chosen by capability (:mod:`lth.training.engines`), with its schedules, optimizers, evaluation
and resumable state."""

from .device import check_device, describe_machine, software_versions
from .engines import ENGINES, EnginePolicy, make_engine, max_units
from .evaluation import needs_test
from .loop import UnitInput, train, train_many
from .optimizers import DirectFusedAdam, make_optimizer
from .precision import autocast, denormals_flushed
from .schedule import LR_SCHEDULES, epoch_permutation, iterations_per_epoch, learning_rate, lr_schedule
from .state import (
    EvalPoint,
    TrainingDiverged,
    TrainResult,
    TrainState,
    capture_rng,
    mask_optimizer_state,
    restore_rng,
)

__all__ = ["ENGINES", "LR_SCHEDULES", "check_device", "describe_machine", "software_versions", "DirectFusedAdam",
           "EnginePolicy", "EvalPoint",
           "TrainResult", "TrainState", "TrainingDiverged", "UnitInput", "autocast", "capture_rng",
           "denormals_flushed", "epoch_permutation", "iterations_per_epoch", "learning_rate", "lr_schedule",
           "make_engine", "make_optimizer", "mask_optimizer_state", "max_units", "needs_test", "restore_rng",
           "train", "train_many"]
