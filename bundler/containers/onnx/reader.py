"""Reading an ONNX model into a Bundle: every tensor wherever it lives (see graph.py), its
bytes left where they are: a slice of the parsed protobuf's `raw_data`, or a checked byte
range of an external-data file (memory-mapped only when read)."""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from bundler.bundle import ArraySource, Bundle, BytesSource, FileSource, Metadata, Tensor
from bundler.codecs import get
from bundler.containers.limits import shape_problem
from bundler.containers.onnx import deps
from bundler.containers.onnx.details import OnnxDetails
from bundler.containers.onnx.graph import CONSTANT_LISTS, Site, scopes, sites
from bundler.containers.onnx.schema import ELEMENT_TYPES, MAX_DIMS, NAME, WIDENED, type_name
from bundler.containers.onnx.utf8 import bad_string
from bundler.containers.onnx.values import tensor_values
from bundler.containers.onnx.wire import LeftInFile, parse_in_place
from bundler.errors import FileNotFound, FormatError, TruncatedError

#: TensorProto.data_location of tensors kept in an external file.
EXTERNAL = 1


def sniff(head: bytes) -> bool:
    """True when `head` starts like a serialized ModelProto: field 1 (ir_version, a small
    varint) followed by another ModelProto field. ONNX has no magic number."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 64:
        return False
    # next field: producer_name..opset_import (2-8), metadata_props (14), then 20/25
    return head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72) or head[2:4] in (
        b"\xa2\x01",
        b"\xca\x01",
    )


def sniff_path(path: str) -> bool:
    """A file named `*.onnx` that no magic bytes claimed: read it as ONNX, so that a cut or
    corrupted model gets the ONNX reader's error rather than "unknown format"."""
    return os.path.isfile(path) and path.lower().endswith(".onnx")


def load_model(path: str) -> Any:
    """The parsed ModelProto of the file at `path` (external data not loaded), checked to
    be a model: a typed error for a file that does not parse or is not a model."""
    with _open(path) as f, _mapped(f) as data:
        return _parse(path, data)


def load_model_in_place(path: str) -> tuple[Any, LeftInFile | None]:
    """`load_model`, with the large float initializers of the main graph left in a
    private mapping of the file (see wire.py), for a rewrite that replaces most of them;
    and what was left there (None: nothing)."""
    with _open(path) as f:
        try:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):  # empty, or not a regular file
            return _parse(path, f.read()), None
    return parse_in_place(mapping, lambda data: _parse(path, data))


def _open(path: str) -> Any:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except IsADirectoryError:
        raise FormatError(path, None, "is a directory, not an ONNX model") from None


def _parse(path: str, data: Any) -> Any:
    """The checked ModelProto of the bytes `data` read from `path`."""
    onnx = deps.onnx()
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise TruncatedError(
            path, None, f"not a readable ONNX protobuf (truncated or corrupted): {exc}"
        ) from None
    _check_model(path, model)
    return model


@contextlib.contextmanager
def _mapped(f: Any) -> Iterator[Any]:
    """The bytes of the open file `f`: mapped read-only (the parser copies what it keeps,
    so the file is not copied into memory first), or read when it cannot be mapped (an
    empty file, or not a regular one)."""
    try:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        yield f.read()
        return
    try:
        with memoryview(mapped) as view:
            yield view
    finally:
        mapped.close()


def _check_model(path: str, model: Any) -> None:
    if model.ir_version < 1:
        raise TruncatedError(path, 0, "a protobuf but not an ONNX model: no ir_version")
    if not model.HasField("graph"):
        raise TruncatedError(path, None, "a protobuf but not an ONNX model: no graph")
    if model.ir_version >= 3 and not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        raise TruncatedError(
            path, None, "ONNX model without an opset_import for the default domain (cut short?)"
        )
    bad = bad_string(model)
    if bad is not None:
        raise FormatError(path, None, f"string field {bad} is not UTF-8 text (corrupted?)")


