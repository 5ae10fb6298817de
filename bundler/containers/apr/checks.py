"""APR checks beyond what the header reader enforces: the footer CRC over the whole file,
and with `--strict`, what aprender would refuse."""

from __future__ import annotations

import os

from bundler.bundle import Bundle
from bundler.codecs import get
from bundler.containers.apr.crc import file_crc
from bundler.containers.apr.schema import (
    APRENDER_MAX_METADATA,
    FOOTER_SIZE,
    HEADER_COMPILED,
    HEADER_SIZE,
)
from bundler.containers.apr.writer import non_native
from bundler.containers.runtimes import affine_refused
from bundler.problems import Problem

#: Tensors named in one aprender problem before "and N more".
SHOWN = 5


def check(bundle: Bundle, files: list[str]) -> list[Problem]:
    """The footer CRC, streamed over every byte before the footer."""
    path = files[0]
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size - FOOTER_SIZE
        f.seek(end)
        stored = int.from_bytes(f.read(FOOTER_SIZE), "little")
        crc = file_crc(f, end)
    if crc == stored:
        return []
    message = (
        f"footer CRC mismatch: stored {stored:#010x}, computed {crc:#010x} over bytes "
        f"0..{end:,} (the file is corrupt)"
    )
    return [Problem(message, "checksum", path, end)]


def check_strict(bundle: Bundle, files: list[str]) -> list[Problem]:
    """Dtype codes aprender cannot read, a metadata section larger than it reads, and
    tensors aprender cannot run."""
    path = files[0]
    problems = []
    for codec, names in non_native(list(bundle.tensors.values())).items():
        shown = ", ".join(repr(n) for n in names[:SHOWN])
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        message = (
            f"aprender cannot read dtype code {get(codec).facts.apr_code} ({codec}, this "
            f"project's extension) of {len(names)} tensor(s): {shown}{more}"
        )
        problems.append(Problem(message, "aprender", path, tensor=names[0]))
    with open(path, "rb") as f:
        head = HEADER_COMPILED.parse(f.read(HEADER_SIZE))
    if head.metadata_size > APRENDER_MAX_METADATA:
        message = (
            f"the metadata section is {head.metadata_size:,} bytes; aprender reads at most "
            f"{APRENDER_MAX_METADATA:,}"
        )
        problems.append(Problem(message, "aprender", path, head.metadata_offset))
    return problems + affine_refused(bundle, path, "aprender")
