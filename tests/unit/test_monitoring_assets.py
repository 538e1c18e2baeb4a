"""The monitoring assets (ops/prometheus, ops/grafana) checked without a Prometheus or a Grafana.

Whether the metrics they name are really exported is checked live in
tests/e2e/test_monitoring_metrics.py, with the helpers of this module.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.registry import ACTORS
from brokers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROMETHEUS_CONFIGS = ("prometheus.yml", "prometheus.compose.yml")
ALERTS = PROMETHEUS / "alerts.yml"
DATASOURCE_VARIABLE = "${datasource}"
RUNBOOK = "README.md#operating"
# Names Prometheus makes up itself rather than scrapes.
PROMETHEUS_MADE = {"up"}
EXPORTERS = ("emporium_", "faststream_", "rabbitmq_")
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not installed (Debian: apt-get install prometheus)"

# --- reading the assets -------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every query of the dashboards and every alert rule."""
    found = [
        (f"{name}: {panel['title']} ({target['refId']})", target["expr"])
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    found += [(f"alerts.yml: {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return found


def variable_metric_names() -> set[str]:
    """The metrics the dashboards' query variables read their values from (label_values(metric, label))."""
    names = set()
    for dashboard in dashboards().values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(
                    r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", variable["query"]["query"]
                )
                assert match, f"unexpected variable query {variable['query']!r}"
                names.add(match[1])
    return names


# --- a small PromQL tokenizer -------------------------------------------------------------------
# What is left once strings, label matchers, ranges, grouping clauses and Grafana variables are
# cut out: function names (followed by "("), keywords, numbers and durations, and metric names.
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A whole identifier (not the tail of a number such as 1e3 or 5m) that is not a function call.
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads (histogram series keep their _bucket/_sum/_count)."""
    stripped = expression
    for pattern in (_STRINGS, _GRAFANA_VARIABLES, _MATCHERS, _RANGES, _GROUPINGS):
        stripped = pattern.sub(" ", stripped)
    return {name for name in _IDENTIFIER.findall(stripped) if name.lower() not in _KEYWORDS}


def named_metrics() -> set[str]:
    """Every metric the dashboards and alerts name."""
    names = set(variable_metric_names())
    for _, expression in promql_expressions():
        names |= metric_names(expression)
    return names


def histogram_base(name: str) -> str:
    """A histogram's name without the suffix of one of its series."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


# --- the tokenizer itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            'sum by (actor) (rate(emporium_messages_total{outcome="retried"}[$__rate_interval]))',
            {"emporium_messages_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m]))) > 1e3", {"x_seconds_bucket"}),
        ('a / on (queue) group_left (vhost) b{queue=~".*\\\\.dlq"} offset 5m', {"a", "b"}),
        ("max_over_time(up[1m]) == bool 0 or vector(1)", {"up"}),
        ("sum without (instance) (c:recorded:rate5m) unless d", {"c:recorded:rate5m", "d"}),
    ],
)
def test_the_tokenizer_finds_metric_names_and_nothing_else(expression: str, names: set[str]):
    assert metric_names(expression) == names


# --- dashboards ---------------------------------------------------------------------------------


def test_the_three_dashboards_parse_with_unique_uids_titles_and_panel_ids():
    found = dashboards()
    assert set(found) == {"saga.json", "runtime.json", "rabbitmq.json"}
    assert len({d["uid"] for d in found.values()}) == len({d["title"] for d in found.values()}) == 3
    for name, dashboard in found.items():
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert all(panel["title"] for panel in panels(dashboard)), f"{name}: a panel without a title"


def test_every_query_goes_through_the_datasource_variable():
    for name, dashboard in dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == DATASOURCE_VARIABLE, (
                    f"{name}: variable {variable['name']}"
                )
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{name}: {panel['title']} queries nothing"
            uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
            assert uids == {DATASOURCE_VARIABLE}, f"{name}: {panel['title']} uses {uids}"


def test_every_grafana_variable_a_query_uses_is_defined():
    builtin = {"__rate_interval", "__range", "__interval"}
    for name, dashboard in dashboards().items():
        defined = {v["name"] for v in dashboard["templating"]["list"]} | builtin
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"]))
                assert used <= defined, f"{name}: {panel['title']} uses undefined {used - defined}"


def test_the_provisioning_files_point_grafana_at_prometheus_and_the_dashboards():
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["url"], source["isDefault"]) == (
        "prometheus",
        "http://prometheus:9090",
        True,
    )
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "emporium.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# --- what the queries name ----------------------------------------------------------------------


