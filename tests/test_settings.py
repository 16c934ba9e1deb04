"""Every key of Distribution's configuration works, or is refused: nothing is silently dropped.

``DISTRIBUTION_KEYS`` is every key of Distribution's configuration reference
(``docs/content/about/configuration.md`` of distribution/distribution, main
branch, December 2026: every key its YAML examples show). Each one is either
``REFUSED`` (setting it stops ``cargohold serve`` with exit status 2 and one
line saying "not supported by cargohold") or ``EXERCISED`` by a named test
that makes it do what Distribution documents. The keys are matched to the
tables by their longest listed prefix.
"""

# ruff: noqa: E501, SIM905  (a table of keys and test names reads best one per line)

from __future__ import annotations

import importlib
import subprocess
from typing import Any

import pytest
import yaml

from cargohold.api.app import create_app
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from tests.support.servers import cargohold_argv

DISTRIBUTION_KEYS = """
version
log log.accesslog log.accesslog.disabled log.level log.formatter log.fields log.reportcaller
log.hooks log.hooks.disabled log.hooks.levels log.hooks.type log.hooks.options
log.hooks.options.from log.hooks.options.to log.hooks.options.smtp log.hooks.options.smtp.addr
log.hooks.options.smtp.insecure log.hooks.options.smtp.password log.hooks.options.smtp.username
loglevel
storage storage.filesystem storage.filesystem.rootdirectory storage.filesystem.maxthreads
storage.inmemory storage.azure storage.azure.accountname storage.azure.accountkey
storage.azure.container storage.azure.rootdirectory storage.azure.credentials
storage.azure.credentials.type storage.azure.credentials.clientid
storage.azure.credentials.tenantid storage.azure.credentials.secret storage.azure.max_retries
storage.azure.retry_delay storage.gcs storage.gcs.bucket storage.gcs.keyfile
storage.gcs.rootdirectory storage.gcs.chunksize storage.gcs.credentials
storage.gcs.credentials.type storage.gcs.credentials.project_id
storage.gcs.credentials.private_key_id storage.gcs.credentials.private_key
storage.gcs.credentials.client_email storage.gcs.credentials.client_id
storage.gcs.credentials.auth_uri storage.gcs.credentials.token_uri
storage.gcs.credentials.auth_provider_x509_cert_url
storage.gcs.credentials.client_x509_cert_url storage.s3 storage.s3.accesskey
storage.s3.secretkey storage.s3.region storage.s3.regionendpoint storage.s3.forcepathstyle
storage.s3.accelerate storage.s3.bucket storage.s3.encrypt storage.s3.keyid storage.s3.secure
storage.s3.v4auth storage.s3.chunksize storage.s3.multipartcopychunksize
storage.s3.multipartcopymaxconcurrency storage.s3.multipartcopythresholdsize
storage.s3.rootdirectory storage.s3.usedualstack storage.s3.usefipsendpoint storage.s3.loglevel
storage.tag storage.tag.concurrencylimit storage.delete storage.delete.enabled storage.redirect
storage.redirect.disable storage.cache storage.cache.blobdescriptor
storage.cache.blobdescriptorsize storage.maintenance storage.maintenance.uploadpurging
storage.maintenance.uploadpurging.enabled storage.maintenance.uploadpurging.age
storage.maintenance.uploadpurging.interval storage.maintenance.uploadpurging.dryrun
storage.maintenance.readonly storage.maintenance.readonly.enabled
auth auth.silly auth.silly.realm auth.silly.service auth.token auth.token.autoredirect
auth.token.realm auth.token.service auth.token.issuer auth.token.rootcertbundle auth.token.jwks
auth.token.signingalgorithms auth.htpasswd auth.htpasswd.realm auth.htpasswd.path
middleware middleware.registry middleware.registry.name middleware.registry.options
middleware.repository middleware.repository.name middleware.repository.options
middleware.storage middleware.storage.name middleware.storage.disabled
middleware.storage.options
catalog catalog.maxentries
tags tags.maxtags
http http.addr http.net http.prefix http.host http.secret http.relativeurls http.draintimeout
http.headers http.tls http.tls.certificate http.tls.key http.tls.clientcas http.tls.clientauth
http.tls.minimumtls http.tls.ciphersuites http.tls.letsencrypt http.tls.letsencrypt.cachefile
http.tls.letsencrypt.email http.tls.letsencrypt.hosts http.tls.letsencrypt.directoryurl
http.debug http.debug.addr http.debug.prometheus http.debug.prometheus.enabled
http.debug.prometheus.path http.http2 http.http2.disabled http.h2c http.h2c.enabled
notifications notifications.events notifications.events.includereferences
notifications.endpoints notifications.endpoints.name notifications.endpoints.disabled
notifications.endpoints.url notifications.endpoints.headers notifications.endpoints.timeout
notifications.endpoints.threshold notifications.endpoints.backoff
notifications.endpoints.ignoredmediatypes notifications.endpoints.ignore
notifications.endpoints.ignore.mediatypes notifications.endpoints.ignore.actions
redis redis.addrs redis.password redis.db redis.dialtimeout redis.readtimeout
redis.writetimeout redis.maxidleconns redis.poolsize redis.connmaxidletime redis.tls
redis.tls.enabled redis.tls.certificate redis.tls.key redis.tls.rootcas
health health.storagedriver health.storagedriver.enabled health.storagedriver.interval
health.storagedriver.threshold health.file health.file.file health.file.interval health.http
health.http.uri health.http.headers health.http.statuscode health.http.timeout
health.http.interval health.http.threshold health.tcp health.tcp.addr health.tcp.timeout
health.tcp.interval health.tcp.threshold
proxy proxy.remoteurl proxy.username proxy.password proxy.exec proxy.exec.command
proxy.exec.lifetime proxy.ttl proxy.cachewritetimeout
validation validation.disabled validation.manifests validation.manifests.urls
validation.manifests.urls.allow validation.manifests.urls.deny validation.manifests.indexes
validation.manifests.indexes.platforms validation.manifests.indexes.platformlist
validation.manifests.indexes.platformlist.architecture
validation.manifests.indexes.platformlist.os
""".split()

