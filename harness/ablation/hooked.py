"""Reference neuron ablation: one hooked forward pass per neuron.

Why keep the slow way: it is the definition (replace `hook_post[..., j]` by v_j and run the
model), so it checks the closed form in tests and is the baseline the benchmark compares to.
Ablating at every position in one pass equals ablating one position at a time here: after the
last MLP nothing mixes positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def _run(model: Any) -> tuple[Any, str]:
    """(callable run_with_hooks, final hook_post name) for a ModelFacade or a TransformerBridge."""
    if hasattr(model, "bridge"):
        return model.run_with_hooks, model.hook_post
    return model.run_with_hooks, f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"


def token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """CE [B, T-1] (float64) of predicting tokens[:, t+1] from logits[:, t]."""
    logp = torch.log_softmax(logits[:, :-1].to(torch.float64), -1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]


def hooked_neuron_delta(model: Any, tokens: Tensor, neurons: Sequence[int], values: Tensor,
                        keep: Tensor | None = None) -> Tensor:
    """Delta CE [n_pos, len(neurons)] (float32, nats) at kept positions in row-major order.

    `values` [d_mlp] are the replacement activations; `keep` [B, T] defaults to every t < T-1."""
    run, hook = _run(model)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if keep is None:
        keep = torch.ones(tokens.shape, dtype=torch.bool)
        keep[:, -1] = False
    mask = torch.as_tensor(keep, dtype=torch.bool)[:, :-1]
    with torch.no_grad():
        clean = token_losses(run(tokens, fwd_hooks=[]), tokens).cpu()[mask]
        cols = []
        for j in neurons:
            value = float(values[j])

            def ablate(act: Tensor, hook: Any, j: int = j, value: float = value) -> Tensor:
                act[..., j] = value
                return act

            logits = run(tokens, fwd_hooks=[(hook, ablate)])
            cols.append(token_losses(logits, tokens).cpu()[mask] - clean)
    return torch.stack(cols, -1).to(torch.float32) if cols else torch.zeros(int(mask.sum()), 0)
