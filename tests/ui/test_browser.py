"""The web UI in a real browser (issue #20): what a person sees and can do at ``/ui/``.

Headless chromium (tests/ui/browser.py) visits a registry served in this
process, seeded by real clients: skopeo, and cargohold's own client through
``registry.push_image`` and friends. Every test reads the page as rendered
(text, order, links followed by clicking) and saves a screenshot of each page
it visits in its ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC

from cargohold.descriptor import Descriptor
from cargohold.testing import serve
from cargohold.testing.server import Registry
from tests.support import skopeo
from tests.support.images import build_image, read_blob
from tests.support.skopeo import docker
from tests.ui.browser import (
    LAPTOP,
    PHONE,
    follow,
    heading,
    http_fetch,
    http_get,
    screenshot,
    texts,
    wait,
)

SBOM = "application/vnd.example.sbom+json"
_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


# -- what the registry holds, read over its HTTP API ------------------------------------------


def manifest_of(registry: Registry, name: str, reference: object) -> bytes:
    """The manifest ``name:reference`` as the registry serves it (no users: no sign-in)."""
    url = f"{registry.url}/v2/{name}/manifests/{reference}"
    status, payload = http_fetch(url, {"Accept": _ACCEPT})
    assert status == 200, f"{name}@{reference}: {status}"
    return payload


def parts_of(registry: Registry, name: str, digest: object) -> dict[str, int]:
    """Everything ``digest`` keeps, each once: the manifest, its config, layers and children."""
    payload = manifest_of(registry, name, digest)
    body: dict[str, Any] = json.loads(payload)
    parts = {str(digest): len(payload)}
    for child in body.get("manifests", []):
        parts.update(parts_of(registry, name, child["digest"]))
    for blob in [body["config"], *body["layers"]] if "config" in body else []:
        parts[blob["digest"]] = blob["size"]
    return parts


def tags_of(registry: Registry, name: str) -> list[str]:
    status, body = http_get(f"{registry.url}/v2/{name}/tags/list")
    assert status == 200, body
    tags: list[str] = json.loads(body)["tags"]
    return tags


# -- what a page says ---------------------------------------------------------------------------


def human(size: int) -> str:
    """A size as a person reads it: ``812 B``, ``1.4 KiB``, ``2.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def short(digest: object) -> str:
    """A digest as the pages abbreviate it: the algorithm and 12 hex digits."""
    text = str(digest)
    return text[: text.index(":") + 13]


def page_url(registry: Registry, path: str = "") -> str:
    return f"{registry.url}/ui/{path}"


def manifest_url(registry: Registry, name: str, digest: object) -> str:
    return page_url(registry, f"r/{name}/-/manifest/{digest}")


def labelled(driver: WebDriver, label: str) -> WebElement:
    """The form field a ``<label>`` reading ``label`` names: how a person finds it."""
    element = driver.find_element(By.XPATH, f"//label[normalize-space()='{label}']")
    return driver.find_element(By.ID, element.get_attribute("for") or "")


def fact(driver: WebDriver, term: str) -> str:
    """The text of the ``<dd>`` after the ``<dt>`` reading ``term`` (the first such)."""
    return driver.find_element(
        By.XPATH, f"//dt[normalize-space()='{term}']/following-sibling::dd[1]"
    ).text


def catalog(driver: WebDriver) -> list[tuple[str, str]]:
    """The catalog's rows in order: each repository's name and tag count, as shown."""
    rows = driver.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    return [
        (
            row.find_element(By.CSS_SELECTOR, "td a").text,
            row.find_element(By.CSS_SELECTOR, "td.num").text,
        )
        for row in rows
    ]


def tag_rows(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "table.tags tbody tr[data-tag]")


def tag_row(driver: WebDriver, tag: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f"table.tags tr[data-tag='{tag}']")


