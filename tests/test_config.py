"""config.yml in CNCF Distribution's format, with REGISTRY_* environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.config import (
    Config,
    FilesystemParameters,
    InmemoryParameters,
    S3Parameters,
    load_config,
    parse_config,
    parse_duration,
)
from cargohold.errors import ConfigError

DATA = Path(__file__).parent / "data" / "config"

FILESYSTEM = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /srv/registry
    maxthreads: 50
  delete:
    enabled: true
"""

INMEMORY = "version: 0.1\nstorage: inmemory\n"

HOUR = 3600.0


def config_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ or {})
    return caught.value


# --- without a file ----------------------------------------------------------------------


def test_without_a_file_cargohold_listens_on_loopback_port_5000() -> None:
    config = load_config(environ={})
    assert config.http.addr == "127.0.0.1:5000"
    assert (config.http.listen_host, config.http.listen_port) == ("127.0.0.1", 5000)


def test_without_a_file_content_goes_to_the_filesystem_under_var_registry() -> None:
    storage = load_config(environ={}).storage
    assert storage.driver_name == "filesystem"
    assert storage.driver_parameters == FilesystemParameters(rootdirectory="./var/registry")


def test_without_a_file_the_other_defaults_are_distributions() -> None:
    config = load_config(environ={})
    assert (config.log.level, config.log.formatter) == ("info", "text")
    assert config.storage.delete.enabled is False
    purging = config.storage.maintenance.uploadpurging
    assert (purging.enabled, purging.age, purging.interval) == (True, 168 * HOUR, 24 * HOUR)
    assert config.storage.cache.blobdescriptor is None
    assert config.auth.provider_name is None
    assert config.proxy is None


def test_without_a_file_the_environment_still_applies() -> None:
    config = load_config(environ={"REGISTRY_HTTP_ADDR": ":6000", "REGISTRY_STORAGE": "inmemory"})
    assert config.http.listen_port == 6000
    assert config.storage.driver_name == "inmemory"


def test_the_environment_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGISTRY_LOG_LEVEL", "debug")
    assert load_config().log.level == "debug"
    assert parse_config(INMEMORY).log.level == "debug"


# --- Distribution's sample files -----------------------------------------------------------


def test_distributions_example_config_loads_unchanged() -> None:
    config = load_config(DATA / "config-example.yml", environ={})
    assert config.log.fields == {"service": "registry"}
    assert config.storage.driver_parameters == FilesystemParameters(
        rootdirectory="/var/lib/registry"
    )
    assert config.storage.cache.blobdescriptor == "inmemory"
    assert config.storage.tag.concurrencylimit == 8
    assert (config.http.listen_host, config.http.listen_port) == ("", 5000)
    assert config.http.headers == {"X-Content-Type-Options": ["nosniff"]}
    assert config.auth.provider_name == "htpasswd"
    assert config.auth.htpasswd is not None
    assert config.auth.htpasswd.path == "/etc/registry"
    check = config.health.storagedriver
    assert (check.enabled, check.interval, check.threshold) == (True, 10.0, 3)


def test_distributions_dev_config_loads_unchanged() -> None:
    config = load_config(DATA / "config-dev.yml", environ={})
    assert config.log.level == "debug"
    assert config.log.hooks[0].options.from_ == "sender@example.com"
    assert config.log.hooks[0].options.smtp.insecure is True
    assert config.storage.delete.enabled is True
    assert config.storage.cache.blobdescriptor == "redis"
    assert config.storage.maintenance.uploadpurging.enabled is False
    assert config.http.debug.addr == ":5001"
    assert config.http.debug.prometheus.enabled is True
    assert config.redis.addresses == ["localhost:6379"]
    assert (config.redis.pool.maxidle, config.redis.pool.idletimeout) == (16, 300.0)
    assert config.redis.dialtimeout == pytest.approx(0.010)
    assert config.notifications.events.includereferences is True
    first, second = config.notifications.endpoints
    assert first.headers == {"Authorization": ["Bearer <an example token>"]}
    assert (second.name, second.timeout, second.disabled) == ("local-8083", 1.0, True)


