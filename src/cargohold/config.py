"""Configuration: CNCF Distribution's ``config.yml``, with ``REGISTRY_*`` overrides.

A file written for the Go registry configures cargohold unchanged: the same
sections, the same keys, the same environment variables. Every section is a
small pydantic model named after Distribution's, and every model forbids keys
it does not know, so a misspelt setting is an error rather than a silent default.

::

    config = load_config("/etc/distribution/config.yml")   # or load_config() for defaults
    config.storage.driver_name          # "filesystem"
    config.storage.driver_parameters    # FilesystemParameters(rootdirectory=..., maxthreads=...)
    config.http.listen_host, config.http.listen_port

Values follow Go's reading of the file:

- A duration (``10s``, ``300ms``, ``1h30m``, ``168h``) is stored as float
  seconds. A bare integer is a number of nanoseconds, as in Go.
- A size or count is an int.
- A null value means "not set": the setting keeps its default.

Environment overrides: ``REGISTRY_<SECTION>_<KEY>...`` replaces one setting
(``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/srv``); list items are addressed
by index (``REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL``); the value is read as YAML.
Variables apply in lexical order of their names, so ``REGISTRY_STORAGE=s3``
comes before ``REGISTRY_STORAGE_S3_BUCKET``. Every problem is a
``ConfigError(key, reason)`` whose key is the dotted path of the setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUseDefault

from cargohold.errors import ConfigError
from cargohold.storage.retention import (
    KeepRule,
    Retention,
    RetentionPolicy,
    compile_glob,
    compile_pattern,
)

__all__ = [
    "Auth",
    "AzureParameters",
    "Config",
    "DriverParameters",
    "Duration",
    "FilesystemParameters",
    "GCSParameters",
    "HTTPConfig",
    "InmemoryParameters",
    "S3Parameters",
    "Storage",
    "TokenServer",
    "load_config",
    "parse_config",
    "parse_duration",
]

_ENV_PREFIX = "REGISTRY_"

# --- values ----------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # MICRO SIGN
    "\u03bcs": 1e-6,  # GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# "ms" is tried before "m", or "5ms" would be read as 5m followed by garbage.
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds in a Go duration: ``"1h30m"`` → 5400.0, ``"300ms"`` → 0.3.

    A bare int is nanoseconds, as when Go decodes YAML into a ``time.Duration``.
    A ``timedelta`` is accepted for models built in Python.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1e-9
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {_show(value)}")
    text = value[1:] if value.startswith(("+", "-")) else value
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"not a duration: {value!r}")
    seconds, pos = 0.0, 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ValueError(f"not a duration: {value!r}")
        seconds += float(part[1]) * _DURATION_UNITS[part[2]]
        pos = part.end()
    return -seconds if value.startswith("-") else seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A Go duration in the file, float seconds in Python."""


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


LogLevel = Annotated[Literal["error", "warn", "info", "debug"], BeforeValidator(_lowercase)]


def _version(value: object) -> object:
    # YAML reads `version: 0.1` as a float; Go reads the same text as a string.
    text = str(value) if isinstance(value, float | int) and not isinstance(value, bool) else value
    if isinstance(text, str) and text != "0.1":
        raise ValueError(f"unsupported version {text!r} (cargohold reads 0.1)")
    return text


Version = Annotated[str, BeforeValidator(_version)]


class _HeaderMap:
    """Marks a map of HTTP header names to lists of values.

    An environment override spells a header name with "_" for "-"
    (``REGISTRY_HTTP_HEADERS_X_FRAME_OPTIONS``), since "-" cannot appear there.
    """


Headers = Annotated[dict[str, list[str]], _HeaderMap()]

MiB = 1024 * 1024
GiB = 1024 * MiB


class _Section(BaseModel):
    """A section of ``config.yml``: unknown keys are errors, null means "use the default"."""

    # Go's YAML decoder writes numbers into string settings (`secret: 1234`).
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    #: Environment names that differ from the YAML key. Distribution matches
    #: ``REGISTRY_*`` components against Go struct field names, which are the
    #: YAML keys except where listed here (``EventConfig`` for ``events``, ...).
    env_names: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data: Any) -> Any:
        return cls._prepare(data)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


# --- log -------------------------------------------------------------------------------


class AccessLog(_Section):
    disabled: bool = False


class SMTP(_Section):
    addr: str = ""
    username: str = ""
    password: str = ""
    insecure: bool = False


class MailOptions(_Section):
    smtp: SMTP = Field(default_factory=SMTP)
    from_: str = Field("", alias="from")
    to: list[str] = Field(default_factory=list)


class LogHook(_Section):
    env_names = {"MAILOPTIONS": "options"}

    disabled: bool = False
    type: str = ""
    levels: list[str] = Field(default_factory=list)
    options: MailOptions = Field(default_factory=MailOptions)


class Log(_Section):
    accesslog: AccessLog = Field(default_factory=AccessLog)
    level: LogLevel = "info"
    formatter: Literal["text", "json", "logstash"] = "text"
    fields: dict[str, Any] = Field(default_factory=dict)
    hooks: list[LogHook] = Field(default_factory=list)
    reportcaller: bool = False


# --- storage ---------------------------------------------------------------------------


class FilesystemParameters(_Section):
    rootdirectory: str = "/var/lib/registry"
    maxthreads: int = 100

    @field_validator("maxthreads")
    @classmethod
    def _at_least_25(cls, value: int) -> int:
        # Distribution raises a smaller value to its minimum rather than refusing it.
        return max(value, 25)


class InmemoryParameters(_Section):
    """The in-memory driver takes no parameters."""


S3StorageClass = Literal[
    "NONE",
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "OUTPOSTS",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
]
S3ObjectACL = Literal[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
]
S3LogLevel = Literal[
    "off",
    "debug",
    "debugwithsigning",
    "debugwithhttpbody",
    "debugwithrequestretries",
    "debugwithrequesterrors",
    "debugwitheventstreambody",
]


def _s3_loglevel(value: object) -> object:
    # YAML 1.1 reads an unquoted `off` as false.
    return "off" if value is False else _lowercase(value)


