"""The web UI over HTTP: what each page says, who may see it, and what a delete needs.

The browser tests (``test_browser.py``) look at the same pages as a person
does; these check the server's side exactly: statuses, escaping, access
control, form tokens, and that a delete goes through the registry's events.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from cargohold.storage.paths import BlobData, path_for
from cargohold.testing import serve
from cargohold.testing.server import Registry, _htpasswd
from cargohold.testing.tls import make_token_signer
from cargohold.ui.natural import natural_key
from tests.support.waiting import until
from tests.support.webhooks import webhook_receiver

Page = tuple[int, str]


async def page(
    session: aiohttp.ClientSession, registry: Registry, path: str, **options: Any
) -> Page:
    async with session.get(registry.url + path, allow_redirects=False, **options) as reply:
        return reply.status, await reply.text()


async def post(
    session: aiohttp.ClientSession,
    registry: Registry,
    path: str,
    form: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
) -> Page:
    async with session.post(
        registry.url + path, data=dict(form), allow_redirects=False, headers=headers
    ) as reply:
        return reply.status, await reply.text()


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


def listed(html: str) -> list[str]:
    """The repositories a catalog page links to."""
    return re.findall(r'href="/ui/r/([^"]+)"', html)


async def sign_in(
    session: aiohttp.ClientSession, registry: Registry, user: str, password: str
) -> Page:
    _, login = await page(session, registry, "/ui/login")
    form = {"username": user, "password": password, "csrf": form_token(login)}
    return await post(session, registry, "/ui/login", form)


def tag_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-tag="([^"]+)">', html)


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    # Cookies on an address (127.0.0.1) are kept only by an "unsafe" jar.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def test_tags_sort_the_way_people_read_versions() -> None:
    tags = ["1.10", "latest", "1.9", "1.2", "1.9-rc1", "v2", "1.10.1"]
    assert sorted(tags, key=natural_key) == [
        "1.2",
        "1.9",
        "1.9-rc1",
        "1.10",
        "1.10.1",
        "latest",
        "v2",
    ]


async def test_the_catalog_is_searched_and_paged_on_the_server(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve(config={"ui": {"pagesize": 2}}) as registry:
        for name in ("team/api", "team/web", "team/worker", "other/tool"):
            registry.push_image(name, "v1")
        status, html = await page(browser, registry, "/ui/")
        assert status == 200
        assert listed(html) == ["other/tool", "team/api"]
        following = re.search(r'href="([^"]+)" rel="next"', html)
        assert following is not None
        status, html = await page(browser, registry, following.group(1).replace("&amp;", "&"))
        assert listed(html) == ["team/web", "team/worker"]
        assert 'rel="next"' not in html
        status, html = await page(browser, registry, "/ui/?q=WOR")
        assert listed(html) == ["team/worker"]
        status, html = await page(browser, registry, "/ui/?q=nothing-like-it")
        assert status == 200
        assert "No repository matches" in html


async def test_a_repository_lists_its_tags_in_natural_order_with_what_they_hold(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve() as registry:
        for tag in ("1.10", "1.9", "1.2"):
            registry.push_image("team/app", tag, layers=2)
        image = registry.push_image("team/app", "signed")
        registry.push_artifact(
            "team/app", artifact_type="application/vnd.example.sig", subject=image
        )
        registry.push_index("team/app", "multi")
        status, html = await page(browser, registry, "/ui/r/team/app")
    assert status == 200
    assert tag_rows(html) == ["1.2", "1.9", "1.10", "multi", "signed"]
    rows = dict(zip(tag_rows(html), html.split('<tr data-tag="')[1:], strict=True))
    assert "linux/amd64, linux/arm64" in rows["multi"]
    assert re.search(r'class="num referrers">1<', rows["signed"])
    assert re.search(r'class="num referrers">0<', rows["1.9"])
    assert str(image.digest)[:19] in rows["signed"]
    assert f"docker pull {registry.host}/team/app:1.10" in rows["1.10"]


async def test_a_manifest_page_shows_layers_config_history_annotations_and_referrers(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve() as registry:
        image = registry.push_image(
            "team/app",
            "v1",
            layers=3,
            config={"Env": ["PATH=/bin"], "Entrypoint": ["/app"], "Labels": {"team": "blue"}},
            annotations={"org.example.note": "hello"},
        )
        signature = registry.push_artifact(
            "team/app", artifact_type="application/vnd.example.sig", subject=image
        )
        status, html = await page(browser, registry, f"/ui/r/team/app/-/manifest/{image.digest}")
        _, referrer = await page(browser, registry, f"/ui/r/team/app/-/manifest/{signature.digest}")
    assert status == 200
    assert html.count("<td><code>application/vnd.oci.image.layer.v1.tar+gzip</code>") == 3
    assert "<code>PATH=/bin</code>" in html
    assert "<code>/app</code>" in html
    assert "blue" in html
    assert "org.example.note" in html
    assert "hello" in html
    assert html.count("cargohold.testing layer") == 3  # the build steps
    assert "application/vnd.example.sig" in html
    assert f'href="/ui/r/team/app/-/manifest/{signature.digest}"' in html
    # ... and the referrer leads back to its subject.
    assert f'id="subject" href="/ui/r/team/app/-/manifest/{image.digest}"' in referrer


async def test_every_name_tag_annotation_and_label_is_shown_as_text(
    browser: aiohttp.ClientSession,
) -> None:
    hostile = "<script>alert(1)</script>"
    async with serve() as registry:
        image = registry.push_image(
            "team/app",
            "v1",
            config={"Labels": {"x": hostile}, "Env": [f"X={hostile}"]},
            annotations={hostile: hostile},
        )
        _, html = await page(browser, registry, f"/ui/r/team/app/-/manifest/{image.digest}")
    assert "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4


async def test_what_does_not_exist_is_a_friendly_404(browser: aiohttp.ClientSession) -> None:
    async with serve() as registry:
        image = registry.push_image("team/app", "v1")
        missing = str(image.digest)[:-4] + "0000"
        for path, says in (
            ("/ui/r/team/nothing", "There is no repository team/nothing"),
            (f"/ui/r/team/app/-/manifest/{missing}", "There is no manifest"),
            ("/ui/r/team/app/-/manifest/sha256:nothex", "That is not a digest"),
            ("/ui/r/Bad..Name", "That is not a repository name"),
            ("/ui/no/such/page", "There is no such page"),
        ):
            status, html = await page(browser, registry, path)
            assert (status, says in html) == (404, True), path
            assert html.startswith("<!doctype html>")


async def test_a_damaged_image_config_is_told_on_its_page_not_a_500(
    browser: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(root=tmp_path) as registry:
        image = registry.push_image("team/app", "v1")
        manifest = registry.call(lambda c: c.repository("team/app").manifests.get(image.digest))
        import json

        config = json.loads(manifest.payload)["config"]["digest"]
        from cargohold.digest import Digest

        data = path_for(BlobData(Digest.parse(config))).lstrip("/")
        (tmp_path / data).write_bytes(b"not json at all")
        status, html = await page(browser, registry, f"/ui/r/team/app/-/manifest/{image.digest}")
        listed, _ = await page(browser, registry, "/ui/r/team/app")
    assert status == 200
    assert listed == 200
    assert "the image config is not JSON" in html


async def test_a_damaged_manifest_is_told_on_its_page_with_its_tags_not_a_500(
    browser: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(root=tmp_path) as registry:
        image = registry.push_image("team/app", "v1")
        (tmp_path / path_for(BlobData(image.digest)).lstrip("/")).write_bytes(b"{not json")
        status, html = await page(browser, registry, f"/ui/r/team/app/-/manifest/{image.digest}")
        listed_status, listing = await page(browser, registry, "/ui/r/team/app")
    assert status == 200
    assert "This manifest is damaged" in html
    assert '<dd id="tags">v1</dd>' in html
    assert "/-/delete?digest=" in html
    assert listed_status == 200
    assert "manifest is not valid JSON" in listing


# -- deletes --------------------------------------------------------------------------------


async def test_a_tag_is_deleted_after_its_confirmation_with_the_pages_own_token(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve() as registry:
        registry.push_image("team/app", "old")
        registry.push_image("team/app", "keep")
        status, confirmation = await page(browser, registry, "/ui/r/team/app/-/delete?tag=old")
        assert status == 200
        assert "Delete tag old?" in confirmation
        token = form_token(confirmation)
        # Without the token, or from another site, nothing happens.
        status, _ = await post(browser, registry, "/ui/r/team/app/-/delete", {"tag": "old"})
        assert status == 403
        status, _ = await post(
            browser,
            registry,
            "/ui/r/team/app/-/delete",
            {"tag": "old", "csrf": token},
            {"Origin": "http://evil.example"},
        )
        assert status == 403
        _, html = await page(browser, registry, "/ui/r/team/app")
        assert tag_rows(html) == ["keep", "old"]
        status, done = await post(
            browser, registry, "/ui/r/team/app/-/delete", {"tag": "old", "csrf": token}
        )
        assert status == 200
        assert "is gone" in done
        tags = registry.call(lambda c: c.repository("team/app").tags.all())
    assert tags == ["keep"]


async def test_deleting_a_manifest_lists_the_tags_that_go_with_it(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve() as registry:
        image = registry.push_image("team/app", "a")
        registry.call(lambda c: c.repository("team/app").tags.tag("b", image.digest))
        registry.push_image("team/app", "other", layers=2)
        path = f"/ui/r/team/app/-/delete?digest={image.digest}"
        _, confirmation = await page(browser, registry, path)
        assert re.findall(r"<li>(\w+)</li>", confirmation) == ["a", "b"]
        status, _ = await post(
            browser,
            registry,
            "/ui/r/team/app/-/delete",
            {"digest": str(image.digest), "csrf": form_token(confirmation)},
        )
        tags = registry.call(lambda c: c.repository("team/app").tags.all())
    assert status == 200
    assert tags == ["other"]


async def test_without_deletes_enabled_nothing_offers_or_takes_a_delete(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve(delete=False) as registry:
        registry.push_image("team/app", "v1")
        _, html = await page(browser, registry, "/ui/r/team/app")
        assert "/-/delete" not in html
        status, refused = await page(browser, registry, "/ui/r/team/app/-/delete?tag=v1")
        assert status == 405
        assert "Deletes are off" in refused
        status, _ = await post(
            browser, registry, "/ui/r/team/app/-/delete", {"tag": "v1", "csrf": "x"}
        )
        tags = registry.call(lambda c: c.repository("team/app").tags.all())
    assert status == 403
    assert tags == ["v1"]


# -- who may see what -----------------------------------------------------------------------


async def test_with_htpasswd_a_visitor_signs_in_with_the_form_or_basic(
    browser: aiohttp.ClientSession,
) -> None:
    async with serve(users={"alice": "secret"}) as registry:
        registry.push_image("team/app", "v1")
        status, html = await page(browser, registry, "/ui/r/team/app")
        assert status == 401
        assert 'name="password"' in html
        assert "team/app" not in tag_rows(html)
        token = form_token(html)
        status, html = await post(
            browser,
            registry,
            "/ui/login",
            {"username": "alice", "password": "wrong", "csrf": token, "next": "/ui/r/team/app"},
        )
        assert status == 401
        assert "wrong user name or password" in html
        async with browser.post(
            registry.url + "/ui/login",
            data={"username": "alice", "password": "secret", "csrf": token, "next": "/ui/"},
            allow_redirects=False,
        ) as reply:
            assert reply.status == 303
            assert reply.headers["Location"] == "/ui/"
            cookie = reply.cookies["cargohold_session"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        status, html = await page(browser, registry, "/ui/r/team/app")
        assert status == 200
        assert tag_rows(html) == ["v1"]
        assert "Signed in as" in html
        # Signing out ends it.
        await post(browser, registry, "/ui/logout", {"csrf": form_token(html)})
        status, _ = await page(browser, registry, "/ui/r/team/app")
        assert status == 401
        # A client sending Basic itself needs no form.
        async with aiohttp.ClientSession() as basic:
            auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
            status, html = await page(basic, registry, "/ui/r/team/app", headers=auth)
        assert status == 200
        assert tag_rows(html) == ["v1"]


async def test_a_forged_or_expired_session_is_no_session(browser: aiohttp.ClientSession) -> None:
    from cargohold.ui.session import Session, Signer

    signer = Signer(b"k" * 32)
    sealed = signer.seal(Session("alice", expires=2e9, nonce="n"))
    assert signer.open(sealed) == Session("alice", 2e9, None, "n")
    body, _, mac = sealed.partition(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["u"] = "mallory"
    text = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    assert signer.open(f"{text}.{mac}") is None
    assert signer.open(sealed[:-2] + "xx") is None
    assert Signer(b"other key" * 4).open(sealed) is None
    assert signer.open(signer.seal(Session("alice", expires=1.0))) is None
    async with serve(users={"alice": "secret"}) as registry:
        browser.cookie_jar.update_cookies({"cargohold_session": sealed}, URL(registry.url + "/ui/"))
        status, _ = await page(browser, registry, "/ui/")
    assert status == 401


@pytest.fixture
def token_config(tmp_path: Path) -> dict[str, Any]:
    """Token authentication by cargohold's own token server: alice may pull ``team/**``
    and delete in ``team/app``; anonymous visitors may pull ``public/**``."""
    key, certificate = make_token_signer(tmp_path / "signer")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(_htpasswd({"alice": "secret", "admin": "root"}))
    return {
        "auth": {
            "token": {
                "realm": "http://127.0.0.1:1/auth/token",
                "service": "ui-test",
                "issuer": "ui-test",
                "rootcertbundle": str(certificate),
            }
        },
        "tokenserver": {
            "enabled": True,
            "key": str(key),
            "certificate": str(certificate),
            "htpasswd": {"path": str(htpasswd)},
            "acl": [
                {"name": "**", "users": ["admin"], "actions": ["*"]},
                {"name": "team/**", "users": ["alice"], "actions": ["pull"]},
                {"name": "team/app", "users": ["alice"], "actions": ["delete"]},
                {"type": "registry", "name": "catalog", "users": ["*"], "actions": ["*"]},
            ],
            "anonymous": [{"name": "public/**"}],
        },
    }


def _seed(root: Path) -> None:
    # Pushed by a registry without access control: the token server's realm is not served.
    with serve(root=root) as registry:
        for name in ("team/app", "team/db", "secret/keys", "public/base"):
            registry.push_image(name, "v1")


async def test_with_tokens_the_catalog_shows_only_what_the_user_may_pull(
    browser: aiohttp.ClientSession, token_config: dict[str, Any], tmp_path: Path
) -> None:
    _seed(tmp_path / "root")
    async with serve(root=tmp_path / "root", config=token_config) as registry:
        # Anonymous: what anonymous pulls allow.
        _, html = await page(browser, registry, "/ui/")
        assert listed(html) == ["public/base"]
        status, _ = await page(browser, registry, "/ui/r/team/app")
        assert status == 401
        status, _ = await sign_in(browser, registry, "alice", "secret")
        assert status == 303
        _, html = await page(browser, registry, "/ui/")
        assert listed(html) == ["public/base", "team/app", "team/db"]
        status, refused = await page(browser, registry, "/ui/r/secret/keys")
        assert status == 403
        assert "may not see" in refused
        # Deletes are offered where the token server allows them, and only there.
        _, app = await page(browser, registry, "/ui/r/team/app")
        _, db = await page(browser, registry, "/ui/r/team/db")
        assert "/-/delete?tag=v1" in app
        assert "/-/delete" not in db
        status, _ = await page(browser, registry, "/ui/r/team/db/-/delete?tag=v1")
        assert status == 403


async def test_the_gc_preview_lists_what_collection_would_remove_and_removes_nothing(
    browser: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(root=tmp_path) as registry:
        registry.push_image("team/app", "kept")
        gone = registry.push_image("team/app", "gone", layers=[b"only in the deleted image"])
        registry.call(lambda c: c.repository("team/app").manifests.delete(gone.digest))
        blobs = sorted(tmp_path.glob("docker/registry/v2/blobs/sha256/*/*/data"))
        status, html = await page(browser, registry, "/ui/gc")
        assert sorted(tmp_path.glob("docker/registry/v2/blobs/sha256/*/*/data")) == blobs
    assert status == 200
    # The deleted image's manifest, config and its one layer of its own.
    assert re.search(r'id="gc-blobs">3<', html)
    reclaimed = re.search(r'id="gc-reclaimed">(\d+) B<', html)
    assert reclaimed is not None
    assert int(reclaimed.group(1)) > 0


