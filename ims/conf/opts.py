"""Options for oslo-config-generator (the ``oslo.config.opts`` entry point)."""

from __future__ import annotations

import itertools

from oslo_config import cfg
from stevedore import ExtensionManager

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


def _store_driver_opts() -> list[tuple[str, list[cfg.Opt]]]:
    # NOTE(ims): store options live in a group named after each store id; the
    # sample shows them under the driver type, to be copied per store.
    from ims.core.stores import STORE_GROUP_OPTS

    mgr = ExtensionManager("ims.stores", invoke_on_load=False)
    return sorted(
        (f"{ext.name}_store_example", [*STORE_GROUP_OPTS, *ext.plugin.OPTS]) for ext in mgr
    )


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Return (group, options) pairs for every IMS option."""
    return [
        (
            None,
            list(
                itertools.chain(
                    default.opts, store.default_opts, wsgi.bind_opts, imports.default_opts
                )
            ),
        ),
        (api.GROUP, api.opts),
        (database.GROUP, database.opts),
        (image_format.GROUP, image_format.opts),
        (imaging.GROUP, imaging.opts),
        (imports.FILTER_GROUP, imports.filter_opts),
        (imports.TASK_GROUP, imports.task_opts),
        (jobs.GROUP, jobs.opts),
        (native.GROUP, native.opts),
        (store.GROUP, store.opts),
        (wsgi.GROUP, wsgi.opts),
        *_store_driver_opts(),
    ]
