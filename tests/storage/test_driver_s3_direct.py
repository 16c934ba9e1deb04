"""The S3 driver's direct path (GetObject, HeadObject, PutObject) does what botocore does.

Each test runs one thing both ways, on the direct path and through aiobotocore
(``BotoObjects``), and compares what went over the wire or came back: where the
request goes and how it is signed, its headers, which failures are retried and
how many times, which ``ClientError`` an answer becomes, TLS verification. A
scripted S3 server answers both ways; SeaweedFS, which checks signatures,
runs the driver suite in ``test_driver_s3.py``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.auth as botocore_auth
import pytest
from aiohttp import web
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from cargohold.errors import PathNotFound, StorageUnavailable
from cargohold.storage.driver import s3, s3objects, sigv4
from cargohold.storage.driver.s3 import S3Driver
from tests.s3.operations import record_operations

BACKOFF = s3objects.backoff  # before the fixture below replaces it
KEYS = ["root/plain/data", "root/.~data.pending", "odd root/a b+c~d:é/🐳", "root/%41;,=&!'()*"]
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


# -- where requests go ------------------------------------------------------------------


class _Stop(Exception):
    pass


async def botocore_request(driver: S3Driver, key: str) -> tuple[str, str]:
    """The URL and credential scope of the GetObject botocore would send (it is not sent)."""
    client = await driver._s3()
    seen: list[tuple[str, str]] = []

    def stop(request: Any, **_: Any) -> None:
        authorization = request.headers["Authorization"]
        authorization = (
            authorization.decode() if isinstance(authorization, bytes) else authorization
        )
        scope = re.search(r"Credential=[^/]+/\d+/([^,]+)/aws4_request", authorization)
        assert scope is not None
        seen.append((request.url, scope.group(1)))
        raise _Stop

    client.meta.events.register("before-send.s3.GetObject", stop)
    with pytest.raises(_Stop):
        await client.get_object(Bucket=driver.bucket, Key=key)
    client.meta.events.unregister("before-send.s3.GetObject", stop)
    return seen[0]


#: Path-style S3-compatible servers: requests go where the configuration says, no client made.
PATH_STYLE = [
    {"regionendpoint": "http://127.0.0.1:8333", "forcepathstyle": True},
    {"regionendpoint": "http://[::1]:8333", "forcepathstyle": True, "region": "eu-west-1"},
    {"regionendpoint": "minio.internal:9000", "secure": False, "forcepathstyle": True},
    {"regionendpoint": "http://MinIO.Internal:80", "forcepathstyle": True},
    {"regionendpoint": "https://objects.example.com:443", "forcepathstyle": True},
    {"regionendpoint": "https://s3.example.com/under/a/prefix/", "forcepathstyle": True},
    {"regionendpoint": "https://s3.example.com", "forcepathstyle": True, "bucket": "dotted.name"},
]

#: S3-compatible servers where botocore's endpoint rules choose the addressing style.
COMPATIBLE = [
    {"regionendpoint": "http://127.0.0.1:8333"},
    {"regionendpoint": "minio.internal:9000", "secure": False},
    {"regionendpoint": "https://s3.example.com/under/a/prefix", "region": "auto"},
    {"regionendpoint": "https://objects.example.com:443"},
]


@pytest.fixture
def no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither a shared config file nor AWS_* settings of retries, timeouts or CA bundles."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    for name in ("AWS_DEFAULTS_MODE", "AWS_MAX_ATTEMPTS", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize(
    "configuration",
    [
        *PATH_STYLE,
        *COMPATIBLE,
        {"region": "us-east-1"},
        {"region": "us-west-2"},
        {"region": "eu-central-1", "forcepathstyle": True},
        {"region": "eu-central-1", "secure": False},
        {"region": "eu-west-1", "bucket": "dotted.bucket.name"},
        {"region": "eu-west-1", "usedualstack": True},
        {"region": "us-gov-west-1", "usefipsendpoint": True},
        {"region": "eu-west-1", "accelerate": True},
        {"region": "cn-north-1"},
    ],
    ids=lambda configuration: ",".join(f"{k}={v}" for k, v in configuration.items()),
)
async def test_requests_go_where_botocore_sends_them(configuration: dict[str, Any]) -> None:
    parameters = {"bucket": "cargohold-bucket", "accesskey": "AK", "secretkey": "SK"}
    driver = S3Driver(**{**parameters, **configuration})
    try:
        objects = await driver._objects()
        assert isinstance(objects, s3objects.HTTPObjects)
        for key in KEYS:
            url, scope = await botocore_request(driver, key)
            assert objects.origin + objects.path(key) == url
            assert f"{objects.region}/s3" == scope
    finally:
        await driver.close()


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize("attempts", [None, "5"])
@pytest.mark.parametrize(
    "configuration",
    PATH_STYLE,
    ids=lambda configuration: ",".join(f"{k}={v}" for k, v in configuration.items()),
)
async def test_a_path_style_server_is_reached_without_a_botocore_client(
    configuration: dict[str, Any], attempts: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if attempts is not None:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", attempts)
    parameters = {"bucket": "cargohold-bucket", "accesskey": "AK", "secretkey": "SK"}
    driver = S3Driver(**{**parameters, **configuration})
    try:
        objects = await driver._objects()
        assert isinstance(objects, s3objects.HTTPObjects)
        assert driver._client is None, "no client, no models"
        located = driver._located()
        assert located is not None
        client = await driver._s3()
        # The settings botocore would have given it: pool, timeouts, attempts, CA bundle.
        assert located[1] == s3.BotocoreSettings.of(client, driver._session)
        assert located[1].attempts == int(attempts or s3objects.ATTEMPTS)
        probed = await s3objects.probe(client, driver.bucket)
        assert probed is not None
        (origin, prefix, signer), (probed_origin, probed_prefix, probed_signer) = located[0], probed
        assert (origin, prefix) == (probed_origin, probed_prefix)
        assert (signer.region, signer.service) == (probed_signer.region, probed_signer.service)
    finally:
        await driver.close()


async def test_a_shared_config_file_has_botocore_make_the_client_and_say_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nmax_attempts = 7\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.setattr(s3, "_SESSION", None)  # a session reads the file once
    driver = S3Driver(**{"bucket": "b", "accesskey": "AK", "secretkey": "SK", **PATH_STYLE[0]})
    try:
        objects = await driver._objects()
        assert isinstance(objects, s3objects.HTTPObjects)
        assert driver._client is not None, "only botocore reads the file"
        assert objects._attempts == 7
    finally:
        await driver.close()


@pytest.mark.parametrize("mode", ["legacy", "standard", "in-region", "cross-region"])
async def test_a_defaults_mode_changes_nothing_the_path_style_server_is_reached_with(
    mode: str, no_aws_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULTS_MODE", mode)
    monkeypatch.setattr(s3, "_SESSION", None)  # a session reads the mode once
    driver = S3Driver(**{"bucket": "b", "accesskey": "AK", "secretkey": "SK", **PATH_STYLE[0]})
    try:
        located = driver._located()
        assert located is not None
        # The driver's Config sets the timeouts; the mode would change only unset ones.
        assert located[1] == s3.BotocoreSettings.of(await driver._s3(), driver._session)
    finally:
        await driver.close()


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("token", [None, "session/token+="])
@pytest.mark.parametrize(
    "configuration",
    [*PATH_STYLE, *COMPATIBLE, {"region": "us-east-1"}, {"region": "eu-west-1"}],
    ids=lambda configuration: ",".join(f"{k}={v}" for k, v in configuration.items()),
)
async def test_presigned_urls_are_the_ones_botocore_makes(
    configuration: dict[str, Any],
    token: str | None,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime(2026, 12, 5, 8, 30, 15, tzinfo=UTC)
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    monkeypatch.setattr(sigv4.time, "time", now.timestamp)
    parameters = {"bucket": "cargohold-bucket", "accesskey": "AK", "secretkey": "SK"}
    driver = S3Driver(**{**parameters, "sessiontoken": token or "", **configuration})
    try:
        objects = await driver._objects()
        assert isinstance(objects, s3objects.HTTPObjects)
        urls = [urlsplit(await objects.presign(key, method, 1200)) for key in KEYS]
        if configuration in PATH_STYLE:
            assert driver._client is None, "presigned without botocore"
        botocore_objects = s3objects.BotoObjects(await driver._s3(), driver.bucket, {})
        for key, ours in zip(KEYS, urls, strict=True):
            theirs = urlsplit(await botocore_objects.presign(key, method, 1200))
            assert ours._replace(query="") == theirs._replace(query="")
            assert sorted(parse_qsl(ours.query)) == sorted(parse_qsl(theirs.query))
    finally:
        await driver.close()


async def test_without_sigv4_everything_stays_on_botocore() -> None:
    driver = S3Driver(bucket="b", region="eu-west-1", accesskey="AK", secretkey="SK", v4auth=False)
    try:
        assert isinstance(await driver._objects(), s3objects.BotoObjects)
    finally:
        await driver.close()


# -- a scripted S3 server -----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedS3:
    """Answers from ``script`` in turn, then ``default``; remembers every request."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.seen: list[Seen] = []
        self.url = ""

    def default(self, method: str) -> Answer:
        headers = {"Last-Modified": LAST_MODIFIED, "x-amz-meta-cargohold-offset": "5"}
        return Answer(200, b"" if method == "PUT" else b"stored content", headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        answer = self.script.pop(0) if self.script else self.default(request.method)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], **ssl: Any
) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **ssl).start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if ssl else 'http'}://127.0.0.1:{port}"


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedS3]:
    server = ScriptedS3()
    runner, server.url = await serve(server.handle)
    yield server
    await runner.cleanup()


