"""Inter-measure models (section 3): the grid of encoded measures -> decoder inputs per cell.

    CSDModel   masked conditional specification (section 3.2): masked cells' encodings replaced by
               a trainable vector and their memory matrices zeroed; a context model of dilated
               BiLSTMs along each part and relative self-attention over all cells; the decoder
               matrix of a cell is the sum of the unmasked memory matrices of its column.
    ARModel    autoregressive measures (section 3.1): column-first order with the parts shuffled
               in every column; causal relative self-attention over the encoded history, then
               cross-attention blocks from the next measure's query (instrument + position); the
               decoder matrix is the sum of the matrices already written in the same column.

    ConcurrentContext, SinglePartContext
               the paper's two isolated ablation tasks (section 5.3): a measure from the sum of
               its column's other measures; the next measure of a part from a 3-layer LSTM.

State-dict names: `measure.*` (engine.measure.model), `context.{inp,mask,instrument,column_beats,
column_unit,column_key (with key_context),blocks.N.*,out}`, for AR `context.{bos,query_blocks.N.*}`, for the single-part task
`context.{inp,bos,instrument,lstms.N.*,reads.N,mixes.N,ln,out}`.

Relative attention (Shaw et al. 2018): score_ij = q_i . (k_j + a^m[dm_ij] + a^p[dp_ij] + a^s[same_ij]) / sqrt(d)
with learned per-head vectors for the clipped measure distance, part distance and same-part flag.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ModelError
from engine.measure.batch import CellBatch, beat_unit_index
from engine.measure.model import MeasureConfig, MeasureModel


def sinusoid(positions: torch.Tensor, d: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of measure positions [...] -> [..., d]."""
    half = d // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angle = positions.float().unsqueeze(-1) * freq
    return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


@dataclass
class GridLayout:
    """Where each token of a batch of grids sits: [B, N] tensors (N = longest flattened grid)."""

    part: torch.Tensor  # row index
    column: torch.Tensor  # column index within the piece (or crop)
    valid: torch.Tensor  # bool: a real cell
    instrument: torch.Tensor  # instrument vocabulary index
    beat_unit: torch.Tensor
    n_beats: torch.Tensor
    key: torch.Tensor | None = None  # key signature index (`key_index`), for models with `key_context`


def key_index(sharps: int | None) -> int:
    """0..14 for a key signature of -7..7 sharps (none reads as C); a transposition's 8 or more sharps
    or flats are the enharmonic signature within 6 (the same pitch classes)."""
    sharps = sharps or 0
    while sharps > 7:
        sharps -= 12
    while sharps < -7:
        sharps += 12
    return sharps + 7


class RelativeAttention(nn.Module):
    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d, h = config.d_model, config.n_heads
        self.h, self.dh = h, d // h
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)
        self.rm = config.max_measure_distance
        self.rp = config.max_part_distance
        self.measure_distance = nn.Parameter(torch.randn(2 * self.rm + 1, self.dh) * 0.02)
        self.part_distance = nn.Parameter(torch.randn(2 * self.rp + 1, self.dh) * 0.02)
        self.same_part = nn.Parameter(torch.randn(2, self.dh) * 0.02)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, memory, q_part, q_column, k_part, k_column, allowed):
        """x [B, Nq, d] attends to memory [B, Nk, d]; allowed [B, Nq, Nk] bool."""
        B, Nq, _ = x.shape
        Nk = memory.shape[1]
        q = self.q(x).view(B, Nq, self.h, self.dh).transpose(1, 2)
        k, v = self.kv(memory).view(B, Nk, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        dm = (k_column.unsqueeze(1) - q_column.unsqueeze(2)).clamp(-self.rm, self.rm) + self.rm
        dp = (k_part.unsqueeze(1) - q_part.unsqueeze(2)).clamp(-self.rp, self.rp) + self.rp
        same = (k_part.unsqueeze(1) == q_part.unsqueeze(2)).long()
        for table, index in ((self.measure_distance, dm), (self.part_distance, dp), (self.same_part, same)):
            rel = q @ table.t()  # [B, h, Nq, R]
            scores = scores + rel.gather(-1, index.unsqueeze(1).expand(-1, self.h, -1, -1))
        scores = scores / math.sqrt(self.dh)
        scores = scores.masked_fill(~allowed.unsqueeze(1), -1e9)
        attention = self.dropout(F.softmax(scores, -1))
        return self.o((attention @ v).transpose(1, 2).reshape(B, Nq, -1))


class AttentionBlock(nn.Module):
    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = RelativeAttention(config)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(config.dropout))

    def forward(self, x, layout: GridLayout, allowed, memory=None, memory_layout: GridLayout | None = None):
        memory_layout = memory_layout or layout
        h = self.ln1(x)
        m = h if memory is None else memory
        x = x + self.attn(h, m, layout.part, layout.column, memory_layout.part, memory_layout.column, allowed)
        return x + self.mlp(self.ln2(x))


