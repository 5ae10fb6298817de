"""The `bundler` command line: one module per command, each adding its own sub-parser."""

from __future__ import annotations

# Only modules the interpreter has loaded already: a Ctrl-C while this module is imported
# would escape main(); argparse and the rest are imported inside it.
import _signal
import _thread
import gc
import importlib
import os
import sys

import bundler

TYPE_CHECKING = False  # `typing` costs 3 ms (see bundler/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

#: Command modules under bundler.cli, in the order `--help` lists them.
COMMANDS = (
    "demo", "quantize", "batch", "run", "inspect", "validate", "diff", "types", "benchmark",
    "bench", "recipe", "warmup", "vectors", "report", "imatrix",
)  # fmt: skip


#: Commands a module adds beside the one named after it.
ALSO = {"convert": "quantize"}


def _print_version() -> None:
    print(f"bundler {bundler.__version__}")


def _version_action() -> type:
    import argparse

    class Version(argparse.Action):
        """argparse's version action, reading the installed version only when asked
        (reading package metadata costs every other command 25 ms)."""

        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            _print_version()
            parser.exit()

    return Version


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line's parser; with `only` (a module of COMMANDS), one with that
    module's commands alone (only it imported: each imports what its commands run)."""
    import argparse

    _Version = _version_action()
    parser = argparse.ArgumentParser(
        prog="bundler",
        description="Quantize tensors with the GGML block codecs and bundle them into "
        "GGUF, SafeTensors and APR files.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"bundler.cli.{name}").add_parser(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The module of the command `argv` runs when its first argument names one (the parser
    of that module's commands then suffices); None for anything else (`--help`,
    `--version`, a typo), which the whole parser answers."""
    word = argv[0] if argv else None
    return word if word in COMMANDS else ALSO.get(word or "")


def _redeliver_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
    """A Ctrl-C that lands in a callback Python ignores exceptions in (a finalizer, an import
    lock's clean-up) is printed as "Exception ignored" and lost: deliver it again to the
    main thread, in the code it meant to stop."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    # Sent from another thread, the signal reaches the main thread once this hook has
    # returned: sent from here, its handler would run inside the hook, whose exception
    # Python ignores as well. Should it still land here, it is sent once more.
    try:
        _thread.start_new_thread(_thread.interrupt_main, ())
    except KeyboardInterrupt:
        _thread.start_new_thread(_thread.interrupt_main, ())
    except RuntimeError:  # no new thread while the interpreter shuts down: the work is done,
        pass  # and the handler that raised it has marked the exit code 130


class _Interrupts:
    """SIGINT's default action (KeyboardInterrupt in the main thread), remembering that one
    came: an import the signal lands in can report it as another error (numpy's C extension
    turns it into an ImportError naming `datetime`), which is still the user's Ctrl-C."""

    arrived = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.arrived = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (None: this process is the console script, on its
    own arguments); returns the process exit code."""
    sys.unraisablehook = _redeliver_interrupt
    try:
        if argv is None:
            _signal.signal(_signal.SIGINT, _Interrupts.handle)
            from bundler.cli.startup import load_cached_kernels_lazily, skip_blas_probe

            skip_blas_probe()
            load_cached_kernels_lazily()
        code = _main(argv)
    except KeyboardInterrupt:
        return _interrupted()
    except BaseException:
        if not _Interrupts.arrived:
            raise
        return _interrupted()
    # a Ctrl-C some library caught and reported as its own error is still one
    return _interrupted() if _Interrupts.arrived else code


def _interrupted() -> int:
    print("bundler: interrupted", file=sys.stderr)
    return 130


def _main(argv: list[str] | None) -> int:
    from bundler.errors import EXIT_FAILURE, EXIT_IO, BundlerError

    try:
        words = sys.argv[1:] if argv is None else argv
        if words == ["--version"]:  # no parser at all: it imports every command module
            _print_version()
            return 0
        args = build_parser(_command_of(words)).parse_args(words)
        _escape_unencodable()
        return int(args.func(args) or 0)
    except BundlerError as exc:
        print(f"bundler: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as exc:  # one a command did not wrap: still an I/O error, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bundler: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO


def _escape_unencodable() -> None:
    """Names read from files may hold bytes that are not UTF-8 (kept as surrogate escapes):
    print them as backslash escapes instead of failing on a strict stdout."""
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # ValueError/OSError: already written to, or not a text stream
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def run() -> int:
    """The `bundler` console script: `main` on the process's arguments, then a quick exit.

    The compiler's objects (hundreds of thousands once a kernel is loaded) are frozen out
    of the cyclic collector before returning, so the interpreter's shutdown collections
    skip them: about 0.3 s less for every command that encoded or decoded.

    numpy's OpenBLAS starts a worker thread per core that spins for 2^28 cycles before it
    sleeps, 0.1 s of another core on every command though few commands make a BLAS call:
    they are told to sleep at once (a later BLAS call wakes them), unless the user set
    OPENBLAS_THREAD_TIMEOUT. On two cores this takes 0.12 s of CPU time and about 20 ms of
    wall time off each command.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # the least it takes: 2^4 cycles
    code = main(None)
    gc.freeze()
    return code
