"""Real clients pull through a cargohold mirror, each configured as its users configure it.

- skopeo and podman read a ``registries.conf`` (containers-registries.conf v2)
  whose ``[[registry.mirror]]`` for the upstream's location is the mirror;
  with a prefix upstream the mirror's location carries the prefix as a path
  (``127.0.0.1:PORT/docker.io``), which containers/image puts before the
  repository name.
- containerd's ``ctr`` reads a ``hosts.toml`` naming the mirror as a host with
  pull and resolve; it asks the mirror for ``/v2/library/app/...`` with
  ``?ns=<upstream host>``, which the upstream's ``hosts`` maps to its prefix.
- ``cargohold copy`` names the mirror's repository outright.

Every server is a real process: the mirror is ``cargohold serve`` with its access
log on; the upstream is the Go registry (Debian's ``docker-registry``) or a
second cargohold. Each test proves the content came through the mirror: the
mirror's storage holds it, the mirror answered the client's requests for it,
and the upstream either heard no one but the mirror or was stopped before a
second pull that still succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from cargohold.cli import app
from cargohold.client.transport import USER_AGENT
from tests.support import skopeo
from tests.support.accesslog import ACCESS_LOG_ENV
from tests.support.containerd import containerd
from tests.support.distribution import distribution
from tests.support.images import (
    SourceImages,
    build_sources,
    image_tree,
)
from tests.support.podman import podman
from tests.support.servers import cargohold
from tests.support.waiting import wait_until

#: The User-Agent each client sends (podman's is containers/image's own).
SKOPEO_AGENT = "skopeo/"
PODMAN_AGENT = "containers/"
CONTAINERD_AGENT = "containerd/"

PREFIX = "docker.io/"


# -- images --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> SourceImages:
    layout = tmp_path_factory.mktemp("images") / "layout"
    # The last layer is over the mirror's 1 MiB whole-before-reply bound: streamed while kept.
    return build_sources(layout, (64 * 1024, 300 * 1024, 1536 * 1024))


# -- access logs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request a cargohold's JSON access log records."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    agent: str


def hits(log: Path) -> list[Hit]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or "http.response.status" not in entry:
            continue
        target = urlsplit(str(entry["http.request.uri"]))
        found.append(
            Hit(
                str(entry["http.request.method"]),
                target.path,
                parse_qs(target.query),
                int(entry["http.response.status"]),
                str(entry.get("http.request.useragent", "")),
            )
        )
    return found


# -- servers -------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A registry the mirror mirrors, holding ``library/app:1`` and ``library/multi:1``."""

    url: str
    kind: str
    #: cargohold's access log (the Go registry keeps none).
    log: Path | None
    running: ExitStack
    #: How many requests the access log held once the images were pushed.
    pushed: int = 0

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> None:
        self.running.close()

    def agents(self) -> set[str]:
        """The User-Agents of every repository request since the images were pushed."""
        assert self.log is not None
        return {hit.agent for hit in hits(self.log)[self.pushed :] if hit.path != "/v2/"}


StartUpstream = Callable[[str], Upstream]


@pytest.fixture
def start_upstream(images: SourceImages, tmp_path: Path) -> Iterator[StartUpstream]:
    """Starts the Go registry (``"go"``) or a cargohold (``"cargohold"``) and pushes to it."""
    with ExitStack() as stack:

        def start(kind: str) -> Upstream:
            running = stack.enter_context(ExitStack())
            folder = tmp_path / f"upstream-{kind}"
            folder.mkdir()
            if kind == "go":
                url = running.enter_context(
                    distribution(folder / "root", log=folder / "distribution.log")
                )
                upstream = Upstream(url, kind, None, running)
            else:
                log = folder / "access.log"
                url = running.enter_context(cargohold(folder / "root", env=ACCESS_LOG_ENV, log=log))
                upstream = Upstream(url, kind, log, running)
            skopeo.copy(images.oci(images.amd64), f"docker://{upstream.host}/library/app:1")
            skopeo.copy(
                images.oci(images.multi), f"docker://{upstream.host}/library/multi:1", "--all"
            )
            if upstream.log is not None:
                tagged = "/v2/library/multi/manifests/1"  # what skopeo sends last
                wait_until(
                    lambda: any(h.method == "PUT" and h.path == tagged for h in hits(log)),
                    what="the upstream never logged the pushes",
                )
                upstream.pushed = len(hits(log))
            return upstream

        yield start


