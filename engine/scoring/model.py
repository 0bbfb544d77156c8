"""The M3 symbolic music encoder of CLaMP 2, and the feature extractor built on it.

Module and parameter names equal the official ones, so official checkpoints load strictly:

    encoder.patch_embedding.{weight,bias}   Linear(64*128 -> hidden) over the flat one-hot of a patch
    encoder.base.*                          BertModel (word_embeddings [1, hidden] and pooler unused)
    decoder.base.*                          GPT2LMHeadModel over the 128 ASCII ids (M3 training only)

An official M3 checkpoint holds `encoder.*` and `decoder.*`; an official CLaMP 2 checkpoint holds the
encoder as `music_model.*` plus the `music_proj` Linear that maps pooled features into the joint space.
The project's own encoder (trained by `python -m training.m3`) has no text side and hence no
contrastive projection; its export stores a standardizing `music_proj` fitted on the corpus instead
(see `training.m3.standardizing_projection`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from engine.errors import ModelError
from engine.scoring import patchilizer
from engine.scoring.patchilizer import PAD_ID

CHAR_VOCAB_SIZE = 128
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class M3Config:
    """M3's size; the official values are patch_length 512, 12 + 3 layers, hidden 768."""

    patch_size: int = patchilizer.PATCH_SIZE
    patch_length: int = 512
    patch_num_layers: int = 12
    token_num_layers: int = 3
    hidden_size: int = 768
    projection_size: int | None = None  # CLaMP 2's music_proj output size; None: no projection

    def bert_config(self) -> BertConfig:
        return BertConfig(vocab_size=1, hidden_size=self.hidden_size, num_hidden_layers=self.patch_num_layers,
                          num_attention_heads=max(1, self.hidden_size // 64), intermediate_size=self.hidden_size * 4,
                          max_position_embeddings=self.patch_length)

    def gpt2_config(self) -> GPT2Config:
        return GPT2Config(vocab_size=CHAR_VOCAB_SIZE, n_positions=self.patch_size, n_embd=self.hidden_size,
                          n_layer=self.token_num_layers, n_head=max(1, self.hidden_size // 64),
                          n_inner=self.hidden_size * 4)


class M3PatchEncoder(nn.Module):
    """One-hot patch embedding into a BERT encoder: [B, n, 64] ids -> [B, n, hidden] states."""

    def __init__(self, config: M3Config) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.patch_size * CHAR_VOCAB_SIZE, config.hidden_size)
        nn.init.normal_(self.patch_embedding.weight, std=0.02)
        self.base = BertModel(config.bert_config())

    def forward(self, patches: Tensor, masks: Tensor) -> Tensor:
        one_hot = F.one_hot(patches, num_classes=CHAR_VOCAB_SIZE).to(self.patch_embedding.weight.dtype)
        embeds = self.patch_embedding(one_hot.flatten(start_dim=-2))
        return self.base(inputs_embeds=embeds, attention_mask=masks).last_hidden_state


class M3TokenDecoder(nn.Module):
    """Rebuilds a patch's 64 ids from its encoder state (the masked-patch training objective)."""

    def __init__(self, config: M3Config) -> None:
        super().__init__()
        self.base = GPT2LMHeadModel(config.gpt2_config())

    def forward(self, patch_features: Tensor, target_patches: Tensor) -> Tensor:
        """Mean cross-entropy of the ids after BOS, the patch feature standing in for BOS's embedding."""
        embeds = F.embedding(target_patches, self.base.transformer.wte.weight)
        embeds = torch.cat((patch_features.unsqueeze(1), embeds[:, 1:]), dim=1)
        pad = target_patches == PAD_ID
        labels = target_patches.masked_fill(pad, -100)
        return self.base(inputs_embeds=embeds, attention_mask=(~pad).long(), labels=labels).loss


class M3Model(nn.Module):
    """Encoder + token decoder, as trained by M3's masked-patch objective."""

    def __init__(self, config: M3Config) -> None:
        super().__init__()
        self.config = config
        self.encoder = M3PatchEncoder(config)
        self.decoder = M3TokenDecoder(config)

    def forward(self, input_patches: Tensor, masks: Tensor, selected: Tensor, target_patches: Tensor) -> Tensor:
        """Loss of reconstructing the `selected` target patches from the (corrupted) input patches."""
        states = self.encoder(input_patches, masks)
        chosen = selected.bool()
        return self.decoder(states[chosen], target_patches[chosen])

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors; `MusicEncoder.from_pretrained` reads the encoder back."""
        # lm_head is tied to wte; safetensors stores each tensor once.
        state = {k: v for k, v in self.state_dict().items() if k != "decoder.base.lm_head.weight"}
        _save(directory, self.config, state)


def _save(directory: str | Path, config: M3Config, state: dict[str, Tensor]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1) + "\n")
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(directory / WEIGHTS_FILE))


class MusicEncoder(nn.Module):
    """Whole-piece features: M3 states pooled over each 512-patch segment, projected, length-weighted."""

    def __init__(self, config: M3Config) -> None:
        super().__init__()
        self.config = config
        self.music_model = M3PatchEncoder(config)
        self.music_proj = nn.Linear(config.hidden_size, config.projection_size) if config.projection_size else None

    @property
    def feature_size(self) -> int:
        return self.config.projection_size or self.config.hidden_size

    def segments(self, patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cuts [n, 64] into padded [S, L, 64] segments, their masks, and each segment's weight.

        As in the official extraction, the last segment is the *last* L patches (it may overlap the
        one before) and weighs `n % L` (or L when n is a multiple of L).
        """
        length = self.config.patch_length
        n = len(patches)
        starts = list(range(0, n, length))
        starts[-1] = max(0, n - length)
        segments = torch.full((len(starts), length, patches.shape[1]), PAD_ID, dtype=patches.dtype)
        masks = torch.zeros(len(starts), length)
        for row, start in enumerate(starts):
            piece = patches[start:start + length]
            segments[row, :len(piece)] = piece
            masks[row, :len(piece)] = 1
        weights = torch.full((len(starts),), float(length))
        if n % length:
            weights[-1] = n % length
        return segments, masks, weights

    @torch.inference_mode()
    def patch_states(self, patches: Tensor) -> Tensor:
        """Unpooled last-layer states [n, hidden] of every patch (the official `extract_m3.py` output)."""
        segments, masks, _ = self.segments(patches)
        states = self.music_model(segments.to(self.device), masks.to(self.device))
        n, length = len(patches), self.config.patch_length
        rows = [states[row, : int(masks[row].sum())] for row in range(len(segments))]
        if len(rows) > 1 and n % length:
            rows[-1] = rows[-1][-(n % length):]
        return torch.cat(rows).float().cpu()

    @torch.inference_mode()
    def patches_feature(self, patches: Tensor) -> Tensor:
        """One [feature_size] vector for a piece's patches (the official normalized extraction)."""
        segments, masks, weights = self.segments(patches)
        masks = masks.to(self.device)
        states = self.music_model(segments.to(self.device), masks)
        pooled = (states * masks.unsqueeze(-1)).sum(dim=1) / masks.sum(dim=1, keepdim=True)
        if self.music_proj is not None:
            pooled = self.music_proj(pooled)
        weights = weights.to(pooled)
        return ((pooled * weights.unsqueeze(-1)).sum(dim=0) / weights.sum()).float().cpu()

    def feature(self, interleaved_abc: str) -> Tensor:
        """The feature NotaGen's CLaMP 2 score uses: `%` comment lines dropped, BOS/EOS patches added."""
        text = patchilizer.drop_comment_lines(interleaved_abc)
        patches = torch.tensor(patchilizer.encode(text, add_special_patches=True, patch_size=self.config.patch_size))
        return self.patches_feature(patches)

    def features(self, texts: list[str]) -> Tensor:
        """[len(texts), feature_size] features; an empty list gives [0, feature_size]."""
        if not texts:
            return torch.zeros(0, self.feature_size)
        return torch.stack([self.feature(text) for text in texts])

    @property
    def device(self) -> torch.device:
        return self.music_model.patch_embedding.weight.device

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors: the encoder as `encoder.*` (M3's names) and `music_proj.*`."""
        state = {f"encoder.{k}": v for k, v in self.music_model.state_dict().items()}
        if self.music_proj is not None:
            state |= {f"music_proj.{k}": v for k, v in self.music_proj.state_dict().items()}
        _save(directory, self.config, state)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MusicEncoder:
        """A `save_pretrained` folder of a MusicEncoder or of an M3Model (its token decoder unread), in eval mode."""
        directory = Path(directory)
        try:
            config = M3Config(**json.loads((directory / CONFIG_FILE).read_text()))
            state = safetensors.torch.load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError, TypeError) as error:
            raise ModelError(f"cannot load the music encoder from {directory}: {error}") from error
        return _encoder(config, _strip(state, "encoder."), state, directory)


def _torch_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling / IO failure is a bad checkpoint
        raise ModelError(f"cannot read the encoder checkpoint {path}: {error}") from error
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{path} is not an M3 or CLaMP 2 checkpoint (no state dict inside)")
    return state


def _infer_config(encoder_state: dict[str, Tensor], projection: Tensor | None) -> M3Config:
    """Reads the sizes of an official checkpoint from its tensors (official files carry no config)."""
    try:
        hidden, flat = encoder_state["patch_embedding.weight"].shape
        layers = 1 + max(int(k.split(".")[3]) for k in encoder_state if k.startswith("base.encoder.layer."))
        patch_length = encoder_state["base.embeddings.position_embeddings.weight"].shape[0]
    except (KeyError, ValueError) as error:
        raise ModelError(f"the checkpoint lacks M3 encoder weights ({error})") from error
    return M3Config(patch_size=flat // CHAR_VOCAB_SIZE, patch_length=patch_length, patch_num_layers=layers,
                    token_num_layers=0, hidden_size=hidden,
                    projection_size=None if projection is None else projection.shape[0])


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_encoder(path: str | Path) -> MusicEncoder:
    """A MusicEncoder from the project's directory (config.json + model.safetensors), an official M3
    checkpoint (`encoder.*`) or an official CLaMP 2 checkpoint (`music_model.*` + `music_proj.*`)."""
    path = Path(path)
    if path.is_dir():
        return MusicEncoder.from_pretrained(path)
    if not path.is_file():
        raise ModelError(f"no music encoder at {path}")
    state = _torch_state_dict(path)
    music = _strip(state, "music_model.")
    encoder_state = music or _strip(state, "encoder.")
    projection = state.get("music_proj.weight") if music else None
    return _encoder(_infer_config(encoder_state, projection), encoder_state, state, path)


def _encoder(config: M3Config, encoder_state: dict[str, Tensor], state: dict[str, Tensor], path: Path) -> MusicEncoder:
    """A MusicEncoder with the encoder weights and (when the config has one) `music_proj.*` of `state`."""
    encoder = MusicEncoder(config)
    weights = {f"music_model.{k}": v for k, v in encoder_state.items()}
    if encoder.music_proj is not None:
        weights |= {k: state[k] for k in ("music_proj.weight", "music_proj.bias")}
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ModelError(f"the encoder weights in {path} do not fit an M3 encoder: {error}") from error
    return encoder.float().eval()