def read(path: str) -> Bundle:
    """The bundle of the ONNX model at `path` (every tensor, metadata from the model; the
    main graph's large float initializers stay in the file as byte ranges of it)."""
    path = os.fspath(path)
    model, left = load_model_in_place(path)
    metadata = model_metadata(model)
    tensors, skipped, external = [], [], []
    for site in sites(model):
        tensor = site_tensor(path, site, left)
        if tensor is None:
            skipped.append(site.name)
            continue
        tensors.append(tensor)
        if isinstance(tensor.source, FileSource) and tensor.source.path != path:
            base = os.path.dirname(os.path.abspath(path))
            location = os.path.relpath(tensor.source.path, base)
            external += [location] if location not in external else []
    if skipped:
        metadata["onnx.skipped"] = skipped
    return Bundle(
        metadata, tensors, format=NAME, path=path, format_info=_facts(path, model, external)
    )


def _facts(path: str, model: Any, external: list[str]) -> OnnxDetails:
    """What a rewrite and `inspect` need beyond the tensors."""
    graphs = list(scopes(model.graph))
    return OnnxDetails(
        model=path,
        ir_version=int(model.ir_version),
        opsets=tuple((o.domain or "ai.onnx", int(o.version)) for o in model.opset_import),
        producer=" ".join(filter(None, (model.producer_name, model.producer_version))),
        graphs=len(graphs),
        nodes=sum(len(s.graph.node) for s in graphs),
        external_files=tuple(external),
    )


def model_metadata(model: Any) -> Metadata:
    md = Metadata()
    md["onnx.ir_version"] = int(model.ir_version)
    for key in ("producer_name", "producer_version", "domain", "doc_string"):
        if getattr(model, key):
            md[f"onnx.{key}"] = getattr(model, key)
    if model.model_version:
        md["onnx.model_version"] = int(model.model_version)
    if model.graph.name:
        md["onnx.graph_name"] = model.graph.name
    for opset in model.opset_import:
        md[f"onnx.opset.{opset.domain or 'ai.onnx'}"] = int(opset.version)
    md["onnx.nodes"] = len(model.graph.node)
    for prop in model.metadata_props:
        md[f"onnx.meta.{prop.key}"] = prop.value
    return md


def site_tensor(path: str, site: Site, left: LeftInFile | None = None) -> Tensor | None:
    """The bundle tensor of one site (None for a STRING or COMPLEX128 tensor); `left`: the
    data its model's parse left in the file."""
    proto = site.proto()
    if proto is None:
        attr = site.attribute()
        return _list_constant(site.name, attr)
    return proto_tensor(path, site.name, proto, left)


def _list_constant(name: str, attr: Any) -> Tensor:
    elem = CONSTANT_LISTS[attr.name]
    values = {
        "value_float": [attr.f],
        "value_int": [attr.i],
        "value_floats": list(attr.floats),
        "value_ints": list(attr.ints),
    }[attr.name]
    array = np.array(values, dtype=np.float32 if elem == 1 else np.int64)
    if attr.name in ("value_float", "value_int"):
        array = array.reshape(())
    return Tensor.from_array(name, array)


