"""Read what a ``cargohold serve`` wrote to its access log.

``ACCESS_LOG_ENV`` makes the server log every request as one JSON line
(``log.level: info``, ``log.formatter: json``, access log on); ``requests``
parses such a log file into ``Request`` values. A worker process adds its
``pid`` to every line, so a test can tell which process answered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ACCESS_LOG_ENV = {
    "REGISTRY_LOG_LEVEL": "info",
    "REGISTRY_LOG_FORMATTER": "json",
    "REGISTRY_LOG_ACCESSLOG_DISABLED": "false",
}

# aiohttp's default access log format: %a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"
_LINE = re.compile(
    r'\S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3}) '
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    pid: int | None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def requests(log: Path) -> list[Request]:
    """Every request the access log at ``log`` records, in order."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        match = _LINE.match(str(entry.get("msg", "")))
        if match is None:
            continue
        target = urlsplit(match["target"])
        found.append(
            Request(
                match["method"],
                target.path,
                parse_qs(target.query),
                int(match["status"]),
                entry.get("pid"),
            )
        )
    return found
