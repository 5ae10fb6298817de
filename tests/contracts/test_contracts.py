"""The project's contracts: schema, index, stated facts, and every falsification test they name.

The named tests are collected and run in one pytest subprocess (bundler.contracts.check);
they are chosen to run in well under a minute together.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bundler import contracts

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / contracts.CONTRACTS_DIR


def _contract_files() -> list[Path]:
    return sorted(p for p in BASE.rglob("*.yaml") if p.name != contracts.INDEX)


@pytest.fixture(scope="module")
def loaded():
    return contracts.load(ROOT)


@pytest.fixture(scope="module")
def collected():
    """Every named falsification test looked up among the tests pytest collects."""
    return contracts.check(ROOT, run=False)


@pytest.mark.parametrize("path", _contract_files(), ids=lambda p: p.relative_to(BASE).as_posix())
def test_contract_file_matches_the_schema(path):
    schema = json.loads((BASE / contracts.SCHEMA).read_text())
    assert contracts.validate(yaml.safe_load(path.read_text()), schema) == []


def test_index_matches_its_schema_and_lists_every_contract_file_on_disk_and_no_other(loaded):
    index, found, problems = loaded
    assert problems == []
    listed = sorted(entry["file"] for entry in index["contracts"])
    assert listed == [p.relative_to(BASE).as_posix() for p in _contract_files()]
    assert sorted(c.path for c in found) == _contract_files()


def test_contract_ids_are_unique_and_the_index_names_them(loaded):
    index, found, _ = loaded
    assert len({c.id for c in found}) == len(found)
    by_file = {entry["file"]: entry["id"] for entry in index["contracts"]}
    assert {c.path.relative_to(BASE).as_posix(): c.id for c in found} == by_file


def test_there_is_a_contract_per_codec_family_per_format_and_for_recipes(loaded):
    from bundler.codecs import TABLE

    _, found, _ = loaded
    by_kind = {kind: {c.data["subject"] for c in found if c.data["kind"] == kind} for kind in
               ("codec", "format", "recipes")}  # fmt: skip
    # a family is the module or package of bundler.codecs holding its kernels
    families = {f.kernels.split(".")[2] for f in TABLE if f.kernels}
    assert all(any(family in s for s in by_kind["codec"]) for family in families), families
    from bundler.containers import formats

    assert set(formats()) == {c.id.split(".")[1] for c in found if c.data["kind"] == "format"}
    assert len(by_kind["recipes"]) == 1


def test_every_encodable_codec_has_its_facts_stated_in_a_contract(loaded):
    from bundler.codecs import TABLE

    _, found, _ = loaded
    stated = {name for c in found for name in c.data.get("codecs", {})}
    # every encodable codec but the storage-only element types nobody quantizes to
    others = {"i16", "u16", "u32", "u64", "bool", "c64"}
    kernels = {f.name for f in TABLE if f.kernels and f.name not in others}
    kernels -= {f.name for f in TABLE if f.name.startswith("f8_")}
    assert stated >= kernels


def test_codec_facts_stated_in_contracts_agree_with_the_facts_table(loaded):
    _, found, problems = loaded
    assert not [p for p in problems if "codec" in p]
    assert sum(len(c.data.get("codecs", {})) for c in found) >= 20


def test_every_invariant_names_at_least_one_falsification_test(loaded):
    _, found, _ = loaded
    for contract in found:
        for invariant in contract.data["invariants"]:
            assert invariant["falsified_by"], f"{contract.id}:{invariant['id']}"


def test_every_named_falsification_test_exists(collected):
    assert collected.problems == []
    assert len(collected.node_ids) >= 100


# runs about 1000 test cases again in one subprocess (5 minutes of a 32-minute CI run), each
# of which the default run runs anyway; `-m long` runs it
@pytest.mark.long
def test_every_named_falsification_test_passes():
    report = contracts.check(ROOT, run=True)
    assert report.ran
    assert report.problems == []