def proto_tensor(path: str, name: str, proto: Any, left: LeftInFile | None = None) -> Tensor | None:
    """The bundle tensor of a TensorProto (its raw, external or left-in-file bytes in
    place)."""
    entry = ELEMENT_TYPES.get(proto.data_type)
    if entry is None:
        raise FormatError(path, None, f"tensor {name!r}: unknown element type {proto.data_type}")
    if entry[1] is None:
        return None
    codec = get(entry[1])
    shape = tuple(int(d) for d in proto.dims)
    if any(d < 0 for d in shape):
        raise FormatError(path, None, f"tensor {name!r}: negative dimension in {list(shape)}")
    problem = shape_problem(shape, MAX_DIMS)
    if problem:
        raise FormatError(path, None, f"tensor {name!r}: {problem}")
    n = math.prod(shape)
    packed = proto.data_type in WIDENED
    expected = (n + 1) // 2 if packed else codec.facts.nbytes(shape)
    in_file = None if left is None else left.range(proto)
    if in_file is not None:  # its length was checked against the type and dims
        return Tensor(name, shape, codec, FileSource(path, in_file[0], in_file[1], codec))
    if proto.data_location == EXTERNAL:
        source = _external(path, name, proto, expected, codec)
        if not packed:
            return Tensor(name, shape, codec, source)
        return _widened(path, name, proto, shape, source.raw().tobytes())
    if proto.HasField("raw_data"):
        if len(proto.raw_data) != expected:
            raise FormatError(
                path,
                None,
                f"tensor {name!r}: {type_name(proto.data_type)} {list(shape)} needs {expected:,} "
                f"bytes of raw_data, has {len(proto.raw_data):,}",
            )
        if not packed:
            return Tensor(name, shape, codec, BytesSource(proto.raw_data))
        return _widened(path, name, proto, shape, proto.raw_data)
    array = tensor_values(proto, name, path)
    if packed:
        return Tensor(name, shape, codec, ArraySource(array.astype(codec.facts.numpy_dtype), codec))
    raw = deps.onnx().numpy_helper.from_array(array).raw_data
    return Tensor(name, shape, codec, BytesSource(raw))


def _widened(path: str, name: str, proto: Any, shape: tuple[int, ...], raw: bytes) -> Tensor:
    """An INT4/UINT4 tensor as int8/uint8 values (two codes a byte, low nibble first)."""
    packed = np.frombuffer(raw, np.uint8)
    codes = np.empty(packed.size * 2, np.uint8)
    codes[0::2] = packed & 0x0F
    codes[1::2] = packed >> 4
    codes = codes[: math.prod(shape)]
    if proto.data_type == 22:  # INT4: sign-extend the nibble
        values = ((codes ^ 8).astype(np.int8) - 8).astype(np.int8)
        codec = get("i8")
    else:
        values, codec = codes, get("u8")
    return Tensor(name, shape, codec, ArraySource(values.reshape(shape), codec))


def external_info(proto: Any) -> dict[str, str]:
    return {e.key: e.value for e in proto.external_data}


def files_size(path: str, model: Any, found: list[Site] | None = None) -> int:
    """Bytes of the model file and the external-data files it names (`model` as parsed by
    `load_model`, before external data is read in; `found`: its `sites`, when known)."""
    seen = set()
    for site in sites(model) if found is None else found:
        proto = site.proto()
        if proto is not None and proto.data_location == EXTERNAL:
            seen.add(external_info(proto).get("location", ""))
    base = os.path.dirname(os.path.abspath(path))
    return os.path.getsize(path) + sum(
        os.path.getsize(os.path.join(base, loc)) for loc in seen if loc
    )


def _external(path: str, name: str, proto: Any, expected: int, codec: Any) -> FileSource:
    """The checked byte range of an external-data tensor."""
    info = external_info(proto)
    location = info.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or ".." in parts:
        raise FormatError(
            path, None, f"tensor {name!r}: external data location {location!r} is not a "
            "relative path inside the model's directory"
        )  # fmt: skip
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(expected)))
    except ValueError:
        raise FormatError(
            path, None, f"tensor {name!r}: external data offset/length are not integers"
        ) from None
    if not os.path.isfile(data_path):
        raise FormatError(
            path, None, f"tensor {name!r}: external data file {location!r} is missing"
        )
    size = os.path.getsize(data_path)
    if offset < 0 or length < 0:
        raise FormatError(data_path, None, f"tensor {name!r}: negative external offset/length")
    if length != expected:
        raise FormatError(
            data_path,
            offset,
            f"tensor {name!r}: {type_name(proto.data_type)} {list(proto.dims)} needs "
            f"{expected:,} bytes, its external-data length says {length:,}",
        )
    if offset + length > size:
        raise TruncatedError(
            data_path,
            offset,
            f"tensor {name!r} needs bytes {offset:,}..{offset + length:,} but the file ends "
            f"at {size:,}",
        )
    return FileSource(data_path, offset, length, codec)