def row_texts(driver: WebDriver, table: str, column: int) -> list[str]:
    """The text of the ``column``-th cell (from 1) of each body row of the table ``#table``."""
    return texts(driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr > :nth-child({column})"))


def search(driver: WebDriver, words: str) -> None:
    """Type ``words`` into the labelled search box and submit it with Enter."""
    box = labelled(driver, "Search repositories")
    box.clear()
    box.send_keys(words, Keys.ENTER)
    wait(driver, EC.staleness_of(box), "searching loaded no new page")
    heading(driver, "Repositories")


def sign_in(driver: WebDriver, user: str, password: str, then: str) -> None:
    labelled(driver, "User name").send_keys(user)
    labelled(driver, "Password").send_keys(password)
    button = driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]")
    follow(driver, button, then)


def signed_in_as(driver: WebDriver) -> str | None:
    who = driver.find_elements(By.CSS_SELECTOR, "header .who span")
    return who[0].text if who else None


# -- the tests ----------------------------------------------------------------------------------


def test_the_catalog_lists_what_skopeo_and_the_client_pushed_and_search_narrows_it(
    driver: WebDriver, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    built = build_image(layout, "v1", (8 * 1024,))
    with serve() as registry:
        skopeo.copy(f"oci:{layout}:v1", docker(registry.url, "team/web:1.0"))
        registry.push_image("team/api", "v1")
        registry.push_image("team/api", "v2", config={"Env": ["V=2"]})
        registry.push_image("tools/cli", "latest")

        driver.get(page_url(registry))
        heading(driver, "Repositories")
        assert catalog(driver) == [("team/api", "2"), ("team/web", "1"), ("tools/cli", "1")]
        screenshot(driver, tmp_path, "catalog.png")

        search(driver, "team")
        assert "?q=team" in driver.current_url
        assert catalog(driver) == [("team/api", "2"), ("team/web", "1")]
        assert labelled(driver, "Search repositories").get_attribute("value") == "team"
        screenshot(driver, tmp_path, "catalog-search.png")

        # What skopeo pushed is there as it sent it: its digest, size and platform.
        follow(driver, driver.find_element(By.LINK_TEXT, "team/web"), "team/web")
        assert [row.get_attribute("data-tag") for row in tag_rows(driver)] == ["1.0"]
        row = tag_row(driver, "1.0")
        link = row.find_element(By.CSS_SELECTOR, "td a")
        assert link.get_attribute("title") == built["digest"]
        assert link.text == short(built["digest"])
        manifest = json.loads(read_blob(layout, built["digest"]))
        expected = built["size"] + sum(
            blob["size"] for blob in [manifest["config"], *manifest["layers"]]
        )
        assert row.find_element(By.CSS_SELECTOR, "td.size").text == human(expected)
        assert row.find_element(By.CSS_SELECTOR, "td.platforms").text == "linux/amd64"

        driver.back()
        heading(driver, "Repositories")
        search(driver, "nothing-like-it")
        assert catalog(driver) == []
        empty = driver.find_element(By.CSS_SELECTOR, "main p.empty").text
        assert empty == "No repository matches “nothing-like-it”."
        screenshot(driver, tmp_path, "catalog-no-match.png")


def test_a_repository_lists_tags_in_natural_order_with_digest_size_platforms_and_referrers(
    driver: WebDriver, tmp_path: Path
) -> None:
    with serve() as registry:
        pushed: dict[str, Descriptor] = {}
        for tag in ("1.9", "1.10", "1.2"):  # distinct images: each names its version
            pushed[tag] = registry.push_image("team/app", tag, config={"Env": [f"V={tag}"]})
        pushed["multi"] = registry.push_index("team/app", "multi")
        registry.push_artifact(
            "team/app", artifact_type=SBOM, subject=pushed["1.2"], files={"sbom.json": b"{}"}
        )

        driver.get(page_url(registry, "r/team/app"))
        heading(driver, "team/app")
        rows = tag_rows(driver)
        assert [row.find_element(By.CSS_SELECTOR, "th.tag").text for row in rows] == [
            "1.2",
            "1.9",
            "1.10",
            "multi",
        ]
        everything: dict[str, int] = {}
        for tag, descriptor in pushed.items():
            row = tag_row(driver, tag)
            link = row.find_element(By.CSS_SELECTOR, "td a")
            assert link.get_attribute("title") == str(descriptor.digest), tag
            assert link.text == short(descriptor.digest), tag
            parts = parts_of(registry, "team/app", descriptor.digest)
            everything.update(parts)
            assert row.find_element(By.CSS_SELECTOR, "td.size").text == human(
                sum(parts.values())
            ), tag
        platforms = {
            tag: tag_row(driver, tag).find_element(By.CSS_SELECTOR, "td.platforms").text
            for tag in pushed
        }
        assert platforms == {
            "1.2": "linux/amd64",
            "1.9": "linux/amd64",
            "1.10": "linux/amd64",
            "multi": "linux/amd64, linux/arm64",
        }
        referrers = {
            tag: tag_row(driver, tag).find_element(By.CSS_SELECTOR, "td.referrers").text
            for tag in pushed
        }
        assert referrers == {"1.2": "1", "1.9": "0", "1.10": "0", "multi": "0"}
        assert tag_row(driver, "multi").find_element(By.CSS_SELECTOR, ".kind").text == "index"
        assert fact(driver, "Tags") == "4"
        # The index's children, the images and nothing else (the SBOM is no tag's).
        assert fact(driver, "Storage used") == human(sum(everything.values()))
        screenshot(driver, tmp_path, "repository-1366.png")

        # A phone: the table folds into one block per tag and nothing spills sideways.
        driver.set_window_size(*PHONE)
        wait(
            driver,
            lambda d: d.execute_script("return window.innerWidth") <= PHONE[0],
            "the window did not narrow",
        )
        assert not driver.find_element(By.CSS_SELECTOR, "table.tags thead").is_displayed()
        row = tag_row(driver, "1.10")
        assert row.find_element(By.CSS_SELECTOR, "th.tag").is_displayed()
        assert row.find_element(By.CSS_SELECTOR, "td.size").is_displayed()
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"
        screenshot(driver, tmp_path, "repository-390.png")
        driver.set_window_size(*LAPTOP)


def test_a_manifest_page_shows_layers_config_history_annotations_and_referrers(
    driver: WebDriver, tmp_path: Path
) -> None:
    with serve() as registry:
        image = registry.push_image(
            "team/app",
            "v1",
            layers=[b"first layer\n", b"second layer\n"],
            config={
                "Env": ["PATH=/usr/bin", "MODE=production"],
                "Entrypoint": ["/app", "--serve"],
                "Labels": {"org.example.team": "storage"},
            },
            annotations={"org.opencontainers.image.source": "https://example.com/app"},
        )
        sbom = registry.push_artifact(
            "team/app", artifact_type=SBOM, subject=image, files={"sbom.json": b'{"a": 1}'}
        )
        body = json.loads(manifest_of(registry, "team/app", image.digest))

        driver.get(manifest_url(registry, "team/app", image.digest))
        heading(driver, f"team/app@{short(image.digest)}")
        assert driver.find_element(By.ID, "digest").text == str(image.digest)
        assert fact(driver, "Kind") == "image"
        assert fact(driver, "Platform") == "linux/amd64"
        assert fact(driver, "Tags") == "v1"

        layers = driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr")
        assert len(layers) == 2
        assert row_texts(driver, "layers", 1) == ["1", "2"]
        codes = driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr td:nth-child(2) code")
        assert [code.get_attribute("title") for code in codes] == [
            layer["digest"] for layer in body["layers"]
        ]
        assert texts(codes) == [short(layer["digest"]) for layer in body["layers"]]
        assert row_texts(driver, "layers", 4) == [human(layer["size"]) for layer in body["layers"]]

        assert fact(driver, "Entrypoint") == "/app --serve"
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#environment li")) == [
            "PATH=/usr/bin",
            "MODE=production",
        ]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#labels dt")) == ["org.example.team"]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#labels dd")) == ["storage"]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#history li")) == [
            "cargohold.testing layer 0",
            "cargohold.testing layer 1",
        ]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#annotations dt")) == [
            "org.opencontainers.image.source"
        ]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#annotations dd")) == [
            "https://example.com/app"
        ]
        assert row_texts(driver, "referrers", 1) == [SBOM]
        assert row_texts(driver, "referrers", 2) == [short(sbom.digest)]
        screenshot(driver, tmp_path, "manifest.png")

        # From the image to what refers to it, and back through the referrer's subject.
        link = driver.find_element(By.CSS_SELECTOR, "#referrers tbody a")
        follow(driver, link, f"team/app@{short(sbom.digest)}")
        assert driver.find_element(By.ID, "digest").text == str(sbom.digest)
        assert fact(driver, "Kind") == "artifact"
        assert fact(driver, "Artifact type") == SBOM
        assert fact(driver, "Tags") == "none"
        subject = driver.find_element(By.ID, "subject")
        assert subject.text == str(image.digest)
        screenshot(driver, tmp_path, "referrer.png")
        follow(driver, subject, f"team/app@{short(image.digest)}")
        assert driver.find_element(By.ID, "digest").text == str(image.digest)


