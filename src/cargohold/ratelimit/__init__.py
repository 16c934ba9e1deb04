"""Rate limits: token buckets per client address, per user and per repository.

With ``ratelimit.enabled`` every request to the API is charged to its
buckets before it is answered (``api/pipeline.py``, ``Pipeline.limit``), and
one that finds a bucket empty gets ``429 TOOMANYREQUESTS`` with
``Retry-After``. ``limiter.py`` says which buckets a request is charged to;
``bucket.py`` is a bucket's arithmetic (one number per bucket) and the
``Buckets`` Protocol of where they live: ``table.py``, a table every worker of
a server maps into memory, or ``redis.py``, a Redis server every process of
every host shares.
"""

from __future__ import annotations

from cargohold.ratelimit.bucket import Buckets, Charge, Limit, admit
from cargohold.ratelimit.limiter import Limiter, build_limiter

__all__ = ["Buckets", "Charge", "Limit", "Limiter", "admit", "build_limiter"]
