"""`bundler.batch` and `bundler.run_config` return every model's result for pipelines."""

from __future__ import annotations

import pytest
from batch_zoo import TYPE, expected, outputs, zoo

import bundler
from bundler.batching import ConfigError


def test_batch_returns_status_sizes_time_and_typed_error_per_model(zoo, expected, tmp_path):
    report = bundler.batch(zoo, tmp_path, TYPE, continue_on_error=True, allow_requantize=True)
    assert [r.status for r in report] == ["ok", "ok", "failed", "ok", "ok"]
    assert not report.ok and report.exit_code == 4
    broken = report[2]
    assert broken.error_type == "TruncatedError" and broken.target_bytes is None
    for r in report:
        if r.status == "ok":
            assert (
                r.seconds > 0 and r.source_bytes > 0 and r.ratio == r.source_bytes / r.target_bytes
            )
            assert r.outputs == [r.output]
    assert outputs(tmp_path) == expected
    assert report.failures == [broken]


def test_run_config_returns_the_results_and_raises_config_errors_before_running(zoo, tmp_path):
    good = tmp_path / "ok.toml"
    good.write_text(f'type = "F16"\noutput_dir = "out"\n[[models]]\ninput = "{zoo[1]}"\n')
    report = bundler.run_config(good)
    assert [(r.status, r.type) for r in report] == [("ok", "F16")]
    assert (tmp_path / "out" / "gen-a-F16.gguf").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text(f'typ = "F16"\noutput_dir = "out2"\n[[models]]\ninput = "{zoo[1]}"\n')
    with pytest.raises(ConfigError) as caught:
        bundler.run_config(bad)
    assert caught.value.problems == [(f"{bad}:1: typ", "unknown key (did you mean 'type'?)")]
    assert not (tmp_path / "out2").exists()
