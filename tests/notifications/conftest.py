"""The HTTP API's fixtures (a registry on each storage and each request path) for these tests."""

from tests.api.conftest import make_registry, servers, serving, storage
from tests.api.test_metrics import scraper

__all__ = ["make_registry", "scraper", "servers", "serving", "storage"]
