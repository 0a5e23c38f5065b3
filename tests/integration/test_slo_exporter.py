"""The synthetic SLO exporter gives a real Prometheus the signals the tests set (no
Kubernetes needed), so tests of SLO-driven behaviour can trust what the operator reads:

- the error ratio and p99 latency PromQL computes over a short window match the
  target's settings, and follow a change;
- a removed target's series disappear;
- Prometheus restarted on the same port and data directory answers at the same URL
  with the samples it had (what an operator sees across a Prometheus restart);
- the exposition passes `promtool check metrics`, and its counts are consistent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import wait_for
from tests.integration.prometheus import Prometheus, check_metrics, scrape, value_of
from tests.integration.slo_exporter import BUCKETS, SloExporter, SloExporterError

CART = 'namespace="shop",name="cart",track="primary",revision="2"'
ERROR_RATIO = (
    f'sum(rate(http_requests_total{{{CART},code="500"}}[10s]))'
    f" / sum(rate(http_requests_total{{{CART}}}[10s]))"
)
P99 = (
    "histogram_quantile(0.99, sum by (le) "
    f"(rate(http_request_duration_seconds_bucket{{{CART}}}[10s])))"
)


@pytest.fixture
def exporter() -> Iterator[SloExporter]:
    with SloExporter() as e:
        yield e


def one_value(prom: Prometheus, promql: str) -> float | None:
    """The single value of a query, None while it has none (no data yet, or NaN)."""
    result = prom.query(promql)
    if len(result) != 1:
        return None
    value = value_of(result[0])
    return None if math.isnan(value) else value


def test_prometheus_sees_the_error_ratio_and_latency_set(exporter: SloExporter) -> None:
    exporter.set("shop", "cart", "primary", "2", rps=20, error_ratio=0.2, latency_seconds=0.3)
    with Prometheus([exporter.address], interval="1s") as prom:
        prom.wait_for_targets()

        def ratio_near(expected: float) -> bool:
            value = one_value(prom, ERROR_RATIO)
            return value is not None and abs(value - expected) <= 0.03

        wait_for(lambda: ratio_near(0.2), timeout=60, message=f"{ERROR_RATIO} ~ 0.2")
        # Every request takes 0.3s: the p99 interpolates within its bucket (0.25, 0.5].
        p99 = wait_for(lambda: one_value(prom, P99), timeout=60, message=P99)
        assert p99 is not None
        assert 0.25 < p99 <= 0.5, p99

        exporter.set("shop", "cart", "primary", "2", error_ratio=0)
        wait_for(lambda: ratio_near(0.0), timeout=60, message=f"{ERROR_RATIO} ~ 0")
        before_restart = prom.query(f"http_requests_total{{{CART}}}")
        assert len(before_restart) == 2, before_restart
        stamp = before_restart[0]["value"][0]

        url = prom.url
        prom.stop(keep_workdir=True)
        prom.start(port=int(url.rsplit(":", 1)[1]))
        assert prom.url == url
        prom.wait_for_targets()
        # The samples from before the restart are still there (same TSDB).
        data = prom.api("query", query=f"http_requests_total{{{CART}}}", time=str(stamp))
        assert len(data["result"]) == 2, data

        prom.restart()
        assert prom.url == url
        # Staleness markers come only from a scrape loop that saw the series: removed
        # before the first scrape after a restart, it would linger for the 5m lookback.
        prom.wait_for_targets()
        exporter.remove("shop", "cart", "primary", "2")
        prom.wait_for_absent(f"http_requests_total{{{CART}}}")


def test_exposition_is_clean_and_consistent(exporter: SloExporter) -> None:
    exporter.set("shop", "cart", "primary", "2", rps=1000, error_ratio=0.25, latency_seconds=0.3)
    exporter.set("shop", "cart", "canary", "3")  # defaults
    assert check_metrics(scrape(exporter.metrics_url)) == ""

    def counted() -> bool:
        counts: dict[str, int] = {
            t["track"]: sum(t["requests"].values()) for t in exporter.targets()
        }
        return counts["primary"] >= 100 and counts["canary"] >= 1

    wait_for(counted, timeout=30, message="requests counted for every target")
    families = {
        f.name: f for f in text_string_to_metric_families(scrape(exporter.metrics_url).decode())
    }
    requests = {
        (s.labels["track"], s.labels["code"]): s.value for s in families["http_requests"].samples
    }
    ok, errors = requests["primary", "200"], requests["primary", "500"]
    # The error carry keeps the share exact to one request.
    assert abs(errors - 0.25 * (ok + errors)) <= 1, requests
    assert requests["canary", "500"] == 0, requests

    histogram = [
        s
        for s in families["http_request_duration_seconds"].samples
        if s.labels["track"] == "primary"
    ]
    buckets = {
        float(s.labels["le"]): s.value
        for s in histogram
        if s.name == "http_request_duration_seconds_bucket"
    }
    (count,) = (s.value for s in histogram if s.name == "http_request_duration_seconds_count")
    (total,) = (s.value for s in histogram if s.name == "http_request_duration_seconds_sum")
    assert buckets == {b: (count if b >= 0.3 else 0) for b in [*BUCKETS, float("inf")]}
    assert total == pytest.approx(0.3 * count)

    exporter.remove("shop", "cart", "canary", "3")
    assert [t["track"] for t in exporter.targets()] == ["primary"]
    assert 'track="canary"' not in scrape(exporter.metrics_url).decode()
    with pytest.raises(SloExporterError, match="404"):
        exporter.remove("shop", "cart", "canary", "3")
    with pytest.raises(SloExporterError, match="400"):
        exporter.set("shop", "cart", "primary", "2", error_ratio=1.5)
