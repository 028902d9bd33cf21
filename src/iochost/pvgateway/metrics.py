"""The PV gateway's state in ``GET /metrics``, read from ``PVGateway.status()`` at each scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iochost.pvgateway.client import PVGateway


class GatewayCollector(Collector):
    """Whether the gateway's process runs, how often it ended unasked, and its load; on the
    event loop like the supervisor's collector (the gateway changes there)."""

    def __init__(self, gateway: PVGateway) -> None:
        self.gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, restarts, monitors, pending = families = self._families()
        status = self.gateway.status()
        up.add_metric([], 1 if status["running"] else 0)
        restarts.add_metric([], status["restarts"])
        monitors.add_metric([], status["monitors"])
        pending.add_metric([], status["pending"])
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [
            GaugeMetricFamily("iochost_pv_gateway_up", "1 while the REST PV gateway's process runs (it starts on "
                              "the first /api/v1/pvs request), else 0"),
            CounterMetricFamily("iochost_pv_gateway_restarts", "Times the PV gateway's process ended without "
                                "being asked (crashed, killed, or killed as hung); GET /api/v1/pvs/provider "
                                "says how it last ended"),
            GaugeMetricFamily("iochost_pv_gateway_monitors", "PV gateway monitors (--pv-gateway-max-monitors)"),
            GaugeMetricFamily("iochost_pv_gateway_pending", "PV gateway requests in progress "
                              "(--pv-gateway-max-pending)"),
        ]
