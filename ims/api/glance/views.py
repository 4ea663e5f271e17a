"""How images, members and tasks look in the Image API v2."""

from __future__ import annotations

import datetime
from typing import Any

from ims.db import api as db


def timestamp(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class ImageView:
    """Serializes image records, knowing what the deployment exposes."""

    def __init__(
        self, multistore: bool, show_direct_url: bool, show_locations: bool, store_weight: Any
    ) -> None:
        self.multistore = multistore
        self.show_direct_url = show_direct_url
        self.show_locations = show_locations
        self.store_weight = store_weight

    def image(self, image: db.Image) -> dict[str, Any]:
        doc: dict[str, Any] = dict(image.properties)
        doc.update(
            id=image.id,
            name=image.name,
            status=image.status,
            visibility=image.visibility,
            protected=image.protected,
            os_hidden=image.os_hidden,
            checksum=image.checksum,
            os_hash_algo=image.os_hash_algo,
            os_hash_value=image.os_hash_value,
            owner=image.owner,
            size=image.size,
            virtual_size=image.virtual_size,
            container_format=image.container_format,
            disk_format=image.disk_format,
            min_disk=image.min_disk,
            min_ram=image.min_ram,
            tags=list(image.tags),
            created_at=timestamp(image.created_at),
            updated_at=timestamp(image.updated_at),
            self=f"/v2/images/{image.id}",
            file=f"/v2/images/{image.id}/file",
            schema="/v2/schemas/image",
        )
        active = [loc for loc in image.locations if loc.status == "active"]
        if self.multistore and active:
            doc["stores"] = ",".join(sorted({loc.store for loc in active}))
        if self.show_direct_url and active:
            best = max(active, key=lambda loc: self.store_weight(loc.store))
            doc["direct_url"] = best.url
        if self.show_locations:
            doc["locations"] = [
                {"url": loc.url, "metadata": {**loc.metadata, "store": loc.store}}
                for loc in active
            ]
        return doc


def member(m: db.Member) -> dict[str, Any]:
    return {
        "image_id": m.image_id,
        "member_id": m.member_id,
        "status": m.status,
        "created_at": timestamp(m.created_at),
        "updated_at": timestamp(m.updated_at),
        "schema": "/v2/schemas/member",
    }


def task(t: db.Task, full: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": t.id,
        "type": t.type,
        "status": t.status,
        "owner": t.owner,
        "image_id": t.image_id,
        "request_id": t.request_id,
        "user_id": t.user_id,
        "expires_at": timestamp(t.expires_at),
        "created_at": timestamp(t.created_at),
        "updated_at": timestamp(t.updated_at),
        "self": f"/v2/tasks/{t.id}",
        "schema": "/v2/schemas/task",
    }
    if full:
        doc.update(input=t.input, result=t.result, message=t.message)
    return doc
