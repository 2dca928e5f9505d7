"""One object per loaded model: the TransformerBridge plus the final-layer tensors as data.

The closed-form neuron ablation (methods.md section 4) needs exactly what follows the last
MLP: W_out of that layer, the final norm and the unembedding. Reading them here, once and per
architecture, keeps `ablation/` free of model-specific code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from harness.errors import BadInputError

NormKind = Literal["layernorm", "rmsnorm"]
Processing = Literal["raw", "tl-default"]
PROCESSING_MODES = ("raw", "tl-default")

# HF model_type -> (family, final-norm attribute path, last-MLP output projection path, eps key).
_ARCH = {
    "gpt2": ("gpt2", "transformer.ln_f", "transformer.h.{L}.mlp.c_proj", "layer_norm_epsilon"),
    "gpt_neox": ("neox", "gpt_neox.final_layer_norm", "gpt_neox.layers.{L}.mlp.dense_4h_to_h",
                 "layer_norm_eps"),
    "llama": ("llama", "model.norm", "model.layers.{L}.mlp.down_proj", "rms_norm_eps"),
    "gemma3_text": ("gemma", "model.norm", "model.layers.{L}.mlp.down_proj", "rms_norm_eps"),
}
# Families whose last MLP output is normalised before it joins the residual (Gemma's
# post_feedforward_layernorm): the closed form must include that norm (ClosedForm.post).
_POST_MLP_NORM = {"gemma": "model.layers.{L}.post_feedforward_layernorm"}
# Families whose RMSNorm scales by (1 + weight) rather than weight.
_UNIT_OFFSET_NORM = frozenset({"gemma"})
SUPPORTED_FAMILIES = ("GPT-2", "GPT-NeoX/Pythia", "Llama/SmolLM2", "Gemma-3 (text)")


@dataclass(frozen=True, eq=False)
class NormSpec:
    """The final norm as data: LayerNorm (gamma, beta) or RMSNorm (gamma only)."""

    kind: NormKind
    gamma: Tensor
    beta: Tensor | None
    eps: float

    def apply(self, x: Tensor) -> Tensor:
        """Normalise the last axis in x's dtype (gamma/beta are cast to it)."""
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        elif self.kind != "rmsnorm":
            raise BadInputError(f"unknown norm kind {self.kind!r}; use 'layernorm' or 'rmsnorm'")
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        out = x * scale * self.gamma.to(x.dtype)
        return out if self.beta is None else out + self.beta.to(x.dtype)

    def __str__(self) -> str:
        beta = "none" if self.beta is None else f"[{self.beta.shape[0]}]"
        return f"NormSpec({self.kind}, gamma[{self.gamma.shape[0]}], beta {beta}, eps={self.eps:g})"


@dataclass(frozen=True, eq=False)
class FinalLayer:
    """Last block's MLP activations, residual output and the logits of one forward pass."""

    post: Tensor    # [B, T, d_mlp]
    resid: Tensor   # [B, T, d_model]
    logits: Tensor  # [B, T, V]

    def __str__(self) -> str:
        return (f"FinalLayer(post {tuple(self.post.shape)}, resid {tuple(self.resid.shape)}, "
                f"logits {tuple(self.logits.shape)})")


def _arch(hf_model: Any) -> tuple[str, str, str, str]:
    config = hf_model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in _ARCH:
        encoder = " (an encoder-only model: final-layer influence is defined on next-token " \
                  "loss, which it does not have)" if getattr(config, "is_decoder", True) is False \
                  or model_type in ("bert", "roberta", "t5", "distilbert") else ""
        raise BadInputError(
            f"model_type {model_type!r} is not supported{encoder}; rarebench handles "
            f"{sorted(_ARCH)} ({', '.join(SUPPORTED_FAMILIES)} decoder-only causal LMs)")
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap is not None:
        raise BadInputError(
            f"{model_type}: final_logit_softcapping={softcap} caps the logits with tanh; the "
            "closed-form neuron ablation does not include it, so rarebench refuses the model "
            "rather than report numbers that differ from a real ablation")
    return _ARCH[model_type]


def _token_id(tokenizer: Any, attr: str, fallback: Any) -> int | None:
    value = getattr(tokenizer, attr, None)
    if value is None:
        value = fallback
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else int(value)


