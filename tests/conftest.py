"""Fixtures every test module may use; each lives in ``tests/support/``."""

from tests.support.redis import redis_db, redis_server
from tests.support.seaweed import s3_parameters, seaweedfs

__all__ = ["redis_db", "redis_server", "s3_parameters", "seaweedfs"]
