"""`bundler recipe list|run`: the runnable, self-checking workflows under recipes/."""

from __future__ import annotations

import argparse
import os
import sys

from bundler.cli.output import add_json_flag, emit, table
from bundler.errors import EXIT_OK, EXIT_VALIDATION

DIR_HELP = "recipes directory (default: $BUNDLER_RECIPES, else the recipes bundler ships)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipe", help="list and run the recipes (reproducible workflows)")
    actions = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)

    ls = actions.add_parser("list", help="every recipe with one line about it")
    ls.add_argument("--dir", help=DIR_HELP)
    add_json_flag(ls)
    ls.set_defaults(func=run_list)

    run = actions.add_parser(
        "run",
        help="run a recipe, show its metrics and compare them with the committed ones",
        description="Run a recipe in a fresh temporary directory and compare its metrics "
        "with NAME.expected.json; exits 5 when they differ.",
    )
    run.add_argument("name", help="recipe name (see `bundler recipe list`) or path to its script")
    run.add_argument("--dir", help=DIR_HELP)
    run.add_argument(
        "--update-expected",
        action="store_true",
        help="write this run's metrics as the recipe's expected metrics",
    )
    run.add_argument(
        "--twice", action="store_true", help="run twice and fail unless both runs are identical"
    )
    add_json_flag(run)
    run.set_defaults(func=run_one)


def run_list(args: argparse.Namespace) -> int:
    from bundler.recipe import discover

    rows = [{"name": s.name, "summary": s.summary, "path": str(s.path)} for s in discover(args.dir)]
    emit(args, rows, _human_list)
    return EXIT_OK


def _human_list(rows: list[dict]) -> str:
    if not rows:
        return "no recipes found"
    return table([[r["name"], r["summary"]] for r in rows], ["recipe", "what it does"])


def run_one(args: argparse.Namespace) -> int:
    from bundler import recipe

    spec = recipe.find(args.name, args.dir)
    if not args.json:
        print(f"running recipe {spec.name} ({spec.path})", file=sys.stderr)
    repro = None
    if args.twice:
        repro = recipe.run_twice(spec)
        result = repro.first
    else:
        result = recipe.run_recipe(spec)
    data = result.as_dict()
    status = EXIT_OK
    if repro is not None:
        data["reproducible"] = repro.reproducible
        data["run_differences"] = repro.differences()
        if not repro.reproducible:
            status = EXIT_VALIDATION
    if result.skipped is None:
        if args.update_expected:
            path = recipe.write_expected(spec, result)
            data["expected"] = {"path": str(path), "matches": True, "written": True}
        else:
            differences = recipe.check_expected(spec, result)
            data["expected"] = {
                "path": str(spec.expected_path),
                "matches": not differences,
                "differences": differences,
            }
            if differences:
                status = EXIT_VALIDATION
    emit(args, data, _human_run)
    return status


def _human_run(data: dict) -> str:
    if data["skipped"] is not None:
        return f"recipe {data['name']} skipped: {data['skipped']}"
    lines = [*data["report"], ""] if data["report"] else []
    rows = [[k, _show(v)] for k, v in data["metrics"].items()]
    lines.append(table(rows, ["metric", "value"], "<>"))
    if "reproducible" in data:
        if data["reproducible"]:
            lines.append("two runs: identical metrics and output hashes")
        else:
            lines.append("two runs DIFFER:")
            lines += [f"  {d}" for d in data["run_differences"]]
    expected = data["expected"]
    if expected.get("written"):
        lines.append(f"expected metrics written to {expected['path']}")
    elif expected["matches"]:
        lines.append(f"metrics match {expected['path']}")
    else:
        lines.append(f"metrics DIFFER from {expected['path']}:")
        lines += [f"  {d}" for d in expected["differences"]]
        lines.append("(if the change is intended, rerun with --update-expected)")
    return "\n".join(lines)


def _show(value: object) -> str:
    if isinstance(value, float):
        from bundler.recipe import format_float

        return format_float(value).strip('"')
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def script_main(path: str) -> int:
    """`python recipes/NAME.py [options]`: the same as `bundler recipe run NAME [options]`."""
    from bundler.cli import main

    return main(["recipe", "run", os.path.abspath(path), *sys.argv[1:]])
