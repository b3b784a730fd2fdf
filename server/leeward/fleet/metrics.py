"""Prometheus metrics: request counts and latencies, allocations, and the fleet's state as read
from the store at scrape time (so every replica reports the same truth)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select

from leeward.fleet.placement import host_usage
from leeward.fleet.store.db import Store
from leeward.fleet.store.models import BackupRow, DeliveryRow, EnvironmentRow
from leeward_protocol.fleet import BackupStatus, EnvironmentKind, EnvironmentState
from leeward_protocol.notify import DeliveryState, SinkName


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "leeward_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "leeward_http_request_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.allocations = Counter(
            "leeward_allocations", "Environments allocated.", ["source"], registry=r
        )
        self.allocation_latency = Histogram(
            "leeward_allocation_seconds",
            "Time to allocate: a warm claim includes the hand-over; a cold one only placement.",
            ["source"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.environments = Gauge(
            "leeward_environments",
            "Environments by state.",
            ["region", "kind", "state"],
            registry=r,
        )
        self.host_used = Gauge(
            "leeward_host_used",
            "Capacity used on a host.",
            ["host", "region", "resource"],
            registry=r,
        )
        self.host_capacity = Gauge(
            "leeward_host_capacity",
            "A host's capacity.",
            ["host", "region", "resource"],
            registry=r,
        )

        self.backup_last_success = Gauge(
            "leeward_backup_last_success_timestamp_seconds",
            "When each running devserver was last backed up successfully (Unix time).",
            ["environment", "owner", "region"],
            registry=r,
        )
        self.backup_overdue = Gauge(
            "leeward_backup_overdue",
            "1 for a running devserver without a successful backup in two of its intervals "
            "(alert on it); 0 otherwise.",
            ["environment", "owner", "region"],
            registry=r,
        )
        self.backup_runs = Gauge(
            "leeward_backup_runs", "Backup runs the store keeps, by state.", ["state"], registry=r
        )
        self.deliveries = Gauge(
            "leeward_notification_deliveries",
            "Notification deliveries not sent, by sink and state (pending, leased, failed).",
            ["sink", "state"],
            registry=r,
        )

    def observe_allocation(self, source: str, seconds: float) -> None:
        self.allocations.labels(source).inc()
        self.allocation_latency.labels(source).observe(seconds)

    async def render(self, store: Store) -> tuple[bytes, str]:
        async with store.read() as session:
            counts = (
                await session.execute(
                    select(
                        EnvironmentRow.region,
                        EnvironmentRow.kind,
                        EnvironmentRow.state,
                        func.count(),
                    ).group_by(EnvironmentRow.region, EnvironmentRow.kind, EnvironmentRow.state)
                )
            ).all()
            usage = await host_usage(session)
            devservers = (
                await session.execute(
                    select(
                        EnvironmentRow.name,
                        EnvironmentRow.owner,
                        EnvironmentRow.region,
                        EnvironmentRow.backup_at,
                        EnvironmentRow.backup_status,
                    ).where(
                        EnvironmentRow.kind == EnvironmentKind.DEVSERVER.value,
                        EnvironmentRow.state == EnvironmentState.RUNNING.value,
                    )
                )
            ).all()
            runs = (
                await session.execute(
                    select(BackupRow.state, func.count()).group_by(BackupRow.state)
                )
            ).all()
            deliveries = (
                await session.execute(
                    select(DeliveryRow.sink, DeliveryRow.state, func.count())
                    .where(DeliveryRow.state != DeliveryState.SENT.value)
                    .group_by(DeliveryRow.sink, DeliveryRow.state)
                )
            ).all()
        self.backup_last_success.clear()
        self.backup_overdue.clear()
        for name, owner, region, at, status in devservers:
            labels = (name, owner or "", region)
            if at is not None:
                self.backup_last_success.labels(*labels).set(at.timestamp())
            overdue = status is not None and BackupStatus.model_validate_json(status).overdue
            self.backup_overdue.labels(*labels).set(1 if overdue else 0)
        self.backup_runs.clear()
        for state, n in runs:
            self.backup_runs.labels(state).set(n)
        self.deliveries.clear()
        for each in SinkName:
            for waiting in (DeliveryState.PENDING, DeliveryState.LEASED, DeliveryState.FAILED):
                self.deliveries.labels(each.value, waiting.value).set(0)
        for sink_name, delivery_state, n in deliveries:
            self.deliveries.labels(sink_name, delivery_state).set(n)
        self.environments.clear()
        for region, kind, state, n in counts:
            self.environments.labels(region, kind, state).set(n)
        for h in usage:
            for resource in ("cpus", "memory_gib", "gpus"):
                self.host_used.labels(h.name, h.region, resource).set(getattr(h.used, resource))
                self.host_capacity.labels(h.name, h.region, resource).set(
                    getattr(h.capacity, resource)
                )
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
