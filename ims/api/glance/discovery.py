"""Versions, schemas and /v2/info: what clients read to learn the service."""

from __future__ import annotations

from typing import Any

import falcon

from ims import errors
from ims.api.glance.images import ctx
from ims.core import schemas
from ims.core.stores import StoreRegistry
from ims.policy import Policy

ALWAYS = ("2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.9", "2.15", "2.17")
MULTISTORE = ("2.8", "2.10", "2.11", "2.12", "2.13")


def advertised_versions(multistore: bool) -> list[str]:
    found = set(ALWAYS) | (set(MULTISTORE) if multistore else set())
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)


class Versions:
    """GET / (300) and GET /versions (200)."""

    def __init__(self, versions: list[str], public_endpoint: str | None) -> None:
        self.versions = versions
        self.public_endpoint = public_endpoint

    def _doc(self, req: falcon.Request) -> dict[str, Any]:
        base = (self.public_endpoint or req.prefix).rstrip("/")
        current = self.versions[0]
        return {
            "versions": [
                {
                    "id": f"v{v}",
                    "status": "CURRENT" if v == current else "SUPPORTED",
                    "links": [{"rel": "self", "href": f"{base}/v2/"}],
                }
                for v in self.versions
            ]
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_300 if req.path == "/" else falcon.HTTP_200
        resp.media = self._doc(req)


class Schemas:
    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        doc = self.docs.get(name)
        if doc is None:
            raise errors.NotFound(f"No schema named {name}")
        resp.media = doc


def schema_documents(
    disk_formats: tuple[str, ...],
    container_formats: tuple[str, ...],
    metadefs: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    image = schemas.image_schema(disk_formats, container_formats)
    docs = {
        "image": image,
        "images": schemas.images_schema(image),
        "member": schemas.MEMBER_SCHEMA,
        "members": schemas.MEMBERS_SCHEMA,
        "task": schemas.TASK_SCHEMA,
        "tasks": schemas.TASKS_SCHEMA,
    }
    docs.update({f"metadefs/{k}": v for k, v in metadefs.items()})
    return docs


class ImportInfo:
    def __init__(self, methods: list[str]) -> None:
        self.methods = methods

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": self.methods,
            }
        }


class StoresInfo:
    def __init__(self, stores: StoreRegistry, policy: Policy) -> None:
        self.stores = stores
        self.policy = policy

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.stores.multistore:
            raise errors.NotFound("Multi backend is not supported at this site.")
        out = []
        for info in self.stores.infos():
            doc: dict[str, Any] = {"id": info.id, "description": info.description}
            if info.default:
                doc["default"] = "true"
            if info.read_only:
                doc["read-only"] = "true"
            out.append(doc)
        resp.media = {"stores": out}

    def on_get_detail(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.stores.multistore:
            raise errors.NotFound("Multi backend is not supported at this site.")
        self.policy.enforce(ctx(req), "stores_info_detail")
        out = []
        for info in self.stores.infos():
            doc: dict[str, Any] = {
                "id": info.id,
                "description": info.description,
                "type": info.type,
                "weight": info.weight,
                "properties": self.stores.get(info.id).describe(),
            }
            if info.default:
                doc["default"] = "true"
            out.append(doc)
        resp.media = {"stores": out}


class UsageInfo:
    """GET /v2/info/usage: what the caller's project uses against its limits."""

    def __init__(self, usage: Any) -> None:
        self.usage = usage

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"usage": self.usage(ctx(req))}
