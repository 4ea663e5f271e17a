"""GET/PATCH /v2/cloudimages, the OS list, quotas and the v1 version entries."""

from __future__ import annotations

import re
from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.api.glance.views import ImageView
from ims.core import os_versions
from ims.core.cloudimages import CloudImage, CloudImageService
from ims.core.native_quotas import QuotaService

MAX_OS_TAGS = 10


def ctx(req: falcon.Request) -> Any:
    return req.context.ims


class NativeImageView:
    """ImageInfo: the Glance view of the image plus what IMS derives.

    Built on the Glance view so that every field both show is the same.
    """

    def __init__(self, glance: ImageView) -> None:
        self.glance = glance

    def image(self, item: CloudImage) -> dict[str, Any]:
        doc = self.glance.image(item.image)
        doc.update(item.derived)
        doc.setdefault("enterprise_project_id", "0")
        doc["deleted"] = False
        return doc


class CloudImages:
    """GET /v2/cloudimages and PATCH /v2/cloudimages/{image_id}."""

    def __init__(self, service: CloudImageService, view: NativeImageView, max_body: int) -> None:
        self.service = service
        self.view = view
        self.max_body = max_body

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        found = self.service.list(ctx(req), req.params)
        resp.media = {"images": [self.view.image(item) for item in found]}

    def on_patch(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        allowed = (media.JSON, media.PATCH_V21, "application/json-patch+json")
        body = media.read_json(req, self.max_body, allowed=allowed)
        resp.media = self.view.image(self.service.update(ctx(req), image_id, body))


class OsVersions:
    """GET /v1/cloudimages/os_version?tag=..."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tags = req.get_param_as_list("tag") or []
        if len(tags) > MAX_OS_TAGS:
            raise errors.Invalid(f"At most {MAX_OS_TAGS} tags are allowed")
        resp.media = os_versions.catalogue(tags)


class Quotas:
    """GET /v1/cloudimages/quota."""

    def __init__(self, service: QuotaService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"quotas": {"resources": self.service.usage(ctx(req))}}


#: IMS lists v1.0 and v1.1 as deprecated (ims-api.md §1.9); /v1 names the newer.
V1_VERSIONS = {"/v1": "v1.1", "/v1.0": "v1.0", "/v1.1": "v1.1"}
_V2_PATH = re.compile(r"^/v2(\.\d+)?/?$")


class ApiVersion:
    """GET /{api_version}: one IMS-style version entry.

    Answers /v1, /v1.0 and /v1.1, and the bare /v2 and /v2.N (advertised N)
    that Glance's negotiation leads to /v2. ``GET /`` stays Glance's 300
    versions document, which Glance clients need, and /v2.N/... paths are
    negotiated exactly as before.
    """

    def __init__(self, public_endpoint: str | None, v2_versions: list[str]) -> None:
        self.public_endpoint = public_endpoint
        self.v2_versions = v2_versions

    def _entry(self, req: falcon.Request) -> tuple[str, str, str]:
        if req.path in V1_VERSIONS:
            return V1_VERSIONS[req.path], "DEPRECATED", "v1"
        # The negotiation middleware rewrote /v2.N to /v2; the request line
        # still says which version was asked for.
        match = _V2_PATH.match(req.env.get("PATH_INFO") or "")
        current = f"v{self.v2_versions[0]}"
        wanted = f"v2{match.group(1)}" if match and match.group(1) else current
        return wanted, "CURRENT" if wanted == current else "SUPPORTED", "v2"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        base = (self.public_endpoint or req.prefix).rstrip("/")
        version, status, major = self._entry(req)
        resp.media = {
            "version": {
                "id": version,
                "status": status,
                "links": [{"rel": "self", "href": f"{base}/{major}/"}],
                "min_version": "",
                "version": "",
            }
        }