class DilatedPartLSTM(nn.Module):
    """A BiLSTM along the measures of each part, over every `dilation`-th measure (the
    interleaved subsequences are run as separate sequences): a residual block."""

    def __init__(self, config: MeasureConfig, dilation: int) -> None:
        super().__init__()
        d = config.d_model
        self.dilation = dilation
        self.ln = nn.LayerNorm(d)
        self.lstm = nn.LSTM(d, d // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, layout: GridLayout, allowed=None, **_):
        """x [B, N, d] in row-major grid order: B pieces of P parts x M columns (N = P * M)."""
        B, N, d = x.shape
        P = int(layout.part.max()) + 1
        M = N // P
        g = self.ln(x).view(B * P, M, d)
        D = self.dilation
        pad = (-M) % D
        if pad:
            g = torch.cat([g, g.new_zeros(B * P, pad, d)], 1)
        Mp = M + pad
        seqs = g.view(B * P, Mp // D, D, d).transpose(1, 2).reshape(B * P * D, Mp // D, d)
        out, _ = self.lstm(seqs)
        out = out.view(B * P, D, Mp // D, d).transpose(1, 2).reshape(B * P, Mp, d)[:, :M]
        return x + self.dropout(out.reshape(B, N, d))


class _ContextBase(nn.Module):
    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.inp = nn.Linear(config.d_measure, d)
        self.instrument = nn.Embedding(len(config.instruments), d)
        self.column_beats = nn.Embedding(config.max_beats + 1, d)
        self.column_unit = nn.Embedding(len(config.beat_units), d)
        if config.key_context:
            self.column_key = nn.Embedding(15, d)
        self.out = nn.Linear(d, config.d_measure)

    def position(self, layout: GridLayout) -> torch.Tensor:
        """What is known of a cell without its content: instrument, measure position, meter (and key)."""
        known = (
            self.instrument(layout.instrument)
            + sinusoid(layout.column, self.config.d_model)
            + self.column_beats(layout.n_beats.clamp(max=self.config.max_beats))
            + self.column_unit(layout.beat_unit)
        )
        if self.config.key_context:
            known = known + self.column_key(layout.key)
        return known


class CSDContext(_ContextBase):
    def __init__(self, config: MeasureConfig) -> None:
        super().__init__(config)
        self.mask = nn.Parameter(torch.randn(config.d_measure) * 0.02)
        blocks = []
        for name in config.layers:
            if name.startswith("lstm"):
                blocks.append(DilatedPartLSTM(config, int(name[4:] or 1)))
            elif name == "attn":
                blocks.append(AttentionBlock(config))
            else:
                raise ValueError(f"unknown context layer {name!r}")
        self.blocks = nn.ModuleList(blocks)
        self.ln = nn.LayerNorm(config.d_model)

    def forward(self, h, memory, masked, layout: GridLayout):
        """h [B, N, dm], memory [B, N, K, V], masked [B, N] -> (c [B, N, dm], M~ [B, N, K, V])."""
        h = torch.where(masked.unsqueeze(-1), self.mask.expand_as(h), h)
        x = self.inp(h) + self.position(layout)
        allowed = layout.valid.unsqueeze(1) & layout.valid.unsqueeze(2)
        allowed = allowed | torch.eye(x.shape[1], dtype=torch.bool, device=x.device).unsqueeze(0)
        for block in self.blocks:
            x = block(x, layout, allowed)
        c = self.out(self.ln(x))
        visible = memory * (~masked & layout.valid).float()[..., None, None]
        B, N = masked.shape
        P = int(layout.part.max()) + 1
        column_sum = visible.view(B, P, N // P, *memory.shape[2:]).sum(1, keepdim=True)
        return c, column_sum.expand(B, P, N // P, *memory.shape[2:]).reshape(memory.shape)


class ARContext(_ContextBase):
    def __init__(self, config: MeasureConfig) -> None:
        super().__init__(config)
        self.bos = nn.Parameter(torch.randn(config.d_model) * 0.02)
        self.blocks = nn.ModuleList(AttentionBlock(config) for name in config.layers if name == "attn")
        self.query_blocks = nn.ModuleList(AttentionBlock(config) for _ in range(config.query_layers))
        self.ln = nn.LayerNorm(config.d_model)

    def forward(self, h, memory, layout: GridLayout):
        """Tokens in generation order: h [B, N, dm] (cell i's own encoding is never seen by its
        prediction) -> (c [B, N, dm], M~ [B, N, K, V])."""
        B, N, _ = h.shape
        device = h.device
        context = torch.cat([self.bos.expand(B, 1, -1), self.inp(h) + self.position(layout)], 1)
        ctx_layout = GridLayout(
            part=torch.cat([layout.part[:, :1], layout.part], 1),
            column=torch.cat([layout.column[:, :1] - 1, layout.column], 1),
            valid=torch.cat([torch.ones(B, 1, dtype=torch.bool, device=device), layout.valid], 1),
            instrument=layout.instrument, beat_unit=layout.beat_unit, n_beats=layout.n_beats, key=layout.key,
        )
        causal = torch.tril(torch.ones(N + 1, N + 1, dtype=torch.bool, device=device))
        allowed = causal.unsqueeze(0) & ctx_layout.valid.unsqueeze(1)
        for block in self.blocks:
            context = block(context, ctx_layout, allowed)
        # query i sees BOS and the history tokens 0..i-1 (context positions 0..i)
        query = self.position(layout)
        allowed_q = causal[1:].unsqueeze(0) & ctx_layout.valid.unsqueeze(1)
        for block in self.query_blocks:
            query = block(query, layout, allowed_q, memory=context, memory_layout=ctx_layout)
        c = self.out(self.ln(query))
        same_column = (layout.column.unsqueeze(2) == layout.column.unsqueeze(1))
        earlier = torch.tril(torch.ones(N, N, dtype=torch.bool, device=device), -1)
        weights = (same_column & earlier & layout.valid.unsqueeze(1)).float()
        aggregated = torch.einsum("bij,bjkv->bikv", weights, memory)
        return c, aggregated


class ConcurrentContext(nn.Module):
    """The paper's concurrent-measure task (section 5.3): each measure is predicted from the other
    measures of its column alone. The decoder input is the sum of their encodings (projected, plus
    the target part's instrument) and the decoder matrix the sum of their memory matrices. Nothing
    tells the decoder the measure's length: it must come from the context measures."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d = config.d_model
        self.inp = nn.Linear(config.d_measure, d)
        self.instrument = nn.Embedding(len(config.instruments), d)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(d, config.d_measure))

    def forward(self, h, memory, layout: GridLayout):
        """h [B, N, dm], memory [B, N, K, V] in row-major grid order -> (c, M~), each cell from the others."""
        B, N = layout.valid.shape
        P = int(layout.part.max()) + 1
        keep = layout.valid.float()
        h = h * keep[..., None]
        memory = memory * keep[..., None, None]
        h_sum = h.view(B, P, N // P, -1).sum(1, keepdim=True).expand(B, P, N // P, h.shape[-1]).reshape(h.shape)
        m_sum = memory.view(B, P, N // P, *memory.shape[2:]).sum(1, keepdim=True)
        m_sum = m_sum.expand(B, P, N // P, *memory.shape[2:]).reshape(memory.shape)
        c = self.out(self.inp(h_sum - h) + self.instrument(layout.instrument))
        return c, m_sum - memory


class SinglePartContext(nn.Module):
    """The paper's single-part task (section 5.3): the next measure of one part from its previous
    measures, with a three-layer LSTM whose every layer reads the memory matrix. Form chosen (the
    text gives no equations): x_t = W h_{t-1} (a BOS vector at t = 0) + instrument; per layer
    o = LSTM(x), r_t = softmax(W_r o_t) M_{t-1}, x = x + W_o [o; r]; the decoder matrix of measure t
    is M_{t-1}, the memory of the previous measure (the only one written in a single part)."""

    def __init__(self, config: MeasureConfig, n_layers: int = 3) -> None:
        super().__init__()
        d = config.d_model
        self.use_memory = config.memory
        self.inp = nn.Linear(config.d_measure, d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.instrument = nn.Embedding(len(config.instruments), d)
        self.lstms = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(n_layers))
        self.reads = nn.ModuleList(nn.Linear(d, config.mem_key) for _ in range(n_layers))
        self.mixes = nn.ModuleList(nn.Linear(d + config.mem_val, d) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, config.d_measure)

    def forward(self, h, memory, layout: GridLayout):
        """h [B, N, dm], memory [B, N, K, V] in row-major grid order; every part is its own sequence."""
        B, N = layout.valid.shape
        P = int(layout.part.max()) + 1
        M = N // P
        keep = layout.valid.float()
        h = (h * keep[..., None]).view(B * P, M, -1)
        memory = (memory * keep[..., None, None]).view(B * P, M, *memory.shape[2:])
        previous = torch.cat([memory.new_zeros(B * P, 1, *memory.shape[2:]), memory[:, :-1]], 1)
        x = torch.cat([self.bos.expand(B * P, 1, -1), self.inp(h[:, :-1])], 1)
        x = x + self.instrument(layout.instrument).view(B * P, M, -1)
        for lstm, read, mix in zip(self.lstms, self.reads, self.mixes):
            o, _ = lstm(x)
            r = (F.softmax(read(o), -1).unsqueeze(-2) @ previous).squeeze(-2)
            if not self.use_memory:
                r = torch.zeros_like(r)
            x = x + mix(torch.cat([o, r], -1))
        c = self.out(self.ln(x))
        return c.view(B, N, -1), previous.view(B, N, *memory.shape[2:])


CONTEXTS = {"csd": CSDContext, "ar": ARContext, "concurrent": ConcurrentContext, "single": SinglePartContext}


class MeasureLM(nn.Module):
    """A measure model with its inter-measure model; `kind` in the config chooses CSD, AR or one of
    the ablation tasks' context models."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        self.config = config
        self.measure = MeasureModel(config)
        self.context = CONTEXTS[config.kind](config)

    # -- losses ------------------------------------------------------------------------------

    def csd_loss(self, batch: CellBatch, layout: GridLayout, cell_index: torch.Tensor, masked: torch.Tensor,
                 generator=None) -> dict[str, torch.Tensor]:
        """Masked conditional specification loss (eq. 22-24, form chosen in docs/measure_model.md):

            L_mask = 1/B sum_b 1/|Mask_b| sum_{i in Mask_b} -log p(x_i | x_unmasked)
            L_rec  = 1/B sum_b 1/|~Mask_b| sum_{i not in Mask_b} -log p(x_i | corrupt(x)_unmasked)
            L      = L_mask + lambda L_rec

        `cell_index` [B, N] maps grid tokens to rows of `batch` (-1: padding); masked [B, N]."""
        valid = layout.valid
        corrupt = torch.zeros(batch.n_cells, dtype=torch.bool)
        corrupt[cell_index[valid & ~masked]] = self.training
        h, memory = self.measure.encode(batch, corrupt=corrupt, generator=generator)
        hg, mg = self._to_grid(h, memory, cell_index)
        c, m_in = self.context(hg, mg, masked, layout)
        nll = self.measure.cell_nll(batch, *self._from_grid(c, m_in, cell_index, valid, batch.n_cells))
        cell_nll = self._grid_values(nll["total"], cell_index)  # [B, N]
        mask_f = (masked & valid).float()
        rest_f = (~masked & valid).float()
        loss_mask = ((cell_nll * mask_f).sum(1) / mask_f.sum(1).clamp(min=1)).mean()
        loss_rec = ((cell_nll * rest_f).sum(1) / rest_f.sum(1).clamp(min=1)).mean()
        loss = loss_mask + self.config.reconstruction_weight * loss_rec
        out = {"loss": loss, "nll_masked": loss_mask, "nll_unmasked": loss_rec, "n_masked": mask_f.sum()}
        for key in ("beat_unit", "voice_count", "stop", "duration", "chord"):
            out[key] = (self._grid_values(nll[key], cell_index) * mask_f).sum() / mask_f.sum().clamp(min=1)
        return out

    def ar_loss(self, batch: CellBatch, layout: GridLayout, cell_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """L = -1/B sum_b 1/N_b sum_i log p(x_i | context_i): for AR, context_i = x_<i in the shuffled
        column-first order (eq. 19); for the ablation tasks, the column's other measures
        ("concurrent") or the part's earlier measures ("single")."""
        h, memory = self.measure.encode(batch)
        hg, mg = self._to_grid(h, memory, cell_index)
        c, m_in = self.context(hg, mg, layout)
        nll = self.measure.cell_nll(batch, *self._from_grid(c, m_in, cell_index, layout.valid, batch.n_cells))
        cell_nll = self._grid_values(nll["total"], cell_index)
        valid = layout.valid.float()
        loss = ((cell_nll * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
        return {"loss": loss, "nll_masked": loss, "n_masked": valid.sum()}

    @staticmethod
    def _to_grid(h, memory, cell_index):
        index = cell_index.clamp(min=0)
        keep = (cell_index >= 0).float()
        return h[index] * keep[..., None], memory[index] * keep[..., None, None]

    @staticmethod
    def _from_grid(c, m_in, cell_index, valid, n_cells):
        cond = c.new_zeros(n_cells, c.shape[-1])
        mem = m_in.new_zeros(n_cells, *m_in.shape[2:])
        cond[cell_index[valid]] = c[valid]
        mem[cell_index[valid]] = m_in[valid]
        return cond, mem

    @staticmethod
    def _grid_values(values, cell_index):
        return values[cell_index.clamp(min=0)] * (cell_index >= 0)

    # -- files -------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """model.safetensors + config.json in `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        # the note embedding is shared by the chord encoder and decoder: store it once
        state = {k: v for k, v in state.items() if not k.startswith(("measure.chord_enc.note.", "measure.chord_dec.note."))}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "measure-model-1"})
        self.config.save(directory / "config.json")

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> MeasureLM:
        """Inverse of `save_pretrained`, in eval mode."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            config = MeasureConfig.load(directory / "config.json")
            state = load_file(str(directory / "model.safetensors"), device=map_location)
        except (OSError, ValueError, json.JSONDecodeError, SafetensorError) as exc:
            raise ModelError(f"cannot load the measure model from {directory}: {exc}") from exc
        model = cls(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("measure.chord_enc.note.", "measure.chord_dec.note."))]
        if missing or unexpected:
            raise ModelError(f"{directory}: checkpoint does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.eval()
        return model


def grid_layout_for(config: MeasureConfig, cells_grid, instruments: list[str],
                    keys: list[int | None] | None = None) -> tuple[GridLayout, list]:
    """Layout of one piece's cells [P][M] in row-major order (batch of 1) and the flat cell list;
    `keys` are the columns' key signatures (sharps)."""
    P, M = len(cells_grid), len(cells_grid[0])
    part = torch.arange(P).repeat_interleave(M).view(1, -1)
    column = torch.arange(M).repeat(P).view(1, -1)
    flat = [cells_grid[p][m] for p in range(P) for m in range(M)]
    layout = GridLayout(
        part=part, column=column, valid=torch.ones(1, P * M, dtype=torch.bool),
        instrument=torch.tensor([[config.instrument_index(t) for t in instruments for _ in range(M)]]),
        beat_unit=torch.tensor([[beat_unit_index(c.beat_unit, list(config.beat_units)) for c in flat]]),
        n_beats=torch.tensor([[c.n_beats for c in flat]]),
        key=torch.tensor([[key_index(keys[m] if keys else None) for _ in range(P) for m in range(M)]]),
    )
    return layout, flat
