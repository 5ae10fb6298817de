"""The contract checker can fail: broken, missing, unlisted and mis-stated contracts are reported.

Each test builds a small project in a temporary directory (the real schemas, an index, a
contract and a tests/ folder) and runs `bundler.contracts.check` on it.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from bundler import contracts

ROOT = Path(__file__).resolve().parents[2]

FAKE_TESTS = """
import pytest


def test_holds():
    assert 1 + 1 == 2


@pytest.mark.parametrize("n", [1, 2])
def test_holds_for_each(n):
    assert n > 0


def test_is_broken():
    assert 1 + 1 == 3, "deliberately broken"
"""


def _contract(nodes: list[str], id: str = "codec.example", **extra) -> dict:
    return {
        "id": id,
        "version": 1,
        "kind": "codec",
        "title": "An example",
        "subject": "an example",
        "invariants": [{"id": "holds", "statement": "It holds.", "falsified_by": nodes}],
        **extra,
    }


def _project(tmp_path: Path, contracts_by_file: dict[str, dict], index: dict | None = None) -> Path:
    base = tmp_path / "contracts"
    base.mkdir()
    for name in (contracts.SCHEMA, contracts.INDEX_SCHEMA):
        shutil.copy(ROOT / "contracts" / name, base / name)
    for file, data in contracts_by_file.items():
        (base / file).parent.mkdir(parents=True, exist_ok=True)
        (base / file).write_text(yaml.safe_dump(data))
    if index is None:
        index = {"version": 1, "contracts": [{"file": f, "id": d["id"]} for f, d in
                                             contracts_by_file.items()]}  # fmt: skip
    (base / contracts.INDEX).write_text(yaml.safe_dump(index))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake_contract_targets.py").write_text(textwrap.dedent(FAKE_TESTS))
    return tmp_path


FAKE = "tests/test_fake_contract_targets.py"


def test_a_project_whose_named_tests_pass_checks_clean(tmp_path):
    root = _project(
        tmp_path,
        {"example.yaml": _contract([f"{FAKE}::test_holds", f"{FAKE}::test_holds_for_each"])},
    )
    report = contracts.check(root)
    assert report.problems == [] and report.ok and report.ran
    assert report.node_ids == [f"{FAKE}::test_holds", f"{FAKE}::test_holds_for_each"]


def test_a_deliberately_broken_test_makes_the_check_fail(tmp_path):
    root = _project(
        tmp_path, {"example.yaml": _contract([f"{FAKE}::test_holds", f"{FAKE}::test_is_broken"])}
    )
    report = contracts.check(root)
    assert not report.ok
    assert report.problems == [f"example.yaml:holds: test {FAKE}::test_is_broken fails"]


def test_a_failing_parametrization_is_reported_under_the_bare_name(tmp_path):
    (tmp_path / "x").mkdir()
    root = _project(tmp_path / "x", {"example.yaml": _contract([f"{FAKE}::test_holds_for_each"])})
    (root / FAKE).write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('n', [1, -1])\n"
        "def test_holds_for_each(n):\n    assert n > 0\n"
    )
    report = contracts.check(root)
    assert report.problems == [f"example.yaml:holds: test {FAKE}::test_holds_for_each[-1] fails"]


def test_named_tests_that_do_not_exist_make_the_check_fail(tmp_path):
    missing = [
        f"{FAKE}::test_that_was_renamed",
        "tests/test_no_such_file.py::test_holds",
        f"{FAKE}::test_holds_for_each[3]",
    ]
    root = _project(tmp_path, {"example.yaml": _contract([f"{FAKE}::test_holds", *missing])})
    report = contracts.check(root, run=False)
    assert report.problems == [
        f"example.yaml:holds: test {node} does not exist" for node in sorted(missing)
    ]


def test_an_unlisted_contract_file_and_a_listed_missing_one_are_reported(tmp_path):
    index = {"version": 1, "contracts": [{"file": "gone.yaml", "id": "codec.gone"}]}
    root = _project(tmp_path, {"extra.yaml": _contract([f"{FAKE}::test_holds"])}, index=index)
    problems = contracts.load(root)[2]
    assert "extra.yaml: contract file not listed in index.yaml" in problems
    assert "gone.yaml: listed in index.yaml but missing" in problems


def test_an_id_that_disagrees_with_the_index_is_reported(tmp_path):
    index = {"version": 1, "contracts": [{"file": "a.yaml", "id": "codec.other"}]}
    root = _project(tmp_path, {"a.yaml": _contract([f"{FAKE}::test_holds"])}, index=index)
    problems = contracts.load(root)[2]
    assert problems == ["a.yaml: id 'codec.example' but index.yaml says 'codec.other'"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": 0}, "$.version: 0 is below 1"),
        ({"id": "Codec Example"}, "does not match"),
        ({"kind": "widget"}, "$.kind: 'widget' is not one of"),
        ({"invariants": []}, "$.invariants: fewer than 1 items"),
        ({"surprise": 1}, "$: unexpected key 'surprise'"),
        ({"invariants": [{"id": "x", "statement": "s", "falsified_by": []}]}, "fewer than 1 items"),
        (
            {"invariants": [{"id": "x", "statement": "s", "falsified_by": ["test_holds"]}]},
            "does not match",
        ),
        (
            {"invariants": [{"id": "x", "falsified_by": [f"{FAKE}::test_holds"]}]},
            "missing required key 'statement'",
        ),
    ],
)
def test_a_contract_that_breaks_the_schema_is_reported(tmp_path, change, expected):
    index = {"version": 1, "contracts": [{"file": "example.yaml", "id": "codec.example"}]}
    data = {**_contract([f"{FAKE}::test_holds"]), **change}
    problems = contracts.load(_project(tmp_path, {"example.yaml": data}, index=index))[2]
    assert problems and all(p.startswith("example.yaml: ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_codec_facts_that_disagree_with_the_facts_table_are_reported(tmp_path):
    data = _contract([f"{FAKE}::test_holds"], codecs={"q4_0": {"block_size": 32, "type_size": 19},
                                                      "q9_9": {"block_size": 1}})  # fmt: skip
    root = _project(tmp_path, {"example.yaml": data})
    assert contracts.load(root)[2] == [
        "example.yaml: codec q4_0: type_size is 18, the contract says 19",
        "example.yaml: codec 'q9_9' is not in the facts table",
    ]


def test_two_contracts_with_one_id_are_reported(tmp_path):
    node = [f"{FAKE}::test_holds"]
    root = _project(tmp_path, {"a.yaml": _contract(node), "b/c.yaml": _contract(node)})
    problems = contracts.load(root)[2]
    assert problems == ["b/c.yaml: id 'codec.example' also used by a.yaml"]


def test_yaml_that_does_not_parse_is_reported(tmp_path):
    root = _project(tmp_path, {"a.yaml": _contract([f"{FAKE}::test_holds"])})
    (root / "contracts" / "a.yaml").write_text("id: [unclosed\n")
    problems = contracts.load(root)[2]
    assert len(problems) == 1 and "cannot be read as YAML" in problems[0]


def test_the_validator_refuses_a_schema_keyword_it_does_not_know():
    with pytest.raises(ValueError, match="not supported"):
        contracts.validate(1, {"type": "integer", "multipleOf": 2})


@pytest.mark.parametrize(
    ("value", "schema", "problems"),
    [
        (True, {"type": "integer"}, ["$: expected integer, got bool"]),
        (3, {"type": ["integer", "null"]}, []),
        (None, {"type": ["integer", "null"]}, []),
        ([1, 1], {"type": "array", "uniqueItems": True}, ["$: items are not unique"]),
        (
            {"a": 1},
            {"$defs": {"s": {"type": "string"}}, "additionalProperties": {"$ref": "#/$defs/s"}},
            ["$.a: expected string, got int"],
        ),
        (
            {"B": 1},
            {"propertyNames": {"pattern": "^[a-z]+$"}},
            ["$.B<name>: 'B' does not match ^[a-z]+$"],
        ),
    ],
)
def test_the_validator_applies_each_keyword(value, schema, problems):
    assert contracts.validate(value, schema) == problems


def test_failed_node_ids_are_read_from_the_pytest_summary():
    out = (
        "FAILED tests/a.py::test_x - AssertionError: no\n"
        "ERROR tests/b.py::test_y[p-1]\n"
        "PASSED tests/c.py::test_z\n"
    )
    assert contracts.failed_node_ids(out) == ["tests/a.py::test_x", "tests/b.py::test_y[p-1]"]


def test_a_bare_name_covers_its_parametrizations_but_a_wrong_parameter_does_not():
    collected = {"tests/a.py::test_x[1]", "tests/a.py::test_x[2]", "tests/a.py::test_y"}
    assert contracts.missing_node_ids(
        [
            "tests/a.py::test_x",
            "tests/a.py::test_x[2]",
            "tests/a.py::test_y",
            "tests/a.py::test_x[3]",
        ],
        collected,
    ) == ["tests/a.py::test_x[3]"]