def test_every_option_of_distributions_reference_loads() -> None:
    config = load_config(DATA / "config-full.yml", environ={})
    s3 = config.storage.driver_parameters
    assert isinstance(s3, S3Parameters)
    assert (s3.bucket, s3.region, s3.chunksize) == ("bucketname", "us-west-1", 5 * 1024 * 1024)
    assert (s3.storageclass, s3.objectacl) == ("REDUCED_REDUNDANCY", "bucket-owner-full-control")
    assert config.auth.token is not None
    assert config.auth.token.signingalgorithms == ["EdDSA", "HS256"]
    assert config.middleware.storage[0].options["duration"] == "3000s"
    assert config.reporting.newrelic.verbose is True
    assert config.http.draintimeout == 60.0
    assert config.http.tls.letsencrypt.hosts == ["myregistryaddress.org"]
    assert config.notifications.endpoints[0].timeout == pytest.approx(0.5)
    assert config.notifications.endpoints[0].ignore.actions == ["pull"]
    assert config.health.http[0].headers == {
        "Authorization": ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]
    }
    assert config.health.tcp[0].timeout == 3.0
    assert config.proxy is not None
    assert config.proxy.exec is not None
    assert (config.proxy.ttl, config.proxy.exec.lifetime) == (168 * HOUR, HOUR)
    assert config.validation.manifests.indexes.platforms == "list"
    assert config.validation.manifests.indexes.platformlist[0].architecture == "amd64"
    assert config.compatibility.schema1.signingkeyfile == "/etc/registry/key.json"
    assert config.catalog.maxentries == 100


# --- the file ----------------------------------------------------------------------------


def test_a_file_must_say_its_version() -> None:
    error = config_error("storage: inmemory\n", {"REGISTRY_VERSION": "0.1"})
    assert (error.key, error.reason) == ("version", "required")


def test_only_version_0_1_is_read() -> None:
    assert config_error("version: 0.2\nstorage: inmemory\n").key == "version"


def test_a_file_must_configure_storage_unless_the_environment_does() -> None:
    error = config_error("version: 0.1\n")
    assert (error.key, error.reason) == ("storage", "required")
    config = parse_config("version: 0.1\n", {"REGISTRY_STORAGE": "inmemory"})
    assert config.storage.driver_name == "inmemory"


def test_an_empty_file_lacks_a_version() -> None:
    assert config_error("").key == "version"


def test_storage_may_name_a_driver_without_parameters() -> None:
    for text in (INMEMORY, "version: 0.1\nstorage:\n  inmemory:\n"):
        storage = parse_config(text, {}).storage
        assert storage.driver_name == "inmemory"
        assert storage.driver_parameters == InmemoryParameters()


def test_storage_exposes_its_driver_and_the_drivers_typed_parameters() -> None:
    storage = parse_config(FILESYSTEM, {}).storage
    assert storage.driver_name == "filesystem"
    assert storage.driver_parameters == FilesystemParameters(
        rootdirectory="/srv/registry", maxthreads=50
    )
    assert storage.inmemory is None
    assert storage.s3 is None


def test_two_storage_drivers_are_an_error() -> None:
    error = config_error("version: 0.1\nstorage:\n  filesystem: {}\n  inmemory:\n")
    assert (error.key, error.reason) == (
        "storage",
        "expected one storage driver, found filesystem and inmemory",
    )


def test_an_unknown_storage_driver_is_named() -> None:
    error = config_error("version: 0.1\nstorage:\n  floppy:\n    size: 1440\n")
    assert error.key == "storage"
    assert "unknown storage driver 'floppy'" in error.reason


def test_a_driver_of_distributions_that_cargohold_lacks_is_not_supported() -> None:
    error = config_error("version: 0.1\nstorage:\n  swift:\n    container: x\n")
    assert (error.key, error.reason) == (
        "storage",
        "storage driver 'swift' is not supported by cargohold; "
        "use filesystem, inmemory, s3, azure or gcs",
    )


def test_storage_settings_without_a_driver_are_an_error() -> None:
    error = config_error("version: 0.1\nstorage:\n  delete:\n    enabled: true\n")
    assert error.key == "storage"
    assert error.reason.startswith("no storage driver configured")


def test_a_null_setting_keeps_its_default() -> None:
    config = parse_config("version: 0.1\nstorage: inmemory\nhttp:\n  addr:\nproxy:\n", {})
    assert config.http.addr == ":5000"
    assert config.proxy is None