_BASE: dict[str, Any] = {"version": "0.1", "storage": {"inmemory": {}}}

#: Each refused prefix: settings that ask for it (merged into a minimal file).
REFUSED: dict[str, dict[str, Any]] = {
    "log.hooks": {"log": {"hooks": [{"type": "mail", "levels": ["panic"]}]}},
    **{
        f"storage.azure.credentials.{key}": {
            "storage": {
                "azure": {
                    "accountname": "a",
                    "container": "c",
                    "credentials": {"type": "client_secret", key: "x"},
                }
            }
        }
        for key in ("clientid", "tenantid", "secret")
    },
    "middleware.registry": {"middleware": {"registry": [{"name": "a"}]}},
    "middleware.repository": {"middleware": {"repository": [{"name": "a"}]}},
    "http.tls.letsencrypt": {"http": {"tls": {"letsencrypt": {"cachefile": "/c"}}}},
    "http.http2": {"http": {"http2": {"disabled": False}}},
    "http.h2c": {"http": {"h2c": {"enabled": True}}},
    "redis.maxidleconns": {"redis": {"addr": "127.0.0.1:6379", "maxidleconns": 16}},
    "redis.connmaxidletime": {"redis": {"addr": "127.0.0.1:6379", "connmaxidletime": "300s"}},
    "proxy.cachewritetimeout": {
        "proxy": {"remoteurl": "https://registry-1.docker.io", "cachewritetimeout": "5m"}
    },
}