def test_an_index_links_to_each_platform_manifest(driver: WebDriver, tmp_path: Path) -> None:
    with serve() as registry:
        index = registry.push_index("team/multi", "latest")
        children = json.loads(manifest_of(registry, "team/multi", index.digest))["manifests"]
        arm64 = next(c["digest"] for c in children if c["platform"]["architecture"] == "arm64")

        driver.get(manifest_url(registry, "team/multi", index.digest))
        heading(driver, f"team/multi@{short(index.digest)}")
        assert fact(driver, "Kind") == "index"
        assert fact(driver, "Tags") == "latest"
        assert row_texts(driver, "children", 1) == ["linux/amd64", "linux/arm64"]
        assert row_texts(driver, "children", 2) == [short(c["digest"]) for c in children]
        screenshot(driver, tmp_path, "index.png")

        rows = driver.find_elements(By.CSS_SELECTOR, "#children tbody tr")
        link = next(row.find_element(By.TAG_NAME, "a") for row in rows if "linux/arm64" in row.text)
        follow(driver, link, f"team/multi@{short(arm64)}")
        assert driver.current_url == manifest_url(registry, "team/multi", arm64)
        assert driver.find_element(By.ID, "digest").text == arm64
        assert fact(driver, "Platform") == "linux/arm64"
        assert fact(driver, "Kind") == "image"
        assert fact(driver, "Tags") == "none"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr")) == 1
        screenshot(driver, tmp_path, "platform-manifest.png")

        # The breadcrumb leads back to the repository.
        crumb = driver.find_element(By.CSS_SELECTOR, "nav.crumbs").find_element(
            By.LINK_TEXT, "team/multi"
        )
        follow(driver, crumb, "team/multi")
        assert [row.get_attribute("data-tag") for row in tag_rows(driver)] == ["latest"]


