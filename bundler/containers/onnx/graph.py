"""Where tensors live in an ONNX model: graph initializers, `Constant` nodes, and the
bodies of `If` / `Loop` / `Scan` subgraphs (any graph-valued attribute), each given a
stable, unique name.

A subgraph's tensors are named with the path of the nodes that hold it,
`<node>/<attribute>/<name>` per level, e.g. `If_0/else_branch/conv.weight`, where a node
without a name is `OpType_k`, the k-th node of its op type in its graph. Top-level tensors
keep their own names; a name taken twice gets `#2`, `#3`... in graph order.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Constant-node attributes that hold a value, and the element type of the list ones.
CONSTANT_TENSOR = "value"
CONSTANT_LISTS = {"value_float": 1, "value_floats": 1, "value_int": 7, "value_ints": 7}


@dataclass
class Scope:
    """One graph of a model and the name prefix of its tensors."""

    graph: Any  # onnx.GraphProto
    prefix: str
    parent: Scope | None = None


@dataclass
class Site:
    """One tensor of a model: its unique name, its graph, and where in it."""

    name: str
    scope: Scope
    kind: str  # "initializer" or "constant"
    index: int  # into graph.initializer or graph.node
    value_name: str  # the name consumers use (initializer name, Constant output)

    def proto(self) -> Any:
        """The TensorProto (None for a Constant given as value_float(s)/value_int(s))."""
        if self.kind == "initializer":
            return self.scope.graph.initializer[self.index]
        return constant_tensor(self.scope.graph.node[self.index])

    def attribute(self) -> Any:
        """The Constant node's value attribute."""
        return constant_attribute(self.scope.graph.node[self.index])


#: Graph walks kept inside `walk_once` (id of the main graph -> (graph, its scopes)).
_WALKS: contextvars.ContextVar[dict[int, tuple[Any, list[Scope]]] | None] = contextvars.ContextVar(
    "bundler_onnx_walks", default=None
)


@contextlib.contextmanager
def walk_once() -> Iterator[None]:
    """Inside the block, the scopes of a main graph are found once and reused: for a
    rewrite that adds and removes nodes but no subgraph-holding ones."""
    token = _WALKS.set({})
    try:
        yield
    finally:
        _WALKS.reset(token)


def forget_walks() -> None:
    """Drop the walks kept by `walk_once` (after node lists were rebuilt)."""
    walks = _WALKS.get()
    if walks is not None:
        walks.clear()


def scopes(graph: Any, prefix: str = "", parent: Scope | None = None) -> Iterator[Scope]:
    """Every graph of a model, the main one first, subgraphs depth first."""
    walks = _WALKS.get()
    if walks is None or prefix or parent is not None:
        yield from _scopes(graph, prefix, parent)
        return
    hit = walks.get(id(graph))
    if hit is None or hit[0] is not graph:
        hit = walks[id(graph)] = (graph, list(_scopes(graph, prefix, parent)))
    yield from hit[1]


def _scopes(graph: Any, prefix: str, parent: Scope | None) -> Iterator[Scope]:
    scope = Scope(graph, prefix, parent)
    yield scope
    seen: dict[str, int] = {}
    for node in graph.node:
        # unnamed nodes are counted per op type, so inserting other nodes keeps the label
        count = seen[node.op_type] = seen.get(node.op_type, -1) + 1
        label = node.name or f"{node.op_type}_{count}"
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _scopes(attr.g, f"{prefix}{label}/{attr.name}/", scope)
            for j, sub in enumerate(attr.graphs):
                yield from _scopes(sub, f"{prefix}{label}/{attr.name}.{j}/", scope)


def constant_attribute(node: Any) -> Any | None:
    """The attribute of a Constant node that holds a tensor or number list (None if other)."""
    for attr in node.attribute:
        if attr.name == CONSTANT_TENSOR or attr.name in CONSTANT_LISTS:
            return attr
    return None


def constant_tensor(node: Any) -> Any | None:
    attr = constant_attribute(node)
    return attr.t if attr is not None and attr.name == CONSTANT_TENSOR else None


def sites(model: Any) -> list[Site]:
    """Every tensor of `model` with a unique name, in graph order."""
    found: list[Site] = []
    taken: set[str] = set()
    for scope in scopes(model.graph):
        graph = scope.graph
        for i, init in enumerate(graph.initializer):
            found.append(_site(scope, "initializer", i, init.name, taken))
        for i, node in enumerate(graph.node):
            if _is_constant(node):
                found.append(_site(scope, "constant", i, node.output[0], taken))
    return found


def _is_constant(node: Any) -> bool:
    return (
        node.op_type == "Constant"
        and node.domain in ("", "ai.onnx")
        and bool(node.output)
        and constant_attribute(node) is not None
    )


def _site(scope: Scope, kind: str, index: int, value_name: str, taken: set[str]) -> Site:
    name = scope.prefix + value_name
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}#{n}"
    taken.add(unique)
    return Site(unique, scope, kind, index, value_name)


class Uses:
    """Who uses which value, for every graph of a model (built once, asked many times)."""

    def __init__(self, model: Any):
        self.scope_of: dict[int, Scope] = {}
        self.inputs: dict[int, dict[str, list[tuple[Any, int]]]] = {}
        self.children: dict[int, list[Any]] = {}
        self.defined: dict[int, set[str]] = {}
        for scope in scopes(model.graph):
            g = scope.graph
            key = id(g)
            self.scope_of[key] = scope
            table: dict[str, list[tuple[Any, int]]] = {}
            kids = []
            for node in g.node:
                for k, name in enumerate(node.input):
                    table.setdefault(name, []).append((node, k))
                for attr in node.attribute:
                    kids.extend(([attr.g] if attr.HasField("g") else []) + list(attr.graphs))
            self.inputs[key] = table
            self.children[key] = kids
            names = {i.name for i in g.initializer} | {i.name for i in g.input}
            self.defined[key] = names | {o for n in g.node for o in n.output}

    def consumers(self, scope: Scope, value_name: str) -> list[tuple[Any, int, Scope]]:
        """(node, input index, scope) of every use of `value_name` in `scope`'s graph and
        in the subgraphs that see it (not past a subgraph that defines the same name)."""
        key = id(scope.graph)
        found = [(n, k, scope) for n, k in self.inputs[key].get(value_name, [])]
        for sub in self.children[key]:
            if value_name not in self.defined[id(sub)]:
                found.extend(self.consumers(self.scope_of[id(sub)], value_name))
        return found


def is_graph_output(scope: Scope, value_name: str) -> bool:
    return any(o.name == value_name for o in scope.graph.output)
