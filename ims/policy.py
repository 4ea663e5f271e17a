"""The oslo.policy enforcer: defaults in code, overrides from policy.yaml."""

from __future__ import annotations

from oslo_config import cfg
from oslo_policy import policy

from ims import errors, policies
from ims.context import RequestContext


def get_enforcer() -> policy.Enforcer:
    """Return an enforcer for the oslopolicy tools (sample generation)."""
    conf = cfg.ConfigOpts()
    conf([], project="ims")
    return make_enforcer(conf)


def make_enforcer(conf: cfg.ConfigOpts) -> policy.Enforcer:
    """Build the enforcer with the in-code rules registered."""
    enforcer = policy.Enforcer(conf, use_conf=True)
    enforcer.register_defaults(policies.list_rules())
    return enforcer


class Policy:
    """Checks a context against a named rule, raising Forbidden on refusal."""

    def __init__(self, enforcer: policy.Enforcer) -> None:
        self._enforcer = enforcer

    def check(
        self, ctx: RequestContext, rule: str, target: dict[str, object] | None = None
    ) -> bool:
        """Return whether ``rule`` allows ``ctx`` on ``target``."""
        full_target = {"project_id": ctx.project_id}
        if target:
            full_target.update(target)
        return bool(self._enforcer.enforce(rule, full_target, ctx.policy_creds()))

    def enforce(
        self, ctx: RequestContext, rule: str, target: dict[str, object] | None = None
    ) -> None:
        """Raise Forbidden unless ``rule`` allows ``ctx`` on ``target``."""
        if not self.check(ctx, rule, target):
            raise errors.Forbidden(f"Policy does not allow {rule} to be performed.")
