"""The measure model (Yan & Duan, section 2): encoders and decoders of chords, durations, voices and
part-wise measures, with position-indexed measure memory matrices.

State-dict names (nanoGPT-like: one module per object of the hierarchy)

    note.pitch, note.tie              note embedding = pitch embedding * tie embedding (eq. 1)
    chord_enc.proj                    chord encoder: projection of the sum of note embeddings (eq. 2)
    chord_dec.{init,start,gru,pitch_head,tie_head}
                                      chord decoder: GRU over notes, TERMINATE ends the chord (eq. 3-4)
    dur_enc.{digit,proj}              duration encoder: shared exponent-digit embeddings, concatenated (eq. 6)
    dur_dec.{digit,position,hidden,head}
                                      duration decoder: p(e1|c) p(e2|e1,c) ... masked-MLP form (eq. 7)
    voice_enc.{lstm,proj,rhythm_lstm,key.*,value}
                                      voice encoder: BiLSTM over [chord, duration, position] (eq. 8-9) and
                                      the measure memory writer M = sum_t key(r_t) value(r_t)^T (eq. 9-13)
    voice_dec.{init,start_chord,start_dur,lstm,read,out,stop}
                                      voice decoder: stop, then duration, then chord (eq. 14-16)
    measure_enc.{proj,beat_unit}      measure encoder: voice aggregation + beat-unit embedding (eq. 17)
    measure_dec.{beat_unit,init,start,gru,stop,voice_cond}
                                      measure decoder: beat unit, then voices with a GRU (section 2.5)

Everything is teacher-forced in parallel for training (`MeasureModel.cell_nll`); `decode_cell`
samples one measure step by step, optionally constrained to the measure's exact length.
Equations the paper's text lost are given in the docstrings as the form chosen here.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.measure.batch import N_PITCHES, PAD, TERMINATE, CellBatch, beat_unit_index, event_from_tensors, make_batch
from engine.measure.cells import (
    MAX_EXPONENT,
    MIN_EXPONENT,
    PRIMES,
    Cell,
    ChordEvent,
    duration_exponents,
)

N_DIGITS = MAX_EXPONENT - MIN_EXPONENT + 1
N_PRIMES = len(PRIMES)
KEY_FUNCTIONS = ("identity", "softmax", "sigmoid", "skewgauss")
READERS = ("attention", "position")
KINDS = ("csd", "ar", "concurrent", "single")


@dataclass
class MeasureConfig:
    """Sizes and choices of a measure model and its inter-measure context model (JSON round-trip)."""

    kind: str = "csd"  # "csd" (masked conditional specification), "ar" (autoregressive measures), or the
    # paper's two isolated ablation tasks (section 5.3): "concurrent" (a measure from the other parts'
    # measures of its column) and "single" (the next measure of one part from its previous ones)
    d_note: int = 64
    d_chord: int = 64
    d_digit: int = 16
    d_dur: int = 32
    n_harmonics: int = 4  # within-beat position signal: sin/cos of 2 pi k p, k = 1..n_harmonics
    d_voice_lstm: int = 64  # each direction
    d_voice: int = 128
    d_measure: int = 128
    d_chord_dec: int = 96
    d_voice_dec: int = 128
    d_measure_dec: int = 128
    mem_key: int = 16
    mem_val: int = 32
    key_function: str = "softmax"
    reader: str = "attention"
    position_signal: bool = True  # False: the "-pos" ablation (no within-beat position signal)
    memory: bool = True  # False: the "no measure memory matrices" ablation (the decoder reads zeros)
    # inter-measure context model
    d_model: int = 128
    n_heads: int = 4
    layers: tuple[str, ...] = ("lstm1", "attn", "lstm2", "attn")  # "lstmD": dilated BiLSTM along a part
    query_layers: int = 2  # AR only: cross-attention blocks from the next measure's query
    max_measure_distance: int = 16
    max_part_distance: int = 8
    dropout: float = 0.1
    # vocabularies
    instruments: tuple[str, ...] = ("<unk>",)
    instrument_scheme: str = "names"  # engine.measure.instruments: "names" (chorale model) or "classes"
    key_context: bool = False  # the column's key signature is an input of the context model
    beat_units: tuple[str, ...] = ("other", "1/2", "1", "3/2", "2", "3")
    max_beats: int = 12
    max_voices: int = 4
    max_events: int = 64
    max_notes: int = 8
    # training
    reconstruction_weight: float = 0.5
    corrupt_pitch: float = 0.1
    corrupt_duration: float = 0.05
    corrupt_drop: float = 0.05

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.instruments = tuple(self.instruments)
        self.beat_units = tuple(self.beat_units)
        if self.key_function not in KEY_FUNCTIONS:
            raise ValueError(f"key_function must be one of {KEY_FUNCTIONS}")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> MeasureConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown measure config keys: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MeasureConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def length_given(self) -> bool:
        """Whether the decoder is told the measure's length (onset / n_beats as an input). CSD and AR
        know it from the time signature; the ablation tasks must infer it from the context, as the
        paper's length accuracy test requires."""
        return self.kind in ("csd", "ar")

    def instrument_index(self, token: str) -> int:
        if token in self.instruments:
            return self.instruments.index(token)
        base = token.split("_shifted")[0]
        return self.instruments.index(base) if base in self.instruments else 0