@dataclass(frozen=True)
class Mirror:
    """A ``cargohold serve`` mirroring one upstream, logging every request."""

    url: str
    root: Path
    log: Path
    #: Where the upstream's repositories are: ``docker.io/``, or "" for a pure proxy.
    prefix: str = PREFIX

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def location(self) -> str:
        """The mirror as a registries.conf location: host, and the prefix as a path."""
        return f"{self.host}/{self.prefix.rstrip('/')}" if self.prefix else self.host

    def blob_files(self) -> set[str]:
        blobs = self.root / "docker/registry/v2/blobs"
        return {f"sha256:{data.parent.name}" for data in blobs.rglob("data")}

    def revisions(self, name: str) -> set[str]:
        """The manifests the mirror keeps for its repository ``name``."""
        folder = self.root / f"docker/registry/v2/repositories/{name}/_manifests/revisions/sha256"
        return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()

    def served(self, agent: str, repository: str) -> set[str]:
        """The digests of the blobs this mirror answered ``agent`` 200 for, by GET."""
        return {
            hit.path.rsplit("/", 1)[1]
            for hit in hits(self.log)
            if hit.agent.startswith(agent)
            and hit.method == "GET"
            and hit.status == 200
            and hit.path.startswith(f"/v2/{repository}/blobs/")
        }

    def assert_served(self, agent: str, repository: str, digests: set[str]) -> None:
        wait_until(
            lambda: digests <= self.served(agent, repository),
            within=5,
            what=f"the mirror's log has no 200 to {agent} for every blob of {repository}",
        )


MirrorOf = Callable[..., Mirror]


@pytest.fixture
def mirror_of(tmp_path: Path) -> Iterator[MirrorOf]:
    """Starts a cargohold mirroring an upstream under ``prefix`` (a pure proxy when "")."""
    with ExitStack() as stack:

        def start(
            upstream: Upstream,
            *,
            prefix: str = PREFIX,
            hosts: Sequence[str] = (),
            recheck: str = "5s",
        ) -> Mirror:
            folder = tmp_path / "mirror"
            folder.mkdir()
            proxy: dict[str, Any]
            if prefix:
                entry: dict[str, Any] = {
                    "prefix": prefix,
                    "remoteurl": upstream.url,
                    "recheck": recheck,
                }
                if hosts:
                    entry["hosts"] = [prefix.split("/", 1)[0], *hosts]
                proxy = {"upstreams": [entry]}
            else:
                proxy = {"remoteurl": upstream.url, "recheck": recheck}
            config = folder / "config.yml"
            config.write_text(yaml.safe_dump({"version": "0.1", "proxy": proxy}))
            root, log = folder / "root", folder / "access.log"
            url = stack.enter_context(cargohold(root, config=config, env=ACCESS_LOG_ENV, log=log))
            return Mirror(url, root, log, prefix)

        yield start


def registries_conf(path: Path, registry: str, mirror: Mirror) -> Path:
    """A registries.conf whose ``registry`` is pulled from ``mirror`` first, both over HTTP."""
    path.write_text(
        "[[registry]]\n"
        f"location = {json.dumps(registry)}\n"
        "insecure = true\n"
        "\n"
        "[[registry.mirror]]\n"
        f"location = {json.dumps(mirror.location)}\n"
        "insecure = true\n"
    )
    return path


def hosts_dir(folder: Path, upstream: Upstream, mirror: Mirror) -> Path:
    """containerd's ``--hosts-dir``: the upstream's ``hosts.toml``, the mirror its first host."""
    hosts = folder / upstream.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f"server = {json.dumps(upstream.url)}\n"
        "\n"
        f"[host.{json.dumps(mirror.url)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
    )
    return folder


