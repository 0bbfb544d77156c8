"""The clickable engraved score and the audio player, as HTML + JavaScript for `gr.HTML`.

Clicks on a measure send a `measure_toggle` event (column index in document order, staff number,
whether only that part is meant) to Python, which owns the locks and sends them back in the `locks`
prop; `watch` re-applies the highlight whenever the score or the locks change, because a re-render
replaces the SVG. While audio plays, the measure under the playhead gets the class `playing`, from
the verovio timemap and the tempo factor carried by the audio element.
"""
from __future__ import annotations

import html
import json

from engine.locks import Locks
from engine.render.engrave import Engraving

EMPTY_VIEW = '<div class="score-empty">Open a score file or pick an example to see it engraved here.</div>'

CSS = """
#score-view { background: white; border-radius: 8px; min-height: 320px; }
#score-view .score-page svg { width: 100%; height: auto; display: block; }
#score-view .score-page + .score-page { border-top: 1px dashed #ccc; margin-top: 12px; padding-top: 12px; }
#score-view .score-empty { color: #666; padding: 48px; text-align: center; }
#score-view g.measure { cursor: pointer; }
#score-view rect.mark { pointer-events: none; }
#score-view rect.hit { fill: transparent; pointer-events: all; }
#score-view rect.mark-locked { fill: #f59e0b; fill-opacity: 0.28; stroke: #b45309; stroke-width: 18; stroke-opacity: 0.8; }
#score-view rect.mark-playing { fill: #2563eb; fill-opacity: 0.18; }
#score-view g.measure.locked, #score-view g.staff.locked { color: #92400e; fill: #92400e; }
#player audio { width: 100%; }
"""

JS_ON_LOAD = """
const view = element;
const SVG_NS = 'http://www.w3.org/2000/svg';
function measures() { return [...view.querySelectorAll('g.measure')]; }
function mark(group, kind) {
  const box = group.getBBox();
  const rect = document.createElementNS(SVG_NS, 'rect');
  const pad = 60;
  rect.setAttribute('class', 'mark mark-' + kind);
  rect.setAttribute('x', box.x - pad / 2); rect.setAttribute('y', box.y - pad);
  rect.setAttribute('width', box.width + pad); rect.setAttribute('height', box.height + 2 * pad);
  group.insertBefore(rect, group.firstChild);
}
function addHitAreas() {
  // The whole area of a measure is clickable (each staff, and the gaps between staves), not just
  // its ink. The areas sit in one layer under the music of each system, so they never cover notes.
  const all = measures();
  if (!all.length || view.querySelector('g.hits')) return;
  const layers = new Map();
  const area = (group, column, part) => {
    const system = all[column].parentNode;
    if (!layers.has(system)) {
      const layer = document.createElementNS(SVG_NS, 'g');
      layer.setAttribute('class', 'hits');
      system.insertBefore(layer, system.firstChild);
      layers.set(system, layer);
    }
    const box = group.getBBox();
    const rect = document.createElementNS(SVG_NS, 'rect');
    rect.setAttribute('class', 'hit');
    rect.setAttribute('data-column', column);
    if (part !== null) rect.setAttribute('data-part', part);
    rect.setAttribute('x', box.x); rect.setAttribute('y', box.y);
    rect.setAttribute('width', box.width); rect.setAttribute('height', box.height);
    layers.get(system).appendChild(rect);
  };
  all.forEach((measure, column) => area(measure, column, null));
  all.forEach((measure, column) => measure.querySelectorAll('g.staff').forEach(
    staff => area(staff, column, Number(staff.getAttribute('data-n')) - 1)));
}
function applyLocks() {
  addHitAreas();
  const all = measures();
  view.querySelectorAll('.locked').forEach(n => n.classList.remove('locked'));
  view.querySelectorAll('rect.mark-locked').forEach(n => n.remove());
  const locks = props.locks || {columns: [], cells: []};
  for (const column of locks.columns) {
    const m = all[column];
    if (m) { m.classList.add('locked'); mark(m, 'locked'); }
  }
  for (const [part, column] of locks.cells) {
    const staff = all[column] && all[column].querySelector('g.staff[data-n="' + (part + 1) + '"]');
    if (staff) { staff.classList.add('locked'); mark(staff, 'locked'); }
  }
}
view.addEventListener('click', (event) => {
  const hit = event.target.closest('rect.hit');
  const measure = event.target.closest('g.measure');
  const staff = event.target.closest('g.staff');
  let column, part;
  if (hit) {
    column = Number(hit.getAttribute('data-column'));
    part = Number(hit.getAttribute('data-part') || 0);
  } else if (measure) {
    column = measures().indexOf(measure);
    part = staff ? Number(staff.getAttribute('data-n')) - 1 : 0;
  } else {
    return;
  }
  trigger('measure_toggle', {column, part, single: event.shiftKey || event.altKey || Boolean(props.part_mode)});
});
function highlight(audio) {
  const onsets = JSON.parse(audio.getAttribute('data-onsets') || '[]');
  const t = audio.currentTime * 1000 * Number(audio.getAttribute('data-tempo') || 1);
  let current = null;
  for (const [ms, id] of onsets) { if (ms <= t + 1) current = id; else break; }
  view.querySelectorAll('g.measure.playing').forEach(m => {
    if (m.id !== current) { m.classList.remove('playing'); m.querySelectorAll('rect.mark-playing').forEach(r => r.remove()); }
  });
  const m = current && view.querySelector('g.measure[id="' + current + '"]');
  if (m && !m.classList.contains('playing')) { m.classList.add('playing'); mark(m, 'playing'); }
}
document.addEventListener('timeupdate', (event) => {
  if (event.target instanceof HTMLMediaElement && event.target.closest('#player')) highlight(event.target);
}, true);
applyLocks();
watch(['value', 'locks'], applyLocks);
"""


def score_html(engraving: Engraving) -> str:
    """All engraved pages, each scaled to the view's width."""
    pages = "".join(
        f'<div class="score-page" data-page="{i + 1}">{svg}</div>' for i, svg in enumerate(engraving.pages)
    )
    return f'<div class="score">{pages}</div>'


def unengraved_html(reason: str) -> str:
    """What the view shows for a version verovio could not engrave: why, and that nothing is lost."""
    return (f'<div class="score score-unavailable"><p>This version could not be engraved: {html.escape(reason)}. '
            "It stays in the history and can still be downloaded as MusicXML.</p></div>")


def locks_prop(locks: Locks) -> dict:
    """The `locks` prop the view's script reads: fully locked columns, and single locked cells."""
    return {"columns": locks.full_columns(), "cells": [list(cell) for cell in locks.partial_cells()]}


def player_html(url: str, tempo: float, onsets: tuple[tuple[float, str], ...]) -> str:
    """An audio element the highlighter follows: `onsets` are the measure starts (ms at tempo 1, measure
    id) and `tempo` maps playback time to score time."""
    onsets_json = html.escape(json.dumps([[t, m] for t, m in onsets]), quote=True)
    return (
        f'<audio controls preload="auto" src="{html.escape(url, quote=True)}" '
        f'data-tempo="{tempo:g}" data-onsets="{onsets_json}"></audio>'
    )