def test_the_deprecated_loglevel_applies_when_log_level_is_absent() -> None:
    assert parse_config(INMEMORY + "loglevel: debug\n", {}).log.level == "debug"
    both = parse_config(INMEMORY + "loglevel: debug\nlog:\n  level: error\n", {})
    assert both.log.level == "error"


def test_log_levels_are_read_in_any_case() -> None:
    assert parse_config(INMEMORY + "log:\n  level: WARN\n", {}).log.level == "warn"


def test_filesystem_maxthreads_is_raised_to_25_as_distribution_does() -> None:
    text = "version: 0.1\nstorage:\n  filesystem:\n    maxthreads: 3\n"
    parameters = parse_config(text, {}).storage.driver_parameters
    assert parameters == FilesystemParameters(maxthreads=25)


def test_s3_needs_a_bucket_and_a_region_or_an_endpoint() -> None:
    no_bucket = config_error("version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n")
    assert (no_bucket.key, no_bucket.reason) == ("storage.s3.bucket", "required")
    no_region = config_error("version: 0.1\nstorage:\n  s3:\n    bucket: b\n")
    assert no_region.key == "storage.s3.region"
    text = (
        "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    regionendpoint: http://127.0.0.1:8333\n"
    )
    assert parse_config(text, {}).storage.driver_name == "s3"


def test_s3_reads_an_unquoted_loglevel_off_and_a_lowercase_storage_class() -> None:
    text = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n"
    s3 = parse_config(text + "    loglevel: off\n    storageclass: standard_ia\n", {}).storage.s3
    assert s3 is not None
    assert (s3.loglevel, s3.storageclass) == ("off", "STANDARD_IA")


def test_s3_chunks_are_at_least_5_mib() -> None:
    text = "version: 0.1\nstorage:\n  s3: {bucket: b, region: r, chunksize: 1024}\n"
    error = config_error(text)
    assert error.key == "storage.s3.chunksize"
    assert "5242880" in error.reason


def test_the_deprecated_layerinfo_names_the_blob_descriptor_cache() -> None:
    text = "version: 0.1\nstorage:\n  inmemory:\n  cache:\n    layerinfo: inmemory\n"
    assert parse_config(text, {}).storage.cache.blobdescriptor == "inmemory"


def test_auth_may_name_a_provider_and_allows_only_one() -> None:
    silly = INMEMORY + "auth:\n  silly:\n    realm: r\n    service: s\n"
    assert parse_config(silly, {}).auth.provider_name == "silly"
    both = silly + "  htpasswd:\n    realm: r\n    path: /p\n"
    error = config_error(both)
    assert (error.key, error.reason) == (
        "auth",
        "expected at most one auth provider, found silly and htpasswd",
    )
    assert "unknown auth provider 'ldap'" in config_error(INMEMORY + "auth: ldap\n").reason


def test_token_auth_needs_a_key_to_verify_tokens() -> None:
    text = INMEMORY + "auth:\n  token: {realm: r, service: s, issuer: i}\n"
    assert config_error(text).key == "auth.token.jwks"


