"""Inspection reads headers and indexes only, never a tensor payload."""

from __future__ import annotations

import pytest

from bundler import inspection
from bundler.bundle import FileSource


@pytest.fixture
def payloads_forbidden(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor payload was read")

    monkeypatch.setattr(FileSource, "raw", refuse)
    monkeypatch.setattr(FileSource, "iter_raw", refuse)


@pytest.mark.parametrize("fixture", ["smollm2_gguf", "minilm_safetensors"])
def test_describe_reads_no_tensor_payload(fixture, request, payloads_forbidden):
    report = inspection.describe(request.getfixturevalue(fixture), full=True)
    assert report["totals"]["tensors"] == len(report["tensors"]) > 100
