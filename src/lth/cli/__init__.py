"""The ``lth`` command line: thin; one module per command, each parses its arguments and calls
the same library functions the Python API exposes.

Every expected failure ends as one line ``lth: error: ...`` naming the problem and the fix, with
an exit status per kind of problem; a traceback appears only for a bug in lth, followed by a line
asking to report it.

======  ==================================================================================
status  meaning
======  ==================================================================================
0       done (``lth verify``: every finished unit is intact)
1       ``lth verify`` found damage (a rerun of the same ``lth run`` command redoes it)
2       the command line or the configuration is wrong (also argparse's own usage errors)
3       the data set is missing, corrupt or cannot be downloaded
4       the run directory: locked by another process, another configuration, unwritable,
        disk full, damaged
5       exporting or reading a ticket file
6       a report or figure cannot be made
7       out of memory (finished work is intact; the message says what to lower)
70      an internal error: a bug in lth (the traceback is printed)
130     interrupted by SIGINT (Ctrl-C); 143: by SIGTERM. Rerun the same command to continue
======  ==================================================================================

:func:`main` returns the status. The ``lth`` program (:func:`entry`) exits with it, except after an
interrupt: having cleaned up and said so, it ends by the signal itself, as a calling shell or
``make`` expects of a program stopped by Ctrl-C; a shell shows 130 / 143 either way. (Exiting with
status 130 instead was not reliable: CPython ends a process by SIGINT anyway when the interrupt
landed inside code it ran from a string, even though lth caught it.)

Signal handlers are installed before anything heavy is imported, so an interrupt at any moment,
start-up included, prints the one interrupted line. Both signals unwind like Ctrl-C: locks are
released, and an atomic write cut short leaves only a temporary file, which the next run removes.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

COMMANDS = ("run", "presets", "models", "config", "report", "plot", "export", "verify", "instability")
EXIT_USAGE, EXIT_DATA, EXIT_STORE, EXIT_EXPORT, EXIT_REPORT, EXIT_MEMORY, EXIT_BUG = 2, 3, 4, 5, 6, 7, 70
BUG_LINE = ("lth: internal error: this is a bug in lth, not in your input; please report it with the "
            "traceback above and the command you ran")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it unwinds exactly like Ctrl-C."""

    signum = signal.SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _commands() -> dict:
    import importlib

    return {name: importlib.import_module(f"{__package__}.{name}") for name in COMMANDS}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one ``lth: error:`` line (status 2) pointing to --help."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"lth: error: {message} (see `{self.prog} --help`)\n")


def _parser(commands: dict) -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="lth",
        description="Find, test and study lottery tickets (Frankle & Carbin, ICLR 2019).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in commands.values():
        module.add_parser(sub)
    return p


def _error_statuses() -> list[tuple[tuple[type[BaseException], ...], int]]:
    from ..config import ConfigError, PresetError
    from ..data import DataError
    from ..models import ModelError
    from ..report import ReportError
    from ..store import StoreError
    from ..tickets import ExportError

    return [((ConfigError, PresetError, ModelError), EXIT_USAGE), ((DataError,), EXIT_DATA),
            ((StoreError,), EXIT_STORE), ((ExportError,), EXIT_EXPORT), ((ReportError,), EXIT_REPORT)]


def _out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ()))


def _run(argv: Sequence[str] | None) -> int:
    commands = _commands()
    parser = _parser(commands)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    statuses = _error_statuses()
    try:
        return commands[args.command].run(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        raise
    except Exception as e:
        for kinds, status in statuses:
            if isinstance(e, kinds):
                print(f"lth: error: {e}", file=sys.stderr)
                return status
        if _out_of_memory(e):
            print(f"lth: error: out of memory ({type(e).__name__}); finished work is intact. Lower "
                  "--parallel-units, runtime.eval_batch_size or train.batch_size, and rerun the same command "
                  "to continue", file=sys.stderr)
            return EXIT_MEMORY
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lth`` command; returns its exit status (see the module docstring)."""
    previous, sigint = None, signal.getsignal(signal.SIGINT)
    if _main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # nohup-style: keep ignoring
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(argv)
    except KeyboardInterrupt as e:
        _quietly(lambda: [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]
                 if _main_thread() else None)  # a second signal while saying so must not end in a traceback
        _quietly(lambda: print("\nlth: interrupted; rerun the same command to continue", file=sys.stderr))
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    except SystemExit:
        raise  # argparse's usage errors (2) and --help (0)
    except Exception:
        import traceback

        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        return EXIT_BUG
    finally:
        if _main_thread():
            # signal.signal runs any handler still pending: one more interrupt here changes nothing
            if sigint is not None:
                _quietly(lambda: signal.signal(signal.SIGINT, sigint))
            if previous is not None:
                _quietly(lambda: signal.signal(signal.SIGTERM, previous))


def entry() -> None:
    """The ``lth`` program: :func:`main`, then exit with its status, or, after an interrupt, by the
    signal itself (module docstring)."""
    status = main()
    signum = status - 128
    if signum in (signal.SIGINT, signal.SIGTERM) and _main_thread() and sys.platform != "win32":
        import os

        _quietly(sys.stdout.flush)
        _quietly(sys.stderr.flush)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])  # delivered by now unless it was blocked
    sys.exit(status)


def _quietly(action) -> None:
    """Do ``action``; an interrupt arriving meanwhile is dropped (lth is already stopping)."""
    try:
        action()
    except KeyboardInterrupt:
        pass


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    raise SystemExit(main())
