"""Vocabularies and padded tensors of part-wise measures (cells), for the measure model.

A batch of N cells flattens to NV voices of at most T events (plus one step for the voice decoder's
stop), each event a chord of at most K notes in the chord decoder's order (notes, then TERMINATE):

    cell_beat_unit [N]        index into config.beat_units
    cell_n_beats   [N]        beats per measure
    voice_cell     [NV]       the cell of each voice (voices of a cell are consecutive)
    voice_count    [N]        voices per cell
    event_mask     [NV, T]    real events
    duration       [NV, T, 5] exponent digits (exponent - MIN_EXPONENT)
    onset          [NV, T+1]  onset of each event in beats; onset[len] = n_beats (the stop step)
    pitch, tie     [NV, T, K] chord decoder targets: the notes (shuffled in training), then TERMINATE
    note_mask      [NV, T, K] real entries of `pitch`
    encode_mask    [NV, T, K] what the chord encoder sums: the notes, or the single special symbol
                              (TERMINATE for a rest, PAD for a pad event)

Pitch vocabulary: 0 TERMINATE, 1 PAD, then (octave * 7 + step) * 5 + alter + 2 + 2 for octaves 0..9.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import torch

from engine.measure.cells import (
    MAX_ALTER,
    MAX_OCTAVE,
    MIN_ALTER,
    MIN_EXPONENT,
    Cell,
    ChordEvent,
    Note,
    Pitch,
    duration_exponents,
    duration_from_exponents,
)

TERMINATE = 0
PAD = 1
N_SPECIAL = 2
N_ALTERS = MAX_ALTER - MIN_ALTER + 1
N_PITCHES = N_SPECIAL + (MAX_OCTAVE + 1) * 7 * N_ALTERS


def pitch_index(pitch: Pitch) -> int:
    return N_SPECIAL + (pitch.octave * 7 + pitch.step) * N_ALTERS + pitch.alter - MIN_ALTER


def index_pitch(index: int) -> Pitch:
    value = index - N_SPECIAL
    diatonic, alter = divmod(value, N_ALTERS)
    octave, step = divmod(diatonic, 7)
    return Pitch(octave, step, alter + MIN_ALTER)


def beat_unit_index(beat_unit: Fraction, beat_units: list[str]) -> int:
    """Index of a beat unit (quarters, as a string such as '3/2') in the config's list; 0 = other."""
    text = str(Fraction(beat_unit))
    return beat_units.index(text) if text in beat_units else 0


@dataclass
class CellBatch:
    cell_beat_unit: torch.Tensor
    cell_n_beats: torch.Tensor
    voice_cell: torch.Tensor
    voice_count: torch.Tensor
    event_mask: torch.Tensor
    duration: torch.Tensor
    onset: torch.Tensor
    pitch: torch.Tensor
    tie: torch.Tensor
    note_mask: torch.Tensor
    encode_mask: torch.Tensor

    @property
    def n_cells(self) -> int:
        return self.cell_beat_unit.shape[0]

    @property
    def voice_length(self) -> torch.Tensor:
        return self.event_mask.sum(1)

    def to(self, device) -> CellBatch:
        return CellBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def make_batch(cells: list[Cell], beat_units: list[str], shuffle_notes: random.Random | None = None,
               max_events: int | None = None) -> CellBatch:
    """Tensors of `cells`; `shuffle_notes` (a Random) shuffles the note order of every chord (training)."""
    voices = [(i, voice) for i, cell in enumerate(cells) for voice in cell.voices]
    if max_events is not None:
        voices = [(i, voice[:max_events]) for i, voice in voices]
    n_voices = max(len(voices), 1)
    T = max((len(v) for _, v in voices), default=1) or 1
    K = max((len(e.chord) + 1 if e.chord else (2 if e.pad else 1) for _, v in voices for e in v), default=1)
    event_mask = torch.zeros(n_voices, T, dtype=torch.bool)
    duration = torch.zeros(n_voices, T, 5, dtype=torch.long)
    onset = torch.zeros(n_voices, T + 1)
    pitch = torch.zeros(n_voices, T, K, dtype=torch.long)
    tie = torch.zeros(n_voices, T, K, dtype=torch.long)
    note_mask = torch.zeros(n_voices, T, K, dtype=torch.bool)
    encode_mask = torch.zeros(n_voices, T, K, dtype=torch.bool)
    exponent_cache: dict[Fraction, tuple[int, ...]] = {}
    for v, (i, voice) in enumerate(voices):
        position = Fraction(0)
        for t, event in enumerate(voice):
            event_mask[v, t] = True
            onset[v, t] = float(position)
            exps = exponent_cache.get(event.duration)
            if exps is None:
                exps = exponent_cache[event.duration] = duration_exponents(event.duration)
            duration[v, t] = torch.tensor([e - MIN_EXPONENT for e in exps])
            position += event.duration
            if event.pad:
                entries = [(PAD, 0)]
            else:
                entries = [(pitch_index(n.pitch), int(n.tie)) for n in event.chord]
                if shuffle_notes is not None:
                    shuffle_notes.shuffle(entries)
            entries.append((TERMINATE, 0))
            for k, (p, tflag) in enumerate(entries):
                pitch[v, t, k] = p
                tie[v, t, k] = tflag
                note_mask[v, t, k] = True
            n_encode = len(entries) - 1 if len(entries) > 1 else 1
            encode_mask[v, t, :n_encode] = True
        onset[v, len(voice)] = float(position)
    return CellBatch(
        cell_beat_unit=torch.tensor([beat_unit_index(c.beat_unit, beat_units) for c in cells], dtype=torch.long),
        cell_n_beats=torch.tensor([c.n_beats for c in cells], dtype=torch.long),
        voice_cell=torch.tensor([i for i, _ in voices] or [0], dtype=torch.long),
        voice_count=torch.tensor([len(c.voices) for c in cells], dtype=torch.long),
        event_mask=event_mask,
        duration=duration,
        onset=onset,
        pitch=pitch,
        tie=tie,
        note_mask=note_mask,
        encode_mask=encode_mask,
    )


def event_from_tensors(digits, notes: list[tuple[int, int]]) -> ChordEvent:
    """A ChordEvent from decoded exponent digits and (pitch index, tie) pairs (without TERMINATE)."""
    duration = duration_from_exponents([int(d) + MIN_EXPONENT for d in digits])
    if notes and notes[0][0] == PAD:
        return ChordEvent((), duration, pad=True)
    chord = {}
    for p, t in notes:
        if p >= N_SPECIAL:
            pitch = index_pitch(p)
            chord[pitch] = chord.get(pitch, False) or bool(t)
    return ChordEvent(tuple(sorted(Note(p, t) for p, t in chord.items())), duration)