def test_catalog_maxentries_of_zero_means_the_default_1000() -> None:
    assert parse_config(INMEMORY + "catalog:\n  maxentries: 0\n", {}).catalog.maxentries == 1000


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("300ms", 0.3),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("168h", 604800.0),
        ("1.5h", 5400.0),
        ("2m0.5s", 120.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("-1m", -60.0),
        ("0", 0.0),
        (1_000_000_000, 1.0),  # a bare integer is nanoseconds, as in Go
    ],
)
def test_go_durations_are_float_seconds(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10x", "10", "", "h", "1h30", "1 h", "s10", "1.5"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_a_bad_duration_names_the_setting_and_the_value() -> None:
    text = INMEMORY + "notifications:\n  endpoints:\n    - {name: a, url: http://a, timeout: 10x}\n"
    error = config_error(text)
    assert (error.key, error.reason) == (
        "notifications.endpoints.0.timeout",
        "not a duration: '10x'",
    )


def test_a_float_is_not_a_duration_since_go_would_refuse_it() -> None:
    error = config_error(INMEMORY + "http:\n  draintimeout: 1.5\n")
    assert (error.key, error.reason) == ("http.draintimeout", "not a duration: 1.5")


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (INMEMORY + "storag: {}\n", "storag"),
        (FILESYSTEM.replace("rootdirectory", "rootdirectoy"), "storage.filesystem.rootdirectoy"),
        (
            INMEMORY + "http:\n  tls:\n    letsencrypt:\n      emial: a@b\n",
            "http.tls.letsencrypt.emial",
        ),
        (
            INMEMORY
            + "notifications:\n  endpoints:\n    - {name: a, url: http://u, tiemout: 1s}\n",
            "notifications.endpoints.0.tiemout",
        ),
        (
            INMEMORY + "log:\n  hooks:\n    - options: {smtp: {adress: x}}\n",
            "log.hooks.0.options.smtp.adress",
        ),
        (
            INMEMORY.replace("storage: inmemory", "storage:\n  inmemory: {size: 1}"),
            "storage.inmemory.size",
        ),
    ],
)
def test_an_unknown_setting_is_an_error_naming_its_dotted_key(text: str, key: str) -> None:
    error = config_error(text)
    assert (error.key, error.reason) == (key, "unknown setting")


def test_a_setting_of_the_wrong_type_says_what_was_expected() -> None:
    error = config_error(INMEMORY + "http: {addr: [1, 2]}\n")
    assert (error.key, error.reason) == ("http.addr", "expected a string, got a list")
    error = config_error(INMEMORY + "redis: {db: lots}\n")
    assert (error.key, error.reason) == ("redis.db", "expected an integer, got 'lots'")


def test_a_value_outside_a_fixed_set_lists_the_choices() -> None:
    error = config_error(INMEMORY + "log:\n  formatter: xml\n")
    assert (error.key, error.reason) == (
        "log.formatter",
        "expected 'text', 'json' or 'logstash', got 'xml'",
    )


def test_a_section_that_is_not_a_mapping_is_an_error() -> None:
    error = config_error(INMEMORY + "redis: localhost:6379\n")
    assert (error.key, error.reason) == ("redis", "expected a mapping, got 'localhost:6379'")


def test_a_missing_required_setting_is_named() -> None:
    error = config_error(INMEMORY + "health:\n  file:\n    - interval: 10s\n")
    assert (error.key, error.reason) == ("health.file.0.file", "required")


def test_malformed_yaml_gives_the_line() -> None:
    error = config_error("version: 0.1\nstorage:\n  filesystem: [\n    rootdirectory: /x\n")
    assert error.key == ""
    assert error.reason.startswith("invalid YAML at line ")


def test_a_key_given_twice_is_malformed_rather_than_silently_dropped() -> None:
    error = config_error("version: 0.1\nstorage: inmemory\nhttp: {}\nstorage: s3\n")
    assert error.reason == "invalid YAML at line 4: duplicate key 'storage'"


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = INMEMORY + "log:\n  fields: &f {addr: ':1'}\nhttp:\n  <<: *f\n  addr: ':2'\n"
    assert parse_config(text, {}).http.addr == ":2"


def test_a_document_that_is_not_a_mapping_is_an_error() -> None:
    assert (
        config_error("- version\n- storage\n").reason
        == "expected a mapping of sections, got a list"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert (caught.value.key, caught.value.reason) == (str(path), "file not found")


def test_errors_in_a_file_name_the_file_for_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\nstorage: {\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == str(path)


def test_an_error_prints_as_one_line_key_colon_reason() -> None:
    error = config_error(INMEMORY + "http:\n  addr: 5000\n")
    assert str(error) == "http.addr: not host:port: '5000'"
    assert "\n" not in str(config_error("version: 0.1\nstorage: {\n"))


# --- http addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [
        (":5000", "", 5000),
        ("127.0.0.1:5000", "127.0.0.1", 5000),
        ("[::1]:5000", "::1", 5000),
        ("localhost:80", "localhost", 80),
    ],
)
def test_http_addr_splits_like_go(addr: str, host: str, port: int) -> None:
    http = parse_config(INMEMORY, {"REGISTRY_HTTP_ADDR": addr}).http
    assert (http.listen_host, http.listen_port) == (host, port)


