"""TOY: magic `TOY\\0`, a little-endian u32 header length, a JSON header (metadata as
plain values, tensors as name, shape, codec, offset, size) and the tensors' stored bytes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from bundler.atomic import atomic_output
from bundler.bundle import Bundle, FileSource, Metadata, Tensor
from bundler.codecs import get
from bundler.containers.protocol import Details, claims_no_path
from bundler.errors import FormatError
from bundler.problems import Problem
from bundler.rawcopy import copy_raw

NAME = "toy"
TITLE = "TOY"
EXTENSIONS = ("toy",)
SPLIT_OPTION = None
WRITES_FOLDER = False
MAGIC = b"TOY\0"


@dataclass(frozen=True)
class ToyDetails(Details):
    FORMAT = NAME

    header_size: int = 0

    def facts(self) -> dict[str, Any]:
        return {"header_size": self.header_size}

    def headline(self, size: str) -> str:
        return f"TOY, header {self.header_size} bytes; {size}"


DETAILS = ToyDetails


def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


#: Files of this format always start with its magic bytes.
sniff_path = claims_no_path


def read(path: str | os.PathLike[str]) -> Bundle:
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise FormatError(path, 0, "not a TOY file")
        size = int.from_bytes(f.read(4), "little")
        header = json.loads(f.read(size))
    start = 8 + size
    tensors = [
        Tensor(
            t["name"],
            tuple(t["shape"]),
            get(t["codec"]),
            FileSource(path, start + t["offset"], t["size"], get(t["codec"])),
        )
        for t in header["tensors"]
    ]
    return Bundle(Metadata(header["metadata"]), tensors, NAME, path, ToyDetails(header_size=size))


def read_header(path: str) -> Bundle:
    return read(path)


def write(bundle: Bundle, path: str | os.PathLike[str], **options: Any) -> None:
    rows, offset = [], 0
    for t in bundle.tensors.values():
        rows.append(
            {"name": t.name, "shape": list(t.shape), "codec": t.codec.name, "offset": offset,
             "size": t.nbytes}
        )  # fmt: skip
        offset += t.nbytes
    metadata = {k: v.plain() for k, v in bundle.metadata.typed_items()}
    header = json.dumps({"metadata": metadata, "tensors": rows}).encode()
    with atomic_output(os.fspath(path)) as f:
        f.write(MAGIC + len(header).to_bytes(4, "little") + header)
        for t in bundle.tensors.values():
            copy_raw(t, f)


def describe(bundle: Bundle) -> ToyDetails:
    return ToyDetails.of(bundle) or ToyDetails()


def check(bundle: Bundle, files: list[str]) -> list[Problem]:
    return []


def check_strict(bundle: Bundle, files: list[str]) -> list[Problem]:
    return [Problem("no reference reader reads TOY files", "toy", files[0])]
