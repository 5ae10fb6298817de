"""The command line's last line of defence: errors no command wrapped still give a message
and an exit code, never a traceback."""

from __future__ import annotations

import errno

import pytest

import bundler.pipeline
from bundler.cli import main


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            OSError(errno.EIO, "Input/output error", "/data/m.gguf"),
            "/data/m.gguf: Input/output error",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ],
)
def test_an_unwrapped_os_error_is_exit_7_with_a_one_line_message(
    monkeypatch, capsys, tmp_path, error, message
):
    def fail(*args, **kwargs):
        raise error

    src = tmp_path / "in.gguf"
    bundler.save({"w": [1.0, 2.0]}, src)
    monkeypatch.setattr(bundler.pipeline, "write_bundle", fail)
    code = main(["convert", str(src), "-o", str(tmp_path / "out.gguf")])
    err = capsys.readouterr().err
    assert code == 7
    assert err == f"bundler: error: {message}\n"