@pytest.mark.parametrize("addr", ["5000", "::1:5000", "localhost:http", "1.2.3.4:70000", ""])
def test_an_http_addr_without_a_usable_port_is_refused(addr: str) -> None:
    error = config_error(INMEMORY + f"http:\n  addr: '{addr}'\n")
    assert error.key == "http.addr"


def test_a_unix_socket_addr_is_a_path() -> None:
    config = parse_config(INMEMORY + "http:\n  net: unix\n  addr: /run/registry.sock\n", {})
    assert config.http.addr == "/run/registry.sock"


# --- environment overrides -----------------------------------------------------------------


def test_env_overrides_a_storage_driver_parameter() -> None:
    env = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x"}
    assert parse_config(FILESYSTEM, env).storage.driver_parameters == FilesystemParameters(
        rootdirectory="/x", maxthreads=50
    )


def test_env_overrides_http_addr() -> None:
    http = parse_config(FILESYSTEM, {"REGISTRY_HTTP_ADDR": ":6000"}).http
    assert (http.addr, http.listen_host, http.listen_port) == (":6000", "", 6000)


def test_env_values_are_yaml_read_into_the_settings_type() -> None:
    config = parse_config(
        INMEMORY,
        {
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE": "72h",
            "REGISTRY_HTTP_TLS_CLIENTCAS": "[/a.pem, /b.pem]",
            "REGISTRY_REDIS_DB": "3",
        },
    )
    assert config.storage.delete.enabled is True
    assert config.storage.maintenance.uploadpurging.age == 72 * HOUR
    assert config.http.tls.clientcas == ["/a.pem", "/b.pem"]
    assert config.redis.db == 3


def test_env_string_settings_keep_the_text_yaml_would_have_turned_into_something_else() -> None:
    env = {"REGISTRY_HTTP_SECRET": "yes", "REGISTRY_REDIS_PASSWORD": "0123"}
    config = parse_config(INMEMORY, env)
    assert (config.http.secret, config.redis.password) == ("yes", "0123")


def test_env_overrides_log_level() -> None:
    assert parse_config(FILESYSTEM, {"REGISTRY_LOG_LEVEL": "debug"}).log.level == "debug"


def test_env_storage_changes_the_driver_and_drops_the_old_drivers_parameters() -> None:
    storage = parse_config(FILESYSTEM, {"REGISTRY_STORAGE": "inmemory"}).storage
    assert storage.driver_name == "inmemory"
    assert storage.filesystem is None
    assert storage.delete.enabled is True  # the registry's own settings stay


def test_env_storage_with_the_same_driver_starts_its_parameters_afresh() -> None:
    storage = parse_config(FILESYSTEM, {"REGISTRY_STORAGE": "filesystem"}).storage
    assert storage.driver_parameters == FilesystemParameters()


def test_env_storage_type_and_parameters_work_together_whatever_their_order() -> None:
    env = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/tmp/root",
        "REGISTRY_STORAGE": "filesystem",
    }
    storage = parse_config(INMEMORY, env).storage
    assert storage.driver_name == "filesystem"
    assert storage.driver_parameters == FilesystemParameters(rootdirectory="/tmp/root")


def test_env_storage_parameters_change_and_add_to_the_files() -> None:
    text = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: us-east-1\n"
    env = {"REGISTRY_STORAGE_S3_REGION": "us-west-1", "REGISTRY_STORAGE_S3_SECURE": "false"}
    s3 = parse_config(text, env).storage.driver_parameters
    assert isinstance(s3, S3Parameters)
    assert (s3.bucket, s3.region, s3.secure) == ("b", "us-west-1", False)


def test_env_parameters_for_a_second_driver_are_two_drivers() -> None:
    error = config_error(FILESYSTEM, {"REGISTRY_STORAGE_S3_BUCKET": "b"})
    assert error.reason == "expected one storage driver, found filesystem and s3"


