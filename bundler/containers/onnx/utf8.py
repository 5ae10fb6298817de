"""Where a parsed ONNX message holds a string that is not UTF-8.

ONNX's schema is proto2, whose parser does not check string fields: one that is not valid
UTF-8 comes back as `bytes` where every reader expects `str` (a name, an op type, a
metadata value). A model whose strings are not text is not a valid model.
"""

from __future__ import annotations

import functools
from typing import Any

#: FieldDescriptor.TYPE_STRING and TYPE_MESSAGE.
_STRING, _MESSAGE = 9, 11


def bad_string(message: Any) -> str | None:
    """The path (`graph.node[3].input[0]`) of the first string field of `message`, or of
    a message in it, that is not valid UTF-8; None when every one is. A tensor's data is
    not read."""
    if message.DESCRIPTOR.name == "TensorProto":
        fields = [(f, getattr(message, f.name)) for f in _tensor_text_fields(message.DESCRIPTOR)]
    else:
        fields = message.ListFields()  # the fields set, without a look-up per field
    for field, value in fields:
        if field.type == _STRING:
            found = _bad_text(field, value)
        elif field.type != _MESSAGE:
            continue
        elif field.is_repeated:
            found = _bad_in_list(field.name, value)
        else:
            inner = bad_string(value)
            found = None if inner is None else f"{field.name}.{inner}"
        if found is not None:
            return found
    return None


@functools.cache
def _tensor_text_fields(descriptor: Any) -> tuple[Any, ...]:
    """TensorProto's string fields and its repeated message fields (external data
    entries, metadata): not its data, whose bytes `ListFields` would copy."""
    return tuple(
        f for f in descriptor.fields
        if f.type == _STRING or (f.type == _MESSAGE and f.is_repeated)
    )  # fmt: skip


def _bad_text(field: Any, value: Any) -> str | None:
    if not field.is_repeated:
        return field.name if value.__class__ is bytes else None
    for i, v in enumerate(value):
        if v.__class__ is bytes:
            return f"{field.name}[{i}]"
    return None


def _bad_in_list(name: str, messages: Any) -> str | None:
    for i, m in enumerate(messages):
        inner = bad_string(m)
        if inner is not None:
            return f"{name}[{i}].{inner}"
    return None
