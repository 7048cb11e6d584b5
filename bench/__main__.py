"""`python -m bench`: run the scenarios, print the results, write the markdown report, JSON and timeline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from liveqa.startup import freeze_startup_heap, run_event_loop

from .report import machine, render_markdown
from .scenarios import SCENARIOS, Options


async def run(names: list[str], options: Options) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "quick": options.quick, "scenarios": {}}
    for name in names:
        title, scenario = SCENARIOS[name]
        print(f"— {title} …", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = await scenario(options)
        except Exception as exc:  # one broken scenario must not lose the others' results
            result = {"available": False, "note": f"failed: {exc.__class__.__name__}: {exc}"}
        result.update(title=title, seconds=round(time.monotonic() - started, 1))
        results["scenarios"][name] = result
        for t in result.get("targets", []):
            value = "—" if t["value"] is None else f"{t['value'] * 1000:.0f} ms"
            print(f"   {'PASS' if t['pass'] else 'MISS'}  {t['name']}: {value} (bound {t['bound'] * 1000:.0f} ms)",
                  file=sys.stderr)  # fmt: skip
        if note := result.get("note"):
            print(f"   {note}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scenario", default="all", choices=["all", *SCENARIOS], help="default: all")
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run: fewer, smaller rounds")
    parser.add_argument("--rounds", type=int, help="rounds of 50 questions in the concurrent scenario (default 3)")
    parser.add_argument("--out", type=Path, help="write the markdown report here (e.g. docs/benchmarks.md)")
    parser.add_argument("--png", type=Path, help="draw one answer's timeline here (needs the `one` scenario)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    freeze_startup_heap()  # the clients' clock readings must not wait for a full collection
    options = Options(quick=args.quick, rounds=args.rounds)
    results = run_event_loop(run(names, options))  # the clients share the cores too
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.png and "timeline" in results["scenarios"].get("one", {}):
        from .timeline import draw

        draw(results["scenarios"]["one"]["timeline"], args.png)
    markdown = render_markdown(results, previous=args.out.read_text() if args.out and args.out.exists() else "")
    if args.out:
        args.out.write_text(markdown)
    else:
        print(markdown)


if __name__ == "__main__":
    main()
