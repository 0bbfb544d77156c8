"""The NotaGen model: a patch-level GPT-2 over 16-char patches feeding a char-level GPT-2.

Module and parameter names equal the official `NotaGenLMHeadModel`'s, so an official checkpoint's
`state_dict` loads strictly:

    patch_level_decoder.patch_embedding.{weight,bias}   Linear(16*128 -> hidden) over the flat one-hot
    patch_level_decoder.base.*                          GPT2Model (wte [1, hidden] is unused but stored)
    char_level_decoder.base.transformer.*               GPT2LMHeadModel over the 128 ASCII ids
    char_level_decoder.base.lm_head.weight              tied to char_level_decoder.base.transformer.wte

Two inference paths exist. `generate_patch` is the official one (re-encode the whole context, re-run the
char decoder for every char) and serves as the reference. `encode_patches` + `decode_patch` are the
KV-cached primitives that generation uses: the patch decoder advances one patch at a time with a
`PatchCache`, and the char decoder runs its 16 steps with its own cache. Both work on a batch.
"""
from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions, CausalLMOutputWithCrossAttentions

from engine.errors import ModelError
from engine.notagen.config import CHAR_VOCAB_SIZE, NotagenConfig, infer_from_state_dict
from engine.notagen.patchilizer import BOS_ID, PAD_ID

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: The weights split into files (`save_pretrained(max_shard_bytes=...)`), in the Hugging Face convention.
INDEX_FILE = "model.safetensors.index.json"
SHARD_GLOB = "model-*-of-*.safetensors"
#: Bounds on a safetensors file's header: its length field and metadata, and per tensor (besides the name).
_SAFETENSORS_OVERHEAD = 1024
_SAFETENSORS_ENTRY = 128
#: Buffers that older transformers versions saved with each attention layer; 4.40 no longer does.
_LEGACY_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

#: Picks the next char id of each batch row from its logits [B, 128]; returns [B] ids.
TokenChooser = Callable[[Tensor], Tensor]


def greedy(logits: Tensor) -> Tensor:
    """Argmax chooser. The official greedy setting (top_k=1) samples the argmax with probability ~1."""
    return logits.argmax(dim=-1)


def _gpt2_config(config: NotagenConfig, *, layers: int, positions: int, vocab_size: int) -> GPT2Config:
    # Eager attention is what the official code ran (transformers 4.40 has no SDPA for GPT-2); pinning it
    # keeps numerics identical if a later transformers version defaults to SDPA.
    # The activation is GPT-2's tanh-approximated GELU ("gelu_new") computed by torch's fused kernel:
    # the same function (outputs differ by ~6e-8, within the fixtures' 1e-5), but the composite
    # "gelu_new" runs `torch.tanh`, which this torch build parallelises even for a few hundred values;
    # on a busy CPU with 2+ threads that alone made decoding 5-10x slower.
    return GPT2Config(
        n_layer=layers,
        n_positions=positions,
        n_embd=config.hidden_size,
        n_head=config.num_heads,
        vocab_size=vocab_size,
        activation_function="gelu_pytorch_tanh",
        attn_implementation="eager",
    )


