"""The configured stores: which exist, which is default, which serves reads.

Operators list stores in ``[DEFAULT] enabled_backends`` (``id:type``); each id
is a config group with its driver's options. Without it, one filesystem
store serves everything (single-store mode). Internal stores for staging and
task data are always added under reserved ids.
"""

from __future__ import annotations

import dataclasses

from oslo_config import cfg
from stevedore import DriverManager
from stevedore.exception import NoMatches

from ims import errors
from ims.drivers.stores.base import Store
from ims.drivers.stores.filesystem import FilesystemStore

NAMESPACE = "ims.stores"
RESERVED_PREFIX = "os_glance_"
STAGING = "os_glance_staging_store"
TASKS = "os_glance_tasks_store"
SINGLE_STORE_ID = "file"

#: Options of every user store's group, whatever its driver: how users and
#: downloads see the store. Drivers never read them.
STORE_GROUP_OPTS = [
    cfg.StrOpt("store_description", default="", help="Shown to users in /v2/info/stores."),
    cfg.IntOpt(
        "weight",
        default=0,
        help="Preference when an image is in several stores: downloads come from "
        "the store with the highest weight.",
    ),
]


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What the stores API says about one store."""

    id: str
    type: str
    description: str
    weight: int
    default: bool
    read_only: bool


def _driver_class(type_name: str) -> type[Store]:
    try:
        return DriverManager(NAMESPACE, type_name, invoke_on_load=False).driver
    except NoMatches:
        raise errors.ConfigError(reason=f"unknown store type '{type_name}'") from None
    except Exception as ex:
        raise errors.ConfigError(reason=f"store driver '{type_name}' failed to load: {ex}") from ex


class StoreRegistry:
    """Every configured store, built and configured once at start-up."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self._stores: dict[str, Store] = {}
        self._info: dict[str, StoreInfo] = {}
        backends = conf.enabled_backends
        self.multistore = bool(backends)
        if self.multistore:
            self._load_multistore(dict(backends))
        else:
            self._add_filesystem(SINGLE_STORE_ID, conf.glance_store.filesystem_store_datadir)
            self.default_id = SINGLE_STORE_ID
        staging_root = conf.glance_store.staging_dir
        self._add_filesystem(STAGING, f"{staging_root}/staging", internal=True)
        self._add_filesystem(TASKS, f"{staging_root}/tasks", internal=True)

    def _load_multistore(self, backends: dict[str, str]) -> None:
        for store_id, type_name in backends.items():
            if store_id.startswith(RESERVED_PREFIX):
                raise errors.ConfigError(reason=f"store id '{store_id}' is reserved")
            cls = _driver_class(type_name.strip())
            self.conf.register_opts([*STORE_GROUP_OPTS, *cls.OPTS], group=store_id)
            self._register(store_id, cls, internal=False)
        default = self.conf.glance_store.default_backend
        if not default:
            raise errors.ConfigError(reason="[glance_store] default_backend is required")
        if default not in self._stores:
            raise errors.ConfigError(reason=f"default_backend '{default}' is not enabled")
        self.default_id = default

    def _add_filesystem(self, store_id: str, datadir: str, internal: bool = False) -> None:
        self.conf.register_opts([*STORE_GROUP_OPTS, *FilesystemStore.OPTS], group=store_id)
        self.conf.set_override("filesystem_store_datadir", datadir, group=store_id)
        self._register(store_id, FilesystemStore, internal)

    def _register(self, store_id: str, cls: type[Store], internal: bool) -> None:
        store = cls(self.conf, store_id)
        store.configure()
        self._stores[store_id] = store
        group = getattr(self.conf, store_id)
        if not internal:
            self._info[store_id] = StoreInfo(
                id=store_id,
                type=cls.TYPE,
                description=group.store_description,
                weight=group.weight,
                default=False,
                read_only=False,
            )

    def get(self, store_id: str) -> Store:
        """Return the store called ``store_id`` (internal ones included)."""
        try:
            return self._stores[store_id]
        except KeyError:
            raise errors.StoreNotFound(store=store_id) from None

    def user_store(self, store_id: str | None) -> Store:
        """Return a store users may name, the default one for None."""
        if store_id is None:
            return self._stores[self.default_id]
        if store_id not in self._info:
            raise errors.StoreNotFound(store=store_id)
        return self._stores[store_id]

    def infos(self) -> list[StoreInfo]:
        """Return the user-visible stores, the default marked."""
        return [
            dataclasses.replace(info, default=info.id == self.default_id)
            for info in self._info.values()
        ]

    def weight(self, store_id: str) -> int:
        info = self._info.get(store_id)
        return info.weight if info else 0
