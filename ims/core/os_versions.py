"""The OS versions IMS knows, from the data file ``ims/data/os_versions.json``.

One table feeds both ``GET /v1/cloudimages/os_version`` and the derivation of
an image's ``__os_type``, ``__platform`` and ``__os_bit`` from its
``__os_version`` (exact match), so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources
from typing import Any

from ims import errors

#: The tags ``GET /v1/cloudimages/os_version?tag=`` understands.
TAGS = frozenset({"bms", "uefi", "arm", "x86", "kvm"})
OS_TYPES = ("Linux", "Windows", "Other")


@dataclasses.dataclass(frozen=True)
class OsVersion:
    platform: str
    os_version: str
    os_version_key: str
    os_bit: int
    os_type: str
    tags: frozenset[str]


def _key(os_version: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", os_version).strip("_")


@functools.cache
def all_versions() -> tuple[OsVersion, ...]:
    """Load the table once per process."""
    text = resources.files("ims.data").joinpath("os_versions.json").read_text("utf-8")
    doc = json.loads(text)
    found = []
    for group in doc["platforms"]:
        for entry in group["versions"]:
            found.append(
                OsVersion(
                    platform=group["platform"],
                    os_version=entry["os_version"],
                    os_version_key=_key(entry["os_version"]),
                    os_bit=int(entry["os_bit"]),
                    os_type=entry.get("os_type", group["os_type"]),
                    tags=frozenset(entry.get("tags", ())),
                )
            )
    return tuple(found)


@functools.cache
def by_version() -> dict[str, OsVersion]:
    return {entry.os_version: entry for entry in all_versions()}


def lookup(os_version: str | None) -> OsVersion | None:
    """Return the table entry of an ``__os_version`` value, if IMS knows it."""
    if not os_version:
        return None
    return by_version().get(os_version)


def derived(os_version: str | None) -> dict[str, str]:
    """The ``__os_type``/``__platform``/``__os_bit`` an ``__os_version`` implies."""
    entry = lookup(os_version)
    if entry is None:
        return {}
    return {
        "__os_type": entry.os_type,
        "__platform": entry.platform,
        "__os_bit": str(entry.os_bit),
    }


def versions_where(field: str, value: str) -> list[str]:
    """The known ``__os_version`` values whose derived ``field`` equals ``value``."""
    attr = {"__os_type": "os_type", "__platform": "platform", "__os_bit": "os_bit"}[field]
    return [e.os_version for e in all_versions() if str(getattr(e, attr)) == value]


def catalogue(tags: list[str]) -> list[dict[str, Any]]:
    """The table grouped by platform, keeping versions that carry every tag."""
    wanted = set(tags)
    unknown = wanted - TAGS
    if unknown:
        raise errors.Invalid(
            f"Unknown tag {sorted(unknown)[0]!r}; choose from {', '.join(sorted(TAGS))}"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in all_versions():
        if not wanted <= entry.tags:
            continue
        groups.setdefault(entry.platform, []).append(
            {
                "platform": entry.platform,
                "os_version_key": entry.os_version_key,
                "os_version": entry.os_version,
                "os_bit": entry.os_bit,
                "os_type": entry.os_type,
            }
        )
    return [{"platform": name, "version_list": items} for name, items in groups.items()]
