"""Where tensors live in an ONNX model: graph initializers, `Constant` nodes, and the
bodies of `If` / `Loop` / `Scan` subgraphs (any graph-valued attribute), each given a
stable, unique name.

A subgraph's tensors are named with the path of the nodes that hold it,
`<node>/<attribute>/<name>` per level, e.g. `If_0/else_branch/conv.weight`, where a node
without a name is `OpType_k`, the k-th node of its op type in its graph. Top-level tensors
keep their own names; a name taken twice gets `#2`, `#3`... in graph order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Constant-node attributes that hold a value, and the element type of the list ones.
CONSTANT_TENSOR = "value"
CONSTANT_LISTS = {"value_float": 1, "value_floats": 1, "value_int": 7, "value_ints": 7}
#: The default domain's ops that hold graphs (If branches, Loop, Scan and SequenceMap
#: bodies): the attributes of its other ops are values, not looked into (those of other
#: domains' ops are).
GRAPH_OPS = frozenset(("If", "Loop", "Scan", "SequenceMap"))
#: AttributeProto types that cannot hold a graph (FLOAT, INT, STRING, TENSOR, FLOATS,
#: INTS, STRINGS, TENSORS); an attribute without a type (old models) is looked into.
SCALAR_ATTRIBUTES = frozenset((1, 2, 3, 4, 6, 7, 8, 9))


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
    #: the initializer's TensorProto, or the Constant node's value attribute
    value: Any = field(default=None, repr=False, compare=False)

    def proto(self) -> Any:
        """The TensorProto (None for a Constant given as value_float(s)/value_int(s))."""
        if self.kind == "initializer":
            return self.value
        return self.value.t if self.value.name == CONSTANT_TENSOR else None

    def attribute(self) -> Any:
        """The Constant node's value attribute."""
        return self.value


def scopes(graph: Any, prefix: str = "", parent: Scope | None = None) -> Iterator[Scope]:
    """Every graph of a model, the main one first, subgraphs depth first."""
    scope = Scope(graph, prefix, parent)
    yield scope
    seen: dict[str, int] = {}
    for node in graph.node:
        op = node.op_type
        count = seen[op] = seen.get(op, -1) + 1
        for sub, sub_prefix in _held(node, prefix, op, count):
            yield from scopes(sub, sub_prefix, scope)


def _held(node: Any, prefix: str, op: str, count: int) -> Sequence[tuple[Any, str]]:
    """The graphs `node` holds and the name prefix of each (`count`: how many nodes of
    its op type came before it in its graph)."""
    if op not in GRAPH_OPS and node.domain in ("", "ai.onnx"):
        return ()
    found = []
    for attr in node.attribute:
        if attr.type in SCALAR_ATTRIBUTES:
            continue
        # unnamed nodes are counted per op type, so inserting other nodes keeps the label
        if attr.HasField("g"):
            found.append((attr.g, f"{prefix}{node.name or f'{op}_{count}'}/{attr.name}/"))
        for j, sub in enumerate(attr.graphs):
            found.append((sub, f"{prefix}{node.name or f'{op}_{count}'}/{attr.name}.{j}/"))
    return found


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
            found.append(_site(scope, "initializer", i, init.name, taken, init))
        for i, node in enumerate(graph.node):
            if node.op_type == "Constant":
                attr = _constant_site(node)
                if attr is not None:
                    found.append(_site(scope, "constant", i, node.output[0], taken, attr))
    return found


def _constant_site(node: Any) -> Any | None:
    """The value attribute of a Constant node that holds a tensor of the model (None when
    the node is of another domain, has no output or holds no value)."""
    if node.domain not in ("", "ai.onnx") or not node.output:
        return None
    return constant_attribute(node)


def _site(
    scope: Scope, kind: str, index: int, value_name: str, taken: set[str], value: Any
) -> Site:
    name = scope.prefix + value_name
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}#{n}"
    taken.add(unique)
    return Site(unique, scope, kind, index, value_name, value)


