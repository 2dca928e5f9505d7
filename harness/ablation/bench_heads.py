"""`rarebench bench --heads`: single-query head ablation, joint construction vs prefix method.

Why in one process and as ratios: the joint construction (harness.ablation.single_query) is
claimed to cost one partial forward per (head, row) - the all-positions cost - where the
prefix method costs one prefix forward per (head, row, query). Both run here on the same
model, rows and device, next to the all-positions scope, and their outputs are compared. The
prefix method is timed on a few rows (its cost is linear in rows) and scaled; the JSON says so.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from harness.ablation.heads import all_heads, head_ablation


def _rows(facade: Any, n_rows: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random token rows (timing does not depend on the text) with every position but the
    first (BOS) and the last measured, as the claim's evaluation keeps them."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, facade.d_vocab, size=(n_rows, seq_len))
    keep = np.ones(rows.shape, bool)
    keep[:, 0] = keep[:, -1] = False
    return rows, keep


def _sync(facade: Any) -> None:
    if torch.device(facade.device).type == "cuda":
        torch.cuda.synchronize(facade.device)


def _timed(fn: Any, facade: Any) -> tuple[Any, float]:
    _sync(facade)
    t0 = time.perf_counter()
    out = fn()
    _sync(facade)
    return out, time.perf_counter() - t0


def joint_vs_prefix(facade: Any, rows: np.ndarray, keep: np.ndarray,
                    **kw: Any) -> dict[str, float]:
    """Single-query head ablation both ways on the same rows: max abs disagreement of delta
    activations and delta loss, and the largest effects (so a test can see it did something)."""
    joint = head_ablation(facade, rows, keep, scope="single-query", method="joint", **kw)
    prefix = head_ablation(facade, rows, keep, scope="single-query", method="prefix", **kw)
    return {"err_act": float(np.abs(joint.delta_act - prefix.delta_act).max()),
            "err_loss": float(np.abs(joint.delta_loss - prefix.delta_loss).max()),
            "max_delta_act": float(np.abs(prefix.delta_act).max()),
            "max_delta_loss": float(np.abs(prefix.delta_loss).max())}


def run_head_bench(facade: Any, n_rows: int = 16, seq_len: int = 256,
                   last_k_layers: int | None = None, mode: str = "bos", prefix_rows: int = 1,
                   n_neurons: int = 16, batch_size: int = 4, fold: int = 64,
                   seed: int = 0, loss: bool = True) -> dict[str, Any]:
    """Seconds per row of single-query (joint, prefix) and all-positions head ablation over
    every head of the last `last_k_layers` layers, their ratios, and the joint-vs-prefix max
    abs error on the rows both ran."""
    seq_len = min(seq_len, int(getattr(facade.bridge.cfg, "n_ctx", seq_len) or seq_len))
    rows, keep = _rows(facade, n_rows, seq_len, seed)
    heads = all_heads(facade, last_k_layers)
    kw = dict(heads=heads, mode=mode, neurons=list(range(min(n_neurons, facade.d_mlp))),
              batch_size=batch_size, fold=fold, loss=loss)
    with torch.no_grad():
        warm = keep[:1, :16].copy()
        warm[:, -1] = False
        head_ablation(facade, rows[:1, :16], warm, **kw)  # warm-up (lazy init)
        joint, t_joint = _timed(lambda: head_ablation(facade, rows, keep, scope="single-query",
                                                      method="joint", **kw), facade)
        _, t_all = _timed(lambda: head_ablation(facade, rows, keep, scope="all-positions", **kw),
                          facade)
        k = max(1, min(prefix_rows, n_rows))
        prefix, t_prefix = _timed(lambda: head_ablation(facade, rows[:k], keep[:k],
                                                        scope="single-query", method="prefix",
                                                        **kw), facade)
    n_first = int(keep[:k].sum())
    err_act = float(np.abs(joint.delta_act[:, :n_first] - prefix.delta_act).max())
    err_loss = (float(np.abs(joint.delta_loss[:, :n_first] - prefix.delta_loss).max())
                if loss else None)
    per_row = {"joint": t_joint / n_rows, "prefix": t_prefix / k, "all_positions": t_all / n_rows}
    return {
        "model": facade.name, "family": facade.family, "device": str(facade.device),
        "dtype": str(facade.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "mode": mode, "loss": loss, "rows": n_rows, "seq_len": seq_len,
        "layers": len({l for l, _ in heads}),
        "heads": len(heads), "measured_positions_per_row": int(keep[0].sum()),
        "seconds_per_row": per_row,
        "prefix_timed_on_rows": k,
        "prefix_over_joint": per_row["prefix"] / per_row["joint"],
        "joint_over_all_positions": per_row["joint"] / per_row["all_positions"],
        "max_abs_error_vs_prefix": {"delta_act": err_act, "delta_loss": err_loss},
    }


def format_head_bench(res: dict[str, Any]) -> str:
    s = res["seconds_per_row"]
    err = res["max_abs_error_vs_prefix"]
    loss = (f"delta loss {err['delta_loss']:.1e}" if res.get("loss", True)
            else "delta loss not computed (--no-loss)")
    return (f"{res['model']} ({res['family']}, {res['dtype']}, {res['device']}, "
            f"{res['threads']} threads): single-query head ablation, {res['heads']} heads of "
            f"the last {res['layers']} layers, {res['rows']} rows x {res['seq_len']} tokens, "
            f"mode {res['mode']}\n"
            f"  seconds per row: joint {s['joint']:.3g}, prefix {s['prefix']:.3g} (timed on "
            f"{res['prefix_timed_on_rows']} row(s)), all-positions {s['all_positions']:.3g}\n"
            f"  prefix / joint = {res['prefix_over_joint']:.1f}x; joint / all-positions = "
            f"{res['joint_over_all_positions']:.2f}x; max |joint - prefix|: delta act "
            f"{err['delta_act']:.1e}, {loss}")