def driver_on(url: str, **overrides: Any) -> S3Driver:
    return S3Driver(
        **{
            "bucket": "bkt",
            "region": "us-east-1",
            "regionendpoint": url,
            "accesskey": "AK",
            "secretkey": "SK",
            "forcepathstyle": True,
            "secure": url.startswith("https"),
            **overrides,
        }
    )


Way = Callable[[S3Driver], Awaitable["s3objects.Objects"]]


async def direct(driver: S3Driver) -> s3objects.Objects:
    objects = await driver._objects()
    assert isinstance(objects, s3objects.HTTPObjects)
    return objects


async def botocore(driver: S3Driver) -> s3objects.Objects:
    return s3objects.BotoObjects(await driver._s3(), driver.bucket, driver._object_args)


WAYS = {"direct": direct, "botocore": botocore}


async def both_ways(
    url: str, run: Callable[[s3objects.Objects], Awaitable[Any]], **overrides: Any
) -> dict[str, Any]:
    """What ``run`` returns (or raises) each way, on a driver of its own."""
    outcomes: dict[str, Any] = {}
    for name, way in WAYS.items():
        driver = driver_on(url, **overrides)
        try:
            outcomes[name] = await run(await way(driver))
        except Exception as exc:  # the outcome to compare
            outcomes[name] = exc
        finally:
            await driver.close()
    return outcomes


