"""The Grafana dashboards query only what the code exports: every metric a panel (or a template variable) names is
in the catalogue as Ray's endpoint serves it (`ray_` prefix, a histogram's `_bucket`/`_sum`/`_count`), every label
it filters or groups by is one of that metric's tags (or one Ray/Serve adds), and the datasource is a variable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlhf_ray.telemetry.catalogue import CATALOGUE, SERVING, MetricSpec

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
BOARDS = sorted(DASHBOARDS.glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels every series on Ray's endpoint carries, the ones Serve adds to its deployments' metrics, and `le`.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId", "instance", "job", "le"}
SERVE_LABELS = {"deployment", "replica", "application", "route"}
FUNCTIONS = {"rate", "irate", "increase", "delta", "sum", "max", "min", "avg", "count", "topk", "bottomk",
             "histogram_quantile", "time", "abs", "clamp_min", "clamp_max", "max_over_time", "min_over_time",
             "avg_over_time", "last_over_time", "label_values", "vector", "scalar"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
SCRAPED: dict[str, MetricSpec] = {name: spec for spec in CATALOGUE.values() for name in spec.scraped_names}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def parse(expr: str) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """PromQL → ({metric: labels in its selector}, grouping labels, functions called)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals (label values, regexes)
    text = re.sub(r"\[[^\]]*\]", "", text)                    # range selectors [5m], [$__rate_interval]
    selectors: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", text):
        selectors.setdefault(name, set()).update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", "", text)
    grouping = {label.strip() for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text)
                for label in group.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    functions = set(re.findall(r"([A-Za-z_]\w*)\s*\(", text))
    for name in re.findall(r"(?<![\w$:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        if name not in KEYWORDS:
            selectors.setdefault(name, set())
    return selectors, grouping, functions


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"{board['uid']} / {panel['title']} / {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            # label_values(metric, label) names a metric and one of its labels: check it as metric{label=""}
            yield f"{board['uid']} / ${variable['name']}", re.sub(r"label_values\((\w+),\s*(\w+)\)", r'\1{\2=""}',
                                                                   query)


def allowed_labels(spec: MetricSpec) -> set[str]:
    return set(spec.tag_keys) | RAY_LABELS | (SERVE_LABELS if spec in SERVING else set())


def test_the_parser_finds_metrics_labels_and_functions() -> None:
    selectors, grouping, functions = parse(
        'histogram_quantile(0.9, sum by (le, stage) (rate(ray_rlhf_stage_duration_seconds_bucket'
        '{rlhf_job=~"$rlhf_job", stage!="x{y}"}[$__rate_interval]))) / on (stage) ray_rlhf_stage_seconds')
    assert selectors == {"ray_rlhf_stage_duration_seconds_bucket": {"rlhf_job", "stage"},
                         "ray_rlhf_stage_seconds": set()}
    assert grouping == {"le", "stage"} and functions == {"histogram_quantile", "sum", "rate"}
    assert parse("time() - max(ray_a) > 0.5")[0] == {"ray_a": set()}


@pytest.mark.parametrize("path", BOARDS, ids=[p.stem for p in BOARDS])
def test_every_query_names_an_exported_metric_with_its_labels(path: Path) -> None:
    board = json.loads(path.read_text())
    found = list(queries(board))
    assert found, f"{path.name} has no queries"
    for where, expr in found:
        selectors, grouping, functions = parse(expr)
        assert selectors, f"{where}: no metric in {expr!r}"
        assert functions <= FUNCTIONS, f"{where}: unknown function(s) {sorted(functions - FUNCTIONS)}"
        specs = []
        for name, labels in selectors.items():
            assert name in SCRAPED, (f"{where}: {name!r} is not a metric the code exports (catalogue names with "
                                     f"Ray's `ray_` prefix; see rlhf_ray/telemetry/catalogue.py)")
            spec = SCRAPED[name]
            unknown = sorted(labels - allowed_labels(spec))
            assert not unknown, f"{where}: {name} has no label(s) {unknown}"
            specs.append(spec)
        known = set().union(*(allowed_labels(spec) for spec in specs))
        assert grouping <= known, f"{where}: grouping by unknown label(s) {sorted(grouping - known)}"


@pytest.mark.parametrize("path", BOARDS, ids=[p.stem for p in BOARDS])
def test_the_datasource_is_a_variable_and_the_layout_is_sound(path: Path) -> None:
    board = json.loads(path.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert board["uid"] == path.stem and board["title"].startswith("rlhf-ray / ")
    ids = [p["id"] for p in panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, f"{panel['title']}: datasource must be ${{DS_PROMETHEUS}}"
            assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    assert "${DS_PROMETHEUS}" not in json.dumps(board["__inputs"])  # declared as an input, used as a variable


def test_every_exported_metric_is_on_a_dashboard_and_each_area_has_one() -> None:
    used = {SCRAPED[name].name for path in BOARDS for _, expr in queries(json.loads(path.read_text()))
            for name in parse(expr)[0]}
    assert sorted(set(CATALOGUE) - used) == []
    assert {p.stem for p in BOARDS} == {"rlhf-data-plane", "rlhf-annotation-qa", "rlhf-training",
                                        "rlhf-serving-canary", "rlhf-drift"}


def test_provisioning_files_are_valid() -> None:
    datasources = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1 and datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "rlhf-ray.yaml").read_text())
    provider = providers["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    scrape = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    discovery = scrape["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert discovery == ["/tmp/ray/prom_metrics_service_discovery.json"]
