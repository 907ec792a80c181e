"""lth: find, test, study and ship lottery tickets (Frankle & Carbin, ICLR 2019).

The public API, for any ``nn.Module`` (docs/API.md has runnable examples):

* :func:`winning_ticket`: prune a copy (e.g. at initialisation) with ``torch.nn.utils.prune`` by
  the magnitudes of a trained model, layer-wise or globally;
* :func:`find_tickets`: the full protocol (IMP with reset or rewinding, reinit and random-mask
  controls, trials, early stopping, a resumable run directory) on your model and data;
* masks: :func:`prunable_parameters`, :func:`full_mask`, :func:`prune_layerwise`,
  :func:`prune_global`, :func:`random_mask_like`, :func:`apply_mask`, :func:`density`,
  :func:`to_torch_prune` / :func:`from_torch_prune`, :func:`save_mask` / :func:`load_mask`,
  :func:`save_weights` / :func:`load_weights`;
* configurations: :class:`ExperimentConfig`, :func:`get_preset`, :func:`load_config`;
* tickets on disk: :func:`export_ticket`, :func:`load_ticket`;
* run directories: :func:`audit_run` (what ``lth verify`` prints: intact, damaged, what a rerun
  redoes), :func:`ticket_statistics` (sparsity per layer, survivors' initial values, mask overlap,
  weight movement), :func:`load_run` / :func:`write_report` / :func:`verdict` (``lth report``);
* analysis: :func:`instability` (linear mode connectivity of two copies trained from theta_k,
  per rewind iteration: what ``lth instability`` runs), :func:`path_errors` (errors along the line
  between two networks) and :func:`error_barrier`.

Names are imported on first use, so ``import lth`` stays cheap and does no work.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "find_tickets": "lth.api",
    "audit_run": "lth.experiment",
    "RunAudit": "lth.experiment",
    "TicketSearch": "lth.api",
    "winning_ticket": "lth.pruning",
    "to_torch_prune": "lth.pruning",
    "from_torch_prune": "lth.pruning",
    "apply_mask": "lth.pruning",
    "full_mask": "lth.pruning",
    "density": "lth.pruning",
    "prune_layerwise": "lth.pruning",
    "prune_global": "lth.pruning",
    "random_mask_like": "lth.pruning",
    "save_mask": "lth.pruning",
    "load_mask": "lth.pruning",
    "save_weights": "lth.pruning",
    "load_weights": "lth.pruning",
    "prunable_parameters": "lth.models",
    "ExperimentConfig": "lth.config",
    "get_preset": "lth.config",
    "load_config": "lth.config",
    "export_ticket": "lth.tickets",
    "load_ticket": "lth.tickets",
    "ticket_statistics": "lth.analysis",
    "TicketStatistics": "lth.analysis",
    "instability": "lth.analysis",
    "error_barrier": "lth.analysis",
    "path_errors": "lth.analysis",
    "load_run": "lth.report",
    "write_report": "lth.report",
    "verdict": "lth.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
