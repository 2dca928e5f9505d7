"""Fixtures shared by the three claim tests.

Acceptance tier: one module-scoped `prepared` per (model, seed) - the model, its evaluation rows
and the all-neuron influence matrix - computed once and shared by every claim and rarity
setting (read-only). A model whose weights are absent skips with the exact fix.

The verdict policy every claim applies is in `harness.claimkit`.
"""

from __future__ import annotations

import pytest

from harness import pipeline
from harness.claimkit import DEFAULT_ROUTING_SCOPE, parse_eval_overrides, parse_routing_scopes
from harness.data.rarity import RaritySpec
from harness.report.runinfo import parse_rarity_q, parse_rarity_which


def pytest_generate_tests(metafunc):
    if "rarity" in metafunc.fixturenames:
        which, qs = rarity_options(metafunc.config)
        specs = [RaritySpec(q=q, which=w) for w in which for q in qs]
        metafunc.parametrize("rarity", specs, ids=[f"{s.which}-q{s.q:g}" for s in specs],
                             scope="module")


@pytest.hookimpl(trylast=True, specname="pytest_generate_tests")
def pytest_generate_tests_routing(metafunc):
    """Claim 3: `mode` x `routing_scope` (--routing-scope), jointly and after every other
    parameter, so an all-positions case keeps its id `...-<mode>` (report ids and goldens
    unchanged) and another scope appends its name: `...-<mode>-single-query`."""
    if "routing_scope" in metafunc.fixturenames:
        scopes = parse_routing_scopes(metafunc.config.getoption("--routing-scope"))
        params = [pytest.param(mode, scope, id=mode if scope == DEFAULT_ROUTING_SCOPE
                               else f"{mode}-{scope}")
                  for scope in scopes for mode in metafunc.module.MODES]
        metafunc.parametrize(("mode", "routing_scope"), params)


def rarity_options(config) -> tuple[list[str], list[float]]:
    """--rarity-which / --rarity-q, parsed (and validated) as the report plugin does."""
    return (parse_rarity_which(config.getoption("--rarity-which")),
            parse_rarity_q(config.getoption("--rarity-q")))


@pytest.fixture(scope="module")
def prepared(model_name, seed, device, cache_dir, request):
    """The model on its evaluation rows with the influence matrix (skips if weights absent)."""
    from harness.models.registry import availability, resolve

    spec = resolve(model_name)
    ok, reason = availability(spec)
    if not ok:
        pytest.skip(f"{model_name}: weights not available - {reason}")
    quick = request.config.getoption("--quick")
    which, qs = rarity_options(request.config)
    eval_spec = pipeline.default_spec_for(model_name, quick=quick, cover_q=max(qs),
                                          cover_which=tuple(which))
    overrides = parse_eval_overrides(request.config.getoption("--eval-rows"),
                                     request.config.getoption("--common-budget"))
    eval_spec = pipeline.EvalSpec(**{**eval_spec.__dict__, **overrides,
                                     "seed": eval_spec.seed + seed})
    return pipeline.prepare(model_name, eval_spec, device=device, store_root=cache_dir)