@dataclass
class Backoffs:
    """The attempts after which each way waited (it does not: the tests would take seconds)."""

    direct: list[int] = field(default_factory=list)
    botocore: list[int] = field(default_factory=list)


@pytest.fixture(autouse=True)
def backoffs(monkeypatch: pytest.MonkeyPatch) -> Backoffs:
    seen = Backoffs()

    def direct(attempt: int) -> float:
        seen.direct.append(attempt)
        return 0

    def botocore(self: ExponentialBackoff, context: Any) -> float:
        seen.botocore.append(context.attempt_number)
        return 0

    monkeypatch.setattr(s3objects, "backoff", direct)
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", botocore)
    return seen


# -- what goes over the wire ---------------------------------------------------------------

COMPARED = re.compile(r"host|range|content-type|content-length|x-amz-(?!date$).*")


def compared(seen: Seen) -> tuple[str, str, dict[str, str], bytes, str]:
    headers = {name: value for name, value in seen.headers.items() if COMPARED.fullmatch(name)}
    signed = re.search(r"SignedHeaders=([^,]+)", seen.headers["authorization"])
    assert signed is not None
    return seen.method, seen.path, headers, seen.body, signed.group(1)


async def put(objects: s3objects.Objects) -> None:
    await objects.put("root/a b+~:é/data", [b"payload"], {"cargohold-upload-id": "u~1"})


async def put_large(objects: s3objects.Objects) -> None:
    await objects.put(
        "root/large", [bytes(range(256)) * 4096, memoryview(bytes(range(256)) * 4097)], {}
    )


async def get(objects: s3objects.Objects) -> bytes:
    download = await objects.get("root/a b+~:é/data")
    try:
        return await download.read()
    finally:
        download.close()


async def get_from(objects: s3objects.Objects) -> bytes:
    download = await objects.get("root/data", 3)
    try:
        return await download.read(4)
    finally:
        download.close()