def test_a_script_in_an_annotation_is_shown_as_text_and_never_runs(
    driver: WebDriver, tmp_path: Path
) -> None:
    hostile = "<script>window.__xss=1</script>"
    with serve() as registry:
        image = registry.push_image(
            "team/app",
            "v1",
            annotations={"org.example.note": hostile},
            config={"Labels": {"org.example.label": hostile}},
        )
        url = manifest_url(registry, "team/app", image.digest)
        status, html = http_get(url)
        assert status == 200
        assert hostile not in html
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html

        driver.get(url)
        heading(driver, f"team/app@{short(image.digest)}")
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#annotations dd")) == [hostile]
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#labels dd")) == [hostile]
        assert driver.find_elements(By.CSS_SELECTOR, "main script") == []
        assert driver.execute_script("return window.__xss") is None
        screenshot(driver, tmp_path, "annotation-as-text.png")


def test_with_htpasswd_a_person_signs_in_and_out(driver: WebDriver, tmp_path: Path) -> None:
    with serve(users={"alice": "pw"}) as registry:
        registry.push_image("team/app", "v1")
        status, html = http_get(page_url(registry))
        assert status == 401
        assert "Signed in as" not in html

        # An anonymous visitor is asked to sign in, and comes back where they were going.
        driver.get(page_url(registry, "r/team/app"))
        heading(driver, "Sign in")
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]")
        assert alert.text == "Sign in to see this registry."
        assert tag_rows(driver) == []
        assert signed_in_as(driver) is None
        screenshot(driver, tmp_path, "login.png")

        sign_in(driver, "alice", "wrong", then="Sign in")
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]")
        assert alert.text == "wrong user name or password"
        assert signed_in_as(driver) is None
        screenshot(driver, tmp_path, "login-refused.png")
        # A second try still leads where the visitor was going.
        going = driver.find_element(By.CSS_SELECTOR, "form.login input[name=next]")
        assert going.get_attribute("value") == "/ui/r/team/app", "a failed sign-in lost ?next"

        sign_in(driver, "alice", "pw", then="team/app")
        assert driver.current_url == page_url(registry, "r/team/app")
        assert signed_in_as(driver) == "Signed in as alice"
        assert [row.get_attribute("data-tag") for row in tag_rows(driver)] == ["v1"]
        screenshot(driver, tmp_path, "signed-in.png")

        button = driver.find_element(By.XPATH, "//header//button[normalize-space()='Sign out']")
        follow(driver, button, "Sign in")
        assert driver.current_url == page_url(registry)
        assert signed_in_as(driver) is None
        assert driver.find_elements(By.CSS_SELECTOR, "header button") == []
        # The session is gone, not just hidden: the repository asks for a sign-in again.
        driver.get(page_url(registry, "r/team/app"))
        heading(driver, "Sign in")
        assert tag_rows(driver) == []