async def test_a_cors_preflight_is_answered_without_credentials_with_the_configured_headers(
    browser: aiohttp.ClientSession,
) -> None:
    headers = {
        "Access-Control-Allow-Origin": ["http://ui.example"],
        "Access-Control-Allow-Methods": ["HEAD", "GET", "OPTIONS", "DELETE"],
        "Access-Control-Allow-Headers": ["Authorization", "Accept"],
    }
    async with serve(users={"alice": "secret"}, config={"http": {"headers": headers}}) as registry:
        async with browser.options(
            registry.url + "/v2/team/app/tags/list",
            headers={
                "Origin": "http://ui.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        ) as reply:
            assert reply.status == 200
            assert reply.headers["Access-Control-Allow-Origin"] == "http://ui.example"
            assert "Authorization" in reply.headers["Access-Control-Allow-Headers"]
        # The request itself still needs its credentials.
        async with browser.get(registry.url + "/v2/team/app/tags/list") as reply:
            assert reply.status == 401
            assert reply.headers["Access-Control-Allow-Origin"] == "http://ui.example"


async def test_the_ui_can_be_switched_off(browser: aiohttp.ClientSession) -> None:
    async with serve(config={"ui": {"enabled": False}}) as registry:
        status, _ = await page(browser, registry, "/ui/")
    assert status == 404


async def test_with_another_token_server_the_sign_in_asks_it_over_http(
    browser: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # One registry's token server is the realm of another: the second one's UI signs in
    # there with the OAuth2 password grant and asks it for each page's tokens.
    with serve(root=tmp_path) as seeding:
        seeding.push_image("team/app", "v1")
    async with serve(users={"alice": "secret"}, token=True) as issuer:
        token = issuer.config.auth.token
        assert token is not None
        settings = {
            "realm": token.realm,
            "service": token.service,
            "issuer": token.issuer,
            "rootcertbundle": token.rootcertbundle,
        }
        async with serve(root=tmp_path, config={"auth": {"token": settings}}) as registry:
            _, anonymous = await page(browser, registry, "/ui/")
            assert "team/app" not in anonymous  # the token server grants anonymous nothing
            status, refused = await sign_in(browser, registry, "alice", "wrong")
            assert status == 401
            assert "wrong user name or password" in refused
            status, _ = await sign_in(browser, registry, "alice", "secret")
            assert status == 303
            status, html = await page(browser, registry, "/ui/")
    assert status == 200
    assert "Signed in as <strong>alice</strong>" in html
    assert listed(html) == ["team/app"]


async def test_a_delete_from_the_ui_is_announced_to_webhooks_as_the_apis_own(
    browser: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = {"name": "hook", "url": "", "timeout": "2s", "backoff": "100ms"}
    with webhook_receiver() as receiver:
        endpoint["url"] = receiver.url
        config = {"notifications": {"endpoints": [endpoint]}}
        async with serve(root=tmp_path, config=config) as registry:
            registry.push_image("team/app", "old")
            _, confirmation = await page(browser, registry, "/ui/r/team/app/-/delete?tag=old")
            form = {"tag": "old", "csrf": form_token(confirmation)}
            status, _ = await post(browser, registry, "/ui/r/team/app/-/delete", form)
            assert status == 200
            await until(
                lambda: any(e["action"] == "delete" for e in receiver.events()), 20, "no delete"
            )
    deleted = [e for e in receiver.events() if e["action"] == "delete"]
    assert len(deleted) == 1
    assert deleted[0]["target"]["repository"] == "team/app"
    assert deleted[0]["target"]["tag"] == "old"
