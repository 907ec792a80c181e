"""Training: one loop over N units (:func:`train_many`; :func:`train` is N = 1) on an engine
chosen by capability (:mod:`lth.training.engines`), with its schedules, optimizers, evaluation
and resumable state."""

from .device import check_device
from .engines import ENGINES, EnginePolicy, make_engine, max_units
from .evaluation import needs_test
from .loop import UnitInput, train, train_many
from .optimizers import DirectFusedAdam, make_optimizer
from .precision import autocast, denormals_flushed
from .schedule import epoch_permutation, iterations_per_epoch, learning_rate
from .state import EvalPoint, TrainingDiverged, TrainResult, TrainState, capture_rng, restore_rng

__all__ = ["ENGINES", "check_device", "DirectFusedAdam", "EnginePolicy", "EvalPoint", "TrainResult", "TrainState",
           "TrainingDiverged", "UnitInput", "autocast", "capture_rng", "denormals_flushed",
           "epoch_permutation", "iterations_per_epoch", "learning_rate", "make_engine", "make_optimizer",
           "max_units", "needs_test", "restore_rng", "train", "train_many"]