def test_with_tokens_a_person_signs_in_through_the_form(driver: WebDriver, tmp_path: Path) -> None:
    with serve(users={"alice": "pw"}, token=True) as registry:
        image = registry.push_image("team/app", "v1")

        driver.get(page_url(registry, "login"))
        heading(driver, "Sign in")
        sign_in(driver, "alice", "nope", then="Sign in")
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]")
        assert alert.text == "wrong user name or password"

        sign_in(driver, "alice", "pw", then="Repositories")
        assert signed_in_as(driver) == "Signed in as alice"
        assert catalog(driver) == [("team/app", "1")]
        screenshot(driver, tmp_path, "token-catalog.png")

        follow(driver, driver.find_element(By.LINK_TEXT, "team/app"), "team/app")
        link = tag_row(driver, "v1").find_element(By.CSS_SELECTOR, "td a")
        assert link.get_attribute("title") == str(image.digest)
        follow(driver, link, f"team/app@{short(image.digest)}")
        assert fact(driver, "Platform") == "linux/amd64"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr")) == 1
        assert signed_in_as(driver) == "Signed in as alice"
        screenshot(driver, tmp_path, "token-manifest.png")


def test_a_tag_is_deleted_after_its_confirmation(driver: WebDriver, tmp_path: Path) -> None:
    with serve(delete=True) as registry:
        registry.push_image("team/app", "old", config={"Env": ["V=old"]})
        kept = registry.push_image("team/app", "keep", config={"Env": ["V=keep"]})

        driver.get(page_url(registry, "r/team/app"))
        heading(driver, "team/app")
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.tags a.danger")) == 2
        delete = tag_row(driver, "old").find_element(By.CSS_SELECTOR, "a.danger")
        assert delete.accessible_name == "Delete tag old"
        follow(driver, delete, "Delete tag old?")
        assert (
            "The tag old of team/app will be removed."
            in driver.find_element(By.TAG_NAME, "main").text
        )
        screenshot(driver, tmp_path, "delete-confirm.png")

        follow(driver, driver.find_element(By.ID, "confirm-delete"), "Deleted")
        said = driver.find_element(By.CSS_SELECTOR, "[role=status]").text
        assert said == "The tag old is gone from team/app."
        screenshot(driver, tmp_path, "deleted.png")

        follow(driver, driver.find_element(By.LINK_TEXT, "Back to team/app"), "team/app")
        assert [row.get_attribute("data-tag") for row in tag_rows(driver)] == ["keep"]
        assert fact(driver, "Tags") == "1"
        # The registry's API agrees: the tag is gone, the other still names its image.
        assert tags_of(registry, "team/app") == ["keep"]
        status, _ = http_get(f"{registry.url}/v2/team/app/manifests/old", {"Accept": _ACCEPT})
        assert status == 404
        assert manifest_of(registry, "team/app", "keep") == manifest_of(
            registry, "team/app", kept.digest
        )
        screenshot(driver, tmp_path, "repository-after-delete.png")