#: Each exercised prefix: the test that shows it doing what Distribution documents.
EXERCISED: dict[str, str] = {
    "version": "tests/test_config.py::test_only_version_0_1_is_read",
    "log": "tests/test_log.py::test_text_lines_are_logrus_key_values",
    "log.accesslog": "tests/api/test_fastpath.py::test_fast_replies_are_access_logged_like_the_others",
    "log.level": "tests/test_drain.py::test_a_request_past_the_drain_time_is_cut_and_logged",
    "log.formatter": "tests/test_log.py::test_logstash_lines_are_json_with_the_caller_as_function",
    "log.fields": "tests/test_log.py::test_json_lines_carry_the_fields",
    "log.reportcaller": "tests/test_log.py::test_reportcaller_names_the_function_and_the_line",
    "loglevel": "tests/test_config.py::test_the_deprecated_loglevel_applies_when_log_level_is_absent",
    "storage": "tests/test_config.py::test_storage_exposes_its_driver_and_the_drivers_typed_parameters",
    "storage.filesystem": "tests/test_serve.py::test_base_endpoint_says_registry_v2",
    "storage.filesystem.maxthreads": "tests/api/test_threads.py::test_maxthreads_bounds_the_threads",
    "storage.inmemory": "tests/test_serve.py::test_inmemory_storage_runs_one_worker_and_every_request_agrees",
    "storage.s3": "tests/storage/test_driver_s3.py::test_the_registry_builds_the_driver_from_its_configuration",
    "storage.s3.regionendpoint": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.region": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.forcepathstyle": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.accelerate": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.usedualstack": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.usefipsendpoint": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.secure": "tests/storage/test_driver_s3_direct.py::test_requests_go_where_botocore_sends_them",
    "storage.s3.v4auth": "tests/storage/test_driver_s3_direct.py::test_without_sigv4_everything_stays_on_botocore",
    "storage.s3.encrypt": "tests/storage/test_driver_s3_direct.py::test_requests_carry_botocores_headers",
    "storage.s3.keyid": "tests/storage/test_driver_s3_direct.py::test_requests_carry_botocores_headers",
    "storage.s3.chunksize": "tests/storage/test_driver_s3.py::test_chunks_of_one_upload_alternate_between_two_processes",
    "storage.s3.multipartcopychunksize": "tests/storage/test_driver_s3.py::test_move_above_the_threshold_copies_in_parts_server_side",
    "storage.s3.multipartcopymaxconcurrency": "tests/storage/test_driver_s3.py::test_move_above_the_threshold_copies_in_parts_server_side",
    "storage.s3.multipartcopythresholdsize": "tests/storage/test_driver_s3.py::test_move_at_or_below_the_threshold_is_one_copy",
    "storage.s3.rootdirectory": "tests/storage/test_driver_s3.py::test_paths_are_keys_under_the_root_directory",
    "storage.s3.loglevel": "tests/storage/test_driver_s3.py::test_loglevel_debug_logs_every_request",
    "storage.azure": "tests/storage/test_driver_azure.py::test_the_registry_builds_the_driver_from_its_configuration",
    "storage.azure.accountname": "tests/storage/test_driver_azure.py::test_distributions_keys_configure_the_driver",
    "storage.azure.accountkey": "tests/storage/test_driver_azure.py::test_check_explains_in_one_line_why_storage_is_unusable",
    "storage.azure.container": "tests/storage/test_driver_azure.py::test_an_empty_root_directory_puts_paths_at_the_top_of_the_container",
    "storage.azure.rootdirectory": "tests/storage/test_driver_azure.py::test_paths_are_blob_names_under_the_root_directory",
    "storage.azure.credentials": "tests/storage/test_driver_azure.py::test_distribution_2_configurations_without_credentials_are_shared_key",
    "storage.azure.max_retries": "tests/storage/test_driver_azure.py::test_move_gives_up_on_a_copy_pending_after_max_retries",
    "storage.azure.retry_delay": "tests/storage/test_driver_azure.py::test_move_waits_for_a_pending_copy_retry_delay_apart",
    "storage.gcs": "tests/storage/test_driver_gcs.py::test_the_registry_builds_the_driver_from_its_configuration",
    "storage.gcs.bucket": "tests/storage/test_driver_gcs.py::test_serve_refuses_to_start_on_storage_it_cannot_use",
    "storage.gcs.keyfile": "tests/storage/test_driver_gcs.py::test_the_registry_builds_the_driver_from_its_configuration",
    "storage.gcs.credentials": "tests/storage/test_driver_gcs.py::test_the_registry_builds_the_driver_from_its_configuration",
    "storage.gcs.rootdirectory": "tests/storage/test_driver_gcs.py::test_paths_are_object_names_under_the_root_directory",
    "storage.gcs.chunksize": "tests/storage/test_driver_gcs.py::test_an_upload_is_resumed_by_another_process",
    "storage.tag": "tests/storage/test_tags_referrers_catalog.py::test_lookup_reads_at_most_concurrencylimit_tags_at_once",
    "storage.delete": "tests/api/test_blobs.py::test_delete_blob_when_deletes_are_disabled",
    "storage.redirect": "tests/s3/test_redirects.py::test_with_redirects_disabled_the_registry_streams_the_blob",
    "storage.cache": "tests/cache/test_never_stale.py::test_a_blob_deleted_through_one_registry_is_unknown_to_the_other",
    "storage.cache.blobdescriptorsize": "tests/storage/test_cache_memory.py::test_the_entry_past_the_bound_evicts_the_least_recently_used",
    "storage.maintenance": "tests/api/test_purging.py::test_uploads_older_than_the_age_are_purged",
    "storage.maintenance.uploadpurging": "tests/api/test_purging.py::test_young_uploads_and_disabled_purging_keep_uploads",
    "storage.maintenance.readonly": "tests/api/test_modes.py::test_read_only_refuses_every_write",
    "auth": "tests/auth/test_providers.py::test_silly_lets_any_authorization_through_and_challenges_without",
    "auth.token": "tests/auth/test_token.py::test_a_jwks_file_trusts_its_keys_by_kid",
    "auth.token.autoredirect": "tests/auth/test_providers.py::test_autoredirect_points_the_realm_at_the_host_asked",
    "auth.htpasswd": "tests/auth/test_htpasswd.py::test_a_valid_user_may_do_anything",
    "middleware": "tests/test_settings.py::test_every_refused_key_is_refused_with_one_line",
    "middleware.storage": "tests/storage/test_middleware.py::test_cloudfront_redirects_blob_downloads_from_a_local_disk",
    "catalog": "tests/api/test_catalog.py::test_maxentries_caps_every_page",
    "tags": "tests/api/test_tags.py::test_maxtags_caps_a_page_asked_for_with_n",
    "http": "tests/test_config.py::test_env_overrides_http_addr",
    "http.addr": "tests/test_serve.py::test_base_endpoint_says_registry_v2",
    "http.net": "tests/test_serve.py::test_http_net_unix_serves_on_a_unix_socket",
    "http.prefix": "tests/api/test_modes.py::test_prefix_mounts_everything_under_it",
    "http.host": "tests/api/test_modes.py::test_configured_host",
    "http.secret": "tests/interop/test_upload_handover.py::test_an_upload_changes_hands_halfway",
    "http.relativeurls": "tests/api/test_modes.py::test_relative_urls",
    "http.draintimeout": "tests/test_drain.py::test_a_request_under_way_completes_within_the_drain_time",
    "http.headers": "tests/api/test_base.py::test_success_replies_carry_the_common_headers",
    "http.tls": "tests/test_tls.py::test_without_client_certificates_configured_any_client_gets_in",
    "http.tls.clientcas": "tests/test_tls.py::test_required_client_certificates_are_verified",
    "http.tls.clientauth": "tests/test_tls.py::test_optional_client_certificates_are_verified_when_given",
    "http.tls.minimumtls": "tests/test_tls.py::test_minimumtls_refuses_older_clients",
    "http.tls.ciphersuites": "tests/test_tls.py::test_ciphersuites_are_the_only_tls12_suites_accepted",
    "http.debug": "tests/metrics/test_debug_listener.py::test_health_without_metrics",
    "http.debug.prometheus": "tests/metrics/test_distribution_names.py::test_every_request_is_counted_under_the_same_labels",
    "http.debug.prometheus.path": "tests/metrics/test_debug_listener.py::test_metrics_at_the_configured_path",
    "http.http2.disabled": "tests/test_settings.py::test_http2_disabled_asks_for_nothing_missing",
    "proxy": "tests/proxy/test_modes.py::test_a_pure_proxy_serves_every_repository_and_refuses_writes",
    "proxy.remoteurl": "tests/proxy/test_modes.py::test_a_pure_proxy_serves_every_repository_and_refuses_writes",
    "proxy.ttl": "tests/proxy/test_expiry.py::test_when_everything_expires_storage_is_empty_of_it",
    "proxy.username": "tests/proxy/test_upstream_auth.py::test_the_go_registry_with_htpasswd_is_pulled_with_basic_credentials",
    "proxy.password": "tests/proxy/test_upstream_auth.py::test_a_wrong_password_is_a_502_that_never_shows_the_password",
    "proxy.exec": "tests/proxy/test_upstream_auth.py::test_a_credential_helper_without_a_lifetime_runs_once",
    "proxy.exec.command": "tests/proxy/test_upstream_auth.py::test_a_credential_helper_without_a_lifetime_runs_once",
    "proxy.exec.lifetime": "tests/proxy/test_upstream_auth.py::test_a_credential_helper_with_lifetime_zero_runs_for_every_upstream_request",
    "notifications": "tests/notifications/test_webhooks.py::test_a_push_is_told_in_distributions_envelope",
    "notifications.events": "tests/notifications/test_webhooks.py::test_includereferences_lists_what_a_manifest_references",
    "notifications.events.includereferences": "tests/notifications/test_webhooks.py::test_includereferences_lists_what_a_manifest_references",
    "notifications.endpoints": "tests/notifications/test_webhooks.py::test_a_push_is_told_in_distributions_envelope",
    "notifications.endpoints.disabled": "tests/notifications/test_webhooks.py::test_a_disabled_endpoint_is_told_nothing",
    "notifications.endpoints.url": "tests/notifications/test_webhooks.py::test_an_endpoint_that_is_not_http_is_refused",
    "notifications.endpoints.headers": "tests/notifications/test_webhooks.py::test_a_push_is_told_in_distributions_envelope",
    "notifications.endpoints.timeout": "tests/notifications/test_webhooks.py::test_a_stalled_receiver_never_slows_a_client",
    "notifications.endpoints.threshold": "tests/notifications/test_webhooks.py::test_a_failing_receiver_gets_the_event_again_with_the_same_id",
    "notifications.endpoints.backoff": "tests/notifications/test_webhooks.py::test_a_failing_receiver_gets_the_event_again_with_the_same_id",
    "notifications.endpoints.ignoredmediatypes": "tests/notifications/test_webhooks.py::test_ignored_media_types_are_left_out",
    "notifications.endpoints.ignore": "tests/notifications/test_webhooks.py::test_filters_pick_what_an_endpoint_is_told",
    "notifications.endpoints.ignore.mediatypes": "tests/notifications/test_webhooks.py::test_ignored_media_types_are_left_out",
    "redis": "tests/storage/test_cache_redis.py::test_from_config_uses_address_db_timeouts_and_pool",
    "redis.password": "tests/storage/test_cache_redis.py::test_from_config_authenticates_with_username_and_password",
    "redis.tls": "tests/storage/test_cache_redis.py::test_from_config_with_tls",
    "health": "tests/api/test_health.py::test_no_checks_answer_200_and_an_empty_object",
    "health.storagedriver": "tests/api/test_health.py::test_the_storage_check_stats_the_root",
    "health.file": "tests/api/test_health.py::test_a_file_check_follows_the_file",
    "health.http": "tests/api/test_health.py::test_an_http_check_wants_its_status_code",
    "health.tcp": "tests/api/test_health.py::test_a_tcp_check_wants_a_listener",
    "validation": "tests/api/test_manifests.py::test_with_validation_disabled_children_and_urls_are_not_checked",
    "validation.manifests.urls": "tests/manifest/test_urls.py::test_deny_wins_over_allow",
    "validation.manifests.indexes": "tests/api/test_manifests.py::test_indexes_setting_says_which_children_must_be_present",
}


