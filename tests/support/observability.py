"""deploy/observability/: the metric names its dashboard and alert rules use, and the names
a gateway's scrape exports, so a test can compare them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "potok-dashboard.json"
RULES = OBSERVABILITY / "potok-alerts.yaml"
RULES_TEST = OBSERVABILITY / "potok-alerts.test.yaml"

# What is left of an expression once these are gone is metric names, functions (followed by
# "("), keywords and numbers.
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NUMBER = re.compile(r"(?<![\w:.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\w+)$")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s")
_SCRAPED_LABEL = re.compile(r'(\w+)="(?:\\.|[^"\\])*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds from the scrape target, not the gateway.
TARGET_LABELS = frozenset({"job", "instance"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (or a Grafana `label_values(...)`
    variable query reads). Grafana variables ($job, $__rate_interval) are not names."""
    found = _LABEL_VALUES.match(expr)
    if found:
        expr = found.group(1)
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING, _VARIABLE, _NUMBER):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation; or an operator word
        names.add(match.group())
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    return list(_panels(dashboard()["panels"]))


def dashboard_exprs() -> list[str]:
    """Every panel target's expr and every query variable's query."""
    exprs = [t["expr"] for panel in dashboard_panels() for t in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in rules()]


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used ("dashboard", "rules")."""
    used: dict[str, set[str]] = {}
    for where, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        for expr in exprs:
            for name in metric_names(expr):
                used.setdefault(name, set()).add(where)
    return used


def label_names(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The labels an expression relies on: matched per metric (`m{a="x"}`), and grouped by
    (`by (a, b)`, `on (a)`, or the label a `label_values(m, a)` variable lists)."""
    grouped: set[str] = set()
    found = _LABEL_VALUES.match(expr)
    if found:
        grouped.add(expr.rstrip().rstrip(")").rsplit(",", 1)[1].strip())
        expr = found.group(1)
    expr = _STRING.sub('""', expr)
    matched: dict[str, set[str]] = {}
    for selector in _SELECTOR.finditer(expr):
        labels = set(_MATCHER_LABEL.findall(selector.group(2)))
        matched.setdefault(selector.group(1), set()).update(labels)
    for group in _GROUPING.finditer(expr):
        grouped.update(label.strip() for label in group.group(1).split(",") if label.strip())
    return matched, grouped


def scraped_labels(text: str) -> dict[str, set[str]]:
    """Series name -> the label names its samples carry."""
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        sample = None if line.startswith("#") else _SAMPLE.match(line)
        if sample:
            names = labels.setdefault(sample.group(1), set())
            names.update(_SCRAPED_LABEL.findall(sample.group(2) or ""))
    return labels


def exported(text: str) -> tuple[set[str], set[str]]:
    """From a Prometheus text scrape: every name a query may select (each family's, with a
    counter's `_total` and a histogram's `_bucket`, `_sum` and `_count` series), and the
    names that have at least one sample."""
    declared: set[str] = set()
    sampled: set[str] = set()
    for line in text.splitlines():
        typed = _TYPE_LINE.match(line)
        if typed:
            name, kind = typed.groups()
            declared.add(name)
            if kind == "counter":
                declared.add(name if name.endswith("_total") else name + "_total")
            elif kind == "histogram":
                declared.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif not line.startswith("#"):
            sample = _SAMPLE.match(line)
            if sample:
                sampled.add(sample.group(1))
    return declared, sampled


def family(name: str) -> str:
    """The family a series name belongs to (a histogram's `_bucket` -> its name)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
