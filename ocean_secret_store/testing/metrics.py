"""Reading a ``GET /metrics`` answer in tests and benches: parsed with prometheus-client's own parser,
samples looked up by name and labels, and the difference between two scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["Samples", "scrape"]


class Samples:
    """Every sample of one exposition (a family's ``_total``, ``_count``, ``_bucket``... included)."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: The metric families as the parser gives them (it raises on text that does not parse).
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def __iter__(self) -> Iterator[Sample]:
        for family in self.families.values():
            yield from family.samples

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
        wanted = labels.items()
        return sum(s.value for s in self if s.name == name and wanted <= s.labels.items())

    def delta(self, before: Samples, name: str, **labels: str) -> float:
        """How much :meth:`total` grew since ``before``."""
        return self.total(name, **labels) - before.total(name, **labels)

    def label_values(self, label: str, name_prefix: str = "") -> set[str]:
        """Every value ``label`` takes in the samples whose name starts with ``name_prefix``."""
        return {s.labels[label] for s in self if s.name.startswith(name_prefix) and label in s.labels}


def scrape(base_url: str, **kwargs: Any) -> Samples:
    """``GET base_url/metrics``, checked to be 200 in the Prometheus text format, and parsed."""
    response = requests.get(base_url.rstrip("/") + "/metrics", timeout=10, **kwargs)
    response.raise_for_status()
    if not response.headers.get("Content-Type", "").startswith("text/plain"):
        raise AssertionError(f"/metrics answered {response.headers.get('Content-Type')!r}, not the text format")
    return Samples(response.text)