def prefix_of(key: str, table: dict[str, Any]) -> str | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in table:
            return candidate
    return None


def owner(key: str) -> tuple[str, str]:
    """Which table answers for ``key``: the longer prefix wins, refusals on a tie."""
    refused, exercised = prefix_of(key, REFUSED), prefix_of(key, EXERCISED)
    if refused is not None and (exercised is None or len(refused) >= len(exercised)):
        return "refused", refused
    assert exercised is not None, f"{key}: neither exercised nor refused"
    return "exercised", exercised


def refused_document(prefix: str) -> dict[str, Any]:
    """A minimal file asking for the refused ``prefix``; a storage driver's replaces _BASE's."""
    document = merged(_BASE, REFUSED[prefix])
    if "storage" in REFUSED[prefix]:
        document["storage"] = REFUSED[prefix]["storage"]
    return document


def merged(*documents: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for document in documents:
        for key, value in document.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def test_every_key_of_distribution_is_exercised_or_refused() -> None:
    assert len(DISTRIBUTION_KEYS) == len(set(DISTRIBUTION_KEYS)) > 200
    answered = {key: owner(key) for key in DISTRIBUTION_KEYS}
    assert all(kind in ("exercised", "refused") for kind, _ in answered.values())
    used = {prefix for _, prefix in answered.values()}
    assert used >= set(REFUSED), "every refusal answers for a key of Distribution's"


@pytest.mark.parametrize("prefix", sorted(set(EXERCISED.values())))
def test_every_named_test_exists(prefix: str) -> None:
    path, _, name = prefix.partition("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, name, None)), prefix


@pytest.mark.parametrize("prefix", sorted(REFUSED))
def test_every_refused_key_is_refused_with_one_line(prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(parse_config(yaml.safe_dump(refused_document(prefix)), environ={}))
    key = caught.value.key
    assert key.startswith(prefix) or prefix.startswith(key), key
    assert "not supported by cargohold" in str(caught.value)


def test_cargohold_serve_exits_2_naming_a_refused_key(tmp_path: Any) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(merged(_BASE, REFUSED["proxy.cachewritetimeout"])))
    result = subprocess.run(
        cargohold_argv("serve", str(config)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "cargohold: config: proxy.cachewritetimeout: not supported by cargohold; "
    )


def test_http2_disabled_asks_for_nothing_missing() -> None:
    """cargohold serves HTTP/1.1: ``disabled: true`` is honoured, ``false`` is refused."""
    honoured = merged(_BASE, {"http": {"http2": {"disabled": True}}})
    create_app(parse_config(yaml.safe_dump(honoured), environ={}))
    with pytest.raises(ConfigError) as caught:
        create_app(parse_config(yaml.safe_dump(merged(_BASE, REFUSED["http.http2"])), {}))
    assert caught.value.key == "http.http2.disabled"