async def head(objects: s3objects.Objects) -> s3objects.Head:
    return await objects.head("root/data")


@pytest.mark.parametrize("operation", [put, put_large, get, get_from, head])
@pytest.mark.parametrize(
    "configuration",
    [
        {},
        {"encrypt": True, "storageclass": "REDUCED_REDUNDANCY", "sessiontoken": "token/+="},
        {
            "encrypt": True,
            "keyid": "arn:aws:kms:us-east-1:1:key/k",
            "objectacl": "bucket-owner-full-control",
        },
        {"storageclass": "NONE", "region": "eu-west-3"},
    ],
    ids=["default", "sse-s3", "sse-kms", "no-storage-class"],
)
async def test_requests_carry_botocores_headers(
    scripted: ScriptedS3,
    operation: Callable[[s3objects.Objects], Awaitable[Any]],
    configuration: dict[str, Any],
) -> None:
    outcomes = await both_ways(scripted.url, operation, **configuration)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert outcomes["direct"] == outcomes["botocore"]
    direct_request, botocore_request = scripted.seen
    assert compared(direct_request) == compared(botocore_request)


async def test_user_metadata_and_times_read_back_as_botocore_reads_them(
    scripted: ScriptedS3,
) -> None:
    async def metadata(objects: s3objects.Objects) -> dict[str, str]:
        download = await objects.get("root/data")
        download.close()
        return dict(download.metadata)

    outcomes = await both_ways(scripted.url, metadata)
    assert outcomes["direct"] == outcomes["botocore"] == {"cargohold-offset": "5"}
    outcomes = await both_ways(scripted.url, head)
    assert outcomes["direct"] == outcomes["botocore"]
    assert outcomes["direct"].modified.isoformat() == "2015-10-21T07:28:00+00:00"


# -- errors --------------------------------------------------------------------------------


def s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><Key>k</Key><RequestId>r</RequestId></Error>"
    ).encode()


ERRORS = {
    "no-such-key": Answer(404, s3_error("NoSuchKey", "The specified key does not exist.")),
    "no-such-bucket": Answer(404, s3_error("NoSuchBucket", "The bucket does not exist")),
    "access-denied": Answer(403, s3_error("AccessDenied", "Access Denied")),
    "bad-signature": Answer(403, s3_error("SignatureDoesNotMatch", "no match")),
    "invalid-range": Answer(416, s3_error("InvalidRange", "not satisfiable")),
    "empty-404": Answer(404),
    "html-502": Answer(502, b"<html><body>Bad Gateway</body></html>"),
    "garbage-500": Answer(500, b"not xml"),
    "empty-503": Answer(503),
    "slow-down": Answer(503, s3_error("SlowDown", "Please reduce your request rate.")),
    "teapot": Answer(418, b"<Other><Code>Tea</Code></Other>"),
}


