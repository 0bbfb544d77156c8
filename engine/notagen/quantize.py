"""The number format NotaGen decodes in (`--weights`), and moving a loaded model to its device.

Decoding at batch 1 reads every weight once per patch (patch decoder) and once per char (char decoder),
so its speed is the weights' bytes over the memory bandwidth: smaller weights are faster.

* `fp32`: the trained weights as they are (the CPU default; the reference for every comparison).
* `bf16` / `fp16`: the whole model cast (the CUDA default is bf16; fp16 only on CUDA, where its range
  is enough for GPT-2 activations, while the CPU has no fast fp16 matmul).
* `int8`: weight-only int8 for every matmul of both decoders (CPU only): per output channel symmetric
  scales, activations stay floating point. Embeddings, LayerNorms and the char LM head (tied to the
  char embedding, 128 rows) stay fp32.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from engine.device import WEIGHTS, resolve_device
from engine.errors import ModelError
from engine.notagen.model import NotagenModel

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_weights(weights: str, device: torch.device) -> str:
    """The concrete format for `weights` on `device` (`auto`: bf16 on CUDA, fp32 on the CPU)."""
    if weights == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if weights not in WEIGHTS:
        raise ModelError(f"unknown weights format {weights!r} (use one of {', '.join(WEIGHTS)})")
    if weights == "fp16" and device.type != "cuda":
        raise ModelError("--weights fp16 is for CUDA; on the CPU use bf16 or int8")
    if weights == "int8" and device.type != "cpu":
        raise ModelError("--weights int8 is for the CPU; on CUDA use bf16 or fp16")
    return weights


def place(model: NotagenModel, device: str | torch.device = "auto", weights: str = "auto") -> NotagenModel:
    """`model` (loaded in fp32 on the CPU) moved to `device` in the `weights` format, in eval mode."""
    device = resolve_device(device)
    weights = resolve_weights(weights, device)
    if weights == "int8":
        quantize_int8(model)
    elif weights != "fp32":
        model.to(_DTYPES[weights])
    return model.to(device).eval()


class Int8Linear(nn.Module):
    """A weight-only int8 replacement of a GPT-2 `Conv1D` or an `nn.Linear`: `x @ W.T + b` with W stored as
    int8 [out, in] and one float scale per output row.

    Why not `torch.ao.quantization.quantize_dynamic`: it only replaces `nn.Linear` (GPT-2's attention
    and MLP are transformers' `Conv1D`, weight [in, out]), it also rounds the activations to int8, and it
    is deprecated. The matmul here is torch's weight-only int8 kernel `_weight_int8pack_mm` (the one
    torchao's int8 weight-only mode calls on the CPU); it takes bf16 activations, so the input is rounded
    to bf16 and the result returned in the input's dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        """`weight` [out, in] (nn.Linear's layout)."""
        super().__init__()
        weight = weight.detach().float().contiguous()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_module(cls, module: nn.Module) -> Int8Linear:
        if isinstance(module, Conv1D):
            return cls(module.weight.t(), module.bias)
        return cls(module.weight, module.bias)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch._weight_int8pack_mm(flat, self.weight, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_int8(model: NotagenModel) -> NotagenModel:
    """Replace, in place, the patch embedding and every Conv1D of both decoders by `Int8Linear`."""
    patch = model.patch_level_decoder
    patch.patch_embedding = Int8Linear.from_module(patch.patch_embedding)
    for decoder in (patch.base, model.char_level_decoder.base.transformer):
        for block in decoder.h:
            for owner, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
                setattr(owner, name, Int8Linear.from_module(getattr(owner, name)))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights (parameters and int8 buffers; GPT-2's boolean causal masks are not weights)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers()) if t.dtype != torch.bool}
    return sum(t.numel() * t.element_size() for t in tensors.values())
