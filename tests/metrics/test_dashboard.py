"""The Grafana dashboard in ``contrib/grafana`` queries only what a real cargohold exposes.

Every PromQL expression of every panel (those of collapsed rows included) and
of every template variable is read for the metric names it selects; each name
must be among the samples of one scrape of a running ``cargohold serve
--workers 2`` (its debug listener, a Redis blob descriptor cache) after
traffic that touches every family. The dashboard's own shape is checked too:
unique panel ids, a datasource on every panel and target, known variables.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.http import Reply, location, request, with_query
from tests.support.metrics import Scrape, scrape
from tests.support.redis import RedisServer
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "cargohold.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

Panel = dict[str, Any]

# -- reading the dashboard ----------------------------------------------------------------


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def walk(panels: list[Panel]) -> Iterator[Panel]:
    """Every panel, and the panels of each row (a collapsed row keeps them in ``panels``)."""
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every panel target and every query variable."""
    found = [
        (f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in walk(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']}", variable_selector(text)))
    return found


# -- metric names in PromQL ---------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$(?:\{[^{}]*\}|\w+)|\[\[[^\[\]]*\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
#: An identifier that is not part of a number and not a function's name.
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_RANGE_SELECTED = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*\[")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "offset", "inf", "nan"}
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?\w+\s*\)\s*$")
#: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]``.
_REFERENCE = re.compile(r"\$(\w+)|\$\{(\w+)[^{}]*\}|\[\[(\w+)[^\[\]]*\]\]")


def variable_selector(query: str) -> str:
    """The series selector of a ``label_values(selector, label)`` query (none: empty)."""
    match = _LABEL_VALUES.match(query)
    assert match, f"not a label_values query: {query}"
    return match["selector"] or ""


def _bare(expr: str) -> str:
    """``expr`` without strings, Grafana variables and label matchers."""
    expr = _STRING.sub('""', expr)
    expr = _VARIABLE.sub("1", expr)
    return _MATCHERS.sub(" ", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: neither functions, keywords nor label names."""
    assert "__name__" not in expr, f"name the metric, not a __name__ matcher: {expr}"
    text = _RANGE.sub(" ", _bare(expr))
    text = _OFFSET.sub(" ", _GROUPING.sub(" ", text))
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def range_selected(expr: str) -> set[str]:
    """The metric names ``expr`` selects over a range (``rate(x[5m])``): counters' samples."""
    return set(_RANGE_SELECTED.findall(_bare(expr))) - _KEYWORDS


def family_type(name: str, found: Scrape) -> str:
    """The type of the family a sample name belongs to (``foo_total`` -> ``foo``'s)."""
    for suffix in ("", "_total", "_bucket", "_count", "_sum"):
        if suffix and not name.endswith(suffix):
            continue
        family = name[: len(name) - len(suffix)] if suffix else name
        if family in found.types:
            return found.types[family]
    return "unknown"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (code) (rate(a_total{handler="blob", code=~"5.."}[$__rate_interval]))',
            {"a_total"},
        ),
        (
            'histogram_quantile(0.95, sum without (method) (rate(d_bucket{le!="x"}[5m]))) > 1e3',
            {"d_bucket"},
        ),
        (
            'sum(label_replace(rate(b_total[1m]), "class", "${1}xx", "code", "(.)..")) by (class)',
            {"b_total"},
        ),
        (
            "(sum(c_total) or vector(0)) / on (instance) group_left (version) info",
            {"c_total", "info"},
        ),
        ("topk(10, sum by (repository) (increase(e_total[$__range] offset 1h)))", {"e_total"}),
        ('time() - min(start_time_seconds{job=~"$job"})', {"start_time_seconds"}),
        ("sum(rate(x_total[5m:1m])) / scalar(y) and bool z", {"x_total", "y", "z"}),
    ],
)
def test_metric_names_are_the_selected_series_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_label_values_query_names_its_selector() -> None:
    assert variable_selector('label_values(a{job=~"$job"}, instance)') == 'a{job=~"$job"}'
    assert variable_selector("label_values(job)") == ""


# -- the dashboard's shape ----------------------------------------------------------------


def test_the_dashboard_is_well_formed() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = list(walk(dashboard["panels"]))
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert queried, "no panel"
    assert any(
        row["type"] == "row" and row["collapsed"] and row["panels"] for row in dashboard["panels"]
    ), "expected a collapsed row, to read nested panels"

    ids = [panel["id"] for panel in panels]
    assert all(isinstance(id_, int) for id_ in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"

    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, (panel["title"], target["refId"])
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]

    for panel in queried:
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for row in (panel for panel in dashboard["panels"] if panel["type"] == "row"):
        assert "targets" not in row, row["title"]

    for where, expr in expressions(dashboard):
        for match in _REFERENCE.finditer(expr):
            name = next(group for group in match.groups() if group)
            if not name.isdigit() and not name.startswith("__"):
                assert name in variables, f"{where}: ${name} is not a variable"


def _overlaps(panels: list[Panel]) -> list[tuple[str, str]]:
    def cells(panel: Panel) -> set[tuple[int, int]]:
        grid = panel["gridPos"]
        return {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }

    return [
        (a["title"], b["title"])
        for index, a in enumerate(panels)
        for b in panels[index + 1 :]
        if cells(a) & cells(b)
    ]


def test_the_panels_fit_the_grid_without_overlapping() -> None:
    dashboard = load()
    for panel in walk(dashboard["panels"]):
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert min(grid["x"], grid["y"]) >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert _overlaps(dashboard["panels"]) == []
    for row in dashboard["panels"]:
        assert _overlaps(row.get("panels", [])) == [], row["title"]


def test_every_expression_names_a_metric() -> None:
    found = expressions(load())
    assert found
    for where, expr in found:
        assert metric_names(expr), f"{where}: no metric name in {expr}"


# -- against a running server -------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    metrics: str

    def scrape(self) -> Scrape:
        return scrape(self.metrics)


@pytest.fixture
def server(tmp_path: Path, redis_db: RedisServer) -> Iterator[Server]:
    """Two workers, the Prometheus debug listener, and a Redis blob descriptor cache."""
    port, metrics = free_port(), free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {tmp_path / 'root'}\n"
        "  cache:\n    blobdescriptor: redis\n"
        f"redis:\n  addr: 127.0.0.1:{redis_db.port}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"  debug:\n    addr: 127.0.0.1:{metrics}\n    prometheus:\n      enabled: true\n"
    )
    argv = cargohold_argv("serve", str(config), "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    with running(argv, f"{url}/v2/", log=tmp_path / "server.log"):
        server = Server(url, f"http://127.0.0.1:{metrics}/metrics")
        wait_until(lambda: server.scrape().value("cargohold_workers") == 2)
        yield server


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect(reply: Reply, status: int) -> Reply:
    assert reply.status == status, (reply.status, reply.body[:500])
    return reply


def traffic(url: str) -> None:
    """A push (monolithic and chunked uploads, a manifest), pulls, and every other route."""
    base = f"{url}/v2/app"
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = bytes(range(256)) * 20
    expect(request("POST", f"{base}/blobs/uploads/?digest={sha256(config)}", config), 201)
    started = expect(request("POST", f"{base}/blobs/uploads/"), 202)
    upload = location(started, url)
    patched = expect(
        request("PATCH", upload, layer, {"Content-Type": "application/octet-stream"}), 202
    )
    expect(request("PUT", with_query(location(patched, url), f"digest={sha256(layer)}")), 201)
    abandoned = expect(request("POST", f"{base}/blobs/uploads/"), 202)
    expect(request("DELETE", location(abandoned, url)), 204)
    expect(request("POST", f"{base}/blobs/uploads/"), 202)  # left open: in progress

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    expect(request("PUT", f"{base}/manifests/v1", manifest, {"Content-Type": OCI_MANIFEST}), 201)

    accept = {"Accept": OCI_MANIFEST}
    for _ in range(4):  # fresh connections: both workers answer some
        expect(request("GET", f"{base}/manifests/v1", headers=accept), 200)
        expect(request("HEAD", f"{base}/manifests/v1", headers=accept), 200)
        expect(request("GET", f"{base}/blobs/{sha256(layer)}"), 200)
        expect(request("HEAD", f"{base}/blobs/{sha256(config)}"), 200)
        expect(request("GET", f"{base}/tags/list"), 200)
        expect(request("GET", f"{url}/v2/_catalog"), 200)
        expect(request("GET", f"{base}/referrers/{sha256(manifest)}"), 200)
        expect(request("GET", f"{url}/v2/"), 200)
    expect(request("GET", f"{base}/manifests/missing", headers=accept), 404)


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(server: Server) -> None:
    queried = {name: where for where, expr in expressions(load()) for name in metric_names(expr)}
    traffic(server.url)

    def missing() -> set[str]:
        return set(queried) - server.scrape().names()

    # The workers note a request once it is answered: wait for the last ones' rows.
    deadline = time.monotonic() + 20
    while missing() and time.monotonic() < deadline:
        time.sleep(0.05)
    absent = missing()
    assert not absent, {name: queried[name] for name in absent}

    found = server.scrape()
    for where, expr in expressions(load()):
        for name in range_selected(expr):
            kind = family_type(name, found)
            assert kind in {"counter", "histogram"}, f"{where}: {name} is a {kind}, over a range"
