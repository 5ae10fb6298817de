"""`bundler.save` for export pipelines: what the caller asks is what happens. `pure=True`
and `tensor_types` override llama-quantize's name rules, a dict is accepted for
`tensor_types`, every tensor left as it is is reported (and warned about when it was kept
for its name), and an existing output is refused unless `force=True`."""

from __future__ import annotations

import warnings

import gguf
import numpy as np
import pytest
from conversion_oracles import read_gguf

import bundler
from bundler.errors import OutputExistsError, PlanWarning, UsageError

ROWS, COLS = 64, 256


def _arrays() -> dict[str, np.ndarray]:
    """What an export pipeline hands over: names that do not end in "weight"."""
    rng = np.random.default_rng(17)
    return {
        "emb": rng.standard_normal((ROWS, COLS), dtype=np.float32),
        "lm_head": rng.standard_normal((ROWS, COLS), dtype=np.float32),
        "norm.bias": rng.standard_normal(COLS, dtype=np.float32),
    }


def _codecs(path) -> dict[str, str]:
    tensors, _ = read_gguf(path)
    return {name: t.codec for name, t in tensors.items()}


def _quiet_save(*args, **kwargs) -> bundler.Report:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PlanWarning: nothing 2-D was left out
        return bundler.save(*args, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {"pure": True},
        {"tensor_types": [(".*", "q4_0")]},
        {"tensor_types": {".*": "q4_0"}},
        {"tensor_types": {"^(emb|lm_head)$": "q4_0"}},
    ],
    ids=["pure", "pairs", "dict", "dict-named"],
)
def test_pure_or_tensor_types_quantize_tensors_whatever_their_names(tmp_path, options):
    arrays = _arrays()
    report = _quiet_save(arrays, tmp_path / "m.gguf", codec="q4_0", **options)
    tensors, _ = read_gguf(tmp_path / "m.gguf")
    for name in ("emb", "lm_head"):
        expected = gguf.quants.quantize(arrays[name], gguf.GGMLQuantizationType.Q4_0)
        assert tensors[name].codec == "q4_0"
        assert np.array_equal(tensors[name].data, expected.reshape(-1))
    assert tensors["norm.bias"].codec == "f32"  # 1-D: kept, and reported
    assert report.skipped == [("norm.bias", "1-D")]


def test_a_codec_that_leaves_named_tensors_alone_warns_and_reports_them(tmp_path):
    with pytest.warns(PlanWarning, match=r"2 tensor\(s\) left as they are: emb .*pure=True"):
        report = bundler.save(_arrays(), tmp_path / "m.gguf", codec="q4_0")
    assert _codecs(tmp_path / "m.gguf") == {"emb": "f32", "lm_head": "f32", "norm.bias": "f32"}
    assert report.skipped == [
        ("emb", "not a weight"),
        ("lm_head", "not a weight"),
        ("norm.bias", "1-D"),
    ]
    assert report.as_dict()["skipped"][0] == {"name": "emb", "reason": "not a weight"}


def test_the_default_plan_is_quantizes_plan(tmp_path, minilm_safetensors):
    """Without pure/tensor_types, save plans exactly as `quantize` does."""
    bundle = bundler.open(minilm_safetensors)
    with pytest.warns(PlanWarning):  # position and token-type embeddings are kept by name
        saved = bundler.save(bundle, tmp_path / "s.gguf", codec="q8_0")
    quantized = bundler.quantize(minilm_safetensors, tmp_path / "q.gguf", "q8_0", dry_run=True)
    assert [(c.name, c.target) for c in saved.plan.choices] == [
        (c.name, c.target) for c in quantized.plan.choices
    ]


def test_pure_does_not_change_quantize_which_keeps_llama_quantizes_rules(tmp_path):
    bundler.save(_arrays(), tmp_path / "src.safetensors")
    report = bundler.quantize(tmp_path / "src.safetensors", tmp_path / "q.gguf", "q4_0", pure=True)
    assert [c.name for c in report.plan.kept] == ["emb", "lm_head", "norm.bias"]


@pytest.mark.parametrize(
    ("tensor_types", "match"),
    [
        ({"bad[": "q4_0"}, r"'bad\[' is not a regular expression"),
        ([("emb",)], r"expected \(regex, codec\) pairs"),
        ({".*": "q9_9"}, "unknown codec 'q9_9'"),
    ],
)
def test_bad_tensor_types_are_usage_errors(tmp_path, tensor_types, match):
    with pytest.raises(UsageError, match=match):
        bundler.save(_arrays(), tmp_path / "m.gguf", codec="q4_0", tensor_types=tensor_types)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_an_existing_output_by_default_like_quantize(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        bundler.save(_arrays(), path)
    assert path.read_bytes() == b"keep me"
    bundler.save(_arrays(), path, force=True)
    assert path.read_bytes()[:4] == b"GGUF"


def test_report_repr_is_one_short_line(tmp_path, smollm2_gguf):
    report = bundler.convert(smollm2_gguf, tmp_path / "m.safetensors", dry_run=True)
    text = repr(report)
    assert "\n" not in text and len(text) < 200
    assert "272 tensors" in text and "dry run" in text
    assert repr(report.plan).startswith("Plan(type=None, 272 tensors, 0 kept")


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert bundler.__version__ == version("bundler")
