"""pytest plugin: collects claim results (placeholder until the report stage lands)."""

from __future__ import annotations

import pytest


@pytest.fixture
def record_claim(request):
    results = request.config.__dict__.setdefault("_rarebench_results", [])

    def _record(result, **settings):
        results.append((request.node.nodeid, result, settings))

    return _record
