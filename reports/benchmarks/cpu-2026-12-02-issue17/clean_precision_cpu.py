import json, sys, time, numpy as np, torch
from harness.pipeline import load_facade, EvalSpec, build_rows
from harness.ablation.neuron import neuron_influence
torch.set_num_threads(2)
out = {}
for name, n_rows, T in (("tiny-pythia-learned", 4, 256), ("smollm2-135m", 1, 64)):
    m = load_facade(name)
    rows, keep = build_rows(m, EvalSpec(n_rows=max(4, n_rows), seq_len=T))
    rows, keep = rows[:n_rows], keep[:n_rows]
    res = {}
    for p in ("fp32", "bf16"):
        t = time.perf_counter()
        res[p] = neuron_influence(m, rows, keep, batch_size=n_rows, clean_precision=p)
        print(name, p, f"{time.perf_counter()-t:.1f}s", flush=True)
    d = np.abs(res["bf16"].delta.astype(np.float64) - res["fp32"].delta)
    out[name] = {"positions": int(keep.sum()), "neurons": int(m.d_mlp),
                 "max_abs_err_nats": float(d.max()), "mean_abs_err_nats": float(d.mean()),
                 "max_abs_delta_nats": float(np.abs(res["fp32"].delta).max()),
                 "within_1e-4": bool(d.max() <= 1e-4)}
    print(json.dumps({name: out[name]}), flush=True)
print(json.dumps(out))
