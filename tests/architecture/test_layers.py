"""The package's layering: no import cycles, the library never imports the command line,
and the format-neutral modules reach formats only through the protocol."""

from __future__ import annotations

import ast
import importlib

import pytest
from importgraph import ROOT, cycles, graph, modules, unresolved

from bundler.containers import registry

#: Modules that must work for every format without naming one.
FORMAT_NEUTRAL = (
    "bundler.validate", "bundler.inspection", "bundler.pipeline", "bundler.cli",
    "bundler.agreement",
)  # fmt: skip
#: CLI modules allowed format names as words: the codec table's per-format id columns, and
#: the benchmarks' columns naming the reference tools they run beside (the `gguf` package).
NAMES_AS_WORDS = ("bundler.cli.types", "bundler.cli.bench")
#: Entry points that exist to run the CLI.
CLI_ENTRY = ("bundler.__main__",)


def _neutral(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in FORMAT_NEUTRAL)


@pytest.mark.parametrize("name", sorted(m for m in modules() if m not in CLI_ENTRY))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_every_import_of_a_package_module_names_one_that_exists():
    # imports inside functions run only when called: a moved module must not leave one behind
    assert unresolved() == {}


def test_the_import_graph_sees_known_edges():
    edges = graph()
    assert "bundler.containers" in edges["bundler.validate"]
    assert "bundler.bundle" in edges["bundler.containers.gguf.format"]


@pytest.mark.parametrize("name", sorted(m for m in modules() if not m.startswith("bundler.cli")))
def test_the_library_never_imports_the_command_line(name):
    if name in CLI_ENTRY:
        pytest.skip("the `python -m bundler` entry point runs the CLI")
    assert not [m for m in graph()[name] if m == "bundler.cli" or m.startswith("bundler.cli.")]


@pytest.mark.parametrize("name", sorted(m for m in modules() if _neutral(m)))
def test_format_neutral_modules_import_no_format_package(name):
    private = [
        m
        for m in graph()[name]
        for fmt in registry.names()
        if m == f"bundler.containers.{fmt}" or m.startswith(f"bundler.containers.{fmt}.")
    ]
    assert private == []


@pytest.mark.parametrize(
    "name",
    sorted(m for m in modules() if _neutral(m) and not m.startswith(NAMES_AS_WORDS)),
)
def test_format_neutral_modules_name_no_format(name):
    tree = ast.parse(modules()[name].read_text())
    named = [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.lower() in registry.names()
    ]
    assert named == []


def test_the_format_name_check_would_catch_a_switch_on_format():
    source = 'def f(bundle):\n    return bundle.format == "apr"\n'
    found = [
        n.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Constant) and n.value in registry.names()
    ]
    assert found == ["apr"]


def test_the_reference_tooling_is_not_in_the_installed_package():
    assert not list((ROOT / "bundler").glob("reference/*.py"))
    assert (ROOT / "tools" / "reference" / "ggml_c.py").exists()