# -- skopeo --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [PREFIX, ""], ids=["prefix-upstream", "pure-proxy"])
def test_skopeo_pulls_through_the_mirror_and_again_once_the_upstream_is_gone(
    start_upstream: StartUpstream,
    mirror_of: MirrorOf,
    images: SourceImages,
    tmp_path: Path,
    prefix: str,
) -> None:
    upstream = start_upstream("go")
    mirror = mirror_of(upstream, prefix=prefix, recheck="0s")
    conf = registries_conf(tmp_path / "registries.conf", upstream.host, mirror)
    reference = f"docker://{upstream.host}/library/app:1"
    expected = image_tree(images.layout, images.amd64)
    repository = f"{prefix}library/app"

    skopeo.skopeo("--registries-conf", str(conf), "copy", reference, f"oci:{tmp_path / 'first'}:1")
    assert image_tree(tmp_path / "first", "1") == expected
    assert set(expected) <= mirror.blob_files()
    assert mirror.revisions(repository) == {images.digest(images.amd64)}
    mirror.assert_served(SKOPEO_AGENT, repository, images.blobs(images.amd64))

    # With the upstream gone, registries.conf's own location cannot answer: the mirror does,
    # from its cache (the tag, rechecked every time, cannot be confirmed: the cached one serves).
    upstream.stop()
    skopeo.skopeo("--registries-conf", str(conf), "copy", reference, f"oci:{tmp_path / 'again'}:1")
    assert image_tree(tmp_path / "again", "1") == expected
    wait_until(
        lambda: "serving the cached" in mirror.log.read_text(errors="replace"),
        within=5,
        what="the mirror never said it served the cached tag",
    )


def test_skopeo_pulls_one_platform_of_an_index_through_the_mirror(
    start_upstream: StartUpstream, mirror_of: MirrorOf, images: SourceImages, tmp_path: Path
) -> None:
    upstream = start_upstream("go")
    mirror = mirror_of(upstream)
    conf = registries_conf(tmp_path / "registries.conf", upstream.host, mirror)

    skopeo.skopeo(
        "--registries-conf",
        str(conf),
        "--override-arch",
        "arm64",
        "--override-os",
        "linux",
        "copy",
        f"docker://{upstream.host}/library/multi:1",
        f"oci:{tmp_path / 'arm64'}:1",
    )
    assert image_tree(tmp_path / "arm64", "1") == image_tree(images.layout, images.arm64)
    # The index and the arm64 image were pulled through; the amd64 one never was.
    assert mirror.revisions("docker.io/library/multi") == {
        images.digest(images.multi),
        images.digest(images.arm64),
    }
    assert images.blobs(images.arm64) <= mirror.blob_files()
    assert not images.blobs(images.amd64) & mirror.blob_files()
    mirror.assert_served(SKOPEO_AGENT, "docker.io/library/multi", images.blobs(images.arm64))


# -- podman --------------------------------------------------------------------------------


def test_podman_pulls_through_the_mirror(
    start_upstream: StartUpstream, mirror_of: MirrorOf, images: SourceImages, tmp_path: Path
) -> None:
    upstream = start_upstream("cargohold")
    mirror = mirror_of(upstream)
    conf = registries_conf(tmp_path / "registries.conf", upstream.host, mirror)
    reference = f"{upstream.host}/library/app:1"

    with podman(tmp_path / "podman", conf) as node:
        image_id = node.pull(reference)
        info = node.inspect(reference)
    assert f"sha256:{image_id}" == images.config(images.amd64)
    assert info["Digest"] == images.digest(images.amd64)
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert reference in info["RepoTags"]

    assert set(image_tree(images.layout, images.amd64)) <= mirror.blob_files()
    mirror.assert_served(PODMAN_AGENT, "docker.io/library/app", images.blobs(images.amd64))
    # podman never went to the upstream itself: only the mirror did.
    assert upstream.agents() == {USER_AGENT}


# -- containerd ----------------------------------------------------------------------------