def test_a_manifest_deleted_from_its_page_takes_its_tags_and_leaves_garbage(
    driver: WebDriver, tmp_path: Path
) -> None:
    with serve(delete=True) as registry:
        image = registry.push_image("team/app", "a", layers=[b"goes\n"])
        registry.push_image("team/app", "b", layers=[b"goes\n"])  # the same image
        registry.push_image("team/app", "other", layers=[b"stays\n"])
        going = parts_of(registry, "team/app", image.digest)

        driver.get(manifest_url(registry, "team/app", image.digest))
        heading(driver, f"team/app@{short(image.digest)}")
        assert fact(driver, "Tags") == "a, b"
        follow(
            driver,
            driver.find_element(By.LINK_TEXT, "Delete this manifest"),
            f"Delete manifest {short(image.digest)}?",
        )
        assert texts(driver.find_elements(By.CSS_SELECTOR, "#going li")) == ["a", "b"]
        screenshot(driver, tmp_path, "delete-manifest-confirm.png")
        follow(driver, driver.find_element(By.ID, "confirm-delete"), "Deleted")
        assert driver.find_element(By.CSS_SELECTOR, "[role=status]").text == (
            f"The manifest {image.digest} is gone from team/app, with the tags a, b."
        )
        assert tags_of(registry, "team/app") == ["other"]
        status, _ = http_get(f"{registry.url}/v2/team/app/manifests/{image.digest}")
        assert status == 404

        # Its config and layer are garbage now, and the preview says so (removing nothing).
        nav = driver.find_element(By.CSS_SELECTOR, "header nav")
        follow(
            driver,
            nav.find_element(By.LINK_TEXT, "Garbage collection"),
            "Garbage collection preview",
        )
        assert driver.find_element(By.ID, "gc-blobs").text == str(len(going))
        assert driver.find_element(By.ID, "gc-reclaimed").text == human(sum(going.values()))
        screenshot(driver, tmp_path, "gc-preview.png")
        driver.refresh()
        heading(driver, "Garbage collection preview")
        assert driver.find_element(By.ID, "gc-blobs").text == str(len(going))


def test_without_deletes_nothing_offers_one_and_the_page_refuses(
    driver: WebDriver, tmp_path: Path
) -> None:
    with serve(delete=False) as registry:
        image = registry.push_image("team/app", "v1")

        driver.get(page_url(registry, "r/team/app"))
        heading(driver, "team/app")
        assert [row.get_attribute("data-tag") for row in tag_rows(driver)] == ["v1"]
        assert driver.find_elements(By.CSS_SELECTOR, "a.danger") == []
        assert "Delete" not in driver.find_element(By.CSS_SELECTOR, "table.tags").text
        assert driver.find_elements(By.PARTIAL_LINK_TEXT, "Delete") == []

        driver.get(manifest_url(registry, "team/app", image.digest))
        heading(driver, f"team/app@{short(image.digest)}")
        assert driver.find_elements(By.PARTIAL_LINK_TEXT, "Delete") == []

        delete_page = page_url(registry, "r/team/app/-/delete?tag=v1")
        status, html = http_get(delete_page)
        assert status == 405
        assert "Deletes are off" in html
        driver.get(delete_page)
        heading(driver, "Deletes are off")
        assert driver.find_element(By.CSS_SELECTOR, "[role=alert]").text.startswith(
            "This registry does not delete"
        )
        assert driver.find_elements(By.ID, "confirm-delete") == []
        screenshot(driver, tmp_path, "deletes-off.png")
        assert tags_of(registry, "team/app") == ["v1"]


