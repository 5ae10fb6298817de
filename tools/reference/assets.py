"""The oracles' sources besides the package's own real files (`bundler.assets`, re-exported
here): the `llama-cpp-python` source distribution, which carries llama.cpp's
`ggml-vocab-*.gguf` files and the ggml C sources.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from bundler.assets import (
    MINILM,
    MINILM_SHA256,
    SILERO,
    SILERO_SHA256,
    SMOLLM2,
    SMOLLM2_SHA256,
    AssetUnavailable,
    cache_dir,
    download,
    minilm_safetensors,
    silero_vad_onnx,
    smollm2_gguf,
)

LLAMA_CPP = ("llama-cpp-python", "0.3.36")

__all__ = [
    "MINILM",
    "MINILM_SHA256",
    "SILERO",
    "SILERO_SHA256",
    "SMOLLM2",
    "SMOLLM2_SHA256",
    "AssetUnavailable",
    "cache_dir",
    "llama_cpp_sdist",
    "minilm_safetensors",
    "silero_vad_onnx",
    "smollm2_gguf",
    "vocab_ggufs",
]


def llama_cpp_sdist() -> Path:
    """The unpacked llama-cpp-python source tree (vendor/llama.cpp inside)."""
    package, version = LLAMA_CPP
    root = cache_dir() / "src" / f"llama_cpp_python-{version}"
    if (root / ".complete").exists():
        return root
    archive = download(package, version, sdist=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(root.parent, members=members, filter="data")
    (root / ".complete").touch()
    return root


def vocab_ggufs() -> list[Path]:
    """llama.cpp's 19 vocab-only GGUF files (one of them GGUF version 2)."""
    models = llama_cpp_sdist() / "vendor" / "llama.cpp" / "models"
    return sorted(models.glob("ggml-vocab-*.gguf"))
