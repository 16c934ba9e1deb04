"""The web UI at scale: its pages' times on a registry of many repositories.

``python -m bench.ui [--repositories 10000] [--tags 2000] [--rounds 20]`` writes a
Distribution-layout root directly (one small image, linked into every
repository under one tag, and one repository with ``--tags`` tags), serves it
with ``cargohold serve``, and times from a client on loopback:

- the catalog's first page, a search, and a page deep inside;
- a repository's page, and the page of the repository with many tags;
- a manifest's page.

Each is asked once first (the catalog's scan and the summaries are then
warm, as on a serving registry), then ``--rounds`` times; the medians and
the 95th percentiles are printed. There is no Go counterpart: Distribution
has no UI. The target of issue #20 is a first catalog page under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from pathlib import Path

from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from bench.gcroot import Content, Repository, write
from bench.servers import CARGOHOLD, start, workdir


def build(root: Path, repositories: int, tags: int) -> tuple[int, str]:
    """The root: ``repositories`` repositories with tag ``v1``, and ``big/app`` with
    ``tags`` tags; how many files it took, and the image's digest."""
    content = Content()
    config = content.add(json.dumps({"os": "linux", "architecture": "amd64"}).encode())
    layer = content.add(b"the one layer of every image\n")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(config), "size": 40},
            "layers": [{"mediaType": OCI_LAYER, "digest": str(layer), "size": 29}],
        }
    ).encode()
    digest = content.add(manifest)
    content.references[digest] = [config, layer]
    names = [f"team{n % 100:02d}/app{n:05d}" for n in range(repositories)] + ["big/app"]
    for name in names:
        repo = Repository(name, layers={config, layer}, revisions={digest})
        for tag in [f"1.{t}" for t in range(tags)] if name == "big/app" else ["v1"]:
            repo.tag(tag, digest)
        content.repositories.append(repo)
    return write(root, content), str(digest)


def timed(url: str, rounds: int) -> tuple[float, float]:
    """Median and 95th percentile of ``rounds`` GETs of ``url`` after one unmeasured, in ms."""
    times = []
    for attempt in range(rounds + 1):
        started = time.perf_counter()
        with urllib.request.urlopen(url) as reply:
            reply.read()
            assert reply.status == 200, (url, reply.status)
        if attempt:
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    with workdir() as scratch:
        root = scratch / "root"
        started = time.perf_counter()
        files, digest = build(root, options.repositories, options.tags)
        print(f"wrote {files} files in {time.perf_counter() - started:.1f} s")
        storage = {"filesystem": {"rootdirectory": str(root)}}
        with start(CARGOHOLD, scratch, storage=storage, root=root) as server:
            deep = f"team50/app{options.repositories // 2:05d}"
            pages = {
                "catalog, first page": "/ui/",
                "catalog, search": "/ui/?q=app0999",
                "catalog, a page deep inside": f"/ui/?after={deep}",
                "repository": "/ui/r/team07/app00007",
                f"repository of {options.tags} tags": "/ui/r/big/app",
                "manifest": f"/ui/r/team07/app00007/-/manifest/{digest}",
            }
            print(f"{options.repositories} repositories, {options.rounds} rounds")
            print(f"{'page':<32} {'median ms':>10} {'p95 ms':>8}")
            for label, path in pages.items():
                median, p95 = timed(server.url + path, options.rounds)
                print(f"{label:<32} {median:>10.1f} {p95:>8.1f}")


if __name__ == "__main__":
    main()