def test_the_copy_button_appears_with_the_script_and_copies_or_selects(
    driver: WebDriver, tmp_path: Path
) -> None:
    with serve() as registry:
        image = registry.push_image("team/app", "v1")
        url = page_url(registry, "r/team/app")
        _, html = http_get(url)
        assert 'class="copy" hidden' in html  # without the script there is no button to see

        # With a clipboard: the command is on it.
        driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {
                "origin": registry.url,
                "permissions": ["clipboardSanitizedWrite", "clipboardReadWrite"],
            },
        )
        driver.get(url)
        heading(driver, "team/app")
        button = tag_row(driver, "v1").find_element(By.CSS_SELECTOR, "button.copy")
        wait(driver, lambda _: button.is_displayed(), "the copy button stayed hidden")
        command = f"docker pull {registry.host}/team/app:v1"
        assert button.get_attribute("data-copy") == command
        assert button.text == "Copy"
        assert button.accessible_name == "Copy the pull command of v1"
        button.click()
        wait(driver, lambda _: button.text == "Copied", "clicking the copy button copied nothing")
        assert button.get_attribute("data-done") == "true"
        pasted = driver.execute_async_script(
            "const done = arguments[0];"
            "navigator.clipboard.readText().then(done, (e) => done('not read: ' + e));"
        )
        assert pasted == command
        screenshot(driver, tmp_path, "copied.png")

        # Without one (plain http on another host): the command is selected for the person.
        hide = driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": "Object.defineProperty(Navigator.prototype, 'clipboard', {get() {}});"},
        )
        try:
            driver.get(manifest_url(registry, "team/app", image.digest))
            heading(driver, f"team/app@{short(image.digest)}")
            assert driver.execute_script("return navigator.clipboard") is None
            button = driver.find_element(By.CSS_SELECTOR, "button.copy")
            wait(driver, lambda _: button.is_displayed(), "the copy button stayed hidden")
            assert button.text == "Copy pull command"
            button.click()
            wait(driver, lambda _: button.text == "Selected", "clicking selected nothing")
            selected = driver.execute_script("return window.getSelection().toString()")
            assert selected == f"docker pull {registry.host}/team/app@{image.digest}"
            screenshot(driver, tmp_path, "selected.png")
        finally:
            driver.execute_cdp_cmd(
                "Page.removeScriptToEvaluateOnNewDocument", {"identifier": hide["identifier"]}
            )


def test_the_first_tab_focuses_the_skip_link(driver: WebDriver, tmp_path: Path) -> None:
    with serve() as registry:
        registry.push_image("team/app", "v1")
        driver.get(page_url(registry))
        heading(driver, "Repositories")
        assert driver.switch_to.active_element == driver.find_element(By.TAG_NAME, "body")
        skip = driver.find_element(By.CSS_SELECTOR, "body > a:first-child")
        assert skip.rect["x"] < 0  # off screen until focused

        ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        assert focused.tag_name == "a"
        assert focused.text == "Skip to content"
        assert focused.get_attribute("href") == page_url(registry) + "#main"
        assert focused == skip
        assert focused.rect["x"] >= 0  # and now on screen
        screenshot(driver, tmp_path, "skip-link.png")

        # Following it, the next Tab lands in the content: the search box, past the header.
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait(driver, EC.url_contains("#main"), "the skip link went nowhere")
        ActionChains(driver).send_keys(Keys.TAB).perform()
        assert driver.switch_to.active_element == labelled(driver, "Search repositories")
