"""docs/reference/metrics.md, from the registry ``GET /metrics`` serves (``api.prometheus.Metrics``
and every collector the app registers in it, the PV gateway's included): each metric's name,
type, labels and help, read from the metric objects themselves.

prometheus_client has no public way to list a registry's collectors or a family's label
names, so this module reads its ``_collector_to_names`` and ``_labelnames``; a test scrapes a
real ``/metrics`` answer and fails if a metric it holds is missing here."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from iochost.reference.application import app
from iochost.reference.markdown import cell, code, heading, table

# The series a family of each type is scraped as (the Prometheus text format's suffixes).
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
          "info": ("_info",), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}
# The client library's own counters, histograms and summaries also export NAME_created, the time
# each series began (unless PROMETHEUS_DISABLE_CREATED_SERIES is set); a collector's families do not.
CREATED = ("counter", "histogram", "summary")
# Label names the format adds to a type's series, not the metric's own.
FORMAT_LABELS = {"le", "quantile"}


@dataclass(frozen=True)
class Family:
    """One metric as the page lists it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    created: bool = False

    @property
    def series(self) -> list[str]:
        """The names a query uses: ``iochost_http_requests_total`` for the counter ``iochost_http_requests``."""
        suffixes = SERIES.get(self.type, ("",)) + (("_created",) if self.created else ())
        return [self.name + suffix for suffix in suffixes]


def _labels(family: Metric) -> tuple[str, ...]:
    """The label names a collector declared, else those its samples carry."""
    declared = getattr(family, "_labelnames", None)
    if declared is not None:
        return tuple(declared)
    seen: dict[str, None] = {}
    for sample in family.samples:
        seen.update(dict.fromkeys(name for name in sample.labels if name not in FORMAT_LABELS))
    return tuple(seen)


def families(collector: Collector) -> list[Family]:
    """The metrics ``collector`` exports: a client metric's own declaration, else what its
    ``describe()`` (or, without one, ``collect()``) yields."""
    if isinstance(collector, MetricWrapperBase):
        kind = collector._type or "untyped"
        return [Family(collector._name, kind, tuple(collector._labelnames), collector._documentation,
                       created=kind in CREATED)]
    describe = getattr(collector, "describe", None)
    described: Iterable[Metric] = describe() if describe is not None else ()
    listed = list(described) or list(collector.collect())
    return [Family(family.name, family.type, _labels(family), family.documentation) for family in listed]


def collectors(registry: CollectorRegistry) -> list[Collector]:
    """The registry's collectors in the order they were registered."""
    return list(registry._collector_to_names)


def _group(collector: Collector, holder: object) -> str:
    """The heading a collector's metrics go under: the class that records them."""
    if isinstance(collector, MetricWrapperBase) and any(value is collector for value in vars(holder).values()):
        return type(holder).__name__
    return type(collector).__name__


def _about(name: str, classes: dict[str, type]) -> str:
    doc = inspect.getdoc(classes[name]) or ""
    return " ".join(doc.split("\n\n")[0].split())


def page() -> str:
    """Every metric of ``GET /metrics``, grouped by what records it."""
    metrics = app().state.metrics
    groups: dict[str, list[Family]] = {}
    classes: dict[str, type] = {}
    for collector in collectors(metrics.registry):
        group = _group(collector, metrics)
        classes[group] = type(metrics) if group == type(metrics).__name__ else type(collector)
        groups.setdefault(group, []).extend(families(collector))
    lines = [
        *heading("Metrics", "iochost.api.prometheus.Metrics.registry"),
        "`GET /metrics` (at the root, not under `/api/v1`; it takes the read token like the rest of",
        "the [REST API](rest.md)) answers these in the Prometheus text format, or in OpenMetrics when",
        "the scraper asks for it. A counter or histogram is queried by the series names given; a",
        "`_created` series is the time its series began (absent with `PROMETHEUS_DISABLE_CREATED_SERIES`).",
    ]
    for group, listed in groups.items():
        module = classes[group].__module__
        lines += ["", f"## {group}", "", f"From `{module}.{group}`. {cell(_about(group, classes))}".rstrip()]
        rows = [[", ".join(code(series) for series in family.series), family.type,
                 ", ".join(code(label) for label in family.labels) or "none", cell(family.help)]
                for family in listed]
        lines += ["", *table(["metric", "type", "labels", "help"], rows)]
    return "\n".join(lines) + "\n"