def error_of(outcome: Any) -> tuple[str, str, int]:
    assert isinstance(outcome, ClientError), outcome
    response = outcome.response
    return (
        response["Error"].get("Code", ""),
        response["Error"].get("Message", ""),
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


@pytest.mark.parametrize("operation", [get, head, put])
@pytest.mark.parametrize("answer", ERRORS.values(), ids=ERRORS.keys())
async def test_error_answers_become_botocores_client_errors(
    scripted: ScriptedS3,
    operation: Callable[[s3objects.Objects], Awaitable[Any]],
    answer: Answer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert await client_errors(scripted, operation, answer)


async def client_errors(
    scripted: ScriptedS3, operation: Callable[[s3objects.Objects], Awaitable[Any]], answer: Answer
) -> bool:
    """Whether ``answer`` becomes the same ``ClientError`` both ways (attempts set to 1)."""

    async def failing(objects: s3objects.Objects) -> Any:
        scripted.script[:] = [answer]
        return await operation(objects)

    outcomes = await both_ways(scripted.url, failing)
    assert error_of(outcomes["direct"])[2] == answer.status
    return error_of(outcomes["direct"]) == error_of(outcomes["botocore"])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("no-such-key", PathNotFound),
        ("no-such-bucket", StorageUnavailable),
        ("access-denied", StorageUnavailable),
        ("slow-down", StorageUnavailable),
    ],
)
async def test_the_driver_maps_them_to_driver_errors(
    scripted: ScriptedS3, answer: str, expected: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    driver = driver_on(scripted.url)
    scripted.script[:] = [ERRORS[answer]]
    with pytest.raises(expected) as caught:
        await driver.get_content("/file")
    if answer == "no-such-bucket":
        assert "bucket 'bkt' does not exist" in str(caught.value)
    await driver.close()


# -- retries -------------------------------------------------------------------------------

RETRIES = {
    "transient-then-ok": [ERRORS["slow-down"], ERRORS["garbage-500"]],
    "always-unavailable": [ERRORS["empty-503"]] * 5,
    "request-timeout": [Answer(400, s3_error("RequestTimeout", "too slow"))],
    "throttled-400": [Answer(400, s3_error("Throttling", "slow down")), ERRORS["html-502"]],
    "not-found": [ERRORS["no-such-key"]],
    "denied": [ERRORS["access-denied"]],
}


# A HEAD answered 400 may be a wrong region: the tests of that are further down.
RETRIED = [
    pytest.param(operation, script, id=f"{name}-{operation.__name__}")
    for name, script in RETRIES.items()
    for operation in (get, head, put)
    if not (operation is head and any(answer.status == 400 for answer in script))
]


@pytest.mark.parametrize("attempts", [None, "1", "5"], ids=["default", "one", "five"])
@pytest.mark.parametrize(("operation", "script"), RETRIED)
async def test_failures_are_retried_as_botocore_retries_them(
    scripted: ScriptedS3,
    operation: Callable[[s3objects.Objects], Awaitable[Any]],
    script: list[Answer],
    attempts: str | None,
    monkeypatch: pytest.MonkeyPatch,
    backoffs: Backoffs,
) -> None:
    if attempts is None:
        monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    else:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", attempts)
    outcomes, requests = await counted_both_ways(scripted, operation, script)
    assert requests["HTTPObjects"] == requests["BotoObjects"], requests
    if isinstance(outcomes["botocore"], Exception):
        assert error_of(outcomes["direct"]) == error_of(outcomes["botocore"])
    else:
        assert outcomes["direct"] == outcomes["botocore"]
    assert backoffs.direct == backoffs.botocore == list(range(1, requests["HTTPObjects"]))


async def counted_both_ways(
    scripted: ScriptedS3,
    operation: Callable[[s3objects.Objects], Awaitable[Any]],
    script: list[Answer],
) -> tuple[dict[str, Any], dict[str, int]]:
    """What ``operation`` returns or raises each way, answered by ``script`` each time, and how
    many requests each way sent (by ``Objects`` class)."""
    requests: dict[str, int] = {}

    async def counted(objects: s3objects.Objects) -> Any:
        scripted.script[:] = list(script)
        before = len(scripted.seen)
        try:
            return await operation(objects)
        finally:
            requests[type(objects).__name__] = len(scripted.seen) - before

    return await both_ways(scripted.url, counted), requests


async def test_a_dropped_connection_is_retried_as_botocore_retries_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    connections = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    counts = {}
    for name, way in WAYS.items():
        connections = 0
        driver = driver_on(f"http://127.0.0.1:{port}")
        with pytest.raises(StorageUnavailable), driver._errors("/file"):
            await head(await way(driver))
        counts[name] = connections
        await driver.close()
    server.close()
    assert counts["direct"] == counts["botocore"] >= 2


def test_backoff_doubles_with_jitter_up_to_twenty_seconds() -> None:
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 20), (30, 20)]:
        delays = [BACKOFF(attempt) for _ in range(200)]
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        assert max(delays) > ceiling / 2


def test_the_retry_quota_stops_retries_while_everything_fails_and_refills() -> None:
    quota = s3objects._RetryQuota()
    granted = 0
    while quota.acquire(quota.error):
        granted += 1
    assert granted == 100, "500 tokens, 5 a retry"
    quota.succeeded(quota.error)
    assert quota.acquire(quota.error), "a success after a retry gives the retry's tokens back"
    assert not quota.acquire(quota.error)
    for _ in range(quota.error):
        quota.succeeded(0)  # a success without retries gives back 1
    assert quota.acquire(quota.error)


# -- a bucket in another region ------------------------------------------------------------

