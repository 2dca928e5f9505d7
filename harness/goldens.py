"""Golden regression files for the committed tiny fixtures: numbers that catch regressions
and nothing else.

A golden holds, for one claim case, the verdict and the *pinned numbers* (the result's
statistic, p-value, effect and CI, plus the detail values its decision rests on), each with
an absolute tolerance derived from measured numeric noise - never a hand-picked rtol:

    tolerance = max(SAFETY x spread, ABS_FLOOR + REL_FLOOR x |value|)

where `spread` is the largest difference of that number between the reference run (the
default CPU kernel) and each noise variant of the same case:
- `delta-noise`: independent N(0, (1e-6 nats)^2) added to every Delta. It dominates the
  closed form's kernels: eager, compiled, Triton and float64 differ by at most ~4e-7 nats per
  Delta and ~1e-9 on average (tests/test_kernel_exactness.py), so it stands for them and for
  summation-order, BLAS and CPU differences between machines (`--variants` adds the kernel
  reruns `eager` and `float64` themselves: several times the cost);
- `act-noise`: relative N(0, 1e-6) noise on the final-layer activations and head-ablation
  effects;
- `forward-float64`: everything recomputed on a float64 copy of the model (mu, the
  influence's forward and closed form, activations, loss grid, head and group ablations). Float32 forwards on another CPU (other
  SIMD widths, other BLAS blocking) differ from each other by about their distance to exact
  arithmetic, and systematically across positions, which independent act-noise averages
  away: a claim-3 head-gain mean moved by 1.8e-6 relative between two x86 CPUs against a
  tolerance of 1e-6 relative derived from act-noise alone.
The file states the rule, the spreads and the environment it was made in. Regenerate after a
deliberate change with `python -m harness.goldens` (takes a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

SCHEMA = 2
MAIN = ("statistic", "p_value", "effect", "ci_low", "ci_high")
SAFETY = 10.0
ABS_FLOOR = 1e-9
REL_FLOOR = 1e-6
DELTA_NOISE_NATS = 1e-6
ACT_NOISE_REL = 1e-6
REFERENCE_KERNEL = "compiled"
VARIANTS = ("delta-noise", "act-noise", "forward-float64")
KERNEL_VARIANTS = ("eager", "float64")
def rule(variants: tuple[str, ...] = VARIANTS) -> str:
    forward = ("forward-float64: mu, influence, activations, head and group ablations "
               "recomputed on a float64 copy of the model; " if "forward-float64" in variants
               else "")
    return (f"tolerance = max({SAFETY:g} x spread, {ABS_FLOOR:g} + {REL_FLOOR:g} x |value|); "
            f"spread = max |value(variant) - value(reference kernel '{REFERENCE_KERNEL}')| over "
            f"variants {', '.join(variants)} (delta-noise: N(0, {DELTA_NOISE_NATS:g} nats) on "
            f"every Delta; act-noise: relative N(0, {ACT_NOISE_REL:g}) on activations and head "
            f"effects; {forward}eager/float64: the closed form rerun with those kernels)")


RULE = rule()


# ---------------------------------------------------------------- pinned numbers

def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, (list, tuple)) and part.lstrip("-").isdigit():
            i = int(part)
            obj = obj[i] if -len(obj) <= i < len(obj) else None
        else:
            return None
    return obj


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pinned_numbers(result: Any, paths: Iterable[str] = ()) -> dict[str, float | None]:
    """The result's main numbers and the detail values at `paths` ('a.b.0'); None = missing
    or non-finite (a golden pins that too)."""
    out = {k: _number(getattr(result, k)) for k in MAIN}
    for path in paths:
        out[path] = _number(_get(result.details, path))
    return out


# ---------------------------------------------------------------- comparing

def mismatches(result: Any, golden: dict, paths: Iterable[str] = ()) -> list[str]:
    """Every way `result` differs from `golden` beyond the golden's tolerance (empty: equal)."""
    if golden.get("schema") != SCHEMA:
        return [f"golden schema {golden.get('schema')!r} != {SCHEMA}: regenerate with "
                "`python -m harness.goldens`"]
    out = []
    if result.verdict != golden["verdict"]:
        out.append(f"verdict {result.verdict!r} != golden {golden['verdict']!r}")
    got = pinned_numbers(result, [p for p in golden["numbers"] if p not in MAIN] or paths)
    for name, want in golden["numbers"].items():
        have = got.get(name)
        if want is None or have is None:
            if (want is None) != (have is None):
                out.append(f"{name} = {have} vs golden {want}")
            continue
        tol = golden["tolerance"][name]
        if abs(have - want) > tol:
            out.append(f"{name} = {have:.10g} differs from golden {want:.10g} by "
                       f"{abs(have - want):.3g} > tolerance {tol:.3g}")
    return out