def position_signal(onset: torch.Tensor, n_harmonics: int) -> torch.Tensor:
    """Within-beat position signal (eq. 8, form chosen): [sin 2 pi k p, cos 2 pi k p], k = 1..K.
    Periodic with a period of one beat, as the paper requires."""
    k = torch.arange(1, n_harmonics + 1, device=onset.device, dtype=onset.dtype)
    angle = 2 * math.pi * onset.unsqueeze(-1) * k
    return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


def sequence_mask_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# chords
# ---------------------------------------------------------------------------------------------


class NoteEmbedding(nn.Module):
    """noteEmbed(pitch, tie) = pitchEmbed(pitch) * tieEmbed(tie) (element-wise, eq. 1)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.pitch = nn.Embedding(N_PITCHES, d)
        self.tie = nn.Embedding(2, d)
        nn.init.normal_(self.tie.weight, 1.0, 0.1)

    def forward(self, pitch: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
        return self.pitch(pitch) * self.tie(tie)


class ChordEncoder(nn.Module):
    """h = W sum_k noteEmbed(pitch_k, tie_k): invariant to the order of the notes (eq. 2)."""

    def __init__(self, config: MeasureConfig, note: NoteEmbedding) -> None:
        super().__init__()
        self.note = note
        self.proj = nn.Linear(config.d_note, config.d_chord)

    def forward(self, pitch, tie, mask) -> torch.Tensor:
        notes = self.note(pitch, tie) * mask.unsqueeze(-1)
        return self.proj(notes.sum(-2))


class ChordDecoder(nn.Module):
    """p(chord | c) = prod_k p(pitch_k | <k, c) p(tie_k | pitch_k, <k, c), ending with TERMINATE
    (eq. 3-4). A GRU reads the previous notes; the tie head sees the chosen pitch's embedding."""

    def __init__(self, config: MeasureConfig, note: NoteEmbedding, d_cond: int) -> None:
        super().__init__()
        self.note = note
        d = config.d_chord_dec
        self.init = nn.Linear(d_cond, d)
        self.start = nn.Parameter(torch.zeros(config.d_note))
        self.gru = nn.GRU(config.d_note, d, batch_first=True)
        self.pitch_head = nn.Linear(d, N_PITCHES)
        self.tie_head = nn.Linear(d + config.d_note, 2)

    def _states(self, cond, pitch, tie):
        """GRU outputs before each note: inputs are start, note_1, ..., note_{K-1}."""
        prev = self.note(pitch[:, :-1], tie[:, :-1])
        inputs = torch.cat([self.start.expand(pitch.shape[0], 1, -1), prev], 1)
        h0 = torch.tanh(self.init(cond)).unsqueeze(0)
        out, _ = self.gru(inputs, h0)
        return out

    def nll(self, cond, pitch, tie, mask) -> torch.Tensor:
        """Per-chord negative log-likelihood: cond [E, d], pitch/tie/mask [E, K] -> [E]."""
        out = self._states(cond, pitch, tie)
        pitch_nll = F.cross_entropy(self.pitch_head(out).transpose(1, 2), pitch, reduction="none")
        tie_logits = self.tie_head(torch.cat([out, self.note.pitch(pitch)], -1))
        tie_nll = F.cross_entropy(tie_logits.transpose(1, 2), tie, reduction="none")
        tie_nll = tie_nll * (pitch >= 2)  # TERMINATE and PAD carry no tie
        return ((pitch_nll + tie_nll) * mask).sum(-1)

    @torch.no_grad()
    def sample(self, cond, temperature: float, generator, allow_pad: bool, force_pad: bool,
               max_notes: int) -> list[tuple[int, int]]:
        """One chord for cond [1, d]: a list of (pitch index, tie), TERMINATE excluded."""
        h = torch.tanh(self.init(cond)).unsqueeze(0)
        x = self.start.view(1, 1, -1)
        notes: list[tuple[int, int]] = []
        for k in range(max_notes + 1):
            out, h = self.gru(x, h)
            logits = self.pitch_head(out[0, -1]) / max(temperature, 1e-4)
            if force_pad and k == 0:
                p = PAD
            elif (notes and notes[0][0] == PAD) or k == max_notes:
                p = TERMINATE
            else:
                banned = [q for q, _ in notes]
                if not allow_pad or k > 0:
                    banned.append(PAD)
                if banned:
                    logits[banned] = -float("inf")
                p = int(torch.multinomial(F.softmax(logits, -1), 1, generator=generator))
            if p == TERMINATE:
                break
            tie = 0
            if p >= 2:
                tie_logits = self.tie_head(torch.cat([out[0, -1], self.note.pitch.weight[p]])) / max(temperature, 1e-4)
                tie = int(torch.multinomial(F.softmax(tie_logits, -1), 1, generator=generator))
            notes.append((p, tie))
            x = self.note(torch.tensor([[p]]), torch.tensor([[tie]]))
        return notes


