"""Fixtures every test module may use; each lives in ``tests/support/``."""

from tests.support.redis import redis_db, redis_server

__all__ = ["redis_db", "redis_server"]
