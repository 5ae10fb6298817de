"""Affine-quantized models end to end: the CLI writes the compressed-tensors layout, an
independent reading of that layout (restated from its documentation) gets the same values,
the three containers convert without changing a byte, validate --strict flags GGUF and APR,
decoding to float types works (also for GGML blocks), checkpoints written by other tools
are read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.numpy
from conftest import run_cli

import bundler
from bundler.codecs.affine import AffineCodec, checkpoint


def _restated_read(folder):
    """compressed-tensors' documented rules, restated: config.json's quantization_config;
    int-quantized codes in `.weight`; pack-quantized codes 32 // 4 = 8 nibbles per int32
    (first in the lowest bits) offset by 8, `weight_shape` the original shape; channel and
    group zero points packed the same way along dim 0; x = (q - zp) * scale, one scale per
    row (channel) or per group_size columns (group)."""
    with open(folder / "config.json") as f:
        cfg = json.load(f)["quantization_config"]
    arrays = safetensors.numpy.load_file(str(folder / "model.safetensors"))
    out = {}
    for group in cfg["config_groups"].values():
        w = group["weights"]
        bits, strategy = w["num_bits"], w["strategy"]
        for module in group["targets"]:
            scale = arrays[f"{module}.weight_scale"].astype(np.float32)
            zp = arrays.get(f"{module}.weight_zero_point")
            if f"{module}.weight_packed" in arrays:
                assert bits == 4
                packed = arrays[f"{module}.weight_packed"].view(np.uint32)
                rows, cols = (int(v) for v in arrays[f"{module}.weight_shape"])
                q = (packed[:, :, None] >> (4 * np.arange(8, dtype=np.uint32))) & 15
                q = q.reshape(rows, -1)[:, :cols].astype(np.int32) - 8
                if zp is not None and strategy in ("group", "channel"):
                    zu = (zp.view(np.uint32)[:, None, :] >> (4 * np.arange(8, dtype=np.uint32))[
                        None, :, None]) & 15  # fmt: skip
                    zp = zu.reshape(-1, zp.shape[1])[:rows].astype(np.int32) - 8
            else:
                q = arrays[f"{module}.weight"].astype(np.int32)
                rows, cols = q.shape
            zp = np.zeros(scale.shape, np.int32) if zp is None else zp.astype(np.int32)
            if strategy == "group":
                g = w["group_size"]
                scale = np.repeat(scale, g, axis=1)
                zp = np.repeat(zp, g, axis=1)
            out[module + ".weight"] = (q - zp).astype(np.float32) * scale
    return cfg, out


@pytest.fixture(scope="module")
def minilm_arrays(minilm_safetensors):
    b = bundler.open(minilm_safetensors)
    return {n: t.numpy() for n, t in b.tensors.items()}


@pytest.mark.realfile
@pytest.mark.parametrize(
    ("flags", "codec"),
    [
        (["--type", "int4", "--group-size", "128", "--asym", "--calibration", "mse"],
         "int4:g128:asym:mse"),
        (["--bits", "8", "--per-channel"], "int8:channel:sym:minmax"),
        (["--type", "int4:channel:p99.9"], "int4:channel:sym:p99.9"),
    ],
)  # fmt: skip
def test_cli_writes_a_compressed_tensors_folder_that_an_independent_reader_decodes(
    tmp_path, minilm_safetensors, minilm_arrays, flags, codec
):
    out = tmp_path / "model"
    out.mkdir()
    run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--to", "safetensors", *flags,
            check=True)  # fmt: skip
    cfg, restated = _restated_read(out)
    assert cfg["quant_method"] == "compressed-tensors"
    assert cfg["format"] == ("int-quantized" if codec.startswith("int8") else "pack-quantized")
    assert set(cfg["bundler_codecs"].values()) == {codec}
    c = AffineCodec(codec)
    ours = bundler.open(out / "model.safetensors")
    found = checkpoint.groups(ours)
    assert set(found) == {n[: -len(".weight")] for n in restated}
    assert "encoder.layer.0.attention.output.LayerNorm" not in found  # norms are kept
    for name, values in restated.items():
        original = minilm_arrays[name]
        want = c.decode(c.encode(original))
        np.testing.assert_array_equal(values, want)
        np.testing.assert_array_equal(checkpoint.decode_group(ours, found[name[:-7]]), want)


@pytest.mark.realfile
def test_containers_convert_without_changing_a_byte(tmp_path, minilm_safetensors):
    st = tmp_path / "a.safetensors"
    run_cli("quantize", str(minilm_safetensors), "-o", str(st), "--type", "int4:g64:asym",
            check=True)  # fmt: skip
    gguf, apr, back = tmp_path / "b.gguf", tmp_path / "c.apr", tmp_path / "d.safetensors"
    for src, dst in ((st, gguf), (gguf, apr), (apr, back)):
        run_cli("convert", str(src), "-o", str(dst), check=True)
    first = bundler.open(st)
    for path in (gguf, apr, back):
        other = bundler.open(path)
        assert other.metadata["quantization_config"] == first.metadata["quantization_config"]
        assert list(other.tensors) == list(first.tensors)
        for name, t in first.tensors.items():
            assert other.tensors[name].codec == t.codec
            assert other.tensors[name].raw().tobytes() == t.raw().tobytes(), (path, name)


@pytest.mark.realfile
@pytest.mark.parametrize(("ext", "runtime"), [("gguf", "llama.cpp"), ("apr", "aprender")])
def test_validate_strict_flags_affine_weights_in_gguf_and_apr(tmp_path, minilm_safetensors,
                                                               ext, runtime):  # fmt: skip
    out = tmp_path / f"m.{ext}"
    run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--type", "int8", check=True)
    assert run_cli("validate", str(out)).returncode == 0
    done = run_cli("validate", "--strict", str(out))
    assert done.returncode == 5
    assert f"{runtime} cannot run affine-quantized weights" in done.stdout + done.stderr


@pytest.mark.realfile
@pytest.mark.parametrize("target", ["f16", "bf16", "f32"])
def test_dequantize_affine_weights_to_float_types(tmp_path, minilm_safetensors, minilm_arrays,
                                                  target):  # fmt: skip
    q = tmp_path / "q.gguf"
    run_cli("quantize", str(minilm_safetensors), "-o", str(q), "--type", "int4:g128", check=True)
    out = tmp_path / "d.safetensors"
    run_cli("quantize", str(q), "-o", str(out), "--type", target, check=True)
    d = bundler.open(out)
    assert "quantization_config" not in d.metadata
    c = AffineCodec("int4:g128")
    name = "encoder.layer.2.intermediate.dense.weight"
    assert d.tensors[name].codec.name == target
    want = bundler.decode(bundler.encode(c.decode(c.encode(minilm_arrays[name])), target), target)
    np.testing.assert_array_equal(d.tensors[name].numpy(), want.reshape(d.tensors[name].shape))
    assert list(d.tensors) == list(minilm_arrays)


@pytest.mark.realfile
def test_requantizing_affine_or_ggml_weights_needs_allow_requantize(tmp_path, minilm_safetensors,
                                                                    smollm2_gguf):  # fmt: skip
    q = tmp_path / "q.safetensors"
    run_cli("quantize", str(minilm_safetensors), "-o", str(q), "--type", "int8", check=True)
    for src, typ in ((q, "int4"), (q, "q8_0"), (smollm2_gguf, "int8")):
        done = run_cli("quantize", str(src), "-o", str(tmp_path / "x.safetensors"), "--type", typ)
        assert done.returncode == 2, done.stderr
        assert "--allow-requantize" in done.stderr and "Traceback" not in done.stderr
    run_cli("quantize", str(q), "-o", str(tmp_path / "y.safetensors"), "--type", "int4",
            "--allow-requantize", check=True)  # fmt: skip


@pytest.mark.realfile
@pytest.mark.slow
def test_ggml_blocks_dequantize_to_float_safetensors(tmp_path, smollm2_gguf):
    import gguf

    out = tmp_path / "d.safetensors"
    run_cli("quantize", str(smollm2_gguf), "-o", str(out), "--type", "f32", check=True)
    d = bundler.open(out)
    reader = gguf.GGUFReader(str(smollm2_gguf))
    checked = 0
    for t in reader.tensors:
        if t.tensor_type.name not in ("Q4_1", "Q6_K", "Q8_0"):
            continue
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_array_equal(d.tensors[t.name].numpy().reshape(want.shape), want)
        checked += 1
        if checked == 6:
            break
    assert checked == 6


@pytest.mark.realfile
def test_dry_run_lists_each_stored_tensor_with_its_source_and_codec(tmp_path, minilm_safetensors):
    out = tmp_path / "q.safetensors"
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--type", "int4:g256",
                   "--dry-run", check=True)  # fmt: skip
    assert not out.exists()
    line = next(
        x for x in done.stdout.splitlines() if "layer.0.attention.self.query.weight_pac" in x
    )
    assert "encoder.layer.0.attention.self.query.weight f32 -> int4:channel:sym:minmax" in line
    assert "not a multiple of 256: fallback" in line  # 384 columns do not hold groups of 256
    inter = next(x for x in done.stdout.splitlines() if "layer.0.output.dense.weight_pac" in x)
    assert "-> int4:g256:sym:minmax" in inter  # 1536 columns do
    report = json.loads(run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--type",
                                "int8", "--dry-run", "--json", check=True).stdout)  # fmt: skip
    actions = {c["name"]: c["action"] for c in report["tensors"]}
    assert actions["encoder.layer.0.attention.self.query.weight"] == "quantize"
    assert actions["encoder.layer.0.attention.self.query.weight_scale"] == "quantize"
    assert actions["encoder.layer.0.attention.output.LayerNorm.weight"] == "copy"


@pytest.mark.parametrize(
    "flags",
    [["--type", "q4_0", "--asym"], ["--bits", "4", "--type", "int8"], ["--bits", "5"],
     ["--type", "int4:g12"], ["--type", "int4", "--calibration", "magic"], []],
)  # fmt: skip
def test_contradictory_or_bad_affine_flags_are_usage_errors(tmp_path, flags):
    src = tmp_path / "a.safetensors"
    bundler.save({"l.weight": np.ones((8, 64), np.float32)}, src)
    done = run_cli("quantize", str(src), "-o", str(tmp_path / "b.safetensors"), *flags)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr


def test_nan_in_a_weight_is_reported_with_its_tensor_and_position(tmp_path):
    w = np.ones((8, 64), np.float32)
    w[3, 9] = np.nan
    src = tmp_path / "a.safetensors"
    bundler.save({"l.weight": w}, src)
    done = run_cli("quantize", str(src), "-o", str(tmp_path / "b.safetensors"), "--type", "int8")
    assert done.returncode == 2
    assert "(3, 9)" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b.safetensors").exists()


def _other_tool_checkpoint(folder, rng):
    """A checkpoint as llm-compressor writes it: bf16 scales, symmetric int8 with zero
    points of 0 stored anyway, 4-bit asymmetric group weights, config only in config.json,
    targets by class name, a norm and an embedding left as they are."""
    w8 = rng.integers(-128, 128, size=(32, 64), dtype=np.int8)
    s8 = (rng.uniform(0.001, 0.01, size=(32, 1))).astype(np.float32)
    q4 = rng.integers(0, 16, size=(16, 64))
    z4 = rng.integers(0, 16, size=(16, 2))
    s4 = rng.uniform(0.01, 0.1, size=(16, 2)).astype(np.float32)
    packed = np.zeros((16, 8), np.uint32)
    for c in range(64):
        packed[:, c // 8] |= q4[:, c].astype(np.uint32) << np.uint32(4 * (c % 8))
    zpk = np.zeros((2, 2), np.uint32)
    for r in range(16):
        zpk[r // 8] |= z4[r].astype(np.uint32) << np.uint32(4 * (r % 8))
    import ml_dtypes

    arrays = {
        "model.a.weight": w8,
        "model.a.weight_scale": s8.astype(ml_dtypes.bfloat16),
        "model.a.weight_zero_point": np.zeros((32, 1), np.int8),
        "model.b.weight_packed": packed.view(np.int32),
        "model.b.weight_scale": s4.astype(ml_dtypes.bfloat16),
        "model.b.weight_zero_point": zpk.view(np.int32),
        "model.b.weight_shape": np.array([16, 64], np.int64),
        "model.norm.weight": np.ones(64, np.float32),
    }
    safetensors.numpy.save_file(arrays, str(folder / "model.safetensors"))
    weights = {"type": "int", "dynamic": False, "observer": "minmax"}
    cfg = {
        "architectures": ["Toy"],
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "format": "mixed-precision",
            "config_groups": {
                "group_0": {"targets": ["re:.*a$"], "format": "int-quantized", "weights": {
                    **weights, "num_bits": 8, "symmetric": True, "strategy": "channel"}},
                "group_1": {"targets": ["Linear"], "format": "pack-quantized", "weights": {
                    **weights, "num_bits": 4, "symmetric": False, "strategy": "group",
                    "group_size": 32}},
            },
            "ignore": ["lm_head"],
            "quantization_status": "compressed",
        },
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(cfg))
    s8f = s8.astype(ml_dtypes.bfloat16).astype(np.float32)
    s4f = np.repeat(s4.astype(ml_dtypes.bfloat16).astype(np.float32), 32, axis=1)
    want_a = w8.astype(np.float32) * s8f
    want_b = (q4 - np.repeat(z4, 32, axis=1)).astype(np.float32) * s4f
    return want_a, want_b


def test_checkpoints_written_by_other_tools_are_read_and_dequantized(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    want_a, want_b = _other_tool_checkpoint(folder, np.random.default_rng(9))
    b = bundler.open(folder)
    found = checkpoint.groups(b)
    assert set(found) == {"model.a", "model.b"}
    np.testing.assert_array_equal(checkpoint.decode_group(b, found["model.a"]), want_a)
    np.testing.assert_array_equal(checkpoint.decode_group(b, found["model.b"]), want_b)
    out = tmp_path / "plain.safetensors"
    run_cli("quantize", str(folder), "-o", str(out), "--type", "f32", check=True)
    d = bundler.open(out)
    assert sorted(d.tensors) == ["model.a.weight", "model.b.weight", "model.norm.weight"]
    np.testing.assert_array_equal(d.tensors["model.b.weight"].numpy(), want_b)
    assert math.isclose(float(d.tensors["model.norm.weight"].numpy()[0]), 1.0)


@pytest.mark.realfile
def test_diff_compares_affine_weights_as_the_floats_they_decode_to(tmp_path, minilm_safetensors):
    q = tmp_path / "q.gguf"
    run_cli("quantize", str(minilm_safetensors), "-o", str(q), "--type", "int8:channel",
            check=True)  # fmt: skip
    report = json.loads(run_cli("diff", str(minilm_safetensors), str(q), "--json",
                                check=True).stdout)  # fmt: skip
    assert report["only_in_a"] == [] and report["only_in_b"] == []
    rows = {r["name"]: r for r in report["tensors"]}
    dense = rows["encoder.layer.0.intermediate.dense.weight"]
    assert 0 < dense["rmse"] < 1e-3 and dense["cosine"] > 0.9999
    assert rows["encoder.layer.0.output.LayerNorm.weight"]["rmse"] == 0


def test_an_affine_plan_counts_the_input_it_was_made_from(minilm_safetensors, tmp_path):
    from bundler.plan import PlanOptions
    from bundler.plan.affine import plan_bundle

    source = bundler.open(minilm_safetensors)
    input_bytes = sum(t.nbytes for t in source.tensors.values())
    _, plan = plan_bundle(source, PlanOptions(type="int8"))
    assert plan.source_bytes == input_bytes  # not the quantized pieces' own bytes
    assert 3.5 < plan.source_bytes / plan.target_bytes < 4.0  # int8 of float32 weights
    report = bundler.quantize(minilm_safetensors, tmp_path / "i8.safetensors", "int8")
    back = bundler.open(tmp_path / "i8.safetensors")
    _, decoded = plan_bundle(back, PlanOptions(type="f32"))
    assert decoded.source_bytes == sum(t.nbytes for t in back.tensors.values())
    assert report.as_dict()["source_bytes"] == input_bytes
