"""Who is asking: the request context handed from the API to the core."""

from __future__ import annotations

import dataclasses
import uuid

# NOTE(ims): Keystone expands implied roles in tokens; headers in noauth mode
# and some deployments do not, so the same expansion is applied here.
_IMPLIED = {"admin": ("member", "reader"), "member": ("reader",)}


def new_request_id() -> str:
    """Return a fresh request id in the OpenStack form."""
    return f"req-{uuid.uuid4()}"


def expand_roles(roles: list[str]) -> frozenset[str]:
    """Return the roles plus the ones they imply, lower-cased."""
    found = {role.strip().lower() for role in roles if role.strip()}
    for role in list(found):
        found.update(_IMPLIED.get(role, ()))
    return frozenset(found)


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """The caller's identity and the request id, as the core sees them."""

    project_id: str | None
    user_id: str | None = None
    roles: frozenset[str] = frozenset()
    request_id: str = dataclasses.field(default_factory=new_request_id)
    auth_token: str | None = None
    domain_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def policy_creds(self) -> dict[str, object]:
        """Return the credentials oslo.policy checks rules against."""
        return {
            "project_id": self.project_id,
            "user_id": self.user_id,
            "roles": sorted(self.roles),
            "is_admin": self.is_admin,
        }

    @classmethod
    def admin(cls) -> RequestContext:
        """A context for the service's own maintenance work."""
        return cls(project_id=None, user_id=None, roles=expand_roles(["admin"]))
