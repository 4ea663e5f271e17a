"""ims-worker: run IMS jobs outside the API processes (scale-out).

    ims-worker [--config-file FILE]

Workers take jobs from the shared database with row locks, so any number of
them (and the API processes' own job threads, unless [jobs] api_workers = 0)
can run side by side without running a job twice.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from oslo_config import cfg

from ims import conf as ims_conf
from ims import errors
from ims.cmd import single_malloc_arena
from ims.core.jobs import JobRunner

LOG = logging.getLogger("ims.worker")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    single_malloc_arena()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        conf = ims_conf.load(argv)
        from ims.api.app import build_services

        services = build_services(conf)
    except (errors.IMSError, cfg.Error) as ex:
        print(f"ims-worker: {ex}", file=sys.stderr)
        return 2
    runner = JobRunner(services.jobs, conf.jobs.worker_threads)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner.start()
    LOG.info("ims-worker %s running %d job threads", runner.worker, runner.threads)
    stop.wait()
    LOG.info("ims-worker %s stopping", runner.worker)
    runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