# ---------------------------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------------------------


class DurationEncoder(nn.Module):
    """h = W [digit(e_1); ...; digit(e_5)]: one digit embedding shared by all primes (eq. 6)."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        self.digit = nn.Embedding(N_DIGITS, config.d_digit)
        self.proj = nn.Linear(N_PRIMES * config.d_digit, config.d_dur)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        return self.proj(self.digit(digits).flatten(-2))


class DurationDecoder(nn.Module):
    """p(e | c) = prod_i p(e_i | e_<i, c) (eq. 7). Each factor is an MLP of c and the embeddings of
    the earlier digits (later ones masked to zero), like MADE: all factors in one pass."""

    def __init__(self, config: MeasureConfig, d_cond: int) -> None:
        super().__init__()
        self.digit = nn.Embedding(N_DIGITS, config.d_digit)
        self.position = nn.Embedding(N_PRIMES, config.d_digit)
        d = config.d_voice_dec
        self.hidden = nn.Linear(d_cond + (N_PRIMES + 1) * config.d_digit, d)
        self.head = nn.Linear(d, N_DIGITS)
        self.register_buffer("causal", torch.tril(torch.ones(N_PRIMES, N_PRIMES), -1), persistent=False)

    def logits(self, cond: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """cond [..., d], digits [..., 5] -> logits [..., 5, N_DIGITS] (teacher forcing)."""
        emb = self.digit(digits)  # [..., 5, dd]
        earlier = self.causal.view(*([1] * (digits.dim() - 1)), N_PRIMES, N_PRIMES, 1) * emb.unsqueeze(-3)
        earlier = earlier.flatten(-2)  # [..., 5, 5*dd]
        pos = self.position.weight.expand(*digits.shape[:-1], -1, -1)
        c = cond.unsqueeze(-2).expand(*digits.shape[:-1], N_PRIMES, cond.shape[-1])
        return self.head(F.gelu(self.hidden(torch.cat([c, earlier, pos], -1))))

    def nll(self, cond, digits) -> torch.Tensor:
        logp = F.log_softmax(self.logits(cond, digits), -1)
        return -logp.gather(-1, digits.unsqueeze(-1)).squeeze(-1).sum(-1)

    def score(self, cond: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """log p of each candidate: cond [d], candidates [C, 5] -> [C]."""
        return -self.nll(cond.expand(candidates.shape[0], -1), candidates)

    @torch.no_grad()
    def sample(self, cond, temperature, generator) -> torch.Tensor:
        digits = torch.full((1, N_PRIMES), -MIN_EXPONENT, dtype=torch.long)  # exponent 0
        for i in range(N_PRIMES):
            logits = self.logits(cond, digits)[0, i] / max(temperature, 1e-4)
            digits[0, i] = int(torch.multinomial(F.softmax(logits, -1), 1, generator=generator))
        return digits[0]


# ---------------------------------------------------------------------------------------------
# voices and the measure memory
# ---------------------------------------------------------------------------------------------


class MemoryKey(nn.Module):
    """key(r_t, p_t) of the memory writer (eq. 10-12, forms chosen where lost):

    identity / softmax / sigmoid:  key = f(W r_t)
    skewgauss:  key_j = exp(-(q_j - p_t)^2 / (2 s_t^2)) * sigmoid(a_t (q_j - p_t) / s_t), with
                q_j = (j + 1/2) / memKeySize the equal-distance positions of the matrix columns,
                p_t the onset normalised to [0, 1) in the measure, and (s_t, a_t) = FNN(r_t)
                (s_t = 0.02 + softplus): a skewed Gaussian bump placed at the event's position."""

    def __init__(self, config: MeasureConfig, d_in: int) -> None:
        super().__init__()
        self.kind = config.key_function
        self.size = config.mem_key
        if self.kind == "skewgauss":
            self.fnn = nn.Sequential(nn.Linear(d_in, 32), nn.GELU(), nn.Linear(32, 2))
            self.register_buffer("grid", (torch.arange(self.size) + 0.5) / self.size, persistent=False)
        else:
            self.proj = nn.Linear(d_in, self.size)

    def forward(self, r: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if self.kind == "skewgauss":
            s, a = self.fnn(r).unbind(-1)
            s = 0.02 + F.softplus(s)
            x = (self.grid - position.unsqueeze(-1)) / s.unsqueeze(-1)
            return torch.exp(-0.5 * x**2) * torch.sigmoid(a.unsqueeze(-1) * x)
        k = self.proj(r)
        if self.kind == "softmax":
            return F.softmax(k, -1)
        if self.kind == "sigmoid":
            return torch.sigmoid(k)
        return k


class VoiceEncoder(nn.Module):
    """h_v = W mean_t BiLSTM([chord_t; dur_t; pos_t]) (eq. 9), and the voice's memory matrix
    M_v = sum_t key(r_t, p_t) value(r_t)^T with r_t = BiLSTM([dur_t; pos_t]) (rhythm only) and
    value(r) = W_v r (eq. 13, form chosen)."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d_pos = 2 * config.n_harmonics
        h = config.d_voice_lstm
        self.lstm = nn.LSTM(config.d_chord + config.d_dur + d_pos, h, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * h, config.d_voice)
        self.rhythm_lstm = nn.LSTM(config.d_dur + d_pos, h, batch_first=True, bidirectional=True)
        self.key = MemoryKey(config, 2 * h)
        self.value = nn.Linear(2 * h, config.mem_val)

    def forward(self, chord, dur, pos, mask, position):
        """chord/dur/pos [V, T, *], mask [V, T], position (normalised onsets) [V, T] ->
        (h [V, d_voice], M [V, mem_key, mem_val])."""
        lengths = mask.sum(1).clamp(min=1).cpu()
        out = self._run(self.lstm, torch.cat([chord, dur, pos], -1), lengths)
        h = self.proj(sequence_mask_mean(out, mask))
        r = self._run(self.rhythm_lstm, torch.cat([dur, pos], -1), lengths)
        key = self.key(r, position) * mask.unsqueeze(-1)
        memory = key.transpose(1, 2) @ self.value(r)
        return h, memory

    @staticmethod
    def _run(lstm, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class VoiceDecoder(nn.Module):
    """Autoregressive chord-duration tuples (section 2.4). At step t an LSTM reads the previous
    event and the position signal of the current onset; its output o_t reads the measure matrix
    (eq. 14-15, forms chosen):

        attention reader:      a_t = softmax(W_a [o_t; pos(p_t); p_t / n]),  m_t = a_t M
        position-only reader:  a_t = softmax(W_a [pos(p_t); p_t / n])

    f_t = tanh(W [o_t; m_t; c]) feeds the stop predictor, then the duration decoder, then the chord
    decoder (conditioned on f_t and the embedding of the chosen duration)."""

    def __init__(self, config: MeasureConfig, d_cond: int) -> None:
        super().__init__()
        d_pos = 2 * config.n_harmonics
        d = config.d_voice_dec
        self.reader = config.reader
        self.use_memory = config.memory
        self.init = nn.Linear(d_cond, 2 * d)
        self.start_chord = nn.Parameter(torch.zeros(config.d_chord))
        self.start_dur = nn.Parameter(torch.zeros(config.d_dur))
        self.lstm = nn.LSTM(config.d_chord + config.d_dur + d_pos + 1 + d_cond, d, batch_first=True)
        read_in = (d if self.reader == "attention" else 0) + d_pos + 1
        self.read = nn.Linear(read_in, config.mem_key)
        self.out = nn.Linear(d + config.mem_val + d_cond, d)
        self.stop = nn.Linear(d, 1)

    def initial_state(self, cond):
        h, c = torch.tanh(self.init(cond)).chunk(2, -1)
        return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def features(self, cond, memory, prev_chord, prev_dur, pos, frac, state=None):
        """cond [V, dc], memory [V, K, Vm], prev_* / pos / frac [V, S, *] -> (f [V, S, d], state)."""
        S = pos.shape[1]
        c = cond.unsqueeze(1).expand(-1, S, -1)
        x = torch.cat([prev_chord, prev_dur, pos, frac.unsqueeze(-1), c], -1)
        o, state = self.lstm(x, state if state is not None else self.initial_state(cond))
        query = torch.cat([o, pos, frac.unsqueeze(-1)], -1) if self.reader == "attention" else torch.cat([pos, frac.unsqueeze(-1)], -1)
        attention = F.softmax(self.read(query), -1)
        read = attention @ memory if self.use_memory else memory.new_zeros(*attention.shape[:-1], memory.shape[-1])
        return torch.tanh(self.out(torch.cat([o, read, c], -1))), state


class MeasureEncoder(nn.Module):
    """h = W sum_v h_v + beatUnitEmbed(u), M = sum_v M_v (eq. 17, form chosen)."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.d_voice, config.d_measure)
        self.beat_unit = nn.Embedding(len(config.beat_units), config.d_measure)


class MeasureDecoder(nn.Module):
    """Beat unit from c, then voices one by one: a GRU over the encodings of the voices decoded so
    far predicts whether another voice follows and gives the next voice decoder's input."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        d = config.d_measure_dec
        self.beat_unit = nn.Linear(config.d_measure, len(config.beat_units))
        self.init = nn.Linear(config.d_measure, d)
        self.start = nn.Parameter(torch.zeros(config.d_voice))
        self.gru = nn.GRU(config.d_voice, d, batch_first=True)
        self.stop = nn.Linear(d, 1)
        self.voice_cond = nn.Linear(d + config.d_measure, config.d_voice_dec)


# ---------------------------------------------------------------------------------------------
# the measure model
# ---------------------------------------------------------------------------------------------


class MeasureModel(nn.Module):
    """Encoder and decoder of part-wise measures. `encode` gives (h [N, d_measure], M [N, K, V]);
    `cell_nll` scores cells given decoder inputs (c [N, d_measure], M~ [N, K, V])."""

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        self.config = config
        self.note = NoteEmbedding(config.d_note)
        self.chord_enc = ChordEncoder(config, self.note)
        self.dur_enc = DurationEncoder(config)
        self.voice_enc = VoiceEncoder(config)
        self.measure_enc = MeasureEncoder(config)
        self.voice_dec = VoiceDecoder(config, config.d_voice_dec)
        self.dur_dec = DurationDecoder(config, config.d_voice_dec)
        self.chord_dec = ChordDecoder(config, self.note, config.d_voice_dec + config.d_dur)
        self.measure_dec = MeasureDecoder(config)

    # -- encoding --------------------------------------------------------------------------

    def _event_inputs(self, batch: CellBatch, pitch=None, duration=None):
        pitch = batch.pitch if pitch is None else pitch
        duration = batch.duration if duration is None else duration
        chord = self.chord_enc(pitch, batch.tie, batch.encode_mask)
        dur = self.dur_enc(duration)
        onset = batch.onset[:, :-1]
        n_beats = batch.cell_n_beats[batch.voice_cell].unsqueeze(1).float()
        return chord, dur, self.position(onset), onset / n_beats

    def position(self, onset: torch.Tensor) -> torch.Tensor:
        """The within-beat position signal of onsets (zeros in the "-pos" ablation)."""
        signal = position_signal(onset, self.config.n_harmonics)
        return signal if self.config.position_signal else torch.zeros_like(signal)

    def decoder_fraction(self, onset: torch.Tensor, n_beats) -> torch.Tensor:
        """The decoder's "how far into the measure" input: onset / n_beats when the length is given,
        else onset / max_beats (a fixed scale that tells nothing of the target's length)."""
        return onset / (n_beats if self.config.length_given else self.config.max_beats)

    def encode_voices(self, batch: CellBatch, pitch=None, duration=None, drop=None):
        chord, dur, pos, frac = self._event_inputs(batch, pitch, duration)
        if drop is not None:
            chord = chord * (~drop).unsqueeze(-1)
        return self.voice_enc(chord, dur, pos, batch.event_mask, frac)

    def encode(self, batch: CellBatch, corrupt: torch.Tensor | None = None, generator=None):
        """(h [N, d_measure], M [N, mem_key, mem_val]). `corrupt` [N] bool: corrupt those cells'
        inputs (pitch distortion, duration distortion, event drop) for the reconstruction loss."""
        pitch, duration, drop = None, None, None
        if corrupt is not None and corrupt.any():
            pitch, duration, drop = self._corrupt(batch, corrupt[batch.voice_cell], generator)
        h_voice, m_voice = self.encode_voices(batch, pitch, duration, drop)
        n = batch.n_cells
        h = torch.zeros(n, h_voice.shape[-1], device=h_voice.device).index_add(0, batch.voice_cell, h_voice)
        memory = torch.zeros(n, *m_voice.shape[1:], device=m_voice.device).index_add(0, batch.voice_cell, m_voice)
        h = self.measure_enc.proj(h) + self.measure_enc.beat_unit(batch.cell_beat_unit)
        return h, memory

    def _corrupt(self, batch: CellBatch, voice_corrupt: torch.Tensor, generator):
        cfg = self.config
        events = batch.event_mask & voice_corrupt.unsqueeze(1)
        pitch = batch.pitch.clone()
        real = (pitch >= 2) & events.unsqueeze(-1)
        change = real & (torch.rand(pitch.shape, generator=generator) < cfg.corrupt_pitch)
        shift = torch.randint(-2, 3, pitch.shape, generator=generator) * 5  # +-2 diatonic steps
        pitch = torch.where(change, (pitch + shift).clamp(2, N_PITCHES - 1), pitch)
        duration = batch.duration.clone()
        change = events & (torch.rand(events.shape, generator=generator) < cfg.corrupt_duration)
        delta = torch.zeros_like(duration)
        delta[..., 0] = torch.randint(-1, 2, events.shape, generator=generator)
        duration = torch.where(change.unsqueeze(-1), (duration + delta).clamp(0, N_DIGITS - 1), duration)
        drop = events & (torch.rand(events.shape, generator=generator) < cfg.corrupt_drop)
        return pitch, duration, drop

    # -- likelihood ------------------------------------------------------------------------

    def cell_nll(self, batch: CellBatch, cond: torch.Tensor, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative log-likelihood of each cell [N] given decoder inputs (teacher forcing), split in
        terms: beat unit, voice count, voice stops, durations, chords."""
        cfg = self.config
        n = batch.n_cells
        md = self.measure_dec
        beat_unit_nll = F.cross_entropy(md.beat_unit(cond), batch.cell_beat_unit, reduction="none")

        # voices: GRU over [start, h_1, ..., h_V] (the clean encodings of the target voices)
        h_voice, _ = self.encode_voices(batch)
        V = int(batch.voice_count.max())
        first = torch.cumsum(batch.voice_count, 0) - batch.voice_count
        slot = torch.arange(len(batch.voice_cell), device=cond.device) - first[batch.voice_cell]
        inputs = md.start.expand(n, V + 1, -1).clone()
        inputs[batch.voice_cell, slot + 1] = h_voice
        g, _ = md.gru(inputs, torch.tanh(md.init(cond)).unsqueeze(0))
        stop_target = F.one_hot(batch.voice_count, V + 1).float()
        valid = torch.arange(V + 1, device=cond.device) <= batch.voice_count.unsqueeze(1)
        voice_count_nll = (F.binary_cross_entropy_with_logits(md.stop(g).squeeze(-1), stop_target, reduction="none") * valid).sum(1)
        voice_cond = md.voice_cond(torch.cat([g[batch.voice_cell, slot], cond[batch.voice_cell]], -1))

        # events of every voice: inputs are the previous event (start at t = 0) and the current onset
        chord, dur, pos_all, _ = self._event_inputs(batch)
        NV, T = batch.event_mask.shape
        prev_chord = torch.cat([self.voice_dec.start_chord.expand(NV, 1, -1), chord], 1)
        prev_dur = torch.cat([self.voice_dec.start_dur.expand(NV, 1, -1), dur], 1)
        n_beats = batch.cell_n_beats[batch.voice_cell].unsqueeze(1).float()
        f, _ = self.voice_dec.features(voice_cond, memory[batch.voice_cell], prev_chord, prev_dur, self.position(batch.onset),
                                       self.decoder_fraction(batch.onset, n_beats))
        lengths = batch.voice_length
        steps = torch.arange(T + 1, device=cond.device)
        stop_valid = steps.unsqueeze(0) <= lengths.unsqueeze(1)
        stop_target = (steps.unsqueeze(0) == lengths.unsqueeze(1)).float()
        stop_nll = (F.binary_cross_entropy_with_logits(self.voice_dec.stop(f).squeeze(-1), stop_target, reduction="none") * stop_valid).sum(1)

        fe = f[:, :T][batch.event_mask]  # [E, d]
        duration_nll = self.dur_dec.nll(fe, batch.duration[batch.event_mask])
        chord_cond = torch.cat([fe, dur[batch.event_mask]], -1)
        chord_nll = self.chord_dec.nll(chord_cond, batch.pitch[batch.event_mask], batch.tie[batch.event_mask], batch.note_mask[batch.event_mask])

        event_voice = torch.arange(NV, device=cond.device).unsqueeze(1).expand(NV, T)[batch.event_mask]
        per_voice = stop_nll + torch.zeros(NV, device=cond.device).index_add(0, event_voice, duration_nll + chord_nll)
        voices_nll = torch.zeros(n, device=cond.device).index_add(0, batch.voice_cell, per_voice)
        terms = {
            "beat_unit": beat_unit_nll,
            "voice_count": voice_count_nll,
            "stop": torch.zeros(n, device=cond.device).index_add(0, batch.voice_cell, stop_nll),
            "duration": torch.zeros(n, device=cond.device).index_add(0, batch.voice_cell[event_voice], duration_nll),
            "chord": torch.zeros(n, device=cond.device).index_add(0, batch.voice_cell[event_voice], chord_nll),
        }
        terms["total"] = beat_unit_nll + voice_count_nll + voices_nll
        return terms

    # -- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def decode_cell(self, cond: torch.Tensor, memory: torch.Tensor, beat_unit: Fraction, n_beats: int,
                    temperature: float = 1.0, generator: torch.Generator | None = None,
                    constrained: bool = True, pad_before: Fraction = Fraction(0),
                    content_beats: Fraction | None = None, n_voices: int | None = None,
                    with_encoding: bool = False):
        """Sample one part-wise measure from c [d_measure] and M~ [K, V]. With `with_encoding`,
        return (cell, h [d_measure], M [K, V]): the sampled measure's own encoding, summed from the
        voice encodings the decoder computed anyway (saves encoding it again when inpainting).

        The beat unit is the column's (the time signature is known in inpainting and generation).
        With `constrained`, every voice lasts exactly `n_beats` (durations that would cross a beat,
        overrun the measure or leave an unfillable remainder are excluded, the stop is forced at
        the end and forbidden before), and the measure's padding (`pad_before` beats, then
        `content_beats` of music, then padding) is written as pad events."""
        cfg = self.config
        md = self.measure_dec
        cond = cond.view(1, -1)
        content_beats = Fraction(n_beats) - pad_before if content_beats is None else content_beats
        h = torch.tanh(md.init(cond)).unsqueeze(0)
        x = md.start.view(1, 1, -1)
        voices, h_voices, m_voices = [], [], []
        for v in range(cfg.max_voices):
            g, h = md.gru(x, h)
            if n_voices is not None:
                if v == n_voices:
                    break
            elif v > 0:
                p_stop = torch.sigmoid(md.stop(g[0, -1]) / max(temperature, 1e-4))
                if v >= cfg.max_voices or bool(torch.rand(1, generator=generator) < p_stop):
                    break
            voice_cond = md.voice_cond(torch.cat([g[0, -1], cond[0]], -1)).view(1, -1)
            voice = self._decode_voice(voice_cond, memory.unsqueeze(0), n_beats, Fraction(beat_unit), temperature, generator,
                                       constrained, Fraction(pad_before), Fraction(content_beats))
            voices.append(voice)
            one = Cell(beat_unit, n_beats, (voice,))
            batch = make_batch([one], list(cfg.beat_units), max_events=cfg.max_events)
            h_voice, m_voice = self.encode_voices(batch)
            h_voices.append(h_voice[0])
            m_voices.append(m_voice[0])
            x = h_voice.view(1, 1, -1)
        cell = Cell(Fraction(beat_unit), n_beats, tuple(voices))
        if not with_encoding:
            return cell
        if not voices:
            return cell, None, None
        unit = torch.tensor(beat_unit_index(Fraction(beat_unit), list(cfg.beat_units)))
        h = self.measure_enc.proj(torch.stack(h_voices).sum(0)) + self.measure_enc.beat_unit(unit)
        return cell, h, torch.stack(m_voices).sum(0)

    def _decode_voice(self, cond, memory, n_beats, beat_unit, temperature, generator, constrained, pad_before, content_beats):
        cfg = self.config
        vd = self.voice_dec
        state = vd.initial_state(cond)
        prev_chord = vd.start_chord.view(1, 1, -1)
        prev_dur = vd.start_dur.view(1, 1, -1)
        position = Fraction(0)
        end = Fraction(n_beats)
        content_end = pad_before + content_beats
        events: list[ChordEvent] = []
        for step in itertools.count():
            if not constrained and step >= cfg.max_events:
                break
            onset = torch.tensor([[float(position)]])
            f, state = vd.features(cond, memory, prev_chord, prev_dur, self.position(onset),
                                   self.decoder_fraction(onset, n_beats), state)
            f = f[:, -1]
            if constrained:
                if position >= end:
                    break
            else:
                p_stop = torch.sigmoid(vd.stop(f)[0, 0] / max(temperature, 1e-4))
                if bool(torch.rand(1, generator=generator) < p_stop):
                    break
            in_padding = constrained and (position < pad_before or position >= content_end)
            if constrained:
                limit = pad_before if position < pad_before else (content_end if position < content_end else end)
                if in_padding:  # padding fills to the next beat or the end of the padding
                    digits = torch.tensor([e - MIN_EXPONENT for e in duration_exponents(min(limit, _next_beat(position)) - position)])
                else:
                    # past max_events the longest fitting duration is taken, so a voice always ends
                    digits = self._constrained_duration(f[0], position, limit, beat_unit, temperature, generator,
                                                        greedy=step >= cfg.max_events)
            else:
                digits = self.dur_dec.sample(f, temperature, generator)
            dur_emb = self.dur_enc(digits.view(1, -1))
            notes = self.chord_dec.sample(torch.cat([f, dur_emb], -1), temperature, generator,
                                          allow_pad=not constrained, force_pad=in_padding, max_notes=cfg.max_notes)
            event = event_from_tensors(digits.tolist(), notes)
            events.append(event)
            position += event.duration
            enc_pitch = torch.tensor([[[PAD]]]) if event.pad else torch.tensor([[[p for p, _ in notes] or [TERMINATE]]])
            enc_tie = torch.tensor([[[t for _, t in notes] or [0]]]) if not event.pad else torch.zeros(1, 1, 1, dtype=torch.long)
            prev_chord = self.chord_enc(enc_pitch, enc_tie, torch.ones_like(enc_pitch, dtype=torch.bool))
            prev_dur = dur_emb.view(1, 1, -1)
        return tuple(events)

    def _constrained_duration(self, f, position: Fraction, limit: Fraction, beat_unit: Fraction, temperature,
                              generator, greedy: bool = False):
        """Sample among the notatable durations that fit: not past the next beat nor `limit`, and
        leaving a remainder (to the next beat) that notatable durations can fill."""
        room = min(_next_beat(position), limit) - position
        digits = _allowed_digits(room, Fraction(beat_unit))
        if greedy or len(digits) == 1:
            return digits[-1]
        logp = self.dur_dec.score(f, digits) / max(temperature, 1e-4)
        choice = int(torch.multinomial(F.softmax(logp, -1), 1, generator=generator))
        return digits[choice]

    # -- files -----------------------------------------------------------------------------

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@lru_cache(maxsize=4096)
def _allowed_digits(room: Fraction, beat_unit: Fraction) -> torch.Tensor:
    """Exponent digits [C, 5] of the durations allowed in `room` beats, shortest first."""
    allowed = [d for d in candidate_durations(beat_unit) if d <= room and _fillable(room - d, beat_unit)]
    if not allowed:  # an odd remainder (left by padding or a tuplet): take it whole
        allowed = [room]
    return torch.tensor([[e - MIN_EXPONENT for e in duration_exponents(d)] for d in allowed])


def _next_beat(position: Fraction) -> Fraction:
    return Fraction(position.numerator // position.denominator + 1)


#: Divisions per quarter of the MusicXML music21 writes (music21.defaults.divisionsPerQuarter).
MUSICXML_DIVISIONS = 10080
#: Note values in quarters that one notehead (plain, dotted, double-dotted; or in a triplet) shows,
#: and that MusicXML written by music21 holds exactly (a whole number of its divisions per quarter:
#: a double-dotted 64th, 7/64 of a quarter, came back 1/10080 short and the measure with it).
NOTATABLE_QUARTERS = frozenset(
    value
    for value in [Fraction(2) ** k * dots for k in range(-4, 3) for dots in (Fraction(1), Fraction(3, 2), Fraction(7, 4))]
    + [Fraction(2) ** k * Fraction(2, 3) for k in range(-3, 3)]  # triplet notes, 32nd to whole
    if (value * MUSICXML_DIVISIONS).denominator == 1
)


@lru_cache(maxsize=64)
def candidate_durations(beat_unit: Fraction) -> tuple[Fraction, ...]:
    """Durations in beats (at most one beat) that constrained decoding may choose for a beat unit:
    each is one notatable note value, so written measures need no extra ties or odd tuplets."""
    values = []
    for quarters in NOTATABLE_QUARTERS:
        beats = quarters / beat_unit
        if beats <= 1:
            try:
                duration_exponents(beats)
            except ValueError:
                continue
            values.append(beats)
    return tuple(sorted(values))


@lru_cache(maxsize=8192)
def _fillable(remainder: Fraction, beat_unit: Fraction) -> bool:
    """Whether `remainder` beats are a sum of candidate durations (0 is)."""
    if remainder == 0:
        return True
    candidates = candidate_durations(beat_unit)
    return remainder in candidates or any(
        d <= remainder and _fillable(remainder - d, beat_unit) for d in candidates
    )
