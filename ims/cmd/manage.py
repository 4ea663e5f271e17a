"""ims-manage: operator tasks.

ims-manage [--config-file FILE] db sync       bring the schema up to date
ims-manage [--config-file FILE] db version    print the schema revision
ims-manage [--config-file FILE] store cleanup remove leftovers of failed writes
"""

from __future__ import annotations

import sys

from oslo_config import cfg

from ims import conf as ims_conf
from ims import errors
from ims.db import migration
from ims.db.session import create_engine


def _add_commands(subparsers: object) -> None:
    db = subparsers.add_parser("db", help="database schema")  # type: ignore[attr-defined]
    db_sub = db.add_subparsers(dest="action")
    db_sub.required = True
    db_sub.add_parser("sync", help="upgrade the schema to the newest revision")
    db_sub.add_parser("version", help="print the current schema revision")
    store = subparsers.add_parser("store", help="image stores")  # type: ignore[attr-defined]
    store_sub = store.add_subparsers(dest="action")
    store_sub.required = True
    store_sub.add_parser("cleanup", help="remove leftovers of interrupted writes")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    conf = cfg.ConfigOpts()
    ims_conf.register_all(conf)
    conf.register_cli_opt(cfg.SubCommandOpt("category", handler=_add_commands))
    try:
        conf(args=argv, project="ims")
    except cfg.Error as ex:
        print(f"ims-manage: {ex}", file=sys.stderr)
        return 2
    category, action = conf.category.name, conf.category.action
    try:
        if category == "db":
            engine = create_engine(conf.database.connection)
            if action == "sync":
                migration.upgrade(engine)
                print(f"Schema at revision {migration.current(engine)}")
            else:
                print(migration.current(engine) or "none")
        elif category == "store":
            from ims.core.stores import StoreRegistry

            registry = StoreRegistry(conf)
            for info in [*registry.infos()]:
                removed = registry.get(info.id).cleanup()
                print(f"{info.id}: removed {removed} leftover object(s)")
    except errors.IMSError as ex:
        print(f"ims-manage: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