def test_env_overrides_work_when_the_section_is_absent_from_the_file() -> None:
    env = {
        "REGISTRY_REDIS_ADDR": "redis:6379",
        "REGISTRY_REDIS_POOL_MAXACTIVE": "8",
        "REGISTRY_PROXY_REMOTEURL": "https://registry-1.docker.io",
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
    }
    config = parse_config(INMEMORY, env)
    assert (config.redis.addr, config.redis.pool.maxactive) == ("redis:6379", 8)
    assert config.proxy is not None
    assert config.proxy.remoteurl == "https://registry-1.docker.io"
    assert config.storage.cache.blobdescriptor == "redis"


def test_env_auth_names_a_provider_whose_parameters_follow() -> None:
    env = {
        "REGISTRY_AUTH": "silly",
        "REGISTRY_AUTH_SILLY_REALM": "r",
        "REGISTRY_AUTH_SILLY_SERVICE": "s",
    }
    auth = parse_config(INMEMORY, env).auth
    assert auth.provider_name == "silly"
    assert auth.silly is not None
    assert (auth.silly.realm, auth.silly.service) == ("r", "s")


def test_env_header_names_take_the_rest_of_the_variable_with_dashes() -> None:
    text = INMEMORY + "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
    env = {
        "REGISTRY_HTTP_HEADERS_X_CONTENT_TYPE_OPTIONS": "[sniff]",
        "REGISTRY_HTTP_HEADERS_SERVER": "[c]",
    }
    headers = parse_config(text, env).http.headers
    assert headers == {"X-Content-Type-Options": ["sniff"], "server": ["c"]}


def test_env_free_form_maps_take_the_rest_of_the_variable_lowercased() -> None:
    env = {"REGISTRY_LOG_FIELDS_DATA_CENTER": "east"}
    assert parse_config(INMEMORY, env).log.fields == {"data_center": "east"}


def test_env_addresses_list_items_by_index_and_may_append_one() -> None:
    text = INMEMORY + "notifications:\n  endpoints:\n    - {name: a, url: http://a}\n"
    env = {
        "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL": "http://b",
        "REGISTRY_NOTIFICATIONS_ENDPOINTS_1_NAME": "c",
        "REGISTRY_NOTIFICATIONS_ENDPOINTS_1_URL": "http://c",
        "REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_0": "registry.example.com",
    }
    config = parse_config(text, env)
    assert [(e.name, e.url) for e in config.notifications.endpoints] == [
        ("a", "http://b"),
        ("c", "http://c"),
    ]
    assert config.http.tls.letsencrypt.hosts == ["registry.example.com"]


def test_env_cannot_leave_a_gap_in_a_list() -> None:
    error = config_error(INMEMORY, {"REGISTRY_NOTIFICATIONS_ENDPOINTS_1_URL": "http://x"})
    assert error.key == "notifications.endpoints.1"


def test_env_accepts_distributions_go_field_names_where_they_differ_from_the_yaml_keys() -> None:
    env = {
        "REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES": "true",
        "REGISTRY_COMPATIBILITY_SCHEMA1_TRUSTKEY": "/key.json",
        "REGISTRY_HEALTH_FILECHECKERS_0_FILE": "/down",
    }
    config = parse_config(INMEMORY, env)
    assert config.notifications.events.includereferences is True
    assert config.compatibility.schema1.signingkeyfile == "/key.json"
    assert config.health.file[0].file == "/down"


def test_env_with_an_empty_value_restores_the_default() -> None:
    env = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": ""}
    parameters = parse_config(FILESYSTEM, env).storage.driver_parameters
    assert parameters == FilesystemParameters(maxthreads=50)