class PatchLevelDecoder(nn.Module):
    """Embeds each patch (flat one-hot -> Linear) and runs GPT-2 over the patch sequence."""

    def __init__(self, config: NotagenConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.patch_size * CHAR_VOCAB_SIZE, config.hidden_size)
        nn.init.normal_(self.patch_embedding.weight, std=0.02)
        # vocab_size=1: the official config; its wte is never used, patches enter as inputs_embeds.
        self.base = GPT2Model(_gpt2_config(config, layers=config.patch_num_layers, positions=config.patch_length, vocab_size=1))

    def embed(self, patches: Tensor) -> Tensor:
        """[B, n, 16] ids -> [B, n, hidden]. The one-hot is char-major: index = position*128 + id."""
        one_hot = F.one_hot(patches, num_classes=CHAR_VOCAB_SIZE).to(self.base.wpe.weight.dtype)
        return self.patch_embedding(one_hot.flatten(start_dim=-2))

    def forward(
        self,
        patches: Tensor,
        masks: Tensor | None = None,
        past_key_values: tuple[tuple[Tensor, Tensor], ...] | None = None,
        use_cache: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """GPT-2 output (`last_hidden_state`, and `past_key_values` with `use_cache`) for [B, n, 16] patches."""
        return self.base(
            inputs_embeds=self.embed(patches),
            attention_mask=masks,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )


class CharLevelDecoder(nn.Module):
    """GPT-2 LM over the chars of one patch; position 0 holds the patch vector instead of a BOS embedding."""

    def __init__(self, config: NotagenConfig) -> None:
        super().__init__()
        self.base = GPT2LMHeadModel(
            _gpt2_config(config, layers=config.char_num_layers, positions=config.patch_size + 1, vocab_size=CHAR_VOCAB_SIZE)
        )

    def input_embeds(self, encoded: Tensor, tokens: Tensor) -> Tensor:
        """[B, hidden] patch vectors and [B, p] char ids -> [B, 1+p, hidden] decoder inputs."""
        return torch.cat([encoded.unsqueeze(1), self.base.transformer.wte(tokens)], dim=1)

    def forward(self, encoded: Tensor, targets: Tensor) -> CausalLMOutputWithCrossAttentions:
        """Training output for [N, hidden] patch vectors predicting [N, 16] target patches.

        As the official code: labels are `[BOS, t0..t15]` with pad (0) -> -100, the attention mask is
        "label is not -100", and the loss is GPT-2's shifted cross-entropy over all valid tokens.
        """
        labels = torch.cat([torch.full_like(targets[:, :1], BOS_ID), targets], dim=1)
        labels = labels.masked_fill(labels == PAD_ID, -100)
        return self.base(
            inputs_embeds=self.input_embeds(encoded, targets),
            attention_mask=(labels != -100).long(),
            labels=labels,
        )


@dataclass(frozen=True)
class PatchCache:
    """Patch-decoder state after encoding `num_patches` patches for each of `batch_size` equally long contexts.

    `last_hidden` [B, hidden] is the output at the last encoded patch: the input of the char decoder for
    the next patch. `past_key_values` is GPT-2's per-layer (key, value) tuple, [B, heads, n, head_dim] each.
    """

    past_key_values: tuple[tuple[Tensor, Tensor], ...]
    last_hidden: Tensor
    num_patches: int

    @property
    def batch_size(self) -> int:
        return self.last_hidden.shape[0]

    def select(self, rows: Tensor | Sequence[int]) -> PatchCache:
        """The cache of a subset (or reordering, or repetition) of the batch rows."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.last_hidden.device)
        return PatchCache(
            past_key_values=tuple((key[rows], value[rows]) for key, value in self.past_key_values),
            last_hidden=self.last_hidden[rows],
            num_patches=self.num_patches,
        )


class NotagenModel(nn.Module):
    """NotaGen, state-dict compatible with the official `NotaGenLMHeadModel`."""

    def __init__(self, config: NotagenConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_level_decoder = PatchLevelDecoder(config)
        self.char_level_decoder = CharLevelDecoder(config)

    # Read from the position table: it keeps its float dtype when the matmuls are quantised (`quantize.py`).
    @property
    def device(self) -> torch.device:
        return self.patch_level_decoder.base.wpe.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype: float32, or bfloat16 / float16 when the whole model was cast."""
        return self.patch_level_decoder.base.wpe.weight.dtype

    def _as_patches(self, patches: Tensor) -> Tensor:
        """Accept [B, n, 16] or flat [B, n*16] ids, as the official forward does."""
        return patches.reshape(patches.shape[0], -1, self.config.patch_size)

    # ----------------------------------------------------------------------------------- training path
    def patch_hidden(self, patches: Tensor, masks: Tensor | None = None) -> Tensor:
        """Patch decoder last hidden states [B, n, hidden]; `masks` [B, n] marks real (1) vs padded (0) patches."""
        return self.patch_level_decoder(self._as_patches(patches), masks).last_hidden_state

    def training_pairs(self, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """The official pairing of context vectors [N, hidden] with the target patches [N, 16] they predict.

        Per row, the vectors of real patches 0..k-2 predict real patches 1..k-1 (all rows flattened
        together). The official forward zeroes `masks[:, 0]` in place on the caller's tensor; here the
        mask is left untouched.
        """
        patches = self._as_patches(patches)
        encoded = self.patch_hidden(patches, masks)
        has_successor = masks * (masks.flip(1).cumsum(1).flip(1) > 1)
        is_target = masks.clone()
        is_target[:, 0] = 0
        return encoded[has_successor == 1], patches[is_target == 1]

    def char_logits(self, patches: Tensor, masks: Tensor) -> Tensor:
        """Char decoder logits [N, 17, 128] for every training target; position k scores target char k."""
        encoded, targets = self.training_pairs(patches, masks)
        return self.char_level_decoder(encoded, targets).logits

    def forward(self, patches: Tensor, masks: Tensor) -> Tensor:
        """Training loss: mean next-char cross-entropy over all valid target chars of the batch (EOS counts, pad not)."""
        return self.char_level_decoder(*self.training_pairs(patches, masks)).loss

    def sequence_log_probs(self, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Per row: the summed log-probability of its target chars [B] and how many there are [B].

        The same chars the training loss averages over; DPO compares these sums between models, and
        `exp(-sum / count)` over a set is its per-char perplexity.
        """
        encoded, targets = self.training_pairs(patches, masks)
        logits = self.char_level_decoder(encoded, targets).logits[:, :-1]
        valid = targets != PAD_ID
        chosen = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        per_patch = (chosen * valid).sum(dim=-1)
        is_target = masks.clone()
        is_target[:, 0] = 0
        rows = is_target.nonzero()[:, 0]  # row of each target, in the order boolean indexing takes them
        log_probs = per_patch.new_zeros(masks.shape[0]).index_add(0, rows, per_patch)
        counts = per_patch.new_zeros(masks.shape[0]).index_add(0, rows, valid.sum(dim=-1).float())
        return log_probs, counts

    # ------------------------------------------------------------------ reference (official) generation
    @torch.no_grad()
    def generate_patch(self, context: Sequence[int] | Tensor, choose: TokenChooser = greedy) -> list[int]:
        """The next patch's chars for one flat context of ids, exactly as the official `generate`: no cache.

        Trailing ids that do not fill a patch are the start of the patch being predicted; the result holds
        the `16 - len(prefix)` chars after them. EOS does not stop it (the official check is commented out).
        """
        context = torch.as_tensor(context, dtype=torch.long, device=self.device).reshape(-1)
        full = context.numel() - context.numel() % self.config.patch_size
        prefix = context[full:]
        encoded = self.patch_hidden(context[None, :full])[0, -1]
        tokens = prefix
        while tokens.numel() < self.config.patch_size:
            embeds = self.char_level_decoder.input_embeds(encoded[None], tokens[None])
            logits = self.char_level_decoder.base(inputs_embeds=embeds).logits[:, -1]
            tokens = torch.cat([tokens, choose(logits).reshape(1)])
        return tokens[prefix.numel():].tolist()

    # ---------------------------------------------------------------------------- cached primitives
    @torch.no_grad()
    def encode_patches(self, patches: Tensor, cache: PatchCache | None = None) -> PatchCache:
        """Advance the patch decoder over [B, k, 16] new full patches (k >= 1), continuing `cache`.

        Returns a new cache; the old one stays valid (e.g. to branch). The context may not outgrow
        `config.patch_length` (the learned positions); the caller re-encodes a shorter context then.
        """
        past = None if cache is None else cache.past_key_values
        total = patches.shape[1] + (0 if cache is None else cache.num_patches)
        if total > self.config.patch_length:
            raise ModelError(f"context of {total} patches exceeds the model's {self.config.patch_length}")
        output = self.patch_level_decoder(patches, past_key_values=past, use_cache=True)
        return PatchCache(output.past_key_values, output.last_hidden_state[:, -1], total)

    @torch.no_grad()
    def decode_patch(self, encoded: Tensor, prefix: Tensor | None = None, choose: TokenChooser = greedy) -> Tensor:
        """The next patch's chars [B, 16-p] from patch vectors [B, hidden] and given first chars [B, p].

        The char decoder keeps its own KV cache over the patch's at most 16 positions, so each char costs
        one single-position step. `choose` sees raw logits [B, 128] and returns [B] ids; the official
        sampler works on `softmax(logits)`.
        """
        if prefix is None:
            prefix = encoded.new_empty((encoded.shape[0], 0), dtype=torch.long)
        decoder = self.char_level_decoder.base
        output = decoder(inputs_embeds=self.char_level_decoder.input_embeds(encoded, prefix), use_cache=True)
        chars = []
        for step in range(self.config.patch_size - prefix.shape[1]):
            if step:
                embeds = decoder.transformer.wte(chars[-1])[:, None]
                output = decoder(inputs_embeds=embeds, past_key_values=output.past_key_values, use_cache=True)
            chars.append(choose(output.logits[:, -1]))
        return torch.stack(chars, dim=1)

    # --------------------------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path, max_shard_bytes: int | None = None) -> None:
        """Write `config.json` and `model.safetensors` (the tied lm_head is stored once) into `directory`.

        With `max_shard_bytes`, the weights go into files of at most that size in the Hugging Face
        convention (`model-00001-of-0000N.safetensors` + `model.safetensors.index.json`), for a place
        that takes only small files. Weight files of an earlier save in `directory` are removed.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in [directory / WEIGHTS_FILE, directory / INDEX_FILE, *directory.glob(SHARD_GLOB)]:
            stale.unlink(missing_ok=True)
        self.config.save_json(directory / CONFIG_FILE)
        if max_shard_bytes is None:
            safetensors.torch.save_model(self, str(directory / WEIGHTS_FILE))
            return
        shards = _shard_state(self._stored_state(), max_shard_bytes)
        weight_map = {}
        for number, shard in enumerate(shards, 1):
            name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            safetensors.torch.save_file(shard, str(directory / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(tensor.numel() * tensor.element_size() for shard in shards for tensor in shard.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    def _stored_state(self) -> dict[str, Tensor]:
        """The state dict with each tied tensor once (its first name), contiguous, as a weights file stores it."""
        seen, state = set(), {}
        for name, tensor in self.state_dict().items():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                state[name] = tensor.contiguous()
        return state

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> NotagenModel:
        """Inverse of `save_pretrained` (one file or shards); strict: every parameter must be in the file(s)."""
        directory = Path(directory)
        model = cls(NotagenConfig.load_json(directory / CONFIG_FILE))
        if not (directory / INDEX_FILE).exists():
            safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True)
            return model.eval()
        weight_map = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))["weight_map"]
        state = {}
        for name in sorted(set(weight_map.values())):
            state.update(safetensors.torch.load_file(str(directory / name)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = set(missing) - (set(model.state_dict()) - set(model._stored_state()))  # tied: loaded with their twin
        if missing or unexpected or set(state) != set(weight_map):
            raise ModelError(f"the weights in {directory} do not fit the model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        return model.eval()


def _shard_state(state: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    """Split a state dict, in order, into groups whose safetensors files stay within `max_bytes`."""
    shards: list[dict[str, Tensor]] = [{}]
    used = _SAFETENSORS_OVERHEAD
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size() + len(name) + _SAFETENSORS_ENTRY
        if size + _SAFETENSORS_OVERHEAD > max_bytes:
            raise ModelError(f"{name} ({size} bytes) does not fit in a weights file of {max_bytes} bytes")
        if used + size > max_bytes:
            shards.append({})
            used = _SAFETENSORS_OVERHEAD
        shards[-1][name] = tensor
        used += size
    return shards


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model weights of an official `.pth` checkpoint (its `model` entry), legacy attention buffers dropped."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        # torch's own message for a damaged file talks about `weights_only`, which would mislead here
        raise ModelError(f"the NotaGen checkpoint {path} is not a readable PyTorch file (damaged, cut short or another kind of file)") from exc
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ModelError(f"{path} is not an official NotaGen checkpoint (a dict with a 'model' entry)")
    return {key: value for key, value in checkpoint["model"].items() if not key.endswith(_LEGACY_BUFFER_SUFFIXES)}


def load_checkpoint(path: str | Path, num_heads: int | None = None) -> tuple[NotagenModel, NotagenConfig]:
    """Load an official `.pth` checkpoint or a `save_pretrained` directory, in eval mode on the CPU.

    For `.pth` files the config comes from the tensor shapes (`num_heads` overrides the official
    `hidden // 64`); float16 weights are loaded into float32 parameters.
    """
    path = Path(path)
    if path.is_dir():
        model = NotagenModel.from_pretrained(path)
        return model, model.config
    state_dict = load_official_state_dict(path)
    config = infer_from_state_dict(state_dict, num_heads=num_heads)
    model = NotagenModel(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval(), config