def _newline_id(tokenizer: Any, family: str) -> int | None:
    """GPT-2 drops newline positions too (methods.md section 2); only its BPE has one '\\n' id."""
    if family != "gpt2":
        return None
    ids = tokenizer.encode("\n", add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None


class ModelFacade:
    """A TransformerBridge plus the final-layer weights the ablation engine needs."""

    def __init__(self, bridge: Any, hf_model: Any, tokenizer: Any, *, name: str,
                 revision: str | None = None, step: int | None = None,
                 processing: Processing = "raw") -> None:
        family, norm_path, out_path, eps_key = _arch(hf_model)
        cfg = hf_model.config
        self.name = name
        self.revision = revision
        self.step = step
        self.family = family
        self.processing = processing
        self.bridge = bridge
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.n_layers = int(bridge.cfg.n_layers)
        self.n_heads = int(bridge.cfg.n_heads)
        self.d_model = int(bridge.cfg.d_model)
        self.d_mlp = int(bridge.cfg.d_mlp)
        self.d_vocab = int(bridge.cfg.d_vocab_out)
        self.bos_token_id = _token_id(tokenizer, "bos_token_id", cfg.bos_token_id)
        self.eos_token_id = _token_id(tokenizer, "eos_token_id", cfg.eos_token_id)
        self.newline_token_id = _newline_id(tokenizer, family)
        first = next(hf_model.parameters())
        self.dtype = first.dtype
        self.device = first.device
        self._weights_sha: str | None = None
        self._norm_path, self._out_path, self._eps_key = norm_path, out_path, eps_key

    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any, *, name: str, revision: str | None = None,
                step: int | None = None, processing: Processing = "raw", device: str = "cpu",
                source: str | None = None) -> "ModelFacade":
        """Wrap a loaded HF causal LM. `source` (a dir or hub id) names the model to the bridge;
        it defaults to the tokenizer's `name_or_path`, which the bridge needs anyway."""
        from transformer_lens.model_bridge import TransformerBridge

        if processing not in PROCESSING_MODES:
            raise BadInputError(f"processing={processing!r}; use one of {PROCESSING_MODES}")
        family = _arch(hf_model)[0]  # fail before booting the bridge
        if processing == "tl-default" and family in _POST_MLP_NORM:
            raise BadInputError(f"processing='tl-default' folds norms into weights, which the "
                                f"{family} closed form (post-MLP norm) does not model; use 'raw'")
        hf_model = hf_model.to(device).eval()
        bridge = TransformerBridge.boot_transformers(
            source or tokenizer.name_or_path, hf_model=hf_model, tokenizer=tokenizer,
            device=device, dtype=next(hf_model.parameters()).dtype)
        bridge.eval()
        if processing == "tl-default":
            bridge.process_weights()  # TL default: fold LN, centre writing + unembed, in place
        return cls(bridge, hf_model, tokenizer, name=name, revision=revision, step=step,
                   processing=processing)

    # ---- hook names -------------------------------------------------------------------------
    @property
    def hook_post(self) -> str:
        return f"blocks.{self.n_layers - 1}.mlp.hook_post"

    @property
    def hook_resid_post(self) -> str:
        return f"blocks.{self.n_layers - 1}.hook_resid_post"

    def attn_hook(self, layer: int, kind: Literal["z", "pattern"]) -> str:
        if kind not in ("z", "pattern"):
            raise BadInputError(f"attention hook kind {kind!r}; use 'z' or 'pattern'")
        if not 0 <= layer < self.n_layers:
            raise BadInputError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        return f"blocks.{layer}.attn.hook_{kind}"

    # ---- final-layer weights as data ---------------------------------------------------------
    @property
    def W_out(self) -> Tensor:
        """Last MLP output weights, [d_mlp, d_model]: row j is what neuron j writes."""
        module = self.hf_model.get_submodule(self._out_path.format(L=self.n_layers - 1))
        weight = module.weight.detach()
        # GPT-2's Conv1D stores [in, out]; nn.Linear stores [out, in].
        return weight if self.family == "gpt2" else weight.T

    @property
    def b_out(self) -> Tensor:
        """Last MLP output bias [d_model] (zeros if absent); hook_post @ W_out + b_out = MLP out."""
        module = self.hf_model.get_submodule(self._out_path.format(L=self.n_layers - 1))
        bias = getattr(module, "bias", None)
        return torch.zeros(self.d_model, dtype=self.dtype, device=self.device) if bias is None \
            else bias.detach()

    @property
    def W_U(self) -> Tensor:
        """Unembedding [d_model, d_vocab]."""
        return self.hf_model.get_output_embeddings().weight.detach().T

    @property
    def b_U(self) -> Tensor:
        """Unembedding bias [d_vocab]; zeros when the model has none."""
        bias = getattr(self.hf_model.get_output_embeddings(), "bias", None)
        return torch.zeros(self.d_vocab, dtype=self.dtype, device=self.device) if bias is None \
            else bias.detach()

    @property
    def tied_unembedding(self) -> bool:
        out = self.hf_model.get_output_embeddings().weight
        return out.data_ptr() == self.hf_model.get_input_embeddings().weight.data_ptr()

    @property
    def final_norm(self) -> NormSpec:
        """Final norm as data. TL folding (tl-default) rewrites the HF modules in place, moving
        gamma/beta into W_U/b_U, so reading the modules is right in both modes."""
        return self._norm_at(self._norm_path)

    @property
    def post_mlp_norm(self) -> NormSpec | None:
        """The norm between the last MLP and the residual (Gemma's post_feedforward_layernorm),
        None where the MLP output joins the residual directly (GPT-2, NeoX, Llama)."""
        path = _POST_MLP_NORM.get(self.family)
        return None if path is None else self._norm_at(path.format(L=self.n_layers - 1))

    def _norm_at(self, path: str) -> NormSpec:
        kind: NormKind = "rmsnorm" if self.family in ("llama", "gemma") else "layernorm"
        eps = float(getattr(self.hf_model.config, self._eps_key))
        module = self.hf_model.get_submodule(path)
        gamma = module.weight.detach()
        if self.family in _UNIT_OFFSET_NORM:  # Gemma: x / rms(x) * (1 + weight), in float32
            gamma = 1.0 + gamma.float()
        beta = getattr(module, "bias", None)
        return NormSpec(kind, gamma, None if beta is None else beta.detach(), eps)

    # ---- running ----------------------------------------------------------------------------
    def forward_final(self, tokens: Tensor) -> FinalLayer:
        """One no-grad forward pass caching only the last block's hook_post and hook_resid_post
        (tensors in the model's dtype)."""
        cache: dict[str, Tensor] = {}

        def keeper(key: str) -> Callable[..., Tensor]:
            def keep(act: Tensor, hook: Any) -> Tensor:
                cache[key] = act.detach()
                return act
            return keep

        with torch.no_grad():
            logits = self.run_with_hooks(tokens, [(self.hook_post, keeper("post")),
                                                  (self.hook_resid_post, keeper("resid"))])
        return FinalLayer(post=cache["post"], resid=cache["resid"], logits=logits.detach())

    def run_with_hooks(self, tokens: Tensor,
                       fwd_hooks: list[tuple[str, Callable[..., Any]]] = ()) -> Tensor:
        """Logits [B, T, V] with the given forward hooks active (a pass-through to the bridge)."""
        tokens = tokens.to(self.device)
        return self.bridge.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks), return_type="logits")

    # ---- provenance -------------------------------------------------------------------------
    @property
    def weights_sha(self) -> str:
        """sha256 of every weight and buffer (by name), the model config and the tokenizer:
        what identifies the model in manifests and in every result-store key. Hashing only
        the final layer let a copy with other attention weights share cached head ablations."""
        if self._weights_sha is None:
            digest = hashlib.sha256()
            tensors = dict(self.hf_model.named_parameters())
            tensors.update(dict(self.hf_model.named_buffers()))
            for name in sorted(tensors):
                t = tensors[name].detach()
                digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                digest.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                              if t.numel() else b"")
            config = getattr(self.hf_model, "config", None)
            if config is not None and hasattr(config, "to_json_string"):
                digest.update(config.to_json_string(use_diff=False).encode())
            digest.update(tokenizer_digest(self.tokenizer).encode())
            self._weights_sha = digest.hexdigest()
        return self._weights_sha

    def info(self) -> dict[str, Any]:
        info = {
            "name": self.name, "revision": self.revision, "step": self.step,
            "family": self.family, "processing": self.processing,
            "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
            "weights_sha": self.weights_sha, "n_layers": self.n_layers, "d_model": self.d_model,
            "d_mlp": self.d_mlp, "d_vocab": self.d_vocab, "tied_unembedding": self.tied_unembedding,
            "final_norm": self.final_norm.kind,
        }
        if self.post_mlp_norm is not None:  # only where present: other models' keys unchanged
            info["post_mlp_norm"] = self.post_mlp_norm.kind
        return info

    def __repr__(self) -> str:
        return (f"ModelFacade({self.name!r}, family={self.family}, step={self.step}, "
                f"L={self.n_layers}, d_mlp={self.d_mlp}, V={self.d_vocab}, "
                f"{self.processing}, {str(self.dtype).removeprefix('torch.')}, {self.device})")


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of a tokenizer's full definition (vocabulary, merges, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    specials = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True,
                          default=str)
    return hashlib.sha256((text + specials).encode()).hexdigest()
