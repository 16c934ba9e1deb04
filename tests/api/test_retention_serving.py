"""Retention policies applied by collection while the registry serves.

``storage.maintenance.gc.retention`` lists policies; the first whose
``repositories`` glob matches a repository decides which of its tags stay.
Pulls of manifests (GET or HEAD, on either request path) are written down in
the background for rules that keep what is pulled. The test settings keep
every period at a few seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.api.conftest import MakeRegistry, assert_error
from tests.api.test_gc_while_serving import collecting, storage_of
from tests.support.waiting import eventually

from cargohold.config import parse_config
from cargohold.errors import ConfigError
from cargohold.storage.gc import load_report

#: Longer than a flush of pulls (every second), so that every pull is written down before
#: any tag is old enough to be judged.
GRACE = "3s"


def retaining(*policies: dict[str, Any]) -> dict[str, Any]:
    config = collecting(grace=GRACE)
    config["storage"]["maintenance"]["gc"]["retention"] = list(policies)
    return config


async def test_tags_no_rule_keeps_go_and_their_images_with_them(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry(
        retaining(
            {
                "repositories": ["ci/**"],
                "keeptags": [{"patterns": ["release-.*"]}, {"pulledwithin": "1h"}],
                "untagged": "0s",
            }
        )
    )
    release = await registry.push_image("ci/app", "release-1")
    unused = await registry.push_image("ci/app", "build-1")
    pulled = await registry.push_image("ci/app", "build-2")
    elsewhere = await registry.push_image("other/app", "build-1")
    status, body = await registry.request_anew("GET", "/v2/ci/app/manifests/build-2")
    assert (status, body) == (200, pulled.payload)
    storage = storage_of(registry)

    async def removed() -> bool:
        report = await load_report(storage)
        return report is not None and report["removed_tags"] > 0

    await eventually(removed, what="no pass removed a tag")
    report = await load_report(storage)
    assert report is not None
    assert report["tags"] == ["ci/app:build-1"]
    assert report["manifests"] == [f"ci/app@{unused.digest}"]
    assert await registry.tags("ci/app") == ["build-2", "release-1"]
    assert await registry.tags("other/app") == ["build-1"]  # matched by no policy
    response = await registry.request("GET", f"/v2/ci/app/manifests/{unused.digest}")
    await assert_error(response, 404, "MANIFEST_UNKNOWN")
    for image, name, tag in (
        (release, "ci/app", "release-1"),
        (pulled, "ci/app", "build-2"),
        (elsewhere, "other/app", "build-1"),
    ):
        status, body = await registry.request_anew("GET", f"/v2/{name}/manifests/{tag}")
        assert (status, body) == (200, image.payload)
        for blob in (image.config, *image.layers):
            assert blob is not None
            status, data = await registry.request_anew("GET", f"/v2/{name}/blobs/{blob.digest}")
            assert (status, data) == (200, blob.data)
    # Its blobs go too: in the pass that removed the tag, or, when that pass met one
    # found within its grace period (the manifest's PUT finds its references), a later one.
    for blob in (unused.config, *unused.layers):
        assert blob is not None
        path = f"/v2/ci/app/blobs/{blob.digest}"

        async def gone(path: str = path) -> bool:
            status, _ = await registry.request_anew("HEAD", path)
            return status == 404

        await eventually(gone, what=f"{path} was never collected")
        response = await registry.request("HEAD", path)
        await assert_error(response, 404, "BLOB_UNKNOWN", head=True)


async def test_pulls_are_recorded_only_when_a_policy_reads_them(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry(
        retaining({"repositories": ["**"], "keeptags": [{"mostrecentlypushed": 5}]})
    )
    assert storage_of(registry).pulls is None
    reading = await make_registry(
        retaining({"repositories": ["**"], "keeptags": [{"mostrecentlypulled": 5}]})
    )
    pulls = storage_of(reading).pulls
    assert pulls is not None
    image = await reading.push_image("a", "t")
    status, _ = await reading.request_anew("HEAD", "/v2/a/manifests/t")
    assert status == 200

    async def recorded() -> bool:
        return image.digest in await pulls.last_pulls("a")

    await eventually(recorded, what="the pull was not written down")


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ({"repositories": ["a/[b"]}, "retention.0.repositories"),
        ({"repositories": ["a"], "keeptags": [{"patterns": ["("]}]}, "keeptags.0.patterns"),
        ({"repositories": ["a"], "keeptags": [{"mostrecentlypushed": -1}]}, "mostrecentlypushed"),
        ({"repositories": ["a"], "keeptags": [{"pulledwithin": "-1h"}]}, "pulledwithin"),
        ({"repositories": ["a"], "keep": []}, "retention.0.keep"),
        ({"repositories": []}, "retention.0.repositories"),
    ],
)
def test_a_bad_policy_is_refused_in_one_line(policy: dict[str, Any], key: str) -> None:
    config = retaining(policy)
    config["version"], config["storage"]["inmemory"] = 0.1, {}
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(config), environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("storage.maintenance.gc.retention.0.")
    assert key in message.partition(":")[0]
