"""One worker process: ``python -m streams.worker ROLE``, ROLE one of intake, core, sink.

``hadir run`` starts and supervises these (hadir/workers.py); run by hand for debugging.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

from hadir import config

ROLES = ("intake", "core", "sink")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ROLES:
        print(f"usage: python -m streams.worker {{{','.join(ROLES)}}}", file=sys.stderr)
        return 2
    role = args[0]
    settings = config.load()
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    if role == "sink":
        from sinks.clickhouse import ClickHouseSink

        sink = ClickHouseSink(settings)

        def stop(_sig: int, _frame: object) -> None:
            sink.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sink.run()
        return 0

    import faust

    if role == "intake":
        from streams.intake import build_intake_app

        app = build_intake_app(settings)
    else:
        from streams.core_app import build_core_app

        app = build_core_app(settings)
    worker = faust.Worker(app, loglevel="WARNING", console_port=0)
    quieter_garbage_collector()
    # No terminal spinner in a background worker: it sets the root logger to DEBUG so that it
    # spins on every message, and building those unused records cost the core worker a tenth
    # of its CPU (aiokafka logs each send at debug level).
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def quieter_garbage_collector() -> None:
    """A worker keeps its tables (and faust its own structures) in memory: many long-lived
    objects, which Python's default thresholds (a collection every 700 allocations) make the
    collector walk again and again. What the stages allocate is freed by reference counting
    (no cycles), so collections can be much rarer; the objects made while starting are moved
    out of the collector's sight altogether. docs/benchmarks.md: what it saved."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


if __name__ == "__main__":
    sys.exit(main())
