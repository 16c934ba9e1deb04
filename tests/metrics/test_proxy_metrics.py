"""The pull-through cache's metrics: Distribution's ``registry_proxy_*`` and cargohold's per
upstream, as a scrape writes them, from a mirror's ``served`` and ``pulled``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.metrics.exposition import render
from cargohold.metrics.recorders import Metrics, ProxyMetrics
from cargohold.metrics.store import Store, StoreFile, read_store
from tests.support.metrics import Scrape, parse

DISTRIBUTION_FAMILIES = {
    "registry_proxy_requests": "The number of total incoming proxy request received",
    "registry_proxy_hits": "The number of total proxy request hits",
    "registry_proxy_misses": "The number of total proxy request misses",
    "registry_proxy_pulled_bytes": "The size of total bytes pulled from the upstream",
    "registry_proxy_pushed_bytes": "The size of total bytes pushed to the client",
}
UPSTREAM_FAMILIES = (
    "cargohold_proxy_upstream_hits",
    "cargohold_proxy_upstream_misses",
    "cargohold_proxy_upstream_pulled_bytes",
)


def text(*stores: StoreFile) -> str:
    return render(list(stores), None)[0].decode()


def lines(body: str, prefix: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith(prefix)]


def scrape(store: Store) -> Scrape:
    return parse(text(store.as_file()))


def test_both_types_are_exposed_at_zero_before_any_pull() -> None:
    store = Store()
    Metrics(store)
    body = text(store.as_file())
    for name in DISTRIBUTION_FAMILIES:
        assert lines(body, f"{name}_total{{") == [
            f'{name}_total{{type="blob"}} 0.0',
            f'{name}_total{{type="manifest"}} 0.0',
        ]
    for name in UPSTREAM_FAMILIES:
        assert lines(body, f"{name}_total{{") == [], "an upstream's rows come with its first use"
    store.close()


def test_both_types_are_exposed_even_by_a_store_without_proxy_rows() -> None:
    # A store left by a version before these families, or no store at all.
    body = text(StoreFile("/nowhere/worker-1.metrics", True, []))
    assert 'registry_proxy_hits_total{type="blob"} 0.0' in body.splitlines()
    assert 'registry_proxy_hits_total{type="manifest"} 0.0' in body.splitlines()


def test_the_families_have_distributions_names_types_and_help() -> None:
    store = Store()
    Metrics(store)
    body = text(store.as_file())
    for name, documentation in DISTRIBUTION_FAMILIES.items():
        assert f"# HELP {name}_total {documentation}" in body.splitlines()
        assert f"# TYPE {name}_total counter" in body.splitlines()
    for name in UPSTREAM_FAMILIES:
        assert f"# TYPE {name}_total counter" in body.splitlines()
    store.close()


def test_serves_and_pulls_are_counted_per_type_and_per_upstream() -> None:
    store = Store()
    proxy = Metrics(store).proxy
    # A blob missed, pulled and sent; then sent twice from the cache.
    proxy.served("registry-1.docker.io", "blob", 1000, False)
    proxy.pulled("registry-1.docker.io", "blob", 1000)
    proxy.served("registry-1.docker.io", "blob", 1000, True)
    proxy.served("registry-1.docker.io", "blob", 400, True)  # a range: part of it sent
    # A manifest of another upstream, missed and pulled, then a hit.
    proxy.served("ghcr.io", "manifest", 700, False)
    proxy.pulled("ghcr.io", "manifest", 700)
    proxy.served("ghcr.io", "manifest", 700, True)
    body = text(store.as_file())

    assert lines(body, "registry_proxy_") == [
        'registry_proxy_requests_total{type="blob"} 3.0',
        'registry_proxy_requests_total{type="manifest"} 2.0',
        'registry_proxy_hits_total{type="blob"} 2.0',
        'registry_proxy_hits_total{type="manifest"} 1.0',
        'registry_proxy_misses_total{type="blob"} 1.0',
        'registry_proxy_misses_total{type="manifest"} 1.0',
        'registry_proxy_pulled_bytes_total{type="blob"} 1000.0',
        'registry_proxy_pulled_bytes_total{type="manifest"} 700.0',
        'registry_proxy_pushed_bytes_total{type="blob"} 2400.0',
        'registry_proxy_pushed_bytes_total{type="manifest"} 1400.0',
    ]
    assert lines(body, "cargohold_proxy_upstream_") == [
        'cargohold_proxy_upstream_hits_total{type="manifest",upstream="ghcr.io"} 1.0',
        'cargohold_proxy_upstream_hits_total{type="blob",upstream="registry-1.docker.io"} 2.0',
        'cargohold_proxy_upstream_misses_total{type="manifest",upstream="ghcr.io"} 1.0',
        'cargohold_proxy_upstream_misses_total{type="blob",upstream="registry-1.docker.io"} 1.0',
        'cargohold_proxy_upstream_pulled_bytes_total{type="manifest",upstream="ghcr.io"} 700.0',
        'cargohold_proxy_upstream_pulled_bytes_total{type="blob",upstream="registry-1.docker.io"}'
        " 1000.0",
    ]
    store.close()


def test_hits_and_misses_add_up_to_the_requests() -> None:
    store = Store()
    proxy = ProxyMetrics(store)
    for n in range(10):
        proxy.served("quay.io", "blob", n, hit=n % 3 != 0)
    found = scrape(store)
    requests = found.value("registry_proxy_requests_total", type="blob")
    hits = found.value("registry_proxy_hits_total", type="blob")
    misses = found.value("registry_proxy_misses_total", type="blob")
    assert (requests, hits, misses) == (10, 6, 4)
    assert found.value("registry_proxy_pushed_bytes_total", type="blob") == sum(range(10))
    assert found.value("cargohold_proxy_upstream_hits_total", upstream="quay.io", type="blob") == 6
    assert (
        found.value("cargohold_proxy_upstream_misses_total", upstream="quay.io", type="blob") == 4
    )
    store.close()


def test_a_label_set_makes_its_rows_once(tmp_path: Path) -> None:
    # The hot path adds in place: after the first call, no new row in the shared file.
    store = Store(str(tmp_path / "worker-3.metrics"))
    proxy = Metrics(store).proxy
    proxy.served("docker.io", "blob", 1, True)
    proxy.pulled("docker.io", "blob", 1)
    made = len(store.rows())
    for _ in range(100):
        proxy.served("docker.io", "blob", 1, True)
        proxy.served("docker.io", "blob", 1, False)
        proxy.pulled("docker.io", "blob", 1)
    assert len(store.rows()) == made
    found = read_store(str(tmp_path / "worker-3.metrics"))
    assert found is not None
    rows = {(row.kind, row.labels): row.values for row in found.rows}
    assert rows["proxy", ("blob",)] == (201.0, 101.0, 100.0, 101.0, 201.0)
    assert rows["proxy", ("manifest",)] == (0.0,) * 5
    assert rows["proxy_upstream", ("docker.io", "blob")] == (101.0, 100.0, 101.0)
    store.close()


def test_every_process_is_summed_the_dead_included(tmp_path: Path) -> None:
    first = Store(str(tmp_path / "worker-1.metrics"))
    second = Store(str(tmp_path / "worker-2.metrics"))
    for store in (first, second):
        proxy = ProxyMetrics(store)
        proxy.served("docker.io", "manifest", 50, True)
        proxy.pulled("docker.io", "manifest", 50)
    second.close()  # died: its counters still count
    dead = read_store(str(tmp_path / "worker-2.metrics"))
    assert dead is not None
    assert not dead.alive
    found = parse(text(first.as_file(), dead))
    assert found.value("registry_proxy_hits_total", type="manifest") == 2
    assert found.value("registry_proxy_pushed_bytes_total", type="manifest") == 100
    assert found.value("registry_proxy_pulled_bytes_total", type="manifest") == 100
    assert found.value("registry_proxy_requests_total", type="blob") == 0
    upstream = {"upstream": "docker.io", "type": "manifest"}
    assert found.value("cargohold_proxy_upstream_pulled_bytes_total", **upstream) == 100
    assert found.value("cargohold_proxy_upstream_hits_total", **upstream) == 2
    first.close()


def test_upstreams_past_the_cap_share_one_label() -> None:
    store = Store()
    proxy = ProxyMetrics(store, upstreams=2)
    for upstream in ("a.example", "b.example", "c.example", "d.example", "a.example"):
        proxy.served(upstream, "blob", 10, True)
        proxy.pulled(upstream, "blob", 10)
    proxy.served("c.example", "manifest", 1, False)
    found = scrape(store)
    assert found.by("cargohold_proxy_upstream_hits_total", "upstream") == {
        "a.example": 2,
        "b.example": 1,
        "_other": 2,
    }
    assert found.by("cargohold_proxy_upstream_pulled_bytes_total", "upstream") == {
        "a.example": 20,
        "b.example": 10,
        "_other": 20,
    }
    other_manifests = {"upstream": "_other", "type": "manifest"}
    assert found.value("cargohold_proxy_upstream_misses_total", **other_manifests) == 1
    # The whole still counts every upstream.
    assert found.value("registry_proxy_hits_total", type="blob") == 5
    assert len(store.rows()) == 2 + 3 + 1  # the types, three upstream rows, one manifest row
    store.close()


def test_a_kind_distribution_does_not_know_is_refused() -> None:
    store = Store()
    proxy = ProxyMetrics(store)
    with pytest.raises(ValueError, match="tag"):
        proxy.served("docker.io", "tag", 1, True)
    with pytest.raises(ValueError, match="tag"):
        proxy.pulled("docker.io", "tag", 1)
    assert len(store.rows()) == 2
    store.close()