def test_every_named_metric_comes_from_emporium_faststream_rabbitmq_or_prometheus():
    strangers = {n for n in named_metrics() if not n.startswith(EXPORTERS) and n not in PROMETHEUS_MADE}
    assert not strangers


def test_every_quantile_reads_the_buckets_of_a_histogram_grouped_by_le():
    quantiles = [(where, e) for where, e in promql_expressions() if "histogram_quantile" in e]
    assert len(quantiles) >= 5
    for where, expression in quantiles:
        names = metric_names(expression)
        assert names and all(n.endswith("_bucket") for n in names), f"{where}: {names}"
        groupings = re.findall(r"\bby\s*\(([^)]*)\)", expression)
        assert groupings and all("le" in re.split(r"\s*,\s*", g.strip()) for g in groupings), where


def test_the_saga_metrics_of_the_issue_are_on_the_dashboards():
    on_dashboards = {histogram_base(n) for _, e in promql_expressions() for n in metric_names(e)}
    assert {
        "emporium_orders_placed_total",
        "emporium_orders_confirmed_total",
        "emporium_orders_delivered_total",
        "emporium_orders_cancelled_total",
        "emporium_orders_confirmation_seconds",
        "emporium_payments_captured_cents_total",
        "emporium_payments_refunded_cents_total",
        "emporium_outbox_oldest_unsent_age_seconds",
        "emporium_payments_breaker_state",
        "emporium_edge_rate_limited_total",
    } <= on_dashboards


# --- Prometheus configuration and alerts --------------------------------------------------------


def test_every_alert_has_a_summary_a_description_a_runbook_and_a_severity():
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "DeadLettersPresent",
        "EventsUnrouted",
        "OutboxLagging",
        "PaymentBreakerOpen",
        "SagaConfirmationSlow",
        "EmporiumTargetDown",
        "OrdersQueueBacklog",
        "EdgeServerErrors",
    }
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        assert annotations["runbook"] == RUNBOOK, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
    assert "\n## Operating\n" in (ROOT / "README.md").read_text(), "the runbook's section is gone"


def test_the_orders_backlog_alert_fires_before_the_edge_sheds_orders():
    (rule,) = [r for r in alert_rules() if r["alert"] == "OrdersQueueBacklog"]
    threshold = float(re.search(r">\s*([\d.]+)\s*$", rule["expr"].strip())[1])
    assert threshold < Settings.model_fields["emporium_saga_backlog_bound"].default


def test_both_layouts_load_the_alerts_and_scrape_rabbitmq_per_queue():
    for name in PROMETHEUS_CONFIGS:
        config = yaml.safe_load((PROMETHEUS / name).read_text())
        assert config["rule_files"] == ["alerts.yml"], name
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object", name
        # The target up/down alert covers exactly the emporium jobs.
        assert {j for j in jobs if j != "rabbitmq"} and all(
            j.startswith("emporium") for j in jobs if j != "rabbitmq"
        )


def test_the_compose_layout_scrapes_every_actor_and_the_edge():
    config = yaml.safe_load((PROMETHEUS / "prometheus.compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (actors,) = jobs["emporium-actors"]["dns_sd_configs"]
    assert (sorted(actors["names"]), actors["port"]) == (sorted(ACTORS), 8080)
    (edge,) = jobs["emporium-edge"]["dns_sd_configs"]
    assert (edge["names"], edge["port"]) == (["edge"], 8000)
    for job in config["scrape_configs"]:
        # A target label "actor" would clash with the actor label of the emporium metrics.
        static_labels = [c.get("labels", {}) for c in job.get("static_configs", [])]
        relabelled = [r["target_label"] for r in job.get("relabel_configs", [])]
        assert "actor" not in relabelled and all("actor" not in labels for labels in static_labels)


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS)
def test_promtool_accepts_the_config(config: str):
    # Syntax only: the configs name files (the metrics token's secret) that exist where they are deployed.
    result = _promtool("check", "config", "--syntax-only", PROMETHEUS / config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_alert_rules():
    result = _promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


# Values the Grafana variables take, so that promtool can parse the dashboards' queries.
_RENDERED = {"__rate_interval": "1m", "__range": "1h", "__interval": "15s", "actor": ".*", "vhost": ".*"}


def _rendered(expression: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: _RENDERED[m[1]], expression)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_parses_every_dashboard_query(tmp_path: Path):
    # promtool has no offline query parser; recording rules are parsed the same way.
    queries = [(where, e) for where, e in promql_expressions() if not where.startswith("alerts.yml")]
    rules = [{"record": f"dashboard_query_{i}", "expr": _rendered(e)} for i, (_, e) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
