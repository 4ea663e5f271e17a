"""Interoperable image import: methods, web-download filtering, task records."""

from __future__ import annotations

from oslo_config import cfg

FILTER_GROUP = "import_filtering_opts"
TASK_GROUP = "task"

default_opts = [
    cfg.ListOpt(
        "enabled_import_methods",
        default=["glance-direct", "web-download", "copy-image"],
        help="Import methods offered by POST /v2/images/{id}/import. Possible values: "
        "glance-direct, web-download, copy-image.",
    ),
]

filter_opts = [
    cfg.ListOpt(
        "allowed_schemes",
        default=["http", "https"],
        help="URI schemes web-download may fetch. Related options: disallowed_schemes.",
    ),
    cfg.ListOpt(
        "disallowed_schemes",
        default=[],
        help="URI schemes web-download must not fetch; ignored when allowed_schemes is set.",
    ),
    cfg.ListOpt(
        "allowed_hosts",
        default=[],
        help="Hosts (names or addresses) web-download may fetch from; empty means any host "
        "not disallowed. Related options: disallowed_hosts, allow_private_addresses.",
    ),
    cfg.ListOpt(
        "disallowed_hosts",
        default=[],
        help="Hosts web-download must not fetch from; ignored when allowed_hosts is set.",
    ),
    cfg.ListOpt(
        "allowed_ports",
        default=["80", "443"],
        help="Ports web-download may connect to. Related options: disallowed_ports.",
    ),
    cfg.ListOpt(
        "disallowed_ports",
        default=[],
        help="Ports web-download must not connect to; ignored when allowed_ports is set.",
    ),
    cfg.BoolOpt(
        "allow_private_addresses",
        default=False,
        help="Let web-download fetch from loopback, private, link-local and other "
        "non-global addresses (after DNS resolution, redirects included). Off by default "
        "so that users cannot make the service reach its own network.",
    ),
    cfg.IntOpt(
        "max_redirects",
        default=5,
        min=0,
        max=20,
        help="Redirects web-download follows; each target is filtered again.",
    ),
    cfg.IntOpt(
        "timeout", default=60, min=1, help="Seconds web-download waits for the remote server."
    ),
]

task_opts = [
    cfg.IntOpt(
        "task_time_to_live",
        default=48,
        min=1,
        help="Hours a finished task stays visible.",
    ),
    cfg.IntOpt(
        "task_pool_threads",
        default=8,
        min=1,
        deprecated_for_removal=True,
        deprecated_reason="Import tasks run as jobs: on the API processes' [jobs] "
        "api_workers threads and on ims-worker processes.",
        help="Unused. Import tasks run as jobs; see [jobs] api_workers and worker_threads.",
    ),
    cfg.IntOpt(
        "import_lock_timeout",
        default=3600,
        min=60,
        help="Seconds after which another import may take over a stale import lock.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(default_opts)
    conf.register_opts(filter_opts, group=FILTER_GROUP)
    conf.register_opts(task_opts, group=TASK_GROUP)