# ---------------------------------------------------------------- deriving tolerances

def tolerances(reference: dict[str, float | None],
               variants: dict[str, dict[str, float | None]]) -> tuple[dict, dict]:
    """(tolerance, spread) per pinned number from the reference and noise-variant values."""
    tol, spread = {}, {}
    for name, ref in reference.items():
        diffs = [abs(v[name] - ref) for v in variants.values()
                 if ref is not None and v.get(name) is not None]
        s = max(diffs) if diffs else 0.0
        spread[name] = s
        tol[name] = None if ref is None else max(SAFETY * s, ABS_FLOOR + REL_FLOOR * abs(ref))
    return tol, spread


def environment(kernel: str = REFERENCE_KERNEL) -> dict[str, Any]:
    from harness.report.runinfo import git_revision, package_versions

    root = Path(__file__).resolve().parents[1]
    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or None, "kernel": kernel,
            "packages": package_versions(), "git": git_revision(root).get("commit")}


def golden_record(result: Any, paths: Iterable[str], variants: dict[str, Any],
                  env: dict) -> dict:
    paths = list(paths)
    reference = pinned_numbers(result, paths)
    numbers = {name: pinned_numbers(r, paths) for name, r in variants.items() if r is not None}
    tol, spread = tolerances(reference, numbers)
    return {"schema": SCHEMA, "verdict": result.verdict, "numbers": reference,
            "tolerance": tol, "spread": spread, "variant_verdicts":
                {n: r.verdict for n, r in variants.items() if r is not None},
            "rule": RULE, "environment": env}


# ---------------------------------------------------------------- noise variants

def _influence_with(prep: Any, kernel: str) -> Any:
    """The same evaluation set's influence, recomputed with another closed-form kernel."""
    import torch

    from harness import pipeline
    from harness.ablation.neuron import neuron_influence

    mu = torch.from_numpy(prep.extras["mean_act_all"])
    grid = pipeline.evaluated_grid(prep)
    method, dtype = (("eager", torch.float32) if kernel == "eager"
                     else ("compiled", torch.float64))
    return neuron_influence(prep.facade, prep.rows, grid, values=mu, method=method, dtype=dtype)


