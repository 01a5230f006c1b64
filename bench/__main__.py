"""``make bench``: every benchmark in turn (each is also one command: ``python -m bench.NAME``).

They print tables and write JSON to ``bench/results/``; they assert nothing. See bench/README.md.
"""

from __future__ import annotations

from . import append_cost, hotpath, latency, replay, run_record, writer


def main() -> None:
    for name, module in (
        ("writer", writer),
        ("append_cost", append_cost),
        ("run_record", run_record),
        ("replay", replay),
        ("hotpath", hotpath),
        ("latency", latency),
    ):
        print(f"\n=== bench.{name} ===", flush=True)
        module.main()


if __name__ == "__main__":
    main()
