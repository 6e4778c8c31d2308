"""``python -m bench.variant_worker``: the project's worker with some optimisations turned off or changed.

For measuring what each lever gains (``python -m bench --variant ...``). The
variant is read from BENCH_VARIANT, comma-separated KEY=VALUE:

  fastpath=0        plain faust.App instead of streams.runtime.fastpath.FastPathApp
  batch=0           orders delivered one message per record instead of in batches (FastPathApp.batched_topic)
  fetch_wait=1.5    FastPathApp's fetch_max_wait in seconds ("none": Faust's 1.5 s)
  monitor=default   Faust's own Monitor instead of FastPathApp's LightMonitor
  tree=DIR          the worker's code (the streams package) from DIR instead of this checkout: two
                    commits in one run, e.g. `git worktree add /tmp/before HEAD~1`, then
                    python -m bench --contenders none --variant tree=/tmp/before --variant tree=.
  NAME=VALUE        any Faust setting, e.g. stream_buffer_maxsize=16384 (VALUE as a Python literal)
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any


def parse_variant(text: str) -> dict[str, str]:
    spec = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"BENCH_VARIANT: {part!r} is not KEY=VALUE")
        spec[key.strip()] = value.strip()
    return spec


def _import_from_tree(spec: dict[str, str]) -> None:
    """tree=DIR: DIR first on the import path, before anything imports streams."""
    tree = spec.get("tree")
    if tree is None:
        return
    if not (Path(tree) / "streams" / "__init__.py").is_file():
        raise SystemExit(f"BENCH_VARIANT: tree={tree}: no streams package there")
    sys.path.insert(0, str(Path(tree).resolve()))


_import_from_tree(parse_variant(os.environ.get("BENCH_VARIANT", "")))

import faust  # noqa: E402

from streams.ops.cli import main  # noqa: E402
from streams.runtime.fastpath import FastPathApp  # noqa: E402


def variant_app(spec: dict[str, str]) -> type[faust.App]:
    fastpath = spec.get("fastpath", "1") != "0"
    batch = spec.get("batch", "1") != "0"
    base: type[faust.App] = FastPathApp if fastpath else faust.App
    settings: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("fastpath", "batch", "tree"):
            continue
        if key == "monitor":
            settings["Monitor"] = ("faust.sensors:Monitor" if value == "default"
                                   else "streams.runtime.fastpath:LightMonitor")
        elif key == "fetch_wait":
            if fastpath:
                settings["fetch_max_wait"] = None if value == "none" else float(value)
        else:
            settings[key] = ast.literal_eval(value)

    class VariantApp(base):  # type: ignore[misc, valid-type]
        def __init__(self, id: str, **options: Any) -> None:
            super().__init__(id, **{**options, **settings})

    if not batch:
        # create_pipeline batches the orders topic only when the app offers batched_topic.
        VariantApp.batched_topic = None  # type: ignore[attr-defined]

    return VariantApp


if __name__ == "__main__":
    sys.exit(main(["worker"], app_class=variant_app(parse_variant(os.environ.get("BENCH_VARIANT", "")))))