def test_ctr_pulls_through_the_mirror_named_in_hosts_toml(
    start_upstream: StartUpstream, mirror_of: MirrorOf, images: SourceImages, tmp_path: Path
) -> None:
    upstream = start_upstream("cargohold")
    # containerd asks the mirror for library/app with ?ns=<upstream host>: hosts maps it.
    mirror = mirror_of(upstream, hosts=[upstream.host])
    certs = hosts_dir(tmp_path / "certs.d", upstream, mirror)
    pull = ("images", "pull", "--plain-http", "--hosts-dir", str(certs), "--snapshotter", "native")

    with containerd(tmp_path / "containerd") as node:
        node.ctr(*pull, "--platform", "linux/amd64", f"{upstream.host}/library/app:1")
        node.ctr(*pull, "--platform", "linux/arm64", f"{upstream.host}/library/multi:1")
        listed = node.ctr("images", "ls")
        content = {line.split()[0] for line in node.ctr("content", "ls").splitlines()[1:]}
        unpacked = node.ctr("snapshots", "--snapshotter", "native", "ls").splitlines()[1:]

    assert f"{upstream.host}/library/app:1" in listed
    assert images.digest(images.amd64) in listed
    assert images.digest(images.multi) in listed
    assert set(image_tree(images.layout, images.amd64)) <= content
    assert images.blobs(images.arm64) <= content
    assert len(unpacked) == 5  # three amd64 layers, two arm64 ones

    # The mirror keeps both under its docker.io/ prefix, the index with its arm64 image only.
    assert mirror.revisions("docker.io/library/app") == {images.digest(images.amd64)}
    assert mirror.revisions("docker.io/library/multi") == {
        images.digest(images.multi),
        images.digest(images.arm64),
    }
    assert set(image_tree(images.layout, images.amd64)) <= mirror.blob_files()
    assert set(image_tree(images.layout, images.multi)) <= mirror.blob_files()
    # Every blob was containerd's request to the mirror, by the upstream's name and ?ns=.
    mirror.assert_served(CONTAINERD_AGENT, "library/app", images.blobs(images.amd64))
    mirror.assert_served(CONTAINERD_AGENT, "library/multi", images.blobs(images.arm64))
    asked = [h for h in hits(mirror.log) if h.agent.startswith(CONTAINERD_AGENT)]
    assert {tuple(h.query.get("ns", [])) for h in asked if h.path != "/v2/"} == {(upstream.host,)}
    assert upstream.agents() == {USER_AGENT}


# -- cargohold copy ------------------------------------------------------------------------


def copy(*args: str) -> str:
    result = CliRunner().invoke(app, ["copy", "-q", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("kind", ["go", "cargohold"])
def test_cargohold_copy_pulls_through_the_mirror_and_again_once_the_upstream_is_gone(
    start_upstream: StartUpstream,
    mirror_of: MirrorOf,
    images: SourceImages,
    tmp_path: Path,
    kind: str,
) -> None:
    upstream = start_upstream(kind)
    mirror = mirror_of(upstream, recheck="0s")
    app_ref = f"docker://{mirror.host}/docker.io/library/app:1"
    multi_ref = f"docker://{mirror.host}/docker.io/library/multi:1"

    assert copy(app_ref, f"oci:{tmp_path / 'app'}:1") == images.digest(images.amd64)
    assert image_tree(tmp_path / "app", "1") == image_tree(images.layout, images.amd64)
    arm64 = copy("--platform", "linux/arm64", multi_ref, f"oci:{tmp_path / 'arm64'}:1")
    assert arm64 == images.digest(images.arm64)
    assert image_tree(tmp_path / "arm64", "1") == image_tree(images.layout, images.arm64)
    assert mirror.revisions("docker.io/library/multi") == {
        images.digest(images.multi),
        images.digest(images.arm64),
    }
    assert set(image_tree(images.layout, images.amd64)) <= mirror.blob_files()

    upstream.stop()
    assert copy(app_ref, f"oci:{tmp_path / 'again'}:1") == images.digest(images.amd64)
    assert image_tree(tmp_path / "again", "1") == image_tree(images.layout, images.amd64)
    arm64 = copy("--platform", "linux/arm64", multi_ref, f"oci:{tmp_path / 'arm64-again'}:1")
    assert arm64 == images.digest(images.arm64)
