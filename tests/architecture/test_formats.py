"""Every registered format implements the Format protocol with typed details."""

from __future__ import annotations

import dataclasses

import pytest

from bundler.bundle import Bundle
from bundler.containers import protocol, registry


@pytest.mark.parametrize("name", registry.names())
def test_every_format_defines_the_whole_protocol(name):
    fmt = registry.get(name)
    assert [m for m in protocol.MEMBERS if not hasattr(fmt, m)] == []
    assert name == fmt.NAME and fmt.TITLE and fmt.EXTENSIONS


@pytest.mark.parametrize("name", registry.names())
def test_every_format_describes_a_bundle_with_its_own_frozen_details(name):
    fmt = registry.get(name)
    assert issubclass(fmt.DETAILS, protocol.Details) and name == fmt.DETAILS.FORMAT
    details = fmt.describe(Bundle(format=name))
    assert isinstance(details, fmt.DETAILS)
    field = dataclasses.fields(details)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(details, field, None)
    assert isinstance(details.facts(), dict)
    assert details.headline("1 byte").endswith("1 byte")


@pytest.mark.parametrize("name", registry.names())
def test_details_belong_only_to_bundles_of_their_format(name):
    details = registry.get(name).DETAILS
    other = next(n for n in registry.names() if n != name)
    assert details.of(Bundle(format=other, format_info=details())) is None
    assert isinstance(details.of(Bundle(format=name, format_info={})), details)


def test_an_unknown_format_is_a_usage_error_listing_the_formats():
    from bundler.errors import UsageError

    with pytest.raises(UsageError, match="valid formats: gguf, safetensors, apr, onnx"):
        registry.get("tflite")


@pytest.mark.parametrize("name", registry.names())
def test_detecting_a_file_loads_only_the_formats_sniffed_before_its_own(name, tmp_path):
    import subprocess
    import sys

    import numpy as np

    import bundler

    path = tmp_path / f"m.{registry.get(name).EXTENSIONS[0].lstrip('.')}"
    bundler.save({"w.weight": np.ones((4, 8), np.float32)}, path, format=name)
    code = (
        "import sys\nfrom bundler.containers import detect, registry\n"
        f"print(detect({str(path)!r}))\n"
        "print(','.join(n for n in registry.names() "
        "if registry.PACKAGES[n] + '.format' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found, loaded = done.stdout.split()
    names = registry.names()
    assert found == name
    assert loaded.split(",") == names[: names.index(name) + 1]
