"""Routes of the IMS native cloudimages, sharing, tag, quota and version APIs."""

from __future__ import annotations

from typing import Any

import falcon

from ims.api.glance import discovery
from ims.api.glance.views import ImageView
from ims.api.native import cloudimages, members, tags
from ims.core.cloudimages import CloudImageService
from ims.core.native_members import NativeMemberService
from ims.core.native_quotas import QuotaService
from ims.core.native_tags import NativeTagService


def add_routes(app: falcon.App, s: Any) -> None:
    """Add the routes to ``app``, with services built from ``s`` (app.Services)."""
    conf = s.conf
    max_body = conf.api.max_request_body_size
    view = cloudimages.NativeImageView(
        ImageView(
            multistore=s.stores.multistore,
            show_direct_url=conf.show_image_direct_url,
            show_locations=conf.show_multiple_locations,
            store_weight=s.stores.weight,
        )
    )
    images = cloudimages.CloudImages(CloudImageService(conf, s.images), view, max_body)
    app.add_route("/v2/cloudimages", images, suffix="collection")
    app.add_route("/v2/cloudimages/{image_id}", images)
    app.add_route("/v1/cloudimages/os_version", cloudimages.OsVersions())
    app.add_route("/v1/cloudimages/quota", cloudimages.Quotas(QuotaService(conf, s.db, s.policy)))
    v2_versions = discovery.advertised_versions(s.stores.multistore)
    version = cloudimages.ApiVersion(conf.public_endpoint, v2_versions)
    for path in (*cloudimages.V1_VERSIONS, "/v2"):
        app.add_route(path, version)

    sharing = NativeMemberService(conf, s.images, s.members, s.jobs)
    app.add_route("/v1/cloudimages/members", members.BatchMembers(sharing, max_body))
    image_members = members.ImageMembers(sharing)
    base = "/v1/{project_id}/cloudimages/{image_id}/members"
    app.add_route(base, image_members, suffix="collection")
    app.add_route(base + "/{member_id}", image_members)

    tagging = NativeTagService(conf, s.images)
    app.add_route("/v1/cloudimages/tags", tags.V1Tags(tagging, max_body))
    app.add_route("/v2/{project_id}/images/tags", tags.ProjectTags(tagging, max_body))
    app.add_route(
        "/v2/{project_id}/images/resource_instances/action",
        tags.ResourceInstances(tagging, max_body),
    )
    app.add_route("/v2/{project_id}/images/{image_id}/tags", tags.ImageTags(tagging, max_body))
    app.add_route(
        "/v2/{project_id}/images/{image_id}/tags/{key}", tags.ImageTag(tagging, max_body)
    )