class ModelIndex:
    """What a rewrite asks of a model, read in one walk of its graphs: every graph
    (`scopes`), every tensor (`sites`, named as `sites()` names them), who uses which
    value, the value of each initializer and Constant, every name taken and every op
    type present. Built once, asked many times; stale once node lists are rebuilt."""

    def __init__(self, model: Any):
        self.scopes: list[Scope] = []
        self.sites: list[Site] = []
        self.taken: set[str] = set()
        self.op_types: set[str] = set()
        self.inputs: dict[int, dict[str, list[tuple[Any, int]]]] = {}
        self.children: dict[int, list[Scope]] = {}
        self.defined: dict[int, set[str]] = {}
        #: graph -> value name -> its TensorProto (None: a number-list Constant)
        self.values: dict[int, dict[str, Any]] = {}
        #: graph -> every value name used as an input in it or in a subgraph below it
        self.below: dict[int, set[str]] = {}
        #: graph -> its output names (as asked)
        self.outputs: dict[int, set[str]] = {}
        self._walk(model.graph, "", None, set())

    def _walk(self, g: Any, prefix: str, parent: Scope | None, named: set[str]) -> Scope:
        """Read graph `g` (the scopes, sites and uses as `scopes` and `sites` walk them),
        then the graphs its nodes hold."""
        scope = Scope(g, prefix, parent)
        self.scopes.append(scope)
        table: dict[str, list[tuple[Any, int]]] = {}
        defined: set[str] = set()
        values: dict[str, Any] = {}
        for i, init in enumerate(g.initializer):
            name = init.name
            defined.add(name)
            values.setdefault(name, init)
            self.sites.append(_site(scope, "initializer", i, name, named, init))
        defined.update(v.name for v in g.input)
        seen: dict[str, int] = {}
        held: list[tuple[Any, str]] = []
        node_names = []
        for i, node in enumerate(g.node):
            op = node.op_type
            count = seen[op] = seen.get(op, -1) + 1
            outputs = node.output
            defined.update(outputs)
            node_names.append(node.name)
            for k, name in enumerate(node.input):
                uses = table.get(name)
                if uses is None:
                    table[name] = [(node, k)]
                else:
                    uses.append((node, k))
            if op != "Constant":
                held += _held(node, prefix, op, count)
            elif outputs:
                attr = constant_attribute(node)
                tensor = attr.t if attr is not None and attr.name == CONSTANT_TENSOR else None
                values.setdefault(outputs[0], tensor)
                if attr is not None and node.domain in ("", "ai.onnx"):
                    self.sites.append(_site(scope, "constant", i, outputs[0], named, attr))
        key = id(g)
        self.op_types.update(seen)
        self.taken.update(node_names)
        self.taken |= defined
        self.inputs[key] = table
        self.defined[key] = defined
        self.values[key] = values
        kids = self.children[key] = [self._walk(sub, pre, scope, named) for sub, pre in held]
        used = set(table)
        for kid in kids:
            used |= self.below[id(kid.graph)]
        self.below[key] = used
        return scope

    def consumers(self, scope: Scope, value_name: str) -> list[tuple[Any, int, Scope]]:
        """(node, input index, scope) of every use of `value_name` in `scope`'s graph and
        in the subgraphs that see it (not past a subgraph that defines the same name)."""
        key = id(scope.graph)
        found = [(n, k, scope) for n, k in self.inputs[key].get(value_name, ())]
        for sub in self.children[key]:
            sub_key = id(sub.graph)
            if value_name in self.below[sub_key] and value_name not in self.defined[sub_key]:
                found.extend(self.consumers(sub, value_name))
        return found

    def is_output(self, scope: Scope, value_name: str) -> bool:
        """True when `value_name` is an output of `scope`'s graph."""
        key = id(scope.graph)
        outputs = self.outputs.get(key)
        if outputs is None:
            outputs = self.outputs[key] = {o.name for o in scope.graph.output}
        return value_name in outputs

    def constant(self, scope: Scope | None, name: str) -> Any | None:
        """The TensorProto of the initializer or Constant node of `scope` (or an enclosing
        scope) that defines `name` (None when none does or it holds a number list)."""
        while scope is not None:
            values = self.values[id(scope.graph)]
            if name in values:
                return values[name]
            scope = scope.parent
        return None
