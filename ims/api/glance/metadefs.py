"""/v2/metadefs: metadata definition namespaces and what they hold.

Resources translate HTTP to MetadefService calls and records to Glance's
JSON shapes. Values that are unset are left out rather than sent as null:
glanceclient validates every body against the published schemas.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import falcon

from ims import errors
from ims.api import media
from ims.api.glance import discovery
from ims.api.glance.images import ctx
from ims.api.glance.views import timestamp
from ims.core import metadef_schemas
from ims.core.metadefs import ListParams, MetadefService, NamespaceDetail
from ims.db import metadef_api as db

BASE = "/v2/metadefs/namespaces"
SCHEMAS = "/v2/schemas/metadefs"
_PATH_SAFE = ":@!$&'()*+,;=~"


def _path(name: str) -> str:
    return urllib.parse.quote(name, safe=_PATH_SAFE)


def _present(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}


# -- views -------------------------------------------------------------------


def association_view(link: db.Association) -> dict[str, Any]:
    return _present(
        {
            "name": link.name,
            "prefix": link.prefix,
            "properties_target": link.properties_target,
            "created_at": timestamp(link.created_at),
            "updated_at": timestamp(link.updated_at),
        }
    )


def resource_type_view(rt: db.ResourceType) -> dict[str, Any]:
    return {
        "name": rt.name,
        "created_at": timestamp(rt.created_at),
        "updated_at": timestamp(rt.updated_at),
    }


def tag_view(tag: db.Tag) -> dict[str, Any]:
    return {
        "name": tag.name,
        "created_at": timestamp(tag.created_at),
        "updated_at": timestamp(tag.updated_at),
    }


def property_view(prop: db.Property) -> dict[str, Any]:
    return {"name": prop.name, **prop.schema}


def object_view(namespace: str, obj: db.Object) -> dict[str, Any]:
    return _present(
        {
            "name": obj.name,
            "description": obj.description,
            "required": list(obj.required),
            "properties": obj.properties,
            "created_at": timestamp(obj.created_at),
            "updated_at": timestamp(obj.updated_at),
            "self": f"{BASE}/{_path(namespace)}/objects/{_path(obj.name)}",
            "schema": f"{SCHEMAS}/object",
        }
    )


def namespace_view(detail: NamespaceDetail) -> dict[str, Any]:
    ns = detail.namespace
    doc = _present(
        {
            "namespace": ns.namespace,
            "display_name": ns.display_name,
            "description": ns.description,
            "visibility": ns.visibility,
            "protected": ns.protected,
            "owner": ns.owner,
            "created_at": timestamp(ns.created_at),
            "updated_at": timestamp(ns.updated_at),
            "self": f"{BASE}/{_path(ns.namespace)}",
            "schema": f"{SCHEMAS}/namespace",
        }
    )
    if detail.associations:
        doc["resource_type_associations"] = [association_view(a) for a in detail.associations]
    if detail.properties:
        doc["properties"] = detail.properties
    if detail.objects:
        doc["objects"] = [object_view(ns.namespace, o) for o in detail.objects]
    if detail.tags:
        doc["tags"] = [tag_view(t) for t in detail.tags]
    return doc


# -- query parameters --------------------------------------------------------


def _single(params: dict[str, Any], name: str) -> str | None:
    """One query parameter; given empty, it counts as not given (as in Glance)."""
    value = params.get(name)
    if isinstance(value, list):
        raise errors.Invalid(f"Parameter {name} may be given only once")
    return value or None


def _list_params(params: dict[str, Any]) -> ListParams:
    limit = None
    raw = _single(params, "limit")
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise errors.Invalid("limit param must be an integer") from None
    raw_types = params.get("resource_types") or []
    joined = ",".join(raw_types if isinstance(raw_types, list) else [raw_types])
    return ListParams(
        limit=limit,
        marker=_single(params, "marker"),
        sort_key=_single(params, "sort_key"),
        sort_dir=_single(params, "sort_dir"),
        visibility=_single(params, "visibility"),
        resource_types=tuple(t.strip() for t in joined.split(",") if t.strip()),
    )


def _links(path: str, params: dict[str, Any], next_marker: str | None) -> dict[str, str]:
    """The ``first`` and (when there is more) ``next`` links of a listing."""
    plain = [
        (k, v)
        for k, values in params.items()
        if k != "marker"
        for v in (values if isinstance(values, list) else [values])
    ]
    links = {"first": path + (f"?{urllib.parse.urlencode(plain)}" if plain else "")}
    if next_marker is not None:
        links["next"] = f"{path}?{urllib.parse.urlencode([*plain, ('marker', next_marker)])}"
    return links


# -- resources ---------------------------------------------------------------


class _Resource:
    def __init__(self, service: MetadefService, max_body: int) -> None:
        self.service = service
        self.max_body = max_body

    def _body(self, req: falcon.Request) -> Any:
        return media.read_json(req, self.max_body)


class Namespaces(_Resource):
    """/v2/metadefs/namespaces[/{namespace}]."""

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = dict(req.params)
        found, next_marker = self.service.list_namespaces(ctx(req), _list_params(params))
        resp.media = {
            "namespaces": [namespace_view(d) for d in found],
            "schema": f"{SCHEMAS}/namespaces",
            **_links(BASE, params, next_marker),
        }

    def on_post_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        detail = self.service.create_namespace(ctx(req), self._body(req))
        resp.status = falcon.HTTP_201
        resp.media = namespace_view(detail)

    def on_get(self, req: falcon.Request, resp: falcon.Response, namespace: str) -> None:
        resource_type = _single(dict(req.params), "resource_type")
        resp.media = namespace_view(self.service.get_namespace(ctx(req), namespace, resource_type))

    def on_put(self, req: falcon.Request, resp: falcon.Response, namespace: str) -> None:
        detail = self.service.update_namespace(ctx(req), namespace, self._body(req))
        resp.media = namespace_view(detail)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, namespace: str) -> None:
        self.service.delete_namespace(ctx(req), namespace)
        resp.status = falcon.HTTP_204


class _Children(_Resource):
    """Deleting one child, or all of a namespace's children, is the same for every kind."""

    KIND = ""

    def on_delete_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        self.service.delete_children(ctx(req), self.KIND, namespace)
        resp.status = falcon.HTTP_204

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        self.service.delete_child(ctx(req), self.KIND, namespace, name)
        resp.status = falcon.HTTP_204