def test_env_naming_an_unknown_setting_in_a_section_is_an_error() -> None:
    error = config_error(FILESYSTEM, {"REGISTRY_HTTP_ADRR": ":1"})
    assert (error.key, error.reason) == ("http.adrr", "unknown setting (from REGISTRY_HTTP_ADRR)")
    error = config_error(FILESYSTEM, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTOY": "/x"})
    assert error.key == "storage.filesystem.rootdirectoy"
    assert config_error(FILESYSTEM, {"REGISTRY_HTTP_ADDR_HOST": "x"}).key == "http.addr.host"


def test_env_variables_that_name_no_section_are_ignored_as_distribution_does() -> None:
    # What Kubernetes announces for a service called "registry", for one.
    env = {"REGISTRY_PORT": "tcp://10.0.0.1:5000", "REGISTRY_SERVICE_HOST": "10.0.0.1"}
    assert parse_config(FILESYSTEM, env) == parse_config(FILESYSTEM, {})


def test_env_service_links_for_a_service_named_like_a_section_are_ignored() -> None:
    env = {
        "REGISTRY_HTTP_SERVICE_HOST": "10.0.0.2",
        "REGISTRY_HTTP_PORT": "tcp://10.0.0.2:80",
        "REGISTRY_REDIS_PORT_6379_TCP_ADDR": "10.0.0.3",
    }
    assert parse_config(FILESYSTEM, env) == parse_config(FILESYSTEM, {})


def test_env_values_of_the_wrong_type_name_the_setting() -> None:
    error = config_error(FILESYSTEM, {"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"})
    assert error.key == "storage.delete.enabled"
    error = config_error(FILESYSTEM, {"REGISTRY_LOG_HOOKS": "somestring"})
    assert (error.key, error.reason) == ("log.hooks", "expected a list, got 'somestring'")


def test_env_values_that_are_not_yaml_are_an_error() -> None:
    error = config_error(FILESYSTEM, {"REGISTRY_HTTP_TLS_CLIENTCAS": "[/a.pem"})
    assert error.key == "http.tls.clientcas"
    assert error.reason.startswith("invalid YAML in REGISTRY_HTTP_TLS_CLIENTCAS")


def test_env_variables_without_the_exact_prefix_are_not_read() -> None:
    env = {"registry_HTTP_ADDR": ":1", "REGISTRYHTTP_ADDR": ":2", "HTTP_ADDR": ":3"}
    assert parse_config(FILESYSTEM, env).http.addr == ":5000"


def test_a_config_built_in_python_equals_the_one_read_from_yaml() -> None:
    built = Config.model_validate({"version": "0.1", "storage": {"inmemory": None}})
    assert built == parse_config(INMEMORY, {})


def test_limits_have_defaults_and_refuse_what_the_parser_could_not_hold() -> None:
    limits = parse_config(INMEMORY, {}).limits
    assert (limits.manifestsize, limits.jsondepth, limits.tagsperpush) == (4 << 20, 64, 100)
    assert limits.uploadsperclient == 64
    assert config_error(INMEMORY + "limits:\n  jsondepth: 1000\n").key == "limits.jsondepth"
    assert config_error(INMEMORY + "limits:\n  manifestsize: 10\n").key == "limits.manifestsize"
    assert config_error(INMEMORY + "limits:\n  uploadsperclient: -1\n").key == (
        "limits.uploadsperclient"
    )


# --- http.timeouts and http.maxheaderbytes (cargohold's) -----------------------------------


def test_http_timeouts_and_the_longest_head_have_defaults_and_read_go_durations() -> None:
    http = parse_config(INMEMORY, {}).http
    assert (http.timeouts.idle, http.timeouts.header, http.timeouts.body) == (75.0, 10.0, 60.0)
    assert http.maxheaderbytes == 65536
    text = INMEMORY + "http:\n  timeouts: {idle: 2m, header: 500ms, body: 0}\n"
    http = parse_config(text + "  maxheaderbytes: 16384\n", {}).http
    assert (http.timeouts.idle, http.timeouts.header, http.timeouts.body) == (120.0, 0.5, 0.0)
    assert http.maxheaderbytes == 16384


def test_http_timeouts_and_the_longest_head_come_from_the_environment_too() -> None:
    environ = {"REGISTRY_HTTP_TIMEOUTS_HEADER": "3s", "REGISTRY_HTTP_MAXHEADERBYTES": "4096"}
    http = parse_config(INMEMORY, environ).http
    assert (http.timeouts.header, http.maxheaderbytes) == (3.0, 4096)


def test_a_negative_timeout_or_a_tiny_head_bound_is_refused() -> None:
    error = config_error(INMEMORY + "http:\n  timeouts:\n    body: -1s\n")
    assert (error.key, error.reason) == ("http.timeouts.body", "must not be negative")
    assert config_error(INMEMORY + "http:\n  maxheaderbytes: 100\n").key == "http.maxheaderbytes"
    assert config_error(INMEMORY + "http:\n  timeouts:\n    read: 1s\n").key == (
        "http.timeouts.read"
    )
