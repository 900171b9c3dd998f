"""Find the highest offered booking rate the engine sustains within the targets.

    python benchmarks/e2e_sweep.py --rates 20,40,60 --duration 30 [-- --workers 2]

Runs ``smartroute bench e2e --json`` once per rate (each starts its own ``smartroute up``
unless ``--api`` is passed through after ``--``), appends every JSON line to
``--out`` (default .smartroute/bench/sweep.jsonl) and prints a Markdown table with the
exact command of each row. Supersedes benchmarks/push_latency.py: push latency is one of
the columns. Bounded: one run per rate, each bounded by its own duration and drain.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

COLUMNS = (
    "rate_offered",
    "rate_sustained",
    "accept_p99_ms",
    "assign_p99_ms",
    "push_p99_ms",
    "book_to_push_p99_ms",
    "lost",
    "double_assigned",
    "max_rss_mb",
    "celery_noop_ceiling",
    "ratio",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,40,60")
    parser.add_argument("--duration", default="30")
    parser.add_argument("--out", default=".smartroute/bench/sweep.jsonl")
    parser.add_argument("extra", nargs="*", help="more `bench e2e` options, after --")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print("| command | " + " | ".join(COLUMNS) + " | all targets met |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for rate in args.rates.split(","):
        argv = [
            "smartroute",
            "bench",
            "e2e",
            "--rate",
            rate,
            "--duration",
            args.duration,
            *args.extra,
            "--json",
        ]
        done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| `{shlex.join(argv)}` | failed: {done.stderr.strip()[-300:]} |")
            continue
        result = json.loads(done.stdout)
        result["command"] = shlex.join(argv)
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        cells = [str(result.get(c)) for c in COLUMNS]
        print(
            f"| `{shlex.join(argv)}` | "
            + " | ".join(cells)
            + f" | {result['meets_targets']['all']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
