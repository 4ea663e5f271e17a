"""Build the WSGI application: services once, resources, routes, errors."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import falcon
from oslo_config import cfg

from ims import errors as ims_errors
from ims.api.glance import discovery, errors, image_data, images, imports, members, metadefs, tasks
from ims.api.glance.views import ImageView
from ims.api.middleware.context import ContextMiddleware, is_public, with_request_id
from ims.api.middleware.drain import DrainUnreadBody
from ims.api.middleware.versions import VersionNegotiation
from ims.api.native import errors as native_errors
from ims.api.native import imaging as native_imaging
from ims.api.native import jobs as native_jobs
from ims.api.native import routes as native_routes
from ims.core import image_data as core_data
from ims.core import imaging as core_imaging
from ims.core import native_members
from ims.core.image_data import ImageDataService
from ims.core.images import ImageService
from ims.core.imports import ImportService
from ims.core.jobs import JobRunner, JobService
from ims.core.members import MemberService
from ims.core.metadefs import MetadefService
from ims.core.stores import StoreRegistry
from ims.core.tasks import TaskService
from ims.db import migration
from ims.db.session import Database, create_engine
from ims.disk import registry
from ims.policy import Policy, make_enforcer


@dataclasses.dataclass
class Services:
    """Everything the resources need, built once per process."""

    conf: cfg.ConfigOpts
    db: Database
    stores: StoreRegistry
    policy: Policy
    images: ImageService
    members: MemberService
    data: ImageDataService
    tasks: TaskService
    imports: ImportService
    jobs: JobService
    metadefs: MetadefService
    job_runner: JobRunner | None = None


def build_services(conf: cfg.ConfigOpts) -> Services:
    engine = create_engine(
        conf.database.connection,
        pool_size=conf.database.max_pool_size,
        max_overflow=conf.database.max_overflow,
        pool_timeout=conf.database.pool_timeout,
    )
    if conf.database.auto_migrate:
        migration.upgrade(engine)
    database = Database(engine)
    stores = StoreRegistry(conf)
    registry.formats()  # a format plugin that cannot load stops start-up
    policy = Policy(make_enforcer(conf))
    image_service = ImageService(conf, database, policy, stores)
    data_service = ImageDataService(conf, image_service)
    jobs = JobService(conf, database)
    services = Services(
        conf=conf,
        db=database,
        stores=stores,
        policy=policy,
        images=image_service,
        members=MemberService(conf, image_service),
        data=data_service,
        tasks=TaskService(image_service),
        imports=ImportService(conf, image_service, data_service, jobs),
        jobs=jobs,
        metadefs=MetadefService(conf, database, policy),
    )
    native_members.register_jobs(services)
    core_imaging.register_jobs(services)
    return services


def create_app(conf: cfg.ConfigOpts, services: Services | None = None) -> Any:
    """Return the WSGI application for ``conf`` (auth middleware included)."""
    services = services or build_services(conf)
    multistore = services.stores.multistore
    versions = discovery.advertised_versions(multistore)
    app = falcon.App(
        middleware=[
            VersionNegotiation({f"v{v}" for v in versions}),
            ContextMiddleware(conf.auth_strategy),
            DrainUnreadBody(),
        ],
        cors_enable=False,
    )
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    errors.install(app)
    app.add_error_handler(ims_errors.IMSError, _route_error)
    app.add_error_handler(falcon.HTTPError, _route_http_error)
    app.add_error_handler(Exception, _route_unexpected)
    _add_routes(app, services, versions)
    if conf.jobs.api_workers and services.jobs.has_handlers() and services.job_runner is None:
        services.job_runner = JobRunner(services.jobs, conf.jobs.api_workers)
        services.job_runner.start()
    if conf.auth_strategy == "keystone":
        return _with_keystone(app, conf)
    return app


def _route_error(
    req: falcon.Request, resp: falcon.Response, ex: ims_errors.IMSError, params: dict
) -> None:
    """Send each error to the handler of the dialect the request speaks."""
    if native_errors.is_native(req):
        native_errors.handle(req, resp, ex)
    else:
        errors.handle_ims_error(req, resp, ex, params)


def _route_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict
) -> None:
    """Falcon's own errors (no route, method not allowed) in the request's dialect."""
    if native_errors.is_native(req):
        native_errors.handle_http(req, resp, ex)
    else:
        errors.handle_http_error(req, resp, ex, params)


def _route_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict
) -> None:
    if isinstance(ex, falcon.HTTPError):
        _route_http_error(req, resp, ex, params)
    elif native_errors.is_native(req):
        native_errors.handle_unexpected(req, resp, ex)
    else:
        errors.handle_unexpected(req, resp, ex, params)


def _add_routes(app: falcon.App, s: Services, versions: list[str]) -> None:
    conf = s.conf
    view = ImageView(
        multistore=s.stores.multistore,
        show_direct_url=conf.show_image_direct_url,
        show_locations=conf.show_multiple_locations,
        store_weight=s.stores.weight,
    )
    store_ids = [info.id for info in s.stores.infos()] if s.stores.multistore else None
    version_doc = discovery.Versions(versions, conf.public_endpoint)
    app.add_route("/", version_doc)
    app.add_route("/versions", version_doc)

    image_res = images.Images(s.images, view, conf, s.imports.methods, store_ids)
    app.add_route("/v2/images", image_res, suffix="collection")
    app.add_route("/v2/images/{image_id}", image_res)
    app.add_route("/v2/images/{image_id}/file", image_data.ImageFile(s.data, s.stores.multistore))
    app.add_route("/v2/images/{image_id}/actions/deactivate", images.Deactivate(s.images))
    app.add_route("/v2/images/{image_id}/actions/reactivate", images.Reactivate(s.images))
    app.add_route("/v2/images/{image_id}/tags/{tag}", images.Tags(s.images))
    member_res = members.Members(s.members, conf.api.max_request_body_size)
    app.add_route("/v2/images/{image_id}/members", member_res, suffix="collection")
    app.add_route("/v2/images/{image_id}/members/{member_id}", member_res)
    app.add_route("/v2/images/{image_id}/tasks", tasks.ImageTasks(s.tasks))
    app.add_route("/v2/images/{image_id}/stage", imports.Stage(s.imports))
    app.add_route(
        "/v2/images/{image_id}/import",
        imports.Import(s.imports, conf.api.max_request_body_size, s.stores.multistore),
    )
    app.add_route("/v2/stores/{store_id}/{image_id}", imports.StoreImage(s.images))
    job_res = native_jobs.Jobs(s.jobs)
    app.add_route("/v1/{project_id}/jobs/{job_id}", job_res)
    app.add_route("/v1/cloudimages/job/{job_id}", job_res, suffix="progress")
    task_res = tasks.Tasks(s.tasks, conf.api.limit_param_default, conf.api.api_limit_max)
    app.add_route("/v2/tasks", task_res, suffix="collection")
    app.add_route("/v2/tasks/{task_id}", task_res)

    schema_docs = discovery.schema_documents(
        tuple(conf.image_format.disk_formats),
        tuple(conf.image_format.container_formats),
        metadefs.schema_documents(),
    )
    app.add_route("/v2/schemas/{name}", discovery.Schemas(schema_docs))
    metadefs.add_metadef_routes(app, s)
    native_routes.add_routes(app, s)
    native_imaging.add_routes(app, s)
    app.add_route("/v2/info/import", discovery.ImportInfo(s.imports.methods))
    stores_info = discovery.StoresInfo(s.stores, s.policy)
    app.add_route("/v2/info/stores", stores_info)
    app.add_route("/v2/info/stores/detail", stores_info, suffix="detail")
    app.add_route(
        "/v2/info/usage", discovery.UsageInfo(functools.partial(core_data.usage, s.data))
    )


def _with_keystone(app: falcon.App, conf: cfg.ConfigOpts) -> Any:
    from keystonemiddleware import auth_token

    protected = auth_token.AuthProtocol(app, {"oslo_config_config": conf})

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        # Version discovery answers without a token, as Glance's does.
        if is_public(environ.get("PATH_INFO") or "/"):
            return app(environ, start_response)
        return protected(environ, start_response)

    return with_request_id(dispatch)