def _uppercase(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class S3Parameters(_Section):
    accesskey: str = ""
    secretkey: str = ""
    sessiontoken: str = ""
    # Declared before `region`, whose check needs it.
    regionendpoint: str = ""
    region: str = Field("", validate_default=True)
    forcepathstyle: bool = False
    bucket: str
    encrypt: bool = False
    keyid: str = ""
    secure: bool = True
    skipverify: bool = False
    v4auth: bool = True
    chunksize: int = Field(10 * MiB, ge=5 * MiB, le=5 * GiB)
    multipartcopychunksize: int = Field(32 * MiB, ge=5 * MiB, le=5 * GiB)
    multipartcopymaxconcurrency: int = Field(100, ge=1)
    multipartcopythresholdsize: int = Field(32 * MiB, ge=0, le=5 * GiB)
    rootdirectory: str = ""
    storageclass: Annotated[S3StorageClass, BeforeValidator(_uppercase)] = "STANDARD"
    useragent: str = ""
    usedualstack: bool = False
    usefipsendpoint: bool = False
    accelerate: bool = False
    objectacl: S3ObjectACL = "private"
    loglevel: Annotated[S3LogLevel, BeforeValidator(_s3_loglevel)] = "off"
    #: How long a presigned redirect URL stays valid. cargohold's addition: Distribution
    #: fixes it at 20 minutes and ignores unknown driver keys, so either reads this config.
    redirectexpiry: Duration = 1200.0

    @field_validator("region")
    @classmethod
    def _region_or_endpoint(cls, region: str, info: ValidationInfo) -> str:
        if not region and not info.data.get("regionendpoint"):
            raise ValueError("required unless regionendpoint is set")
        return region


class AzureCredentials(_Section):
    """Distribution v3's ``credentials``: cargohold's driver takes ``shared_key`` (the
    driver refuses the others, which need Azure's identity library)."""

    type: str = ""  # empty: shared_key when accountkey is set, as Distribution 2 read it
    clientid: str = ""
    tenantid: str = ""
    secret: str = ""


class AzureParameters(_Section):
    accountname: str
    accountkey: str = ""
    container: str
    credentials: AzureCredentials = Field(default_factory=AzureCredentials)
    connectionstring: str = ""  # read and never used by Distribution: refused when set
    realm: str = "core.windows.net"
    rootdirectory: str = ""
    serviceurl: str = ""  # default: https://<accountname>.blob.<realm>
    max_retries: int = Field(5, ge=-1)
    retry_delay: Duration = 0.1
    skipverify: bool = False
    #: How long a redirect's SAS URL stays valid. cargohold's addition, as for s3
    #: (Distribution fixes it at 20 minutes and ignores unknown driver keys).
    redirectexpiry: Duration = 1200.0


class GCSParameters(_Section):
    """Distribution's ``gcs`` driver (``storage/driver/gcs.py``)."""

    bucket: str
    #: A service account's JSON key file; wins over ``credentials``, as in Distribution.
    keyfile: str = ""
    #: The same key as a mapping (``type: service_account``, ``private_key``, ...).
    credentials: dict[str, str] = Field(default_factory=dict)
    rootdirectory: str = ""
    chunksize: int = Field(16 * MiB, ge=256 * 1024)
    useragent: str = ""
    maxconcurrency: int = 50
    #: How long a signed redirect URL stays valid; cargohold's, as for s3.
    redirectexpiry: Duration = 1200.0

    @field_validator("chunksize")
    @classmethod
    def _whole_quanta(cls, value: int) -> int:
        if value % (256 * 1024):
            raise ValueError(f"must be a multiple of {256 * 1024}")
        return value

    @field_validator("maxconcurrency")
    @classmethod
    def _at_least_25_calls(cls, value: int) -> int:
        # Distribution raises a smaller value to its minimum rather than refusing it.
        return max(value, 25)


DriverParameters: TypeAlias = (
    FilesystemParameters | InmemoryParameters | S3Parameters | AzureParameters | GCSParameters
)


class Delete(_Section):
    enabled: bool = False


class Redirect(_Section):
    disable: bool = False


class Cache(_Section):
    blobdescriptor: Literal["inmemory", "redis"] | None = None
    blobdescriptorsize: int = Field(10000, ge=0)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        data = super()._prepare(data)
        if isinstance(data, dict) and "layerinfo" in data:  # the deprecated name
            data = dict(data)
            data.setdefault("blobdescriptor", data.pop("layerinfo"))
        return data


class UploadPurging(_Section):
    enabled: bool = True
    age: Duration = 168 * 3600.0
    interval: Duration = 24 * 3600.0
    dryrun: bool = False


class ReadOnly(_Section):
    enabled: bool = False


def _not_negative(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise ValueError("must not be negative")
    return value


class KeepTags(_Section):
    """One rule of a retention policy's ``keeptags`` (``storage/retention.py``)."""

    patterns: list[str] = Field(default_factory=list)
    mostrecentlypushed: int | None = Field(None, ge=0)
    mostrecentlypulled: int | None = Field(None, ge=0)
    pushedwithin: Duration | None = None
    pulledwithin: Duration | None = None

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_pattern(pattern)
        return patterns

    _durations = field_validator("pushedwithin", "pulledwithin")(_not_negative)

    def rule(self) -> KeepRule:
        return KeepRule(
            tuple(compile_pattern(p) for p in self.patterns),
            self.mostrecentlypushed,
            self.mostrecentlypulled,
            self.pushedwithin,
            self.pulledwithin,
        )


class RetentionPolicyConfig(_Section):
    """One retention policy: the first whose ``repositories`` match a repository decides."""

    repositories: list[str] = Field(min_length=1)
    #: None: every tag stays; else a tag stays when one rule keeps it.
    keeptags: list[KeepTags] | None = None
    #: Untagged manifests go once this old (and past the grace period).
    untagged: Duration | None = None

    @field_validator("repositories")
    @classmethod
    def _globs(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            compile_glob(glob)
        return globs

    _untagged = field_validator("untagged")(_not_negative)

    def policy(self) -> RetentionPolicy:
        keep = None if self.keeptags is None else tuple(k.rule() for k in self.keeptags)
        return RetentionPolicy(
            tuple(compile_glob(g) for g in self.repositories), keep, self.untagged
        )


class GarbageCollection(_Section):
    """cargohold's: garbage collection while serving (``cargohold gc --online`` runs one pass)."""

    enabled: bool = False
    interval: Duration = 24 * 3600.0
    #: Nothing younger than this is deleted: a blob's content or last use, a manifest's link.
    #: None: the upload-purge age (a grace shorter than it is refused).
    graceperiod: Duration | None = None
    dryrun: bool = False
    deleteuntagged: bool = False
    #: Retention policies, in order; empty: every tag stays.
    retention: list[RetentionPolicyConfig] = Field(default_factory=list)

    def policies(self) -> Retention | None:
        """The retention policies, or None when there are none."""
        if not self.retention:
            return None
        return Retention(tuple(p.policy() for p in self.retention))


class Maintenance(_Section):
    uploadpurging: UploadPurging = Field(default_factory=UploadPurging)
    readonly: ReadOnly = Field(default_factory=ReadOnly)
    gc: GarbageCollection = Field(default_factory=GarbageCollection)

    @model_validator(mode="after")
    def _grace_covers_uploads(self) -> Maintenance:
        purging, gc = self.uploadpurging, self.gc
        if gc.graceperiod is not None and purging.enabled and gc.graceperiod < purging.age:
            # A blob uploaded at the start of an upload that purging still keeps may be
            # referenced when the upload ends: collection must not have taken it before.
            raise ValueError(
                "gc.graceperiod must be at least uploadpurging.age "
                f"({gc.graceperiod:g} s < {purging.age:g} s)"
            )
        return self

    @property
    def grace(self) -> float:
        """The grace period of garbage collection, in seconds."""
        gc = self.gc
        return gc.graceperiod if gc.graceperiod is not None else self.uploadpurging.age


class Tag(_Section):
    concurrencylimit: int = Field(0, ge=0)  # 0: as many as there are CPUs


def _one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


#: Drivers Distribution has and cargohold does not (yet).
_DISTRIBUTION_DRIVERS = frozenset({"swift", "oss", "cos", "bos", "hdfsweb"})


class Storage(_Section):
    """The ``storage`` section: exactly one driver section, plus the registry's own settings."""

    drivers: ClassVar[tuple[str, ...]] = ("filesystem", "inmemory", "s3", "azure", "gcs")

    filesystem: FilesystemParameters | None = None
    inmemory: InmemoryParameters | None = None
    s3: S3Parameters | None = None
    azure: AzureParameters | None = None
    gcs: GCSParameters | None = None
    delete: Delete = Field(default_factory=Delete)
    redirect: Redirect = Field(default_factory=Redirect)
    cache: Cache = Field(default_factory=Cache)
    maintenance: Maintenance = Field(default_factory=Maintenance)
    tag: Tag = Field(default_factory=Tag)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if isinstance(data, str):  # `storage: inmemory` names a driver without parameters
            data = {data: {}}
        if not isinstance(data, dict):
            return super()._prepare(data)
        sections = set(cls.model_fields) - set(cls.drivers)
        found = [str(key) for key in data if key not in sections]
        unknown = [name for name in found if name not in cls.drivers]
        known = _one_of(list(cls.drivers))
        if unknown and unknown[0] in _DISTRIBUTION_DRIVERS:
            raise ValueError(
                f"storage driver {unknown[0]!r} is not supported by cargohold; use {known}"
            )
        if unknown:
            raise ValueError(f"unknown storage driver {unknown[0]!r} (cargohold has {known})")
        if len(found) > 1:
            raise ValueError(f"expected one storage driver, found {_and(found)}")
        if not found:
            raise ValueError(f"no storage driver configured ({known})")
        # `inmemory:` with nothing under it still selects the driver.
        data = {
            key: {} if key in cls.drivers and value is None else value
            for key, value in data.items()
        }
        return super()._prepare(data)

    @property
    def driver_name(self) -> str:
        """The name of the configured driver's section (``filesystem``, ``s3``, ...)."""
        return next(name for name in self.drivers if getattr(self, name) is not None)

    @property
    def driver_parameters(self) -> DriverParameters:
        """The configured driver's parameters."""
        parameters: DriverParameters = getattr(self, self.driver_name)
        return parameters


# --- auth ------------------------------------------------------------------------------


class SillyAuth(_Section):
    realm: str
    service: str


class TokenAuth(_Section):
    realm: str
    service: str
    issuer: str
    rootcertbundle: str = ""
    jwks: str = Field("", validate_default=True)
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token/"
    signingalgorithms: list[
        Literal[
            "EdDSA",
            "HS256",
            "HS384",
            "HS512",
            "RS256",
            "RS384",
            "RS512",
            "ES256",
            "ES384",
            "ES512",
            "PS256",
            "PS384",
            "PS512",
        ]
    ] = Field(default_factory=list)  # empty: all of them

    @field_validator("jwks")
    @classmethod
    def _some_key(cls, jwks: str, info: ValidationInfo) -> str:
        if not jwks and not info.data.get("rootcertbundle"):
            raise ValueError("rootcertbundle or jwks is required to verify tokens")
        return jwks


class HtpasswdAuth(_Section):
    realm: str
    path: str


class Auth(_Section):
    """The ``auth`` section: at most one provider; none means no authentication."""

    providers: ClassVar[tuple[str, ...]] = ("htpasswd", "silly", "token")

    silly: SillyAuth | None = None
    token: TokenAuth | None = None
    htpasswd: HtpasswdAuth | None = None

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if isinstance(data, str):  # `auth: silly`
            data = {data: {}}
        if not isinstance(data, dict):
            return super()._prepare(data)
        found = [str(key) for key in data]
        unknown = [name for name in found if name not in cls.providers]
        if unknown:
            known = _one_of(list(cls.providers))
            raise ValueError(f"unknown auth provider {unknown[0]!r} (cargohold has {known})")
        if len(found) > 1:
            raise ValueError(f"expected at most one auth provider, found {_and(found)}")
        return {key: {} if value is None else value for key, value in data.items()}

    @property
    def provider_name(self) -> str | None:
        """``silly``, ``token``, ``htpasswd``, or None when access is not controlled."""
        return next((name for name in self.providers if getattr(self, name) is not None), None)

    @property
    def provider_parameters(self) -> SillyAuth | TokenAuth | HtpasswdAuth | None:
        return self.silly or self.token or self.htpasswd


# --- tokenserver: cargohold's own token issuer ------------------------------------------

#: The actions an ACL entry may grant; ``*`` grants every action asked for.
ACLAction = Literal["pull", "push", "delete", "*"]


def _pull_only() -> list[ACLAction]:
    return ["pull"]


class TokenServerHtpasswd(_Section):
    path: str


class ACLEntry(_Section):
    """Who may do what: ``users`` and ``groups`` get ``actions`` on resources matching ``name``.

    ``name`` is a pattern: ``*`` matches within one path component, ``**``
    across components, ``${account}`` the requesting user's name.
    """

    type: str = "repository"
    name: str
    users: list[str] = Field(default_factory=list)  # "*": every authenticated user
    groups: list[str] = Field(default_factory=list)
    actions: list[ACLAction]


class AnonymousEntry(_Section):
    """What anyone, without credentials, may do on resources matching ``name``."""

    type: str = "repository"
    name: str
    actions: list[ACLAction] = Field(default_factory=_pull_only)


class TokenServer(_Section):
    """The ``tokenserver`` section: cargohold's addition, not Distribution's.

    A token issuer served by the registry process itself, so that one process
    is a complete secured registry: ``auth.token`` points its realm here.
    """

    enabled: bool = False
    path: str = "/auth/token"
    issuer: str = ""  # empty: auth.token.issuer
    service: str = ""  # empty: auth.token.service
    key: str = ""  # PEM private key: RSA, EC (P-256, P-384, P-521) or Ed25519
    certificate: str = ""  # PEM certificate of the key (and its chain), sent as x5c
    keyid: str = ""  # empty: the key's libtrust key ID, as Distribution 2.x expects
    expiration: Duration = 300.0
    refreshexpiration: Duration = 7 * 24 * 3600.0
    htpasswd: TokenServerHtpasswd | None = None
    groups: dict[str, list[str]] = Field(default_factory=dict)
    acl: list[ACLEntry] = Field(default_factory=list)
    anonymous: list[AnonymousEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _usable(self) -> TokenServer:
        if not self.enabled:
            return self
        if not self.key:
            raise ValueError("key is required to sign tokens")
        if (
            not self.path.startswith("/")
            or self.path.rstrip("/") in ("", "/v2")
            or (self.path.startswith("/v2/"))
        ):
            raise ValueError(f"path must be absolute and outside /v2/, got {self.path!r}")
        if self.expiration <= 0 or self.refreshexpiration <= 0:
            raise ValueError("expiration and refreshexpiration must be positive")
        return self


# --- middleware, reporting -------------------------------------------------------------


class MiddlewareEntry(_Section):
    name: str
    disabled: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


#: Where CloudFront's ``ipfilteredby`` learns AWS's address ranges unless told otherwise.
AWS_IP_RANGES_URL = "https://ip-ranges.amazonaws.com/ip-ranges.json"


def _option_duration(value: object) -> float:
    # Distribution reads a middleware's duration only from a string: a bare number
    # keeps the default, as its documentation says.
    if not isinstance(value, str):
        raise PydanticUseDefault()
    return parse_duration(value)


OptionDuration = Annotated[float, BeforeValidator(_option_duration)]
"""A duration among a middleware's options: a Go duration string, anything else the default."""


def _filter_name(value: object) -> object:
    return (value.strip().lower() or "none") if isinstance(value, str) else value


class CloudFrontOptions(_Section):
    """``cloudfront``'s options, read as Distribution reads them.

    Blob downloads go to ``baseurl`` + the blob's key in storage, signed with
    ``privatekey`` (PEM, RSA) for ``keypairid`` and valid for ``duration``.
    With ``ipfilteredby`` (``aws``, or ``awsregion`` with ``awsregion``),
    clients inside AWS's address ranges (of those regions), as
    ``iprangesurl`` lists them every ``updatefrequency``, get the storage's
    own answer instead.
    """

    baseurl: str
    privatekey: str
    keypairid: str
    duration: OptionDuration = 20 * 60.0
    ipfilteredby: Annotated[Literal["none", "aws", "awsregion"], BeforeValidator(_filter_name)] = (
        "none"
    )
    awsregion: Any = None  # read only with ipfilteredby: awsregion, as Distribution does
    updatefrequency: OptionDuration = 12 * 3600.0
    #: The misspelling Distribution 2.7 shipped; it still wins over the right spelling.
    updatefrenquency: OptionDuration | None = None
    iprangesurl: str = AWS_IP_RANGES_URL

    @field_validator("baseurl")
    @classmethod
    def _base(cls, baseurl: str) -> str:
        if "://" not in baseurl:
            baseurl = "https://" + baseurl
        if not baseurl.endswith("/"):
            baseurl += "/"
        parts = urlsplit(baseurl)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s)://host[/path] URL: {baseurl!r}")
        if parts.query or parts.fragment or not baseurl.isascii() or not baseurl.isprintable():
            raise ValueError(f"must be SCHEME://HOST[/PATH] in ASCII, got {baseurl!r}")
        return baseurl

    @field_validator("privatekey")
    @classmethod
    def _key(cls, path: str) -> str:
        from cargohold.storage.middleware.cloudfront import load_private_key

        load_private_key(path)
        return path

    @field_validator("iprangesurl")
    @classmethod
    def _ranges(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> CloudFrontOptions:
        if self.updatefrenquency is not None:
            self.updatefrequency = self.updatefrenquency
        if self.duration <= 0 or self.updatefrequency <= 0:
            raise ValueError("duration and updatefrequency must be positive")
        if self.ipfilteredby == "awsregion" and not isinstance(self.awsregion, str):
            raise ValueError(
                "awsregion: with ipfilteredby awsregion, a comma-separated list of regions"
            )
        return self

    @property
    def regions(self) -> frozenset[str] | None:
        """The regions whose clients skip CloudFront; None: every region's."""
        if self.ipfilteredby != "awsregion" or not isinstance(self.awsregion, str):
            return None
        return frozenset(region.strip().lower() for region in self.awsregion.split(","))


class RedirectOptions(_Section):
    """``redirect``'s options: blob downloads go to ``baseurl`` + the blob's storage path."""

    baseurl: str

    @field_validator("baseurl")
    @classmethod
    def _base(cls, baseurl: str) -> str:
        parts = urlsplit(baseurl)
        if not parts.scheme:
            raise ValueError(f"no scheme in {baseurl!r}")
        if not parts.netloc.rpartition("@")[2]:
            raise ValueError(f"no host in {baseurl!r}")
        return baseurl


#: The storage middleware cargohold has, each with the model of its options.
STORAGE_MIDDLEWARE: Mapping[str, type[CloudFrontOptions | RedirectOptions]] = {
    "cloudfront": CloudFrontOptions,
    "redirect": RedirectOptions,
}


class StorageMiddlewareEntry(MiddlewareEntry):
    """One ``middleware.storage`` entry; its options are checked when it is enabled."""

    _settings: CloudFrontOptions | RedirectOptions | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _known_options(self) -> StorageMiddlewareEntry:
        model = STORAGE_MIDDLEWARE.get(self.name)
        if self.disabled or model is None:
            return self  # unsupported.py refuses a middleware cargohold lacks
        try:
            self._settings = model.model_validate(self.options)
        except ValidationError as exc:
            problem = _config_error(exc)
            raise ValueError(f"{self.name} option {problem}") from None
        return self

    @property
    def settings(self) -> CloudFrontOptions | RedirectOptions | None:
        """The options as the middleware reads them; None if disabled or not cargohold's."""
        return self._settings


class Middleware(_Section):
    registry: list[MiddlewareEntry] = Field(default_factory=list)
    repository: list[MiddlewareEntry] = Field(default_factory=list)
    storage: list[StorageMiddlewareEntry] = Field(default_factory=list)


class Bugsnag(_Section):
    apikey: str = ""
    releasestage: str = ""
    endpoint: str = ""


class NewRelic(_Section):
    licensekey: str = ""
    name: str = ""
    verbose: bool = False


class Reporting(_Section):
    """Accepted so that older configurations load; cargohold reports to neither service."""

    bugsnag: Bugsnag = Field(default_factory=Bugsnag)
    newrelic: NewRelic = Field(default_factory=NewRelic)


# --- http ------------------------------------------------------------------------------


def _split_host_port(addr: str) -> tuple[str, int]:
    """``"[::1]:5000"`` → ``("::1", 5000)``, ``":5000"`` → ``("", 5000)``, as Go splits them."""
    host, colon, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"not host:port: {addr!r} (an IPv6 host goes in brackets)")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not host:port: {addr!r}")
    return host, int(port)


class LetsEncrypt(_Section):
    cachefile: str = ""
    email: str = ""
    hosts: list[str] = Field(default_factory=list)
    directoryurl: str = ""


class TLS(_Section):
    certificate: str = ""
    key: str = ""
    clientcas: list[str] = Field(default_factory=list)
    clientauth: Literal[
        "request-client-cert",
        "require-any-client-cert",
        "verify-client-cert-if-given",
        "require-and-verify-client-cert",
    ] = "require-and-verify-client-cert"
    minimumtls: Literal["tls1.0", "tls1.1", "tls1.2", "tls1.3"] = "tls1.2"
    ciphersuites: list[str] = Field(default_factory=list)
    letsencrypt: LetsEncrypt = Field(default_factory=LetsEncrypt)


class Prometheus(_Section):
    enabled: bool = False
    path: str = "/metrics"
    #: cargohold's: repositories given series of their own (per worker); the rest
    #: are counted together under ``repository="_other"``.
    repositories: int = Field(1000, ge=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with /, not {value!r}")
        return value


class Debug(_Section):
    addr: str = ""  # empty: no debug server
    prometheus: Prometheus = Field(default_factory=Prometheus)

    @property
    def listen_host(self) -> str:
        return _split_host_port(self.addr)[0]

    @property
    def listen_port(self) -> int:
        return _split_host_port(self.addr)[1]


class HTTP2(_Section):
    disabled: bool = False


class H2C(_Section):
    enabled: bool = False


class HTTPTimeouts(_Section):
    """``http.timeouts`` (cargohold's): how long a client may keep a connection waiting.

    Each closes the connection: ``idle`` between requests, ``header`` from a
    request head's first byte to its end, ``body`` a request body with no byte
    arriving, ``write`` a reply the client takes no byte of while some wait
    for it. 0 is no timeout.
    """

    idle: Duration = 75.0
    header: Duration = 10.0
    body: Duration = 60.0
    write: Duration = 60.0

    @field_validator("idle", "header", "body", "write")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value


class HTTPConfig(_Section):
    """The ``http`` section."""

    # Declared before `addr` so that the check of `addr` can see it.
    net: Literal["tcp", "tcp4", "tcp6", "unix"] = "tcp"
    # Distribution's samples listen on :5000; Go would pick a random port for "".
    addr: str = ":5000"
    host: str = ""
    prefix: str = ""
    secret: str = ""
    relativeurls: bool = False
    draintimeout: Duration = 0.0
    #: cargohold's: see ``HTTPTimeouts``.
    timeouts: HTTPTimeouts = Field(default_factory=HTTPTimeouts)
    #: cargohold's (Go's ``MaxHeaderBytes``): the longest request head, its line included.
    maxheaderbytes: int = Field(64 * 1024, ge=1024)
    tls: TLS = Field(default_factory=TLS)
    headers: Headers = Field(default_factory=dict)
    debug: Debug = Field(default_factory=Debug)
    http2: HTTP2 = Field(default_factory=HTTP2)
    h2c: H2C = Field(default_factory=H2C)

    @field_validator("addr")
    @classmethod
    def _listenable(cls, addr: str, info: ValidationInfo) -> str:
        if info.data.get("net", "tcp") != "unix":
            _split_host_port(addr)
        return addr

    @property
    def listen_host(self) -> str:
        """The host part of ``addr``; ``""`` means every interface."""
        return _split_host_port(self.addr)[0]

    @property
    def listen_port(self) -> int:
        return _split_host_port(self.addr)[1]


# --- notifications ---------------------------------------------------------------------


class Events(_Section):
    includereferences: bool = False


class Ignore(_Section):
    mediatypes: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)


#: The formats an endpoint's requests may take: Distribution's envelope, or CloudEvents 1.0.
FORMATS = ("distribution", "cloudevents")


class Endpoint(_Section):
    name: str
    disabled: bool = False
    url: str
    headers: Headers = Field(default_factory=dict)
    # Distribution's notification sink puts these in place of zero values (``notifications/``).
    timeout: Duration = 1.0
    threshold: int = 10
    backoff: Duration = 1.0
    ignoredmediatypes: list[str] = Field(default_factory=list)
    ignore: Ignore = Field(default_factory=Ignore)
    #: cargohold's: the body's format (``FORMATS``).
    format: str = "distribution"
    #: cargohold's: only events of repositories matching one of these globs (all when empty).
    repositories: list[str] = Field(default_factory=list)
    #: cargohold's: only events whose tag fully matches one of these patterns (all when empty).
    tags: list[str] = Field(default_factory=list)
    #: cargohold's: signs each body (``X-Cargohold-Signature: sha256=<HMAC-SHA256 hex>``).
    secret: str = ""
    #: cargohold's: an event still undelivered this long after it happened is dead-lettered.
    maxage: Duration = 24 * 3600.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
        return url

    @field_validator("format")
    @classmethod
    def _known_format(cls, format: str) -> str:
        if format not in FORMATS:
            raise ValueError(f"must be one of {', '.join(FORMATS)}, not {format!r}")
        return format

    @field_validator("tags")
    @classmethod
    def _patterns(cls, tags: list[str]) -> list[str]:
        for pattern in tags:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return tags

    @property
    def delay(self) -> float:
        return self.backoff if self.backoff > 0 else 1.0

    @property
    def deadline(self) -> float:
        return self.timeout if self.timeout > 0 else 1.0

    @property
    def failures(self) -> int:
        return self.threshold if self.threshold > 0 else 10


class Spool(_Section):
    """cargohold's: where events wait for delivery (``notifications/spool.py``)."""

    #: A directory every process serving the storage shares; by default, beside a
    #: filesystem storage's ``docker/`` folder (``<rootdirectory>/cargohold/notifications``).
    directory: str = ""
    #: Keep events in a stream on the ``redis`` section's server instead: one queue
    #: for the processes of every host (``notifications/redisstream.py``).
    redis: bool = False


class Notifications(_Section):
    env_names = {"EVENTCONFIG": "events"}

    events: Events = Field(default_factory=Events)
    endpoints: list[Endpoint] = Field(default_factory=list)
    spool: Spool = Field(default_factory=Spool)

    @field_validator("endpoints")
    @classmethod
    def _distinct_names(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        names = [endpoint.name for endpoint in endpoints]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two endpoints are named {name!r}")
        return endpoints

    @property
    def active(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.endpoints if not endpoint.disabled]


# --- redis -----------------------------------------------------------------------------


class RedisTLS(_Section):
    enabled: bool = False
    certificate: str = ""
    key: str = ""
    #: The CAs that verify the Redis server: ``rootcas`` in Distribution 3, ``clientcas`` before.
    rootcas: list[str] = Field(default_factory=list)
    clientcas: list[str] = Field(default_factory=list)


class RedisPool(_Section):
    maxidle: int = 0
    maxactive: int = 0
    idletimeout: Duration = 0.0


class Redis(_Section):
    """The ``redis`` section, in Distribution 2.x's shape plus the 3.x pool keys."""

    addr: str = ""
    addrs: list[str] = Field(default_factory=list)
    username: str = ""
    password: str = ""
    db: int = Field(0, ge=0)
    dialtimeout: Duration = 0.0
    readtimeout: Duration = 0.0
    writetimeout: Duration = 0.0
    tls: RedisTLS = Field(default_factory=RedisTLS)
    pool: RedisPool = Field(default_factory=RedisPool)
    maxidleconns: int = 0
    poolsize: int = 0
    connmaxidletime: Duration = 0.0

    @property
    def addresses(self) -> list[str]:
        """Every configured ``host:port``, whichever key named them."""
        return [self.addr, *self.addrs] if self.addr else list(self.addrs)


# --- health ----------------------------------------------------------------------------


class StorageDriverCheck(_Section):
    enabled: bool = False
    interval: Duration = 10.0
    threshold: int = 0  # 0: one failure is enough


class FileCheck(_Section):
    file: str
    interval: Duration = 10.0
    threshold: int = 0


class HTTPCheck(_Section):
    uri: str
    headers: Headers = Field(default_factory=dict)
    statuscode: int = 200
    timeout: Duration = 0.0  # 0: no timeout
    interval: Duration = 10.0
    threshold: int = 0


class TCPCheck(_Section):
    addr: str
    timeout: Duration = 0.0
    interval: Duration = 10.0
    threshold: int = 0


class Health(_Section):
    env_names = {"FILECHECKERS": "file", "HTTPCHECKERS": "http", "TCPCHECKERS": "tcp"}

    storagedriver: StorageDriverCheck = Field(default_factory=StorageDriverCheck)
    file: list[FileCheck] = Field(default_factory=list)
    http: list[HTTPCheck] = Field(default_factory=list)
    tcp: list[TCPCheck] = Field(default_factory=list)


# --- proxy, validation, compatibility, catalog -----------------------------------------


class ProxyExec(_Section):
    command: str
    lifetime: Duration | None = None  # None: run the helper once; 0: before every request


class ProxyTLS(_Section):
    """cargohold's: how an upstream's TLS is verified, and the certificate shown to it."""

    #: PEM certificates that verify the upstream (the system's when empty).
    ca: str = ""
    #: A client certificate and its key, for an upstream that asks for one.
    certificate: str = ""
    key: str = ""
    #: Verify nothing, and allow plain HTTP to a host that is not loopback.
    insecure: bool = False

    @model_validator(mode="after")
    def _key_with_certificate(self) -> ProxyTLS:
        if self.key and not self.certificate:
            raise ValueError("key is given without a certificate")
        return self


def _check_remote(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
    if "/" in rest.strip("/"):
        raise ValueError(f"a registry URL has no path: {url!r}")
    return url.rstrip("/")


class _Remote(_Section):
    """What Distribution's ``proxy`` says of its one upstream, and each cargohold upstream."""

    username: str = ""
    password: str = ""
    exec: ProxyExec | None = None
    ttl: Duration = 168 * 3600.0  # 0: cached content never expires
    #: cargohold's: a tag checked against the upstream is trusted this long.
    recheck: Duration = 5.0
    #: cargohold's: tried in order when the upstream does not answer.
    failover: list[str] = Field(default_factory=list)
    tls: ProxyTLS = Field(default_factory=ProxyTLS)

    @field_validator("failover")
    @classmethod
    def _failover_urls(cls, urls: list[str]) -> list[str]:
        return [_check_remote(url) for url in urls]


class Upstream(_Remote):
    """cargohold's: one upstream of a mirror of several, chosen by repository prefix."""

    #: Repositories whose name starts with this (``docker.io/``) are this upstream's,
    #: named upstream without it.
    prefix: str
    remoteurl: str
    #: The ``?ns=`` values (containerd's mirror requests) that mean this upstream;
    #: by default the prefix's first component.
    hosts: list[str] = Field(default_factory=list)

    @field_validator("remoteurl")
    @classmethod
    def _remote_url(cls, url: str) -> str:
        return _check_remote(url)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix:
            raise ValueError(f"must be a repository path ending in '/', not {prefix!r}")
        return prefix


class Proxy(_Remote):
    """Distribution's pull-through cache, with cargohold's several upstreams.

    With ``remoteurl`` every repository is a mirror of it (Distribution's pure
    proxy: pushes and deletes are refused). With ``upstreams`` the repositories
    under each prefix mirror that upstream, and the rest (when there is no
    ``remoteurl``) are ordinary repositories beside them.
    """

    remoteurl: str = ""
    upstreams: list[Upstream] = Field(default_factory=list)
    #: cargohold's: whether a repository no upstream owns is an ordinary one, or unknown.
    local: bool = True
    #: Read from some Distribution configurations; refused (``unsupported.py``) when set.
    remotenamespace: str = ""
    #: Distribution 3.1's bound on a cache write: refused (``unsupported.py``).
    cachewritetimeout: Duration | None = None

    @field_validator("remoteurl")
    @classmethod
    def _remote_url(cls, url: str) -> str:
        return _check_remote(url) if url else url

    @model_validator(mode="after")
    def _some_upstream(self) -> Proxy:
        if not self.remoteurl and not self.upstreams:
            raise ValueError("needs remoteurl, or upstreams")
        prefixes = [upstream.prefix for upstream in self.upstreams]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two upstreams have the same prefix")
        return self


class URLRules(_Section):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class Platform(_Section):
    architecture: str
    os: str


class IndexRules(_Section):
    platforms: Annotated[Literal["all", "none", "list"], BeforeValidator(_lowercase)] = "all"
    platformlist: list[Platform] = Field(default_factory=list)


class ManifestRules(_Section):
    urls: URLRules = Field(default_factory=URLRules)
    indexes: IndexRules = Field(default_factory=IndexRules)


class Validation(_Section):
    enabled: bool = False  # deprecated in favour of `disabled`
    disabled: bool = False
    manifests: ManifestRules = Field(default_factory=ManifestRules)


class Schema1(_Section):
    env_names = {"TRUSTKEY": "signingkeyfile"}

    signingkeyfile: str = ""
    enabled: bool = False


class Compatibility(_Section):
    schema1: Schema1 = Field(default_factory=Schema1)


class Catalog(_Section):
    maxentries: int = 1000

    @field_validator("maxentries")
    @classmethod
    def _positive(cls, value: int) -> int:
        return value if value > 0 else 1000  # as Distribution: no limit is not an option


class Tags(_Section):
    """Distribution 3's ``tags``: the most tags one page of ``tags/list?n=`` holds."""

    maxtags: int = Field(1000, ge=0)

    @field_validator("maxtags")
    @classmethod
    def _default_for_zero(cls, value: int) -> int:
        return value or 1000  # as Distribution: 0 means the default


class Limits(_Section):
    """cargohold's: bounds on what one request may ask of the registry.

    Each is checked before any work is done, and a request past one gets a 4xx
    naming it; the defaults leave room for any real client.
    """

    #: The largest manifest a PUT may send, in bytes (Distribution's is fixed at 4 MiB).
    manifestsize: int = Field(4 * MiB, ge=1024, le=64 * MiB)
    #: How deeply a manifest's JSON may nest arrays and objects (an image manifest nests 4).
    #: Python's parser has its own bound near 1,000, hence the most this may be.
    jsondepth: int = Field(64, ge=4, le=512)
    #: The most ``tag`` parameters one manifest PUT by digest may carry.
    tagsperpush: int = Field(100, ge=1, le=10_000)
    #: The most upload requests (POST, PATCH, PUT of blob data) one client address may have
    #: under way at once, in each worker; 0: no bound.
    uploadsperclient: int = Field(64, ge=0)


class UI(_Section):
    """cargohold's: the web UI at ``/ui/`` (``ui/``), on unless switched off."""

    enabled: bool = True
    #: How long a sign-in lasts.
    session: Duration = 8 * 3600.0
    #: Repositories on a page of the catalog, and tags on a page of a repository.
    pagesize: int = Field(50, ge=1, le=1000)


# --- ratelimit -------------------------------------------------------------------------


class RateLimitBucket(_Section):
    """cargohold's: a token bucket: ``rate`` requests a second, up to ``burst`` at once."""

    rate: float = Field(gt=0)
    #: 0: the rate rounded up (at least 1).
    burst: int = Field(0, ge=0)


class RateLimits(_Section):
    """cargohold's: the buckets of one kind of key; reads are GET and HEAD, writes the rest."""

    read: RateLimitBucket | None = None
    write: RateLimitBucket | None = None


class RateLimit(_Section):
    """cargohold's: token buckets per client address, per user and per repository."""

    enabled: bool = False
    perclient: RateLimits = Field(default_factory=RateLimits)
    peruser: RateLimits = Field(default_factory=RateLimits)
    perrepository: RateLimits = Field(default_factory=RateLimits)
    #: Keep the buckets on the ``redis`` section's server: shared by every host.
    redis: bool = False

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimit:
        kinds = (self.perclient, self.peruser, self.perrepository)
        if self.enabled and not any(k.read is not None or k.write is not None for k in kinds):
            raise ValueError("enabled, but no limit is set (perclient, peruser, perrepository)")
        return self


# --- the whole file --------------------------------------------------------------------


class Config(_Section):
    """A whole ``config.yml``."""

    version: Version
    log: Log = Field(default_factory=Log)
    loglevel: LogLevel | None = None  # deprecated: folded into log.level
    storage: Storage
    auth: Auth = Field(default_factory=Auth)
    tokenserver: TokenServer = Field(default_factory=TokenServer)
    middleware: Middleware = Field(default_factory=Middleware)
    reporting: Reporting = Field(default_factory=Reporting)
    http: HTTPConfig = Field(default_factory=HTTPConfig)
    notifications: Notifications = Field(default_factory=Notifications)
    redis: Redis = Field(default_factory=Redis)
    health: Health = Field(default_factory=Health)
    catalog: Catalog = Field(default_factory=Catalog)
    tags: Tags = Field(default_factory=Tags)
    proxy: Proxy | None = None
    compatibility: Compatibility = Field(default_factory=Compatibility)
    validation: Validation = Field(default_factory=Validation)
    ui: UI = Field(default_factory=UI)
    limits: Limits = Field(default_factory=Limits)
    ratelimit: RateLimit = Field(default_factory=RateLimit)

    @field_validator("ratelimit")
    @classmethod
    def _ratelimit_redis(cls, ratelimit: RateLimit, info: ValidationInfo) -> RateLimit:
        redis = info.data.get("redis")
        if ratelimit.enabled and ratelimit.redis and redis is not None and not redis.addresses:
            raise ValueError("redis: needs the redis section's addr")
        return ratelimit

    @model_validator(mode="after")
    def _fold_loglevel(self) -> Config:
        if self.loglevel is not None and "level" not in self.log.model_fields_set:
            self.log.level = self.loglevel
        self.loglevel = None
        return self


def _defaults() -> dict[str, Any]:
    """What cargohold runs with when no file is given; the models' defaults do the rest."""
    return {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": "./var/registry"}},
        "http": {"addr": "127.0.0.1:5000"},
    }


# --- loading ---------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """The configuration in the file at ``path`` (or the defaults), with overrides from ``environ``.

    ``environ`` defaults to ``os.environ``.
    """
    if path is None:
        return _build(_defaults(), os.environ if environ is None else environ)
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(source, "is a directory") from None
    except PermissionError:
        raise ConfigError(source, "permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, exc.strerror or "cannot read") from None
    return _parse(text, environ, source)


def parse_config(text: str, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration in the YAML ``text``, with overrides from ``environ`` (``os.environ``)."""
    return _parse(text, environ, "")


def _parse(text: str, environ: Mapping[str, str] | None, source: str) -> Config:
    data = _read_yaml(text, source)
    # Distribution reads the version before anything else: it cannot come from the environment.
    if "version" not in data:
        raise ConfigError("version", "required")
    return _build(data, os.environ if environ is None else environ)


def _build(data: dict[str, Any], environ: Mapping[str, str]) -> Config:
    _apply_environment(data, environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None


class _Loader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice, which would silently drop a setting."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = _one_line(str(exc.problem or exc.context))
        raise ConfigError(source, f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, f"invalid YAML: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, f"expected a mapping of sections, got {_show(data)}")
    return data


# --- environment overrides -------------------------------------------------------------

# Kubernetes and Docker links announce a service called "registry-http" as
# REGISTRY_HTTP_SERVICE_HOST, REGISTRY_HTTP_PORT_5000_TCP_ADDR and so on.
# Those are not settings, and a registry must still start beside them.
_SERVICE_LINK = re.compile(
    r"(_[A-Z0-9]+)*_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)
_UNSET = object()


class _UnknownSetting(Exception):
    def __init__(self, path: list[str]) -> None:
        self.path = path


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply every ``REGISTRY_*`` variable to the raw document ``data``, as Distribution does.

    A variable whose first component is not a section is ignored, as
    Distribution ignores it (``REGISTRY_PORT`` from a Kubernetes service named
    "registry" must not stop the registry). Below a known section, a name that
    matches no setting is a ConfigError, unless it is shaped like a service
    link: a misspelt override should not be silently dropped.
    """
    for name in sorted(key for key in environ if key.startswith(_ENV_PREFIX)):
        parts = name[len(_ENV_PREFIX) :].upper().split("_")
        try:
            _override(data, Config, parts, [], environ[name], name)
        except _UnknownSetting as unknown:
            if len(unknown.path) > 1 and not _SERVICE_LINK.fullmatch("_" + "_".join(parts)):
                raise ConfigError(
                    ".".join(unknown.path), f"unknown setting (from {name})"
                ) from None


def _override(
    node: dict[str, Any],
    model: type[_Section],
    parts: list[str],
    path: list[str],
    text: str,
    env: str,
) -> None:
    """Set the setting ``parts`` names below ``node``, a raw section shaped like ``model``."""
    key, field = _field(model, parts[0])
    if key is None or field is None:
        raise _UnknownSetting([*path, parts[0].lower()])
    path = [*path, key]
    if len(parts) == 1:
        value = _leaf(field.annotation, text, node.get(key), path, env)
        if value is _UNSET:
            node.pop(key, None)
        else:
            node[key] = value
        return
    node[key] = _descend(
        node.get(key), field.annotation, field.metadata, parts[1:], path, text, env
    )


def _descend(
    node: Any,
    annotation: Any,
    metadata: list[Any],
    parts: list[str],
    path: list[str],
    text: str,
    env: str,
) -> Any:
    """``node`` with the setting ``parts`` names changed; ``annotation`` is ``node``'s type."""
    annotation, metadata = _unwrap(annotation, metadata)
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        section = _raw_section(annotation, node, path)
        _override(section, annotation, parts, path, text, env)
        return section
    if origin is list:
        (item,) = get_args(annotation)
        items = list(node) if isinstance(node, list) else []
        if not parts[0].isdigit():
            raise _UnknownSetting([*path, parts[0].lower()])
        index = int(parts[0])
        if index > len(items):  # the next free index appends; a gap would leave holes
            raise ConfigError(".".join([*path, parts[0]]), f"index past the end (from {env})")
        if index == len(items):
            items.append(None)
        item_path = [*path, str(index)]
        if len(parts) == 1:
            value = _leaf(item, text, items[index], item_path, env)
            items[index] = None if value is _UNSET else value
        else:
            items[index] = _descend(items[index], item, [], parts[1:], item_path, text, env)
        return items
    if origin is dict:
        mapping = dict(node) if isinstance(node, dict) else {}
        # A free-form map takes the rest of the name as one key. Header names
        # cannot contain "-" in an environment variable, so "_" stands for it.
        joiner = "-" if any(isinstance(m, _HeaderMap) for m in metadata) else "_"
        key = joiner.join(parts).lower()
        # Replace `X-Content-Type-Options` from the file rather than add a second spelling.
        key = next((k for k in mapping if str(k).lower() == key), key)
        value = _leaf(get_args(annotation)[1], text, mapping.get(key), [*path, key], env)
        if value is _UNSET:
            mapping.pop(key, None)
        else:
            mapping[key] = value
        return mapping
    raise _UnknownSetting([*path, parts[0].lower()])


def _raw_section(model: type[_Section], node: Any, path: list[str]) -> dict[str, Any]:
    """The raw mapping of a section, made if absent, in the long form if written short."""
    if node is None:
        return {}
    if isinstance(node, str) and model in (Storage, Auth):
        return {node: {}}
    if not isinstance(node, dict):
        raise ConfigError(".".join(path), f"expected a mapping, got {_show(node)}")
    return dict(node)


def _leaf(annotation: Any, text: str, old: Any, path: list[str], env: str) -> Any:
    """The value of one variable, read as YAML for a setting of type ``annotation``."""
    if text == "":
        return _UNSET  # Go's zero value: back to the default
    annotation, _ = _unwrap(annotation, [])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if annotation is str:
            return text  # `REGISTRY_HTTP_ADDR=[::1]:5000` is no YAML, but plainly a string
        problem = _one_line(str(getattr(exc, "problem", None) or "cannot parse"))
        raise ConfigError(".".join(path), f"invalid YAML in {env}: {problem}") from None
    if annotation is str and not isinstance(value, str):
        return text  # `REGISTRY_HTTP_SECRET=yes` is the string "yes", not true
    if annotation is Storage and isinstance(value, str):
        # A new driver replaces the old driver's section and keeps the registry's settings.
        kept = _raw_section(Storage, old, path)
        settings = set(Storage.model_fields) - set(Storage.drivers)
        return {**{k: v for k, v in kept.items() if k in settings}, value: {}}
    return value


def _field(model: type[_Section], part: str) -> tuple[str | None, Any]:
    """The YAML key and field of ``model`` that the variable component ``part`` names."""
    wanted = model.env_names.get(part)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key == wanted or key.upper() == part:
            return key, field
    return None, None


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """``annotation`` without ``Annotated`` and ``| None``, and the metadata found on the way."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata = [*metadata, *extra]
        elif get_origin(annotation) in (Union, UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


# --- errors ----------------------------------------------------------------------------


def _show(value: object) -> str:
    """A short, one-line description of a value for an error message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, as a ConfigError naming the setting by its YAML path."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    kind, got, ctx = error["type"], _show(error.get("input")), error.get("ctx", {})
    if kind == "extra_forbidden":
        reason = "unknown setting"
    elif kind == "missing":
        reason = "required"
    elif kind == "value_error":
        reason = str(ctx.get("error", error["msg"]))
    elif kind == "literal_error":
        reason = f"expected {ctx['expected']}, got {got}"
    elif kind in ("string_type", "string_sub_type"):
        reason = f"expected a string, got {got}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        reason = f"expected an integer, got {got}"
    elif kind in ("bool_type", "bool_parsing"):
        reason = f"expected true or false, got {got}"
    elif kind == "list_type":
        reason = f"expected a list, got {got}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        reason = f"expected a mapping, got {got}"
    elif kind == "greater_than_equal":
        reason = f"must be at least {ctx['ge']}, got {got}"
    elif kind == "less_than_equal":
        reason = f"must be at most {ctx['le']}, got {got}"
    else:
        reason = f"{error['msg']}, got {got}"
    return ConfigError(key, _one_line(reason))


def _one_line(text: str) -> str:
    """``text`` fit for a one-line error message (the CLI prints nothing else)."""
    return " ".join(text.split())
