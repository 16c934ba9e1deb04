"""The same operations against Distribution 2.8 and cargohold tell receivers the same events.

Each registry gets its own recording receiver. skopeo pushes an image and
pulls it back; a blob is mounted into another repository and HEADed; the
manifest and the mounted blob are deleted. The events are then compared
field by field, ignoring what differs by nature: ids, timestamps, the
addresses and ports of the registries and the client, instance ids. The
differences cargohold makes on purpose are listed here and in the README.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import skopeo
from tests.support.distribution import distribution
from tests.support.http import request
from tests.support.images import build_image, layers_of
from tests.support.servers import cargohold
from tests.support.webhooks import Receiver, webhook_receiver

USER_AGENT = "cargohold-tests/1"


@contextmanager
def cargohold_notifying(root: Path, url: str, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "cargohold.yml"
    config.write_text(
        "version: 0.1\n"
        "storage: {delete: {enabled: true}}\n"
        "notifications:\n"
        "  endpoints:\n"
        f"    - {{name: hook, url: {json.dumps(url)}, timeout: 2s, backoff: 100ms}}\n"
    )
    with cargohold(root, config=config) as served:
        yield served


def scenario(url: str, layout: Path, pulled: Path) -> None:
    """Push with skopeo, pull with skopeo, mount, HEAD, delete the manifest and the blob."""
    skopeo.copy(f"oci:{layout}:v1", skopeo.docker(url, "team/app:v1"))
    skopeo.copy(skopeo.docker(url, "team/app:v1"), f"oci:{pulled}:v1")
    layer = layers_of(layout, "v1")[0]
    headers = {"User-Agent": USER_AGENT}
    mounted = request(
        "POST", f"{url}/v2/other/blobs/uploads/?mount={layer}&from=team/app", headers=headers
    )
    assert mounted.status == 201, mounted.body
    assert request("HEAD", f"{url}/v2/other/blobs/{layer}", headers=headers).status == 200
    digest = skopeo.inspect(skopeo.docker(url, "team/app:v1"))["Digest"]
    deleted = request("DELETE", f"{url}/v2/team/app/manifests/{digest}", headers=headers)
    assert deleted.status == 202, deleted.body
    assert request("DELETE", f"{url}/v2/other/blobs/{layer}", headers=headers).status == 202


def settled(receiver: Receiver, within: float = 30) -> list[dict[str, Any]]:
    """The events once no more arrive for a second (the scenario has ended by then)."""
    deadline = time.monotonic() + within
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(receiver.events())
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= 1.0 and count:
            return receiver.events()
        time.sleep(0.05)
    pytest.fail(f"the events never settled ({seen} so far)")


def comparable(event: dict[str, Any]) -> str:
    """An event without what differs by nature, as canonical JSON."""
    target = dict(event["target"])
    if "url" in target:
        # http://127.0.0.1:<port>/v2/...: the registries listen on different ports
        target["url"] = "/v2/" + target["url"].split("/v2/", 1)[1]
    request_record = {
        key: value for key, value in event["request"].items() if key not in ("id", "addr", "host")
    }
    kept = {
        "action": event["action"],
        "target": target,
        "request": request_record,
        "actor": event.get("actor", {}),
    }
    return json.dumps(kept, sort_keys=True)


def test_the_same_operations_tell_the_same_events(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_image(layout, "v1", (4096, 8192))
    found: dict[str, list[str]] = {}
    with webhook_receiver() as go_receiver, webhook_receiver() as our_receiver:
        with distribution(tmp_path / "go-root", notify=go_receiver.url) as url:
            scenario(url, layout, tmp_path / "go-pulled")
            found["distribution"] = sorted(map(comparable, settled(go_receiver)))
        with cargohold_notifying(tmp_path / "our-root", our_receiver.url, tmp_path) as url:
            scenario(url, layout, tmp_path / "our-pulled")
            found["cargohold"] = sorted(map(comparable, settled(our_receiver)))
    theirs, ours = found["distribution"], found["cargohold"]
    only_theirs = [e for e in theirs if e not in ours]
    only_ours = [e for e in ours if e not in theirs]
    assert (only_theirs, only_ours) == ([], []), "\n".join(
        ["only Distribution's:", *only_theirs, "only cargohold's:", *only_ours]
    )
    assert len(theirs) == len(ours)
