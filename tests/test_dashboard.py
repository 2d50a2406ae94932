"""The pictures of deploy/: the Grafana dashboard's PromQL checked against the /metrics of real
proxies (two on one real Redis, after calls, a forwarded one, a server exit and a vanished
client), the dashboard's JSON, and the compose file that provisions it with Prometheus.

PromQL is not evaluated here (no Prometheus on the test machine): each expression is taken
apart far enough to find its metric names, label matchers, grouping labels and legend labels,
and each of those must be something the proxies really export.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    INIT_PARAMS,
    RAW_SERVER,
    STREAM_HEADERS,
    ProxyProcess,
    free_port,
    open_sse,
    rpc,
)

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mcp-proxy.json"
COMPOSE = DEPLOY / "compose.scale.yaml"
# labels Prometheus adds to every series it scrapes
TARGET_LABELS = {"instance", "job"}
# PromQL words that are not metric names: aggregations, their modifiers, binary operators
KEYWORDS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk",
            "bottomk", "quantile", "count_values", "limitk", "limit_ratio", "by", "without",
            "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


# ------------------------------------------------------------------- PromQL, taken apart

def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (function and aggregation names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(r" \1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][\w:]*", text):
        if match.group() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for _, labels in GROUPING.findall(expr)
            for label in labels.split(",") if label.strip()}


def test_promql_is_taken_apart_as_prometheus_reads_it():
    expr = ('histogram_quantile(0.99, sum by (server, le) (rate(a_bucket{x=~"$v", y!="0"}'
            '[$__rate_interval]))) / on (instance) group_left (worker) b_info and c')
    assert metric_names(expr) == {"a_bucket", "b_info", "c"}
    assert grouping_labels(expr) == {"server", "le", "instance", "worker"}
    assert metric_names("sum without (code) (rate(x_total[5m])) > bool 2") == {"x_total"}


# ------------------------------------------------------------------- the dashboard's file

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def expressions(dashboard: dict) -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target; variables' queries as where="$name"."""
    found = [(f"panel {panel['id']} {panel['title']!r}", target["expr"],
              target.get("legendFormat", ""))
             for panel in all_panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert inner, f"${variable['name']}: {query}"
            found.append((f"${variable['name']}", inner.group(1), "{{" + inner.group(2) + "}}"))
    return found


def test_the_dashboard_is_grafana_json_with_unique_panel_ids_on_its_datasource_variable():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "mcp-proxy" and dashboard["title"]
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    for name in ("instance", "server"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    # every expression names the variables it is filtered by, and no unknown one
    for where, expr, _ in expressions(dashboard):
        used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval"}
        assert used <= set(variables), (where, used)


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    titles = " | ".join(panel["title"].lower() for panel in all_panels(load_dashboard()))
    for words in ("sessions open", "server processes", "tool calls/s", "p50 / p99",
                  "http answers", "queued bytes", "by route", "share forwarded"):
        assert words in titles, words


# ------------------------------------------------------------------- against real proxies

class Farm:
    """Two proxies, A and B, on one real Redis (a worker each, as in the compose file)."""

    def __init__(self, directory: Path) -> None:
        from redisproc import RedisServer

        self.redis = RedisServer(directory).start()
        self.proxies: list[ProxyProcess] = []
        for _ in range(2):
            self.proxies.append(ProxyProcess("--redis-url", self.redis.url, "--keepalive", "1",
                                             "--", *RAW_SERVER).started())
        self.a, self.b = self.proxies

    def session(self) -> dict:
        """A Streamable HTTP session on A, initialized: the headers of its requests."""
        init = requests.post(self.a.base + "/mcp", json=rpc("initialize", 1, **INIT_PARAMS),
                             headers=STREAM_HEADERS, timeout=10)
        headers = {**STREAM_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
        requests.post(self.a.base + "/mcp", json=rpc("notifications/initialized", None),
                      headers=headers, timeout=10)
        return headers

    def call(self, headers: dict, proxy: ProxyProcess, call_id: int) -> None:
        """An echo tools/call of A's session sent to ``proxy`` (B forwards it to A)."""
        answer = requests.post(proxy.base + "/mcp", headers=headers, timeout=10, json=rpc(
            "tools/call", call_id, name="echo", arguments={"text": "hi"}))
        assert answer.status_code == 200 and "hi" in answer.text, answer.text

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A farm after a call sent to A and one sent to B (forwarded), the session deleted (its
    server exited) and a client gone from its SSE stream: every series has a sample."""
    farm = Farm(tmp_path_factory.mktemp("redis"))
    try:
        headers = farm.session()
        farm.call(headers, farm.a, 2)
        farm.call(headers, farm.b, 3)
        assert requests.delete(farm.a.base + "/mcp", headers=headers,
                               timeout=10).status_code == 200
        reader, _ = open_sse(farm.a.base)
        reader.close()
        deadline = time.monotonic() + 15
        while True:  # the server's exit and the vanished client are both noticed by then
            text = requests.get(farm.a.base + "/metrics", timeout=10).text
            if "mcp_proxy_client_disconnects_total{" in text \
                    and "mcp_proxy_server_processes_exited_total{" in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        yield farm
    finally:
        farm.stop()


@pytest.fixture(scope="module")
def exported(farm) -> dict[str, list[dict]]:
    """Metric name -> the label sets of its samples on A and B."""
    found: dict[str, list[dict]] = {}
    for proxy in farm.proxies:
        page = requests.get(proxy.base + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(dict(sample.labels))
    routed = {s["route"]: s for s in found["mcp_proxy_routed_requests_total"]}
    assert set(routed) == {"local", "forwarded", "served"}
    forwarded = re.search(r'mcp_proxy_routed_requests_total\{route="forwarded"\} (\S+)',
                          requests.get(farm.b.base + "/metrics", timeout=10).text)
    assert forwarded and float(forwarded.group(1)) >= 1  # the call sent to B went to A
    return found


def test_every_metric_the_dashboard_reads_is_exported_with_its_labels(exported):
    for where, expr, legend in expressions(load_dashboard()):
        names = metric_names(expr)
        assert names, (where, expr)
        missing = sorted(name for name in names if name not in exported)
        assert missing == [], f"{where}: no such metric in /metrics: {missing}"
        labels = set(TARGET_LABELS)
        for name in names:
            labels.update(*(sample.keys() for sample in exported[name]))
        for name, matchers in SELECTOR.findall(expr):
            have = TARGET_LABELS.union(*(sample.keys() for sample in exported[name]))
            for label, op, value in MATCHER.findall(matchers):
                assert label in have, f"{where}: {name} has no label {label!r}"
                if op == "=" and "$" not in value:
                    assert any(sample.get(label) == value for sample in exported[name]), \
                        f"{where}: no {name}{{{label}={value!r}}} sample"
        assert grouping_labels(expr) <= labels, (where, grouping_labels(expr) - labels)
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert legend_labels <= labels, (where, legend_labels - labels)


def test_every_metric_of_the_proxy_is_on_the_dashboard(exported):
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported
                if name.startswith("mcp_proxy_")}
    read = set().union(*(metric_names(expr) for _, expr, _ in expressions(load_dashboard())))
    read = {re.sub(r"_(bucket|count|sum)$", "", name) for name in read}
    assert sorted(families - read) == [], "a metric of /metrics that no panel shows"


def grafana_query(expr: str, window: str = "1m") -> str:
    """``expr`` as Grafana sends it with every variable at "All" (its allValue, ``.*``)."""
    values = {"__rate_interval": window, "instance": ".*", "server": ".*"}
    return re.sub(r"\$(\w+)", lambda match: values[match.group(1)], expr)


def test_prometheus_evaluates_every_query_of_the_dashboard(farm, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not on this machine (Debian's package: prometheus)")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"  # deploy/prometheus.yml, on loopback, faster
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [urlsplit(proxy.base).netloc for proxy in farm.proxies]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list[dict]:
        answer = requests.get(base + "/api/v1/query", params={"query": expr}, timeout=10)
        assert answer.status_code == 200, f"{expr}: {answer.text}"
        return answer.json()["data"]["result"]

    def scraped_since(moment: float) -> None:
        """Wait (bounded) until both proxies were scraped after ``moment`` (epoch s)."""
        deadline = time.monotonic() + 30
        while True:
            stamps = []
            with contextlib.suppress(requests.ConnectionError):  # not listening yet
                answer = requests.get(base + "/api/v1/query", timeout=10,
                                      params={"query": "timestamp(mcp_proxy_queued_bytes)"})
                if answer.status_code == 200:  # 503 until it is ready
                    stamps = [float(r["value"][1]) for r in answer.json()["data"]["result"]]
            if len(stamps) == 2 and min(stamps) > moment:
                return
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.2)

    try:
        scraped_since(0.0)  # it applies its targets some 5 s after it starts
        headers = farm.session()
        calls_end = time.monotonic() + 4
        call_id = 10
        while time.monotonic() < calls_end:  # while it scrapes: half the calls forwarded
            farm.call(headers, farm.proxies[call_id % 2], call_id)
            call_id += 1
            time.sleep(0.02)
        scraped_since(time.time() + 0.5)

        dashboard = load_dashboard()
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            results = [query(grafana_query(target["expr"])) for target in panel["targets"]]
            assert any(results), f"panel {panel['title']!r}: no series"
            if panel["type"] == "stat":
                value = float(results[0][0]["value"][1])
                assert math.isfinite(value) and value >= 0, (panel["title"], value)
        for variable in dashboard["templating"]["list"][1:]:
            selector = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
            assert query(grafana_query(selector.group(1))), variable["name"]
        titled = {panel["title"]: panel for panel in all_panels(dashboard)}
        for title in ("Tool calls/s", "Share forwarded"):
            value = float(query(grafana_query(titled[title]["targets"][0]["expr"]))[0]["value"][1])
            assert value > 0, title
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ------------------------------------------------------------------- the compose file

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_provisions_prometheus_and_grafana_from_files_that_exist():
    spec = compose()
    services = spec["services"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin a version: {image}"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in spec["volumes"], f"{name}: volume {source} is not defined"
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), f"{name} depends on {set(depends) - set(services)}"
        assert set(service.get("networks", [])) <= set(spec["networks"]), name

    grafana = services["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    provisioning = DEPLOY / next(src for src, dst in mounts.items()
                                 if dst == "/etc/grafana/provisioning")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    url = urlsplit(sources["datasources"][0]["url"])
    assert sources["datasources"][0]["type"] == "prometheus"
    assert url.hostname in services and url.port == 9090
    assert set(services[url.hostname]["networks"]) & set(grafana["networks"])
    providers = yaml.safe_load((provisioning / "dashboards" / "mcp-proxy.yaml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    dashboards = {dst: src for src, dst in mounts.items() if dst.startswith(folder + "/")}
    assert (DEPLOY / dashboards[f"{folder}/mcp-proxy.json"]).resolve() == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in dashboards


def test_prometheus_scrapes_every_proxy_replica_and_each_is_one_worker():
    services = compose()["services"]
    prometheus = services["prometheus"]
    source = next(v.split(":")[0] for v in prometheus["volumes"]
                  if v.split(":")[1] == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((DEPLOY / source).read_text())
    targets = [target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]]
    replicas = sorted(name for name in services if name.startswith("proxy-"))
    assert sorted(targets) == [f"{name}:8080" for name in replicas]
    for name in replicas:
        command = services[name]["command"]
        # a scrape of gunicorn's port reaches one worker: more workers would go unseen
        assert command[command.index("-w") + 1] == "1", name
        assert set(services[name]["networks"]) & set(prometheus["networks"]), name


def docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        done = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if done.returncode == 0 else None


def test_docker_compose_accepts_the_file():
    command = docker_compose()
    if command is None:
        pytest.skip("`docker compose` is not on this machine (no docker, or no compose plugin)")
    done = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "MCP_PROXY_REDIS_PASSWORD": "00ff"})
    assert done.returncode == 0, done.stderr
