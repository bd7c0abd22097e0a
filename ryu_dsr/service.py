"""Changes of the desired state, as the REST API and the declared file ask
for them: each is parsed and checked against the desired state
(``model.Config``), committed by the balancer, and what the commit wants
done is handed to ``carry_out`` (the shell's, or a test's switches)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ryu_dsr.core import Balancer
from ryu_dsr.effects import Effects
from ryu_dsr.flows.family import family_of
from ryu_dsr.model import (
    ROUTED,
    Backend,
    Change,
    Config,
    InvalidInput,
    Pool,
    Vip,
    check_object,
    parse_backend,
    parse_pool,
    parse_vip,
)


class Service:
    def __init__(self, balancer: Balancer, carry_out: Callable[[Effects], None]) -> None:
        self.balancer = balancer
        self.carry_out = carry_out

    @property
    def config(self) -> Config:
        return self.balancer.config

    def commit(self, change: Change, who: str = "") -> None:
        self.check_settings(change)
        self.carry_out(self.balancer.commit(change, who))

    def check_settings(self, change: Change) -> None:
        """Refuse what the controller's settings cannot serve: TCP and HTTP
        checks of IPv4 addresses without ``probe_ip``, for a pool the
        change makes or whose VIPs it changes (a check of the VIP)."""
        pools = {name: pool for name, pool in change.pools.items() if pool is not None}
        for name, pool in pools.items():
            self._check_routes(name, pool)
        for vip in change.vips.values():
            if vip is not None and vip.pool not in pools and vip.pool in self.config.pools:
                pools[vip.pool] = self.config.pools[vip.pool]
        for name, pool in pools.items():
            if pool.health_check.kind not in ("tcp", "http"):
                continue
            probed = self._probed(name, pool, change)
            if not probed and pool.health_check.target != "vip":
                probed = {"0.0.0.0"}  # no backend yet: of either family
            if not self.balancer.backends.can_probe(pool.health_check.kind, probed):
                raise InvalidInput(
                    "health_check.kind",
                    f"pool {name}: {pool.health_check.kind} checks of IPv4 addresses need the dsr.probe_ip "
                    "setting (an unused address in the backends' subnet); IPv6 checks need none, given the "
                    "IPv6 addresses they go to",
                )

    def _check_routes(self, name: str, pool) -> None:
        """dscp and gre backends need a route, and a check that travels as
        their traffic does (TCP or HTTP with the VIP's DSCP, or through the
        tunnel)."""
        backends = self.balancer.backends
        for i, backend in enumerate(pool.backends.values()):
            if backend.forwarding not in ROUTED:
                continue
            mode = backend.forwarding
            if backends.gateway(backend) is None:
                raise InvalidInput(
                    f"backends[{i}].forwarding",
                    f"pool {name}: {mode} backend {backend.ip} has no route: no prefix of the dsr.routes setting "
                    "holds it",
                )
            if pool.health_check.kind == "arp":
                how = "with the VIP's DSCP" if mode == "dscp" else "through the tunnel"
                raise InvalidInput(
                    "health_check.kind",
                    f"pool {name}: {mode} backends are checked as their traffic goes (tcp or http, {how}); arp "
                    "cannot reach them behind a router",
                )
            if pool.health_check.kind not in ("tcp", "http"):
                continue
            source = family_of(backend.ip).probe_source(
                self.balancer.settings.probe_mac, self.balancer.settings.probe_ip
            )
            if source is None or source.startswith("fe80:"):
                raise InvalidInput(
                    f"backends[{i}].forwarding",
                    f"pool {name}: {mode} backend {backend.ip} is checked from a routed address: give dsr.probe_ip "
                    f"one of its family (an unused address of the switch's segment)",
                )

    def _probed(self, name: str, pool, change: Change) -> set[str]:
        """The addresses a pool's health checks go to after ``change``: its
        backends', or (a check of the VIP) its VIPs'."""
        if pool.health_check.target != "vip":
            return set(pool.backends)
        vips = {vip_name: self.config.vips[vip_name] for vip_name in self.config.vips_by_pool.get(name, ())}
        vips.update(change.vips)
        return {vip.ip for vip in vips.values() if vip is not None and vip.pool == name}

    def create_pool(self, body: Any, who: str = "") -> Pool:
        pool = parse_pool(body)
        self.commit(self.config.plan_pool(pool), who)
        return pool

    def patch_pool(self, name: str, body: Any, who: str = "") -> None:
        self.commit(self.config.plan_pool_patch(name, body), who)

    def delete_pool(self, name: str, who: str = "") -> None:
        self.commit(self.config.plan_pool_delete(name), who)

    def add_backend(self, pool_name: str, body: Any, who: str = "") -> Backend:
        self.config.pool(pool_name)
        backend = parse_backend(body)
        self.commit(self.config.plan_backend(pool_name, backend), who)
        return backend

    def patch_backend(self, pool_name: str, ip: str, body: Any, who: str = "") -> None:
        self.commit(self.config.plan_backend_patch(pool_name, ip, body), who)

    def delete_backend(self, pool_name: str, ip: str, who: str = "") -> None:
        self.commit(self.config.plan_backend_delete(pool_name, ip), who)

    def create_vip(self, body: Any, who: str = "") -> Vip:
        vip = parse_vip(body)
        self.commit(self.config.plan_vip(vip), who)
        return vip

    def patch_vip(self, name: str, body: Any, who: str = "") -> None:
        self.commit(self.config.plan_vip_patch(name, body), who)

    def delete_vip(self, name: str, who: str = "") -> None:
        self.commit(self.config.plan_vip_delete(name), who)

    def apply_document(self, body: Any, dry_run: bool = False, who: str = "") -> dict:
        """``PUT /v1/config``: make the desired state equal to the document
        in one transaction and one diff; with ``dry_run`` only say what
        would change."""
        change = self.config.plan_document(body)
        self.check_settings(change)
        summary = change.summary(self.config)
        if not dry_run and change:
            self.commit(change, who)
        return {"dry_run": dry_run, "changes": summary}

    def adopt_state(self, body: Any, who: str = "") -> dict:
        """``POST /v1/state/adopt``: rules kept from a lost state go."""
        check_object(body, "", set())
        removed = self.balancer.kept_owners()
        self.carry_out(self.balancer.adopt(who))
        return {"adopted": True, "owners_removed": removed}
