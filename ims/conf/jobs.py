"""[jobs]: who runs the IMS native API's asynchronous jobs, and how."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "jobs"

opts = [
    cfg.IntOpt(
        "api_workers",
        default=2,
        min=0,
        help="Job threads inside each API process. 0 leaves all jobs to ims-worker "
        "processes (scale-out). Related options: worker_threads.",
    ),
    cfg.IntOpt(
        "worker_threads",
        default=4,
        min=1,
        help="Job threads in each ims-worker process.",
    ),
    cfg.FloatOpt(
        "poll_interval",
        default=1.0,
        min=0.05,
        help="Seconds between looks for new jobs when idle.",
    ),
    cfg.IntOpt(
        "heartbeat_interval",
        default=5,
        min=1,
        help="Seconds between a running job's heartbeats.",
    ),
    cfg.IntOpt(
        "stale_after",
        default=60,
        min=3,
        help="Seconds without a heartbeat after which a running job's worker is taken "
        "for dead and the job is resumed by another worker. Must exceed "
        "heartbeat_interval.",
    ),
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        help="Times a job is started before it fails for good (a worker that dies "
        "counts as an attempt).",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)
