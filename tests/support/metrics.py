"""Scraping a metrics endpoint into samples a test can compare."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import request

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape: ``value(name, **labels)``, and the label sets per name."""

    samples: dict[tuple[str, Labels], float]
    #: Family name -> its type (counter, gauge, histogram, ...).
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_sets(self, name: str) -> set[Labels]:
        return {labels for sample, labels in self.samples if sample == name}

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, have), value in self.samples.items()
            if sample == name and wanted <= have
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        found: dict[str, float] = defaultdict(float)
        for (sample, labels), value in self.samples.items():
            if sample == name:
                found[dict(labels).get(label, "")] += value
        return dict(found)


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, Labels], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return Scrape(samples, types)


def scrape(url: str) -> Scrape:
    reply = request("GET", url)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
    return parse(reply.body.decode())
