"""``cargohold sync SRC-PREFIX DST-PREFIX``: many repositories and tags at once, every
platform and the referrers, a tag filter, a line per tag and the totals; a run cut short
(here by injected failures) resumes where it stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cargohold.cli import app
from cargohold.client.registry import RemoteRegistry
from cargohold.testing import ExternalRegistry, Registry, serve
from tests.support.distribution import distribution


def cargohold(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def source() -> Iterator[Registry]:
    with serve() as registry:
        image = registry.push_image("team/a", "v1")
        registry.push_image("team/a", "v2", layers=2)
        registry.push_image("team/a", "dev", layers=3)
        registry.push_index("team/b", "v1")
        registry.push_image("other/c", "v1")
        registry.push_artifact(
            "team/a", artifact_type="application/vnd.example.sig", subject=image, files={"s": b"1"}
        )
        yield registry


def tags_of(registry: Registry | ExternalRegistry, name: str) -> list[str]:
    async def listed(client: RemoteRegistry) -> list[str]:
        return await client.repository(name).tags.all()

    return registry.call(listed)


def test_sync_mirrors_the_repositories_under_a_prefix(source: Registry) -> None:
    with serve() as destination:
        result = cargohold(
            "sync", f"{source.host}/team", f"{destination.host}/mirror", "--tags", "v.*"
        )
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[-1] == "2 repositories, 3 tags: 3 copied, 0 up to date, 0 failed"
        assert sorted(line.split()[0] for line in lines[:-1]) == ["copied"] * 3
        assert tags_of(destination, "mirror/a") == ["v1", "v2"]
        assert tags_of(destination, "mirror/b") == ["v1"]

        async def children_and_referrers(client: RemoteRegistry) -> tuple[int, int]:
            index = await client.repository("mirror/b").manifests.fetch("v1")
            image = await client.repository("mirror/a").tags.get("v1")
            referrers = await client.repository("mirror/a").referrers(image)
            return index.payload.count(b'"platform"'), len(referrers)

        assert destination.call(children_and_referrers) == (2, 1)
        again = cargohold(
            "sync", f"{source.host}/team", f"{destination.host}/mirror", "--tags", "v.*"
        )
        assert again.stdout.splitlines()[-1] == (
            "2 repositories, 3 tags: 0 copied, 3 up to date, 0 failed"
        )


def test_a_sync_cut_short_resumes_where_it_stopped(source: Registry) -> None:
    with serve() as destination:
        destination.faults.fail("PUT", r"/v2/mirror/b/manifests/", status=503, times=100)
        cut = cargohold("sync", f"{source.host}/team", f"{destination.host}/mirror", "-j", "1")
        assert cut.exit_code == 1
        assert cut.stdout.splitlines()[-1] == (
            "2 repositories, 4 tags: 3 copied, 0 up to date, 1 failed"
        )
        (failed,) = [line for line in cut.stdout.splitlines() if line.startswith("failed")]
        assert "mirror/b:v1" in failed
        destination.faults.clear()
        resumed = cargohold("sync", f"{source.host}/team", f"{destination.host}/mirror")
        assert resumed.exit_code == 0, resumed.output
        assert resumed.stdout.splitlines()[-1] == (
            "2 repositories, 4 tags: 1 copied, 3 up to date, 0 failed"
        )


def test_sync_to_the_go_registry(source: Registry, tmp_path: Path) -> None:
    with distribution(tmp_path / "go") as url:
        go = ExternalRegistry(url)
        result = cargohold("sync", f"{source.host}/other", go.host)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1].startswith("1 repositories, 1 tags: 1 copied")
        assert tags_of(go, "c") == ["v1"]  # the prefix "other" is replaced by none


def test_a_bad_tag_filter_is_a_usage_error(source: Registry) -> None:
    result = cargohold("sync", f"{source.host}/team", "127.0.0.1:1/x", "--tags", "(")
    assert result.exit_code == 2
    assert "--tags" in result.stderr
