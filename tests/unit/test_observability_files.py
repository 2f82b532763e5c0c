"""deploy/observability/: the Grafana dashboard is well-formed and every panel queries
something; the alert rules carry what a receiver needs. promtool checks the rules' syntax and
their unit tests (.ci/deploy-check); tests/integration/test_observability_metrics.py checks
the metric names against a running gateway."""

from __future__ import annotations

from tests.support.observability import (
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    label_names,
    metric_names,
    rules,
    scraped_labels,
)


def test_metric_names_are_read_from_promql():
    expr = (
        "histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket"
        '{job=~"$job", route=~"$route"}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket"}
    ratio = (
        'sum(rate(a_total{status=~"5.."}[5m])) without (worker) / ignoring(x) '
        "sum(rate(b_total[5m])) > 1e3 and on (job) c >= bool 0.5"
    )
    assert metric_names(ratio) == {"a_total", "b_total", "c"}
    assert metric_names('label_values(up_total{job=~"$job"}, route)') == {"up_total"}
    assert metric_names("max by (service) (circuit_breaker_state) >= 1") == {
        "circuit_breaker_state"
    }


def test_label_names_are_read_from_promql_and_from_a_scrape():
    matched, grouped = label_names(
        'sum by (route, le) (rate(x_bucket{job=~"$job", route!~"a|b"}[5m])) / on (job) y'
    )
    assert matched == {"x_bucket": {"job", "route"}}
    assert grouped == {"route", "le", "job"}
    assert label_names('label_values(x_total{job=~"$job"}, route)') == (
        {"x_total": {"job"}},
        {"route"},
    )
    scrape = 'x_total{a="1",b="q\\"u,o=\\"te"} 1.0\n# TYPE y gauge\ny 2.0\n'
    assert scraped_labels(scrape) == {"x_total": {"a", "b"}, "y": set()}


def test_dashboard_panels_each_query_and_fit_the_grid():
    board = dashboard()
    assert board["uid"] == "potok-gateway"
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    # Every panel filters on the job the operator picked.
    for expr in dashboard_exprs():
        if not expr.startswith("label_values(http_requests_total,"):
            assert '$job"' in expr, expr


def test_alerts_have_a_severity_a_duration_and_text():
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) == {
        "PotokCircuitBreakerOpen",
        "PotokHigh5xxRatio",
        "PotokHighP99Latency",
        "PotokLoadShedding",
        "PotokUpstreamServiceDown",
        "PotokWorkerRestarted",
        "PotokFileDescriptorsNearLimit",
        "PotokWebhookOutboxStale",
        "PotokWebhookDeadLetters",
    }
    assert by_name["PotokCircuitBreakerOpen"]["for"] == "1m"
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        # An event that happened (a restart, a dead letter) fires at once: one is enough.
        assert rule.get("for") or rule["alert"] in {
            "PotokWorkerRestarted",
            "PotokWebhookDeadLetters",
        }
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
