"""The exception hierarchy of bundler and the exit code each error maps to.

Exit codes follow the `apr` tool: 0 ok, 1 other failure, 2 usage, 3 file not found,
4 invalid format, 5 validation failed (or refusing to overwrite), 7 I/O.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID_FORMAT = 4
EXIT_VALIDATION = 5
EXIT_IO = 7


class BundlerError(Exception):
    """Root of every error bundler raises on purpose."""

    exit_code = EXIT_FAILURE


class UsageError(BundlerError, ValueError):
    """The caller asked for something that does not make sense (bad option, bad argument)."""

    exit_code = EXIT_USAGE


class UnknownCodecError(UsageError, KeyError):
    """A codec name or id that the registry does not know."""

    def __init__(self, wanted: object, valid: list[str], message: str | None = None):
        self.wanted = wanted
        self.valid = valid
        super().__init__(message or f"unknown codec {wanted!r}; valid codecs: {', '.join(valid)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ShapeError(UsageError):
    """An array whose shape does not fit the codec (e.g. a row not a multiple of the block)."""


class NonFiniteError(UsageError):
    """A NaN or infinity in the input of a block codec."""

    def __init__(self, message: str, index: tuple[int, ...], value: float):
        self.index = index
        self.value = value
        super().__init__(message)


class _PathError(BundlerError):
    """An error about one path (`.path`), its message `<path>: <problem>`."""

    problem = ""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {self.problem}")

    def __str__(self) -> str:  # OSError would format its arguments
        return str(self.args[0])


class FileNotFound(_PathError, FileNotFoundError):
    """An input path that does not exist."""

    exit_code = EXIT_NOT_FOUND
    problem = "no such file"


class FormatError(BundlerError, ValueError):
    """A file that is not a valid model file: names the file, the byte offset and the problem."""

    exit_code = EXIT_INVALID_FORMAT

    def __init__(self, path: str | os.PathLike[str] | None, offset: int | None, problem: str):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        self.problem = problem
        where = self.path or "<bytes>"
        at = f" at byte {offset:,}" if offset is not None else ""
        super().__init__(f"{where}{at}: {problem}")


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within it, a `FormatError` raised without a file (by code that reads a parsed model,
    not a file) is raised again as the same error of `path`."""
    try:
        yield
    except FormatError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(path, exc.offset, exc.problem) from None


class TruncatedError(FormatError):
    """A file that ends before what its header describes: cut short, or a count or length
    too large for the file (the two cannot be told apart)."""


class UnsupportedFormatError(FormatError):
    """A valid file that uses a feature bundler does not implement (compression, encryption)."""


class ImportanceMismatchError(UsageError):
    """An importance matrix that does not fit the model: an entry whose length differs from
    the tensor's columns (times its experts), or a matrix naming none of the model's
    tensors (one computed on another model). `tensor` is the tensor's name when one is."""

    def __init__(self, message: str, tensor: str | None = None):
        self.tensor = tensor
        super().__init__(message)


class ImportanceRequiredError(UsageError):
    """A codec llama-quantize writes only with importance weights (the 1- and 2-bit lattice
    codecs, IQ3_XXS, Q2_K in a Q2_K_S file) planned for tensors that have none: no matrix
    was given, or it has no entry for them. `tensors` names them."""

    def __init__(self, message: str, tensors: list[str]):
        self.tensors = tensors
        super().__init__(message)


class EncoderMissingError(UsageError):
    """A plan that needs an encoder bundler does not have yet (a codec it reads and copies
    only). `codecs` names them."""

    def __init__(self, message: str, codecs: list[str]):
        self.codecs = codecs
        super().__init__(message)


class ValidationError(BundlerError):
    """A check the user asked for failed (validate, diff --threshold)."""

    exit_code = EXIT_VALIDATION


class OutputExistsError(_PathError, FileExistsError):
    """Refusing to overwrite an existing output without --force."""

    exit_code = EXIT_VALIDATION
    problem = "already exists (use --force to overwrite)"


class BundlerIOError(BundlerError, OSError):
    """Reading or writing failed at the operating-system level (disk full, permission)."""

    exit_code = EXIT_IO

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------ embedding vectors


class VectorError(BundlerError):
    """A problem with one embedding vector; `index` is its row in a batch (None alone)."""

    index: int | None = None


class InvalidDimension(VectorError, ShapeError):
    """A vector with no values, or whose length differs from the collection's dimension."""


class InvalidScheme(VectorError, UsageError):
    """A vector quantization scheme name or id that does not exist, or the wrong one."""


class EncodingFailed(VectorError, UsageError):
    """A vector that cannot be quantized: a NaN or infinity, or a range float32 overflows."""


class DecodingFailed(VectorError, UsageError):
    """Quantized codes that cannot be turned back into values (e.g. a non-finite scale)."""


class DataCorrupted(VectorError, FormatError):
    """Serialized vector bytes that are truncated, mislabelled or fail their checksum."""


class AprCompatibilityWarning(UserWarning):
    """An APR file was written with dtype codes (or sizes) that aprender itself cannot read."""


class PlanWarning(UserWarning):
    """A codec was asked for, but the plan leaves some tensors as they are."""
