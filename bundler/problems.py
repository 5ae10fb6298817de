"""One broken rule found in a model file, as `validate` reports it and format checks return it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Problem:
    """One broken rule: what, where (file, byte offset, tensor, blocks) and whose rule."""

    message: str
    rule: str
    path: str | None = None
    offset: int | None = None
    tensor: str | None = None
    blocks: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def place(self) -> str:
        """`path at byte N`, or as much of it as is known."""
        at = f"byte {self.offset:,}" if self.offset is not None else ""
        return " at ".join(x for x in (self.path or "", at) if x)
