"""Golden encodings, written once and checked bit for bit forever.

Inline: one block of (arange(32) - 16) / 4, whose bytes can be checked by hand (e.g. Q4_0:
d = -4 / -8 = 0.5 = half 0x3800; element 0 -> code 0 and element 16 -> code 8 share byte 0).
Files: tests/codecs/golden/legacy/, made by make_legacy_golden.py (which never overwrites),
and tests/codecs/golden/weighted/ (make_weighted_golden.py: encodings with importance weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bundler

GOLDEN = Path(__file__).parent / "golden" / "legacy"

ONE_BLOCK = {
    "q4_0": "0038809191a2a2b3b3c4c4d5d5e6e6f7f7f8",
    "q4_1": "223800c480809191a2a2b3b3c4c4d5d5e6e6f7f7",
    "q5_0": "00340000ffff00112233445566778899aabbccddeeff",
    "q5_1": "003400c40000ffff00112233445566778899aabbccddeeff",
    "q8_0": "082881899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77",
    "q8_1": "082800c481899199a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77",
}


@pytest.mark.parametrize("name", sorted(ONE_BLOCK))
def test_one_hand_checkable_block_encodes_to_its_golden_bytes(name):
    x = (np.arange(32, dtype=np.float32) - 16) / 4
    assert bundler.encode(x, name).tobytes().hex() == ONE_BLOCK[name]


def test_all_zero_block_stores_negative_zero_scale_in_symmetric_types():
    zeros = np.zeros(32, np.float32)
    assert bundler.encode(zeros, "q4_0").tobytes().hex() == "0080" + "88" * 16
    assert bundler.encode(zeros, "q5_0").tobytes().hex() == "0080" + "ffffffff" + "00" * 16
    assert bundler.encode(zeros, "q8_0").tobytes().hex() == "0000" + "00" * 32


def _golden_input() -> np.ndarray:
    return np.frombuffer((GOLDEN / "input.f32").read_bytes(), np.float32).reshape(-1, 256)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.bin")), ids=lambda p: p.stem)
def test_golden_file_is_reproduced_bit_for_bit(path):
    x = _golden_input()
    assert bundler.encode(x, path.stem).tobytes() == path.read_bytes()


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.bin")), ids=lambda p: p.stem)
def test_golden_file_decodes_near_its_input(path):
    x = _golden_input()
    row_max = np.abs(x).max(axis=1, keepdims=True)
    kept = (row_max < 1e5)[:, 0]  # rows whose half scale did not overflow
    y = bundler.decode(np.frombuffer(path.read_bytes(), np.uint8).reshape(len(x), -1), path.stem)
    assert (np.abs(y - x)[kept] <= 0.1 * row_max[kept] + 2.0**-20).all()


def test_every_legacy_codec_has_a_golden_file():
    names = {p.stem for p in GOLDEN.glob("*.bin")}
    assert names >= {"f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1"}


WEIGHTED_GOLDEN = GOLDEN.parent / "weighted"


@pytest.mark.parametrize("path", sorted(WEIGHTED_GOLDEN.glob("*.bin")), ids=lambda p: p.stem)
def test_weighted_golden_file_is_reproduced_bit_for_bit(path):
    # made by make_weighted_golden.py: the K-quant golden input with a seeded importance row
    x = np.frombuffer((WEIGHTED_GOLDEN / "input.f32").read_bytes(), np.float32).reshape(-1, 256)
    w = np.frombuffer((WEIGHTED_GOLDEN / "importance.f32").read_bytes(), np.float32)
    assert bundler.encode(x, path.stem, importance=w).tobytes() == path.read_bytes()


def test_weighted_golden_inputs_are_their_seeded_recipes():
    import sys

    sys.path.insert(0, str(GOLDEN.parent))
    try:
        import make_weighted_golden as make
    finally:
        sys.path.remove(str(GOLDEN.parent))
    assert (WEIGHTED_GOLDEN / "importance.f32").read_bytes() == make.golden_importance().tobytes()
    kquant_input = (GOLDEN.parent / "kquants" / "input.f32").read_bytes()
    assert (WEIGHTED_GOLDEN / "input.f32").read_bytes() == kquant_input
    assert sorted(p.stem for p in WEIGHTED_GOLDEN.glob("*.bin")) == sorted(make.CODECS)
