"""docker-compose's monitoring: the Grafana dashboard asks only for series the worker and
the gateway really expose, shows the monitoring page's figures, and Prometheus scrapes
the ports the services listen on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.stream.gateway.app import create_app
from streamrec.stream.metrics import STAGES, WorkerMetrics
from streamrec.stream.prometheus import metrics_registry
from tests.stream.gateway.conftest import offline_settings, small_catalogue

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "infra/grafana/dashboards/streamrec.json"


def exposed_series(tmp_path: Path) -> set[str]:
    """Every sample name the worker's and the gateway's /metrics produce."""
    m = WorkerMetrics("w")
    m.count("events_in", 3)
    m.count("recommendations")
    m.count("dlq")
    m.lag = {"clickstream": 2}
    for stage in STAGES:
        m.observe(stage, 1.0)
    texts = [generate_latest(metrics_registry(m)).decode()]
    app = create_app(offline_settings(tmp_path), small_catalogue(), connect=False)
    texts.append(generate_latest(app.state.registry).decode())
    return {s.name for text in texts for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_dashboard_query_names_an_exposed_series(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["definition"])
    named = {name for e in exprs for name in re.findall(r"\bstreamrec_[a-z_]+\b", e)}
    exposed = exposed_series(tmp_path)
    assert named and named <= exposed, f"not exposed: {sorted(named - exposed)}"
    # label values the queries pick must be ones the worker uses
    for e in exprs:
        for name in re.findall(r'name="([a-z_]+)"', e):
            assert name in {"events_in", "recommendations", "dlq"}


def test_the_dashboard_shows_the_monitoring_pages_figures() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(p["title"] + " " + " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]).lower()
    for figure in ("p50", "p95", "p99", "events/s", "lists/s", "dead letters", "lag", "cache hit rate",
                   "model version", "execution provider", "streamrec_worker_info"):
        assert figure in text, figure
    monitor_page = (ROOT / "stream/gateway/static/monitor.html").read_text().lower()
    for figure in ("p50 / p95 / p99", "events/s", "lists/s", "dead letters", "consumer lag", "cache hit rate",
                   "model version", "execution provider"):
        assert figure in monitor_page, figure
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    datasource = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert uids == {datasource["datasources"][0]["uid"]}


def test_compose_runs_gateway_prometheus_and_grafana_on_the_scraped_ports() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "prometheus", "grafana"} <= set(services)
    env = compose["x-streamrec-env"]
    gateway_env = services["gateway"]["environment"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0]
               for job in yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())["scrape_configs"]}
    assert targets["streamrec-worker"] == f"worker:{env['STREAMREC_WORKER__PROMETHEUS_PORT']}"
    assert targets["streamrec-gateway"] == f"gateway:{gateway_env['STREAMREC_GATEWAY__PORT']}"
    assert f"{gateway_env['STREAMREC_GATEWAY__PORT']}:8000" in services["gateway"]["ports"]
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "infra/grafana/dashboards" / Path(home).name).exists()