class Objects(_Children):
    """/v2/metadefs/namespaces/{namespace}/objects[/{name}]."""

    KIND = "objects"

    def on_get_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        params = dict(req.params)
        found, next_marker = self.service.list_children(
            ctx(req), "objects", namespace, _list_params(params)
        )
        body: dict[str, Any] = {
            "objects": [object_view(namespace, o) for o in found],
            "schema": f"{SCHEMAS}/objects",
        }
        if next_marker is not None:
            body["next"] = _links(f"{BASE}/{_path(namespace)}/objects", params, next_marker)[
                "next"
            ]
        resp.media = body

    def on_post_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        obj = self.service.create_object(ctx(req), namespace, self._body(req))
        resp.status = falcon.HTTP_201
        resp.media = object_view(namespace, obj)

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        obj = self.service.get_child(ctx(req), "objects", namespace, name)
        resp.media = object_view(namespace, obj)

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        obj = self.service.update_object(ctx(req), namespace, name, self._body(req))
        resp.media = object_view(namespace, obj)


class Properties(_Children):
    """/v2/metadefs/namespaces/{namespace}/properties[/{name}]."""

    KIND = "properties"

    def on_get_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        found, _ = self.service.list_children(ctx(req), "properties", namespace)
        # NOTE(ims): entries repeat their name so that the listing validates
        # against the published "properties" schema (items require a name).
        resp.media = {"properties": {p.name: property_view(p) for p in found}}

    def on_post_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        prop = self.service.create_property(ctx(req), namespace, self._body(req))
        resp.status = falcon.HTTP_201
        resp.media = property_view(prop)

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        resource_type = _single(dict(req.params), "resource_type")
        prop = self.service.get_property(ctx(req), namespace, name, resource_type)
        resp.media = property_view(prop)

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        prop = self.service.update_property(ctx(req), namespace, name, self._body(req))
        resp.media = property_view(prop)


