"""The claim options of the root conftest (--routing-layers, --routing-rows, --routing-scope,
--eval-rows, --common-budget): parsing, CPU/CUDA resolution and the clear error a bad value
gives. Pure functions of harness.claimkit (no model), plus one collection of claim 3 to pin
its case ids (the all-positions ids must not change: report ids and goldens key on them)."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness.claimkit import (layers_label, parse_eval_overrides, parse_routing_layers,
                              parse_routing_rows, parse_routing_scopes, resolve_routing_layers,
                              resolve_routing_rows, routing_variant)
from harness.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


# -- --routing-layers ------------------------------------------------------------------------
@pytest.mark.parametrize("n_layers, device, want", [
    (4, "cpu", None),          # tiny fixtures: every layer
    (12, "cpu", None),         # <= 12 layers: every layer
    (13, "cpu", 6),            # deeper: the last 6 (as the paper for GPT-2 XL)
    (48, "cpu", 6),
    (48, "cuda", None),        # CUDA: every layer
    (48, "cuda:1", None),
    (30, "mps", 6),            # only 'cuda*' counts as CUDA
])
def test_routing_layers_auto(n_layers, device, want):
    assert resolve_routing_layers("auto", n_layers, device) == want


def test_routing_layers_all_and_k():
    assert resolve_routing_layers("all", 48, "cpu") is None
    assert resolve_routing_layers("ALL", 48, "cpu") is None
    assert resolve_routing_layers("3", 48, "cpu") == 3
    assert resolve_routing_layers(3, 48, "cuda") == 3
    assert resolve_routing_layers("12", 12, "cpu") is None  # k >= n_layers: every layer
    assert resolve_routing_layers("40", 12, "cpu") is None


@pytest.mark.parametrize("bad", ["0", "-2", "last6", "1.5", "", "half"])
def test_routing_layers_bad_value_names_the_option(bad):
    with pytest.raises(BadInputError, match="--routing-layers"):
        parse_routing_layers(bad)
    with pytest.raises(BadInputError, match="--routing-layers"):
        resolve_routing_layers(bad, 12, "cpu")


def test_layers_label():
    assert layers_label(None) == "all"
    assert layers_label(6) == "last 6"


# -- --routing-rows --------------------------------------------------------------------------
@pytest.mark.parametrize("deep, quick, want", [
    (True, False, 12), (True, True, 8), (False, False, 64), (False, True, 32)])
def test_routing_rows_auto_cpu_is_todays_rule(deep, quick, want):
    assert resolve_routing_rows("auto", 1000, deep=deep, quick=quick, device="cpu") == want


def test_routing_rows_auto_cuda_takes_every_row():
    assert resolve_routing_rows("auto", 48, deep=True, quick=False, device="cuda") == 48
    assert resolve_routing_rows("auto", 200, deep=False, quick=True, device="cuda:0") == 200


def test_routing_rows_capped_at_available():
    assert resolve_routing_rows("auto", 24, deep=False, quick=False, device="cpu") == 24
    assert resolve_routing_rows("100", 48, deep=True, quick=False, device="cpu") == 48
    assert resolve_routing_rows("5", 48, deep=True, quick=False, device="cuda") == 5
    assert resolve_routing_rows(7, 48, deep=False, quick=True, device="cpu") == 7


@pytest.mark.parametrize("bad", ["0", "-1", "all", "3.0", ""])
def test_routing_rows_bad_value_names_the_option(bad):
    with pytest.raises(BadInputError, match="--routing-rows"):
        parse_routing_rows(bad)


def test_routing_rows_parse():
    assert parse_routing_rows("auto") == "auto"
    assert parse_routing_rows(" 16 ") == 16


# -- --routing-scope -------------------------------------------------------------------------
def test_routing_scopes():
    assert parse_routing_scopes("all-positions") == ["all-positions"]
    assert parse_routing_scopes("all-positions, single-query") == ["all-positions",
                                                                   "single-query"]
    assert parse_routing_scopes("single-query,all-positions,single-query") == [
        "single-query", "all-positions"]


@pytest.mark.parametrize("bad", ["", ",", "single", "all-positions,bogus", "all"])
def test_routing_scopes_bad_value_names_the_option(bad):
    with pytest.raises(BadInputError, match="--routing-scope.*single-query"):
        parse_routing_scopes(bad)


# -- golden keys -----------------------------------------------------------------------------
def test_routing_variant_keeps_default_golden_key():
    # the default options keep `no-routing/<mode>` (the committed goldens)
    assert routing_variant("bos", "all-positions", 64, None, 64, None) == "bos"
    assert routing_variant("mean", "all-positions", 12, 6, 12, 6) == "mean"


def test_routing_variant_never_collides_with_the_defaults():
    assert routing_variant("bos", "single-query", 64, None, 64, None) == "bos-single-query"
    assert routing_variant("zero", "all-positions", 4, 2, 64, None) == "zero-rows4-last2"
    assert routing_variant("zero", "all-positions", 48, None, 12, 6) == "zero-rows48-all"
    assert routing_variant("bos", "single-query", 8, None, 64, None) == \
        "bos-single-query-rows8-all"


# -- --eval-rows / --common-budget -----------------------------------------------------------
def test_eval_overrides():
    assert parse_eval_overrides(None, None) == {}
    assert parse_eval_overrides("256", None) == {"n_rows": 256}
    assert parse_eval_overrides(None, "2000") == {"common_budget": 2000}
    assert parse_eval_overrides(4, 1) == {"n_rows": 4, "common_budget": 1}


@pytest.mark.parametrize("rows, budget, option", [
    ("3", None, "--eval-rows"), ("0", None, "--eval-rows"), ("many", None, "--eval-rows"),
    (None, "0", "--common-budget"), (None, "-5", "--common-budget"),
    (None, "all", "--common-budget")])
def test_eval_overrides_bad_value_names_the_option(rows, budget, option):
    with pytest.raises(BadInputError, match=option):
        parse_eval_overrides(rows, budget)


# -- wiring (collection only, no model) ------------------------------------------------------
def _collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "claims/test_no_routing.py",
                           "--collect-only", "-q", "--models", "tiny-gpt2", "--rarity-q", "50",
                           "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_claim3_ids_default_unchanged_and_single_query_appended():
    out = _collect("--routing-scope", "all-positions,single-query")
    assert out.returncode == 0, out.stdout + out.stderr
    ids = [line.split("[", 1)[1].rstrip("]") for line in out.stdout.splitlines()
           if line.startswith("claims/test_no_routing.py::")]
    base = "target-q50-tiny-gpt2-seed0"
    assert ids == [f"{base}-{m}" for m in ("bos", "zero", "mean")] + [
        f"{base}-{m}-single-query" for m in ("bos", "zero", "mean")]


def test_bad_option_is_a_usage_error():
    out = _collect("--routing-layers", "nope")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--routing-layers" in out.stderr
