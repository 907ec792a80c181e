"""``lth export``: one unit's ticket as a small safetensors file (:func:`lth.tickets.export_ticket`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..tickets.export import WEIGHTS, printable
from ..tickets.format import DTYPES
from ..tickets.masks import MASK_FORMATS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``lth export`` to the main parser's sub-commands; returns the new sub-parser."""
    p = subparsers.add_parser(
        "export", help="write a ticket as one sparse safetensors file (only surviving weights)",
        description="Export the ticket of one finished unit (trial, level, branch) of a run as a "
        "single safetensors file holding each pruned layer's mask (bitmap or index list) and its "
        "surviving weights only. Load it with lth.tickets.load_ticket(path, sparse='auto').",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory made by `lth run`")
    p.add_argument("--level", type=int, required=True, help="pruning level (0 = dense)")
    p.add_argument("--trial", type=int, default=0, help="trial (default 0)")
    p.add_argument("--branch", default="ticket", help="ticket, reinit, random_mask, oneshot, finetune, lr_rewind "
                   "(default ticket)")
    p.add_argument("--weights", choices=WEIGHTS, default="final",
                   help="final = trained weights; init = the ticket's starting weights (default final)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the stored weights")
    p.add_argument("--mask-format", choices=MASK_FORMATS, default="auto",
                   help="auto = smaller of bitmap and index list, per layer (default)")
    p.add_argument("--out", type=Path, help="output file (default "
                   "RUN_DIR/exports/trial<T>_level<L>_<branch>_<weights>_<dtype>.safetensors)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``lth export``: prints the file and its size vs the dense checkpoint. Errors
    (:class:`lth.tickets.ExportError`, :class:`lth.store.StoreError`) propagate to
    :func:`lth.cli.main`, which prints each as one ``lth: error:`` line."""
    from ..tickets import ExportSize, dense_checkpoint_bytes, export_ticket, read_ticket

    path = export_ticket(args.run_dir, args.level, trial=args.trial, branch=args.branch,
                         weights=args.weights, dtype=args.dtype, mask_format=args.mask_format,
                         out=args.out)
    ticket = read_ticket(path)
    size = ExportSize(path.stat().st_size, dense_checkpoint_bytes(ticket.build_model().state_dict()))
    meta = ticket.metadata
    formats = sorted(set(meta["mask_formats"].values()))
    print(printable(path))
    print(f"{size}; {100 * meta['weights_remaining']:.2f}% of weights remaining, "
          f"{meta['dtype']} values, masks: {', '.join(formats) or 'none'}")
    return 0
