"""The patch decoder's key/value cache on preallocated buffers, advanced one patch at a time in place."""
from __future__ import annotations

import torch

from engine.errors import ModelError
from engine.notagen.model import NotagenModel, PatchCache


class KVBuffers:
    """The patch decoder's keys and values for a group of equally long contexts, preallocated along the
    position axis: [B, heads, capacity, head_dim] per layer, the first `num_patches` positions valid.

    `PatchCache` holds GPT-2's own tuples, which `encode_patches` concatenates into new tensors at every
    step (a full copy of the cache per patch: ~70 MB per row for NotaGen-small at 1000 patches, plus the
    page faults of allocating it). Here a step writes one position in place (`advance_patch`), and
    cutting a row back (bar resampling) only needs a shorter `num_patches`. Capacity grows by doubling
    up to the model's `patch_length`.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], num_patches: int, last_hidden: torch.Tensor, limit: int):
        self.keys, self.values = keys, values
        self.num_patches = num_patches
        self.last_hidden = last_hidden
        self.limit = limit

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.last_hidden.shape[0]

    @classmethod
    def from_cache(cls, cache: PatchCache, limit: int, spare: int = 64) -> KVBuffers:
        capacity = min(limit, cache.num_patches + spare)
        keys, values = [], []
        for key, value in cache.past_key_values:
            keys.append(_buffer_like(key, capacity))
            values.append(_buffer_like(value, capacity))
        return cls(keys, values, cache.num_patches, cache.last_hidden, limit)

    def _copy(self, rows: torch.Tensor | slice, length: int, last_hidden: torch.Tensor, capacity: int | None = None) -> KVBuffers:
        capacity = capacity or self.capacity
        keys = [_buffer_like(key[rows, :, :length], capacity) for key in self.keys]
        values = [_buffer_like(value[rows, :, :length], capacity) for value in self.values]
        return KVBuffers(keys, values, length, last_hidden, self.limit)

    def select(self, rows: list[int]) -> KVBuffers:
        """A copy holding only (or repeating) these rows."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.last_hidden.device)
        return self._copy(index, self.num_patches, self.last_hidden[index])

    def cut(self, row: int, num_patches: int, last_hidden: torch.Tensor) -> KVBuffers:
        """A copy of one row cut back to its first `num_patches` positions (whose output was `last_hidden`)."""
        return self._copy(slice(row, row + 1), num_patches, last_hidden[None])

    @staticmethod
    def concat(groups: list[KVBuffers]) -> KVBuffers:
        if len(groups) == 1:
            return groups[0]
        capacity = max(group.capacity for group in groups)
        length = groups[0].num_patches
        keys = [_buffer_like(torch.cat([g.keys[i][:, :, :length] for g in groups]), capacity) for i in range(len(groups[0].keys))]
        values = [_buffer_like(torch.cat([g.values[i][:, :, :length] for g in groups]), capacity) for i in range(len(groups[0].keys))]
        return KVBuffers(keys, values, length, torch.cat([g.last_hidden for g in groups]), groups[0].limit)

    def reserve(self, positions: int) -> None:
        """Make room for `positions` more patches (doubling, at most `limit`)."""
        needed = self.num_patches + positions
        if needed > self.limit:
            raise ModelError(f"context of {needed} patches exceeds the model's {self.limit}")
        if needed > self.capacity:
            grown = self._copy(slice(None), self.num_patches, self.last_hidden, min(self.limit, max(needed, 2 * self.capacity)))
            self.keys, self.values = grown.keys, grown.values


def _buffer_like(source: torch.Tensor, capacity: int) -> torch.Tensor:
    """An uninitialised [B, heads, capacity, d] buffer whose first positions hold `source`."""
    batch, heads, length, dim = source.shape
    buffer = source.new_empty((batch, heads, capacity, dim))
    buffer[:, :, :length] = source
    return buffer


def advance_patch(model: NotagenModel, buffers: KVBuffers, patches: torch.Tensor) -> None:
    """Run the patch decoder over one new patch per row ([B, 1, 16] ids), in place.

    The same operations as GPT-2's eager forward with a cache (embedding + position, pre-LN blocks,
    scaled dot-product attention through the layer's own `_attn`, final LayerNorm), but keys and values
    are written into the preallocated buffers instead of concatenated.
    """
    decoder = model.patch_level_decoder
    base = decoder.base
    buffers.reserve(1)
    position = buffers.num_patches
    hidden = decoder.embed(patches) + base.wpe.weight[position]
    hidden = base.drop(hidden)
    for layer, block in enumerate(base.h):
        attention = block.attn
        residual = hidden
        query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)
        query = attention._split_heads(query, attention.num_heads, attention.head_dim)
        buffers.keys[layer][:, :, position] = attention._split_heads(key, attention.num_heads, attention.head_dim)[:, :, 0]
        buffers.values[layer][:, :, position] = attention._split_heads(value, attention.num_heads, attention.head_dim)[:, :, 0]
        output, _ = attention._attn(
            query, buffers.keys[layer][:, :, : position + 1], buffers.values[layer][:, :, : position + 1]
        )
        output = attention.resid_dropout(attention.c_proj(attention._merge_heads(output, attention.num_heads, attention.head_dim)))
        hidden = output + residual
        hidden = hidden + block.mlp(block.ln_2(hidden))
    buffers.num_patches = position + 1
    buffers.last_hidden = base.ln_f(hidden)[:, -1]
