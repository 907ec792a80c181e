"""Studying tickets after (or beside) a run: instability along the line between two trained
copies (linear mode connectivity) and ticket statistics. Tensors in, numbers out; reads run
directories through the store and trains through the training loop, never the other way round."""

from .instability import PathErrors, error_barrier, interpolate, path_errors, recompute_batchnorm
from .statistics import TicketStatistics, ticket_statistics

__all__ = ["PathErrors", "TicketStatistics", "error_barrier", "interpolate", "path_errors", "recompute_batchnorm",
           "ticket_statistics"]
