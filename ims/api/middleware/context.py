"""Build the RequestContext of each request from identity headers.

With keystone, keystonemiddleware has already validated the token and set
the X-Identity-Status, X-Project-Id, X-User-Id and X-Roles headers. With
noauth, the same headers are trusted as sent (development only).
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from ims.context import RequestContext, expand_roles, new_request_id

_REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Paths anyone may read: version discovery of both APIs (/, /versions, /v1,
#: /v1.0, /v1.1, /v2, /v2.N), with or without a trailing slash.
_PUBLIC_PATH = re.compile(r"^/(versions|v1(\.[01])?|v2(\.\d+)?)?/?$")


def is_public(path: str) -> bool:
    """Whether ``path`` answers without a token."""
    return bool(_PUBLIC_PATH.match(path))


def with_request_id(wsgi_app: Any) -> Any:
    """Give every response an x-openstack-request-id, even ones made outside Falcon.

    keystonemiddleware answers 401 itself; Glance's request-id middleware
    sits in front of it, so those answers carry the id too. The id chosen
    here goes into the request headers, where ContextMiddleware reuses it.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        wanted = environ.get("HTTP_X_OPENSTACK_REQUEST_ID") or ""
        request_id = wanted if _REQUEST_ID.match(wanted) else new_request_id()
        environ["HTTP_X_OPENSTACK_REQUEST_ID"] = request_id

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(name.lower() == "x-openstack-request-id" for name, _ in headers):
                headers = [*headers, ("x-openstack-request-id", request_id)]
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start)

    return app


def _split_roles(header: str | None) -> list[str]:
    return [r for r in (header or "").split(",") if r.strip()]


class ContextMiddleware:
    """Attach ``req.context.ims`` (a RequestContext) and echo the request id."""

    def __init__(self, auth_strategy: str) -> None:
        self.keystone = auth_strategy == "keystone"

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = req.get_header("X-Openstack-Request-Id") or ""
        request_id = wanted if _REQUEST_ID.match(wanted) else new_request_id()
        resp.set_header("x-openstack-request-id", request_id)
        if self.keystone:
            ctx = self._from_keystone(req, request_id)
        else:
            ctx = self._from_noauth(req, request_id)
        req.context.ims = ctx

    def _from_keystone(self, req: falcon.Request, request_id: str) -> RequestContext:
        if req.get_header("X-Identity-Status") != "Confirmed":
            if is_public(req.path):
                return RequestContext(project_id=None, request_id=request_id)
            raise falcon.HTTPUnauthorized(
                title="Unauthorized",
                description="This server could not verify that you are "
                "authorized to access the document you requested.",
            )
        return RequestContext(
            project_id=req.get_header("X-Project-Id") or req.get_header("X-Tenant-Id"),
            user_id=req.get_header("X-User-Id"),
            roles=expand_roles(_split_roles(req.get_header("X-Roles"))),
            request_id=request_id,
            auth_token=req.get_header("X-Auth-Token"),
            domain_id=req.get_header("X-Project-Domain-Id"),
        )

    def _from_noauth(self, req: falcon.Request, request_id: str) -> RequestContext:
        roles = req.get_header("X-Roles")
        # NOTE(ims): like an unauthenticated Glance, a bare request is admin.
        return RequestContext(
            project_id=req.get_header("X-Project-Id") or req.get_header("X-Tenant-Id"),
            user_id=req.get_header("X-User-Id"),
            roles=expand_roles(_split_roles(roles) if roles is not None else ["admin"]),
            request_id=request_id,
            auth_token=req.get_header("X-Auth-Token"),
        )