class Tags(_Children):
    """/v2/metadefs/namespaces/{namespace}/tags[/{name}]."""

    KIND = "tags"

    def on_get_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        params = dict(req.params)
        found, next_marker = self.service.list_children(
            ctx(req), "tags", namespace, _list_params(params)
        )
        body: dict[str, Any] = {"tags": [tag_view(t) for t in found]}
        if next_marker is not None:
            body["next"] = _links(f"{BASE}/{_path(namespace)}/tags", params, next_marker)["next"]
        resp.media = body

    def on_post_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        append = (req.get_header("X-Openstack-Append") or "").strip().lower() == "true"
        tags = self.service.create_tags(ctx(req), namespace, self._body(req), append)
        resp.status = falcon.HTTP_201
        resp.media = {"tags": [tag_view(t) for t in tags]}

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        resp.media = tag_view(self.service.get_child(ctx(req), "tags", namespace, name))

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        tag = self.service.create_tag(ctx(req), namespace, name)
        resp.status = falcon.HTTP_201
        resp.media = tag_view(tag)

    def on_put(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        tag = self.service.update_tag(ctx(req), namespace, name, self._body(req))
        resp.media = tag_view(tag)


class Associations(_Resource):
    """/v2/metadefs/namespaces/{namespace}/resource_types[/{name}]."""

    def on_get_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        links = self.service.list_associations(ctx(req), namespace)
        resp.media = {"resource_type_associations": [association_view(a) for a in links]}

    def on_post_collection(
        self, req: falcon.Request, resp: falcon.Response, namespace: str
    ) -> None:
        link = self.service.associate(ctx(req), namespace, self._body(req))
        resp.status = falcon.HTTP_201
        resp.media = association_view(link)

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, namespace: str, name: str
    ) -> None:
        self.service.dissociate(ctx(req), namespace, name)
        resp.status = falcon.HTTP_204


class ResourceTypes:
    """/v2/metadefs/resource_types."""

    def __init__(self, service: MetadefService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        found = self.service.list_resource_types(ctx(req))
        resp.media = {"resource_types": [resource_type_view(rt) for rt in found]}


def schema_documents() -> dict[str, dict[str, Any]]:
    """The metadef schema documents, by the name after /v2/schemas/metadefs/."""
    return metadef_schemas.documents()


def add_metadef_routes(app: falcon.App, services: Any) -> None:
    """Route /v2/metadefs and /v2/schemas/metadefs to their resources."""
    service: MetadefService = services.metadefs
    max_body = services.conf.api.max_request_body_size
    item = BASE + "/{namespace}"
    namespaces = Namespaces(service, max_body)
    app.add_route(BASE, namespaces, suffix="collection")
    app.add_route(item, namespaces)
    for kind, cls in (
        ("objects", Objects),
        ("properties", Properties),
        ("tags", Tags),
        ("resource_types", Associations),
    ):
        resource = cls(service, max_body)
        app.add_route(f"{item}/{kind}", resource, suffix="collection")
        app.add_route(f"{item}/{kind}/{{name}}", resource)
    app.add_route("/v2/metadefs/resource_types", ResourceTypes(service))
    # NOTE(ims): "/v2/schemas/{name}" cannot match a name with a slash.
    app.add_route(f"{SCHEMAS}/{{name}}", discovery.Schemas(schema_documents()))
