"""[DEFAULT] enabled_backends and [glance_store]: which stores hold image data."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "glance_store"

default_opts = [
    cfg.DictOpt(
        "enabled_backends",
        help="Stores to use, as id:type pairs, e.g. 'fast:filesystem, s3east:s3'. Each "
        "id needs a config group of the same name with that driver's options. "
        "Unset: one filesystem store under [glance_store] filesystem_store_datadir "
        "(single-store mode; the multistore API is then off). "
        "Possible values: types are the ims.stores entry points (filesystem, s3, swift, "
        "memory). Ids may not start with 'os_glance_'. "
        "Related options: [glance_store] default_backend.",
    ),
]

opts = [
    cfg.StrOpt(
        "default_backend",
        help="Store id that receives uploads when the request names none. Required "
        "when enabled_backends is set.",
    ),
    cfg.StrOpt(
        "filesystem_store_datadir",
        default="$state_path/images",
        help="Directory of the single filesystem store used when enabled_backends is unset.",
    ),
    cfg.StrOpt(
        "staging_dir",
        default="$state_path/staging",
        help="Directory of the internal staging and task stores (os_glance_staging_store, "
        "os_glance_tasks_store); must be shared by all API processes.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(default_opts)
    conf.register_opts(opts, group=GROUP)
