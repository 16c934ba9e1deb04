"""Metrics: Distribution's Prometheus families, and cargohold's, for the whole server.

``store.py`` keeps each process's samples in shared memory, ``recorders.py``
writes them (a request hook, a storage watch, a cache wrapper), ``layout.py``
says where each lives, and ``exposition.py`` sums every process's store into
a scrape. ``api/debug.py`` serves it on ``http.debug.addr``. ``gcreport.py``
is the offline ``cargohold gc``'s: a file for node_exporter to serve.

This module itself imports nothing heavy: the supervisor of ``serve
--workers N`` uses it to clean up.
"""

from __future__ import annotations

import os
import shutil

#: The directory of every worker's store (set for the workers by ``serve``).
METRICS_DIR = "CARGOHOLD_METRICS_DIR"
#: Set when ``serve`` made that directory, so that it is removed when the server stops.
METRICS_DIR_MADE = "CARGOHOLD_METRICS_DIR_MADE"


def remove_metrics_dir() -> None:
    """Remove the stores' directory, if ``serve`` made it for this run."""
    directory = os.environ.get(METRICS_DIR)
    if directory and os.environ.get(METRICS_DIR_MADE):
        shutil.rmtree(directory, ignore_errors=True)
