"""Version negotiation: /v2.N/... and Accept version headers lead to /v2."""

from __future__ import annotations

import re

import falcon

_VERSIONED_PATH = re.compile(r"^/v2(\.\d+)?(/.*)?$")
# The IMS native API lives under /v1/... and /v2[.N]/cloudimages, and answers its
# own version entries at /v1, /v1.0 and /v1.1; leave it be.
_NATIVE = re.compile(
    r"^/(v1/|v1(\.[01])?$|v2(\.\d+)?/cloudimages(/|$)|v\d(\.\d+)?/[^/]+/(jobs|images/tags|"
    r"images/[^/]+/tags|images/resource_instances)(/|$))"
)
_ACCEPT = re.compile(r"application/vnd\.openstack\.images-v2(\.\d+)?")


class VersionNegotiation:
    """Rewrite every accepted spelling of v2 to the canonical /v2 prefix.

    Anything else under a version-looking prefix is answered by the versions
    document with 300, as Glance does.
    """

    def __init__(self, advertised: set[str]) -> None:
        self.advertised = advertised

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.path
        if _NATIVE.match(path):
            return
        match = _VERSIONED_PATH.match(path)
        if match:
            minor = match.group(1)
            if minor and f"v2{minor}" not in self.advertised:
                req.path = "/"
                return
            req.path = "/v2" + (match.group(2) or "")
            return
        accept = req.get_header("Accept") or ""
        accepted = _ACCEPT.search(accept)
        if accepted and path not in ("/", "/versions"):
            req.path = "/v2" + path
            return
        if re.match(r"^/v\d", path):
            req.path = "/"
