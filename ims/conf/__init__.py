"""Configuration: one module per option group, registered explicitly."""

from __future__ import annotations

from oslo_config import cfg

from ims.conf import (
    api,
    database,
    default,
    image_format,
    imaging,
    imports,
    jobs,
    native,
    store,
    wsgi,
)

_MODULES = (default, api, database, image_format, imaging, imports, jobs, native, store, wsgi)


def register_all(conf: cfg.ConfigOpts) -> None:
    """Register every IMS option group on ``conf``."""
    for module in _MODULES:
        module.register_opts(conf)


def load(
    args: list[str] | None = None, default_config_files: list[str] | None = None
) -> cfg.ConfigOpts:
    """Build a ConfigOpts with all IMS options and parse the command line."""
    conf = cfg.ConfigOpts()
    register_all(conf)
    conf(
        args=args if args is not None else [],
        project="ims",
        default_config_files=default_config_files,
    )
    return conf