ELSEWHERE = {"x-amz-bucket-region": "eu-west-1"}
WRONG_REGION = {
    "head-400": (head, Answer(400), False),
    "head-400-naming-ours": (head, Answer(400, b"", {"x-amz-bucket-region": "us-east-1"}), False),
    "head-301": (head, Answer(301, b"", ELSEWHERE), True),
    "get-permanent-redirect": (
        get,
        Answer(301, s3_error("PermanentRedirect", "use the other endpoint"), ELSEWHERE),
        True,
    ),
    "put-authorization-header-malformed": (
        put,
        Answer(
            400,
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>wrong region</Message>"
            b"<Region>eu-west-1</Region></Error>",
        ),
        True,
    ),
}


@pytest.mark.parametrize(
    ("operation", "answer", "elsewhere"), WRONG_REGION.values(), ids=WRONG_REGION.keys()
)
async def test_answers_botocore_takes_for_a_wrong_region_are_handed_to_botocore(
    scripted: ScriptedS3,
    operation: Callable[[s3objects.Objects], Awaitable[Any]],
    answer: Answer,
    elsewhere: bool,
) -> None:
    requests: dict[str, int] = {}
    redirected: list[bool] = []

    async def redirect(objects: s3objects.Objects) -> Any:
        # Directly, then through botocore, which must see the same answer first.
        direct = isinstance(objects, s3objects.HTTPObjects)
        scripted.script[:] = [answer, answer] if direct else [answer]
        before = len(scripted.seen)
        try:
            return await operation(objects)
        finally:
            requests[type(objects).__name__] = len(scripted.seen) - before
            if isinstance(objects, s3objects.HTTPObjects):
                redirected.append(objects._redirected)

    outcomes = await both_ways(scripted.url, redirect)
    if isinstance(outcomes["botocore"], Exception):
        assert error_of(outcomes["direct"]) == error_of(outcomes["botocore"])
    else:
        assert outcomes["direct"] == outcomes["botocore"]
    assert requests["HTTPObjects"] == requests["BotoObjects"] + 1, "the first answer, then botocore"
    assert redirected == [elsewhere], "whether later requests go through botocore too"


async def test_a_bucket_in_another_region_sends_everything_through_botocore(
    scripted: ScriptedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    driver = driver_on(scripted.url)
    calls = await record_operations(driver)
    redirect = {"x-amz-bucket-region": "eu-west-1"}
    scripted.script[:] = [Answer(301, s3_error("PermanentRedirect", "elsewhere"), redirect)]
    assert await driver.get_content("/file") == b"stored content"
    assert calls == ["GetObject", "GetObject"], "once directly, then through botocore"
    assert "Botocore" in scripted.seen[-1].headers["user-agent"]
    calls.clear()
    await driver.put_content("/file", b"x")
    assert (await driver.stat("/file")).size == len(b"stored content")
    assert calls == ["PutObject", "HeadObject"]
    assert all("Botocore" in seen.headers["user-agent"] for seen in scripted.seen[-2:])
    await driver.close()


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = ScriptedS3()
    runner, url = await serve(server.handle, ssl_context=context)
    yield url
    await runner.cleanup()


@pytest.mark.parametrize(
    ("skipverify", "trusted", "works"),
    [(True, False, True), (False, False, False), (False, True, True)],
    ids=["skipverify", "untrusted", "trusted-by-AWS_CA_BUNDLE"],
)
async def test_tls_is_verified_as_botocore_verifies_it(
    tls_server: str,
    certificate: tuple[Path, Path],
    skipverify: bool,
    trusted: bool,
    works: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    if trusted:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate[0]))
    outcomes = await both_ways(tls_server, get, skipverify=skipverify)
    for outcome in outcomes.values():
        if works:
            assert outcome == b"stored content"
        else:
            assert isinstance(outcome, Exception)
            assert "certificate" in str(outcome).lower() or "ssl" in str(outcome).lower()


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTP_PROXY": "http://proxy.internal:3128"},
        {"https_proxy": "http://secure-proxy:3128", "http_proxy": "http://plain-proxy:3128"},
        {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "minio.internal"},
        {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": ".internal,127.0.0.1"},
        {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "*"},
        {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "other.example"},
    ],
    ids=lambda environment: ",".join(f"{k}={v}" for k, v in environment.items()) or "none",
)
@pytest.mark.parametrize(
    "url", ["http://minio.internal:9000", "https://minio.internal", "http://127.0.0.1:8333"]
)
def test_the_proxy_is_the_one_botocore_takes_from_the_environment(
    environment: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.utils import get_environ_proxies

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    expected = get_environ_proxies(url).get(urlsplit(url).scheme)
    assert s3.environment_proxy(url) == expected
