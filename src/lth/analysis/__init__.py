"""Studying tickets after (or beside) a run: instability along the line between two trained
copies (linear mode connectivity) and ticket statistics. Tensors in, numbers out: reads run directories through the
store and trains through the training loop, never the other way round.

* :mod:`.interpolation`: interpolated weights, the error along a path, its barrier, BatchNorm
  statistics recomputed at a point (pure tensor code);
* :mod:`.instability_store`: the typed records and the output directory (crash-safe, resumable);
* :mod:`.instability`: the sweep over rewind iterations (:func:`instability`);
* :mod:`.statistics`: ticket statistics of a run directory (:func:`ticket_statistics`)."""

from .instability import COPIES, copy_seeds, eval_data, instability, theta_ks
from .instability_store import InstabilityDir, InstabilityProtocol, InstabilityResult, load_results
from .interpolation import (
    alphas,
    error_barrier,
    error_rate,
    has_batchnorm,
    interpolate,
    path_errors,
    recompute_batchnorm,
)
from .statistics import TicketStatistics, ticket_statistics

__all__ = ["COPIES", "InstabilityDir", "InstabilityProtocol", "InstabilityResult", "alphas", "copy_seeds",
           "error_barrier", "error_rate", "eval_data", "has_batchnorm", "instability", "interpolate",
           "load_results", "path_errors", "recompute_batchnorm", "theta_ks", "TicketStatistics",
           "ticket_statistics"]