def noise_variants(prep: Any, seed: int = 12345,
                   variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Prepared objects that differ from `prep` only by one source of numeric noise each.
    Head-ablation effects and activations already memoised on `prep` are shared (copied for
    act-noise), so a variant costs no forward pass beyond its own influence kernel."""
    from harness import pipeline

    rng = np.random.default_rng(seed)
    pipeline.final_activations(prep)  # memoise before copying extras
    out = {}
    for kernel in (k for k in ("eager", "float64") if k in variants):
        out[kernel] = dataclasses.replace(prep, influence=_influence_with(prep, kernel),
                                          extras=dict(prep.extras))
    inf = prep.influence
    noisy = inf.delta.astype(np.float64) + rng.normal(0.0, DELTA_NOISE_NATS, inf.delta.shape)
    out["delta-noise"] = dataclasses.replace(
        prep, influence=dataclasses.replace(inf, delta=noisy.astype(np.float32)),
        extras=dict(prep.extras))
    out["act-noise"] = dataclasses.replace(prep, extras=_noisy_extras(prep.extras, rng))
    if "forward-float64" in variants:
        out["forward-float64"] = _float64_forwards(prep)
    return {k: v for k, v in out.items() if k in variants}


def _float64_forwards(prep: Any) -> Any:
    """`prep` recomputed on a float64 copy of its model from the same rows: mu, the influence
    (its forward and the closed form in float64) and, with no memoised extras left, every
    forward a claim makes (activations, loss grid, head and group ablations)."""
    import torch

    from harness import pipeline
    from harness.ablation.neuron import mean_activation, neuron_influence
    from harness.models.loading import load_model

    facade = load_model(prep.model_name, device=str(prep.facade.device), dtype=torch.float64)
    over = np.ones_like(prep.keep) if prep.spec.mu_over == "all" else prep.keep
    mu = mean_activation(facade, prep.rows, over, 8)
    influence = neuron_influence(facade, prep.rows, pipeline.evaluated_grid(prep),
                                 values=torch.from_numpy(mu),
                                 method="compiled", dtype=torch.float64)
    return dataclasses.replace(prep, facade=facade, influence=influence,
                               extras={"mean_act_all": mu})


def _noisy_extras(extras: dict, rng: np.random.Generator) -> dict:
    def jitter(a: np.ndarray) -> np.ndarray:
        return (a * (1.0 + rng.normal(0.0, ACT_NOISE_REL, a.shape))).astype(a.dtype)

    out = dict(extras)
    out["acts"] = jitter(extras["acts"])
    for key, value in extras.items():
        if isinstance(key, tuple) and key and key[0] == "heads":
            ablation, cols = value
            out[key] = (dataclasses.replace(ablation, delta_act=jitter(ablation.delta_act)),
                        cols)
    return out


# ---------------------------------------------------------------- generation

def generate(cases: Callable[[], Iterable[tuple]], out_root: Path, log=print,
             variants: tuple[str, ...] = VARIANTS) -> list[Path]:
    """Write one golden per case. `cases()` yields (golden_path, prep, compute, paths) where
    compute(prep) -> TestResult | None (None: the case skips, so no golden)."""
    env = environment()
    written = []
    by_prep: dict[int, dict] = {}
    for path, prep, compute, paths in cases():
        result = compute(prep)
        if result is None:
            log(f"skip (no result): {path.relative_to(out_root)}")
            continue
        preps = by_prep.setdefault(id(prep), noise_variants(prep, variants=variants))
        record = golden_record(result, paths, {n: compute(v) for n, v in preps.items()}, env)
        record["rule"] = rule(tuple(preps))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        written.append(path)
        worst = max(record["spread"].items(), key=lambda kv: kv[1])
        log(f"wrote {path.relative_to(out_root)}: {result.verdict}; largest spread "
            f"{worst[0]} {worst[1]:.3g}")
    return written


def main(argv: list[str] | None = None) -> int:
    from harness.claimset import ci_golden_cases
    from harness.data.tokenizer import fixtures_dir

    ap = argparse.ArgumentParser(prog="python -m harness.goldens", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny-gpt2,tiny-pythia,tiny-pythia-learned")
    ap.add_argument("--claims", default=None,
                    help="comma list of claim keys to regenerate (default: every claim); the "
                         "others' goldens are left as they are")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"noise variants (default {','.join(VARIANTS)}; also "
                         f"{','.join(KERNEL_VARIANTS)})")
    args = ap.parse_args(argv)
    root = fixtures_dir() / "golden"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = set(variants) - set(VARIANTS) - set(KERNEL_VARIANTS)
    if unknown or not variants:
        ap.error(f"--variants: unknown {sorted(unknown)}")
    only = None if args.claims is None else {c.strip() for c in args.claims.split(",") if c.strip()}
    if only is not None:
        from harness.claimset import load_claims

        bad = only - set(load_claims()) if only else {"(none)"}
        if bad:
            ap.error(f"--claims: unknown {sorted(bad)}; known: {', '.join(load_claims())}")

    def cases():
        for case in ci_golden_cases(models):
            if only is None or case[0].relative_to(root).parts[0] in only:
                yield case

    generate(cases, root, variants=variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
