"""GGUF: llama.cpp's model container, read in versions 2 and 3 (either byte order) and
written as version 3 (formats/gguf.md).

Reading costs the header: tensors stay in the file as `FileSource` byte ranges. Writing
streams each tensor from its source. Split sets (`<stem>-00001-of-0000N.gguf`) are read as
one bundle and written with `split_max_size=` / `split_max_tensors=`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from bundler.atomic import output_group
from bundler.bundle import Bundle, Tensor
from bundler.containers.gguf import split as gguf_split
from bundler.containers.gguf.checks import check as check
from bundler.containers.gguf.checks import check_strict as check_strict
from bundler.containers.gguf.details import GgufDetails, SkippedTensor, SplitSet
from bundler.containers.gguf.reader import Layout, parse
from bundler.containers.gguf.schema import MAGIC
from bundler.containers.gguf.schema import NAME as NAME
from bundler.containers.gguf.schema import WRITE_VERSION as WRITE_VERSION
from bundler.containers.gguf.writer import FilePlan, alignment_of, file_head, write_file
from bundler.containers.protocol import claims_no_path
from bundler.errors import UsageError
from bundler.tensortable import TensorTable

TITLE = "GGUF"
EXTENSIONS = ("gguf",)
SPLIT_OPTION = "split_max_size"
WRITES_FOLDER = False
DETAILS = GgufDetails

#: Options `write` takes, with their defaults.
WRITE_OPTIONS = {
    "big_endian": None,
    "llama_compatible": True,
    "split_max_size": 0,
    "split_max_tensors": 0,
    "drop_unknown": False,
    "split_groups": None,
}
#: The write option that lays the tensors out in given shards (`--keep-split`).
KEEP_SPLIT_OPTION = "split_groups"


class UnknownTensorTypeWarning(UserWarning):
    """A GGUF tensor of a GGML type bundler does not know was left out of the bundle."""


def sniff(head: bytes) -> bool:
    """True when `head` starts like a GGUF file."""
    return head[:4] == MAGIC


#: Files of this format always start with its magic bytes.
sniff_path = claims_no_path


def read(path: str | os.PathLike[str]) -> Bundle:
    """Open a GGUF file (or the whole split set it belongs to) as a bundle."""
    path = os.fspath(path)
    layout = parse(path)
    keys = gguf_split.take_split_keys(layout)
    layouts = [layout]
    first = path
    if keys is not None and keys[gguf_split.SPLIT_COUNT] > 1:
        layouts, first = gguf_split.read_set(path, layout, keys)
    return _bundle(first, layouts, keys)


def read_header(path: str) -> Bundle:
    """The same as `read`: GGUF has no whole-file checks beyond its headers."""
    return read(path)


def describe(bundle: Bundle) -> GgufDetails:
    """The GGUF details of `bundle` (the defaults of a new file when it was not read from
    one)."""
    return GgufDetails.of(bundle) or GgufDetails()


def _bundle(path: str, layouts: list[Layout], split_keys: dict[str, int] | None) -> Bundle:
    first = layouts[0]
    tensors = TensorTable.concat([layout.table() for layout in layouts])
    skipped = tuple(
        SkippedTensor(t.name, t.ggml_type, tuple(t.dims), x.path)
        for x in layouts
        for t in x.skipped
    )
    for s in skipped:
        warnings.warn(
            f"{s.path}: tensor {s.name!r} has GGML type {s.ggml_type}, which bundler "
            "does not know; it is left out of the bundle",
            UnknownTensorTypeWarning,
            stacklevel=3,
        )
    split = None
    if len(layouts) > 1 or split_keys is not None:
        split = SplitSet(len(layouts), tuple(x.path for x in layouts))
    info = GgufDetails(
        version=first.version,
        big_endian=first.big_endian,
        alignment=first.alignment,
        padded_end=first.file_size >= first.padded_end or bool(first.tensors),
        skipped_tensors=skipped,
        split=split,
    )
    return Bundle(first.metadata, tensors, format=NAME, path=path, format_info=info)


def write(
    bundle: Bundle, path: str | os.PathLike[str], *, force: bool = True, **options: Any
) -> None:
    """Write `bundle` as GGUF version 3 (without `force`, refuse an existing `path`).

    Options: `big_endian` (default: the byte order of the GGUF the bundle was read from,
    else little-endian), `llama_compatible` (default True: refuse what llama.cpp cannot
    read), `split_max_size` / `split_max_tensors` (write a split set), `drop_unknown`
    (write a bundle whose source had tensors of unknown type, without them), `split_groups`
    (tensor counts of the shards, in order: llama-quantize's `--keep-split`; one group is
    written as `<stem>-00001-of-00001.gguf` without split keys, as llama-quantize does).
    """
    unknown = set(options) - set(WRITE_OPTIONS)
    if unknown:
        raise UsageError(
            f"unknown GGUF write option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(WRITE_OPTIONS)}"
        )
    opts = {**WRITE_OPTIONS, **options}
    plans = plan_files(bundle, os.fspath(path), **opts)
    with output_group(entry=plans[0].path):  # a split set appears whole or not at all
        for plan in plans:
            write_file(plan, _big_endian(bundle, opts["big_endian"]), force)


def planned_size(bundle: Bundle, path: str | os.PathLike[str], **options: Any) -> int:
    """The bytes `write` would write (every file of a split set), from headers and codecs."""
    unknown = set(options) - set(WRITE_OPTIONS)
    if unknown:
        raise UsageError(f"unknown GGUF write option(s) {', '.join(sorted(unknown))}")
    plans = plan_files(bundle, os.fspath(path), **{**WRITE_OPTIONS, **options})
    return sum(plan.size for plan in plans)


def language_model(
    path: str, *, context: int, threads: int | None = None, tokenizer: Any = None
) -> Any:
    """The model at `path` loaded in llama.cpp (the optional extra `bundler[llama]`) with a
    context of `context` tokens: `bundler.agreement`'s runtime for GGUF files (llama.py). A
    GGUF model tokenizes with its own vocabulary: a `tokenizer` given for the models that
    carry none is closed unused (the comparison checks that both tokenize alike)."""
    from bundler.containers.gguf.llama import LlamaModel

    if tokenizer is not None:
        tokenizer.close()
    return LlamaModel(path, context, threads)


def tokenizer(path: str) -> Any:
    """The vocabulary of the GGUF file at `path` as a tokenizer for models in formats that
    carry none (llama.py's `LlamaVocab`, the optional extra `bundler[llama]`)."""
    from bundler.containers.gguf.llama import LlamaVocab

    return LlamaVocab(path)


def _big_endian(bundle: Bundle, asked: bool | None) -> bool:
    if asked is not None:
        return bool(asked)
    info = GgufDetails.of(bundle)
    return info is not None and info.big_endian


def plan_files(
    bundle: Bundle,
    path: str,
    *,
    big_endian: bool | None = None,
    llama_compatible: bool = True,
    split_max_size: int = 0,
    split_max_tensors: int = 0,
    drop_unknown: bool = False,
    split_groups: list[int] | None = None,
) -> list[FilePlan]:
    """What `write` will write: one plan per output file, all checks done up front."""
    info = GgufDetails.of(bundle)
    skipped = info.skipped_tensors if info else ()
    if skipped and not drop_unknown:
        names = ", ".join(repr(s.name) for s in skipped)
        raise UsageError(
            f"the source GGUF had tensors of unknown type ({names}) that this bundle lacks; "
            "pass drop_unknown=True to write it without them"
        )
    for name, value in (
        ("split_max_size", split_max_size),
        ("split_max_tensors", split_max_tensors),
    ):
        if not isinstance(value, int) or value < 0:
            raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
    big = _big_endian(bundle, big_endian)
    items = [(k, v) for k, v in bundle.metadata.typed_items() if k not in gguf_split.SPLIT_KEYS]
    alignment = alignment_of(items)
    tensors = list(bundle.tensors.values())
    if split_groups is not None:
        if split_max_size or split_max_tensors:
            raise UsageError("keeping the input's split excludes split_max_size/_tensors")
        groups = _given_groups(tensors, split_groups)
        if len(groups) == 1:
            head = file_head(items, tensors, alignment, big, llama_compatible, True)
            return [FilePlan(gguf_split.shard_paths(path, 1)[0], head, tensors, alignment)]
    else:
        groups = gguf_split.group_tensors(tensors, split_max_size, split_max_tensors)
    if len(groups) == 1:
        pad_empty = info.padded_end if info else True
        head = file_head(items, tensors, alignment, big, llama_compatible, pad_empty)
        return [FilePlan(path, head, tensors, alignment)]
    paths = gguf_split.shard_paths(path, len(groups))
    later = gguf_split.later_shard_kvs(items)
    plans = []
    for i, (p, group) in enumerate(zip(paths, groups, strict=True)):
        kvs = (items if i == 0 else later) + gguf_split.split_kvs(i, len(groups), len(tensors))
        head = file_head(kvs, group, alignment, big, llama_compatible)
        plans.append(FilePlan(p, head, group, alignment))
    return plans


def _given_groups(tensors: list[Tensor], counts: list[int]) -> list[list[Tensor]]:
    if not counts or any(not isinstance(n, int) or n < 1 for n in counts):
        raise UsageError(f"split_groups must be positive tensor counts, got {counts!r}")
    if sum(counts) != len(tensors):
        raise UsageError(f"split_groups count {sum(counts)} tensors, the bundle has {len(tensors)}")
    groups, start = [], 0
    for n in counts:
        groups.append(tensors[start : start + n])
        start += n
    return groups
