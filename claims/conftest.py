"""Fixtures shared by the three claim tests.

Acceptance tier: one module-scoped `prepared` per (model, seed) - the model, its evaluation rows
and the all-neuron influence matrix - computed once and shared by every claim and rarity
setting (read-only). A model whose weights are absent skips with the exact fix.

The verdict policy every claim applies is in `harness.claimkit`.
"""

from __future__ import annotations

import pytest

from harness import pipeline
from harness.claimkit import (DEFAULT_ROUTING_SCOPE, claim_eval_spec, parse_routing_modes,
                              parse_routing_scopes)
from harness.data.rarity import RaritySpec
from harness.report.runinfo import parse_rarity_q, parse_rarity_which


def pytest_generate_tests(metafunc):
    if "rarity" in metafunc.fixturenames:
        which, qs = rarity_options(metafunc.config)
        ties = rarity_ties(metafunc.config)
        specs = [RaritySpec(q=q, which=w, ties=ties) for w in which for q in qs]
        metafunc.parametrize("rarity", specs, ids=[s.tag for s in specs],
                             scope="module")


@pytest.hookimpl(trylast=True, specname="pytest_generate_tests")
def pytest_generate_tests_routing(metafunc):
    """Claim 3: `mode` (--routing-modes) x `routing_scope` (--routing-scope), jointly and after
    every other parameter, so an all-positions case keeps its id `...-<mode>` (report ids and
    goldens unchanged) and another scope appends its name: `...-<mode>-single-query`."""
    if "routing_scope" in metafunc.fixturenames:
        scopes = parse_routing_scopes(metafunc.config.getoption("--routing-scope"))
        modes = parse_routing_modes(metafunc.config.getoption("--routing-modes"))
        params = [pytest.param(mode, scope, id=mode if scope == DEFAULT_ROUTING_SCOPE
                               else f"{mode}-{scope}")
                  for scope in scopes for mode in metafunc.module.MODES if mode in modes]
        metafunc.parametrize(("mode", "routing_scope"), params)


def rarity_options(config) -> tuple[list[str], list[float]]:
    """--rarity-which / --rarity-q, parsed (and validated) as the report plugin does."""
    return (parse_rarity_which(config.getoption("--rarity-which")),
            parse_rarity_q(config.getoption("--rarity-q")))


def rarity_ties(config) -> str:
    """--rarity-ties: 'strict' (default, the original rule p < cutoff) or 'include'."""
    return config.getoption("--rarity-ties")


@pytest.fixture(scope="module")
def prepared(model_name, seed, device, cache_dir, request):
    """The model on its evaluation rows with the influence matrix (skips if weights absent)."""
    from harness.models.registry import availability, resolve

    spec = resolve(model_name)
    ok, reason = availability(spec)
    if not ok:
        pytest.skip(f"{model_name}: weights not available - {reason}")
    config = request.config
    which, qs = rarity_options(config)
    eval_spec = claim_eval_spec(model_name, seed=seed, quick=config.getoption("--quick"),
                                which=tuple(which), qs=tuple(qs),
                                eval_rows=config.getoption("--eval-rows"),
                                common_budget=config.getoption("--common-budget"),
                                mu_over=config.getoption("--mu-over"))
    return pipeline.prepare(model_name, eval_spec, device=device, store_root=cache_dir)


