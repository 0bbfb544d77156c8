"""The clickable engraved score and the audio player, as HTML + JavaScript for `gr.HTML`.

A click on a measure (Shift-click or drag: a range of them; Alt-click: one part's cell) changes the
locks on screen at once (no round trip, no re-engraving) and sends the column clicked and the locks it
leaves to Python (a `measure_toggle` event of a hidden component: `CLICK_RELAY_JS`), which keeps them and
sends them back. Those come through a hidden component (webui/app.py `SHOW_LOCKS_JS`, a `score-locks`
event), not through this view's props: an update of the view restyles every element of a long score
(seconds), so a lock change touches only the boxes of the measures it changes; a new engraving (`watch`
on the value) redraws them all. Highlights cover a measure's staff lines only. While audio plays, the
measure under the playhead gets the class `playing`, from the verovio timemap and the tempo factor
carried by the audio element.
"""
from __future__ import annotations

import html
import json
import re
from importlib.util import find_spec
from pathlib import Path

from engine.locks import Locks
from engine.render.engrave import Engraving

EMPTY_VIEW = ('<div class="score-empty">Generate a piece with NotaGen (on the left), open a score file or pick '
              'an example: it is engraved here.</div>')

FONT_CSS = (Path(find_spec("verovio").origin).parent / "data" / "Liberation.css").read_text(encoding="utf-8")
"""The text font (lyrics, titles) each engraving embeds in its first page, 390 kB of the 410 kB a short
piece takes: the page loads it once with its CSS, and each version (a preview every bar while a piece is
generated) comes without it, so it is not sent, parsed and decoded again every time."""
EMBEDDED_FONT = f'<style type="text/css">{FONT_CSS}</style>'
VIEW_BOX = re.compile(r'<svg[^>]*?viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+)"')

CSS = FONT_CSS + """
#score-view { background: white; border-radius: 8px; min-height: 320px; overflow-x: auto; }
#score-view .score-page { content-visibility: auto; box-sizing: content-box; }
#score-view .score-page svg { width: calc(100% * var(--zoom, 1)); height: auto; display: block; }
#score-view .score-page + .score-page { border-top: 1px dashed #ccc; margin-top: 12px; padding-top: 12px; }
#score-view .score-empty { color: #666; padding: 48px; text-align: center; }
#score-view g.measure { cursor: pointer; }
#score-view rect.mark { pointer-events: none; }
#score-view rect.hit { fill: transparent; pointer-events: all; }
#score-view rect.mark-locked { fill: #f59e0b; fill-opacity: 0.28; stroke: #b45309; stroke-width: 18; stroke-opacity: 0.8; }
#score-view rect.mark-playing { fill: #2563eb; fill-opacity: 0.35; stroke: #1d4ed8; stroke-width: 36; stroke-opacity: 0.9; }
#score-view g.measure.locked, #score-view g.staff.locked { color: #92400e; fill: #92400e; }
#player audio { width: 100%; }
"""

JS_ON_LOAD = """
const view = element;
const SVG_NS = 'http://www.w3.org/2000/svg';
let measureList = [];
function measures() {
  // Cached: a long score has thousands; a new engraving replaces them (the first is then detached).
  if (!measureList.length || !measureList[0].isConnected) measureList = [...view.querySelectorAll('g.measure')];
  return measureList;
}
function staffBox(staff) {
  // The staff's own five lines: slurs, ties and notes far above or below reach into the neighbours.
  const lines = staff.querySelectorAll(':scope > path');
  if (!lines.length) return staff.getBBox();
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const line of lines) {
    const b = line.getBBox();
    x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y); x1 = Math.max(x1, b.x + b.width); y1 = Math.max(y1, b.y + b.height);
  }
  return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
}
const boxes = new WeakMap();  // group -> its area, measured once per engraving: getBBox forces a layout
function areaBox(group) {
  if (!boxes.has(group)) boxes.set(group, measureArea(group));
  return boxes.get(group);
}
function measureArea(group) {
  // A measure: from its top staff to its bottom one; a staff: its own lines.
  const staves = group.matches('g.staff') ? [group] : [...group.querySelectorAll('g.staff')];
  if (!staves.length) return group.getBBox();
  const boxes = staves.map(staffBox);
  const x0 = Math.min(...boxes.map(b => b.x)), y0 = Math.min(...boxes.map(b => b.y));
  const x1 = Math.max(...boxes.map(b => b.x + b.width)), y1 = Math.max(...boxes.map(b => b.y + b.height));
  return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
}
function mark(group, kind) {
  const box = areaBox(group);
  const rect = document.createElementNS(SVG_NS, 'rect');
  const pad = 60;
  rect.setAttribute('class', 'mark mark-' + kind);
  rect.setAttribute('x', box.x); rect.setAttribute('y', box.y - pad);
  rect.setAttribute('width', box.width); rect.setAttribute('height', box.height + 2 * pad);
  // The playing mark goes over a locked one, so playback stays visible on locked measures.
  const locked = kind === 'playing' && group.querySelector(':scope > rect.mark-locked');
  group.insertBefore(rect, locked ? locked.nextSibling : group.firstChild);
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
    const box = areaBox(group);
    const rect = document.createElementNS(SVG_NS, 'rect');
    rect.setAttribute('class', 'hit');
    rect.setAttribute('data-column', column);
    if (part !== null) rect.setAttribute('data-part', part);
    rect.setAttribute('x', box.x); rect.setAttribute('y', box.y - (part === null ? 0 : 60));
    rect.setAttribute('width', box.width); rect.setAttribute('height', box.height + (part === null ? 0 : 120));
    layers.get(system).appendChild(rect);
  };
  all.forEach((measure, column) => area(measure, column, null));
  all.forEach((measure, column) => measure.querySelectorAll('g.staff').forEach(
    staff => area(staff, column, Number(staff.getAttribute('data-n')) - 1)));
}
let shown = {columns: [], cells: []};  // the locks on screen: the server's, or a click's until it answers
function lockedGroups(locks) {
  // The measures (whole columns) and staves (single cells) `locks` highlight, by key.
  const all = measures(), groups = new Map();
  for (const column of locks.columns) if (all[column]) groups.set('m' + column, all[column]);
  for (const [part, column] of locks.cells) {
    const staff = all[column] && all[column].querySelector('g.staff[data-n="' + (part + 1) + '"]');
    if (staff) groups.set(part + ',' + column, staff);
  }
  return groups;
}
function unlock(group) {
  group.classList.remove('locked');
  group.querySelectorAll(':scope > rect.mark-locked').forEach(r => r.remove());
}
function lock(group) { group.classList.add('locked'); mark(group, 'locked'); }
function applyLocks(locks) {
  // Only the measures whose lock changed are touched: a long score has thousands, each box a getBBox.
  const before = lockedGroups(shown), after = lockedGroups(locks);
  shown = locks;
  for (const [key, group] of before) if (!after.has(key)) unlock(group);
  for (const [key, group] of after) if (!before.has(key)) lock(group);
}
function redraw() {
  // A new engraving: its hit areas, and every lock on screen drawn on it.
  addHitAreas();
  view.querySelectorAll('.locked').forEach(unlock);
  for (const group of lockedGroups(shown).values()) lock(group);
}
function expected(click) {
  // The locks after `click` (column, part, single; `to`: the other end of a range).
  const columns = new Set(shown.columns);
  let cells = shown.cells.map(c => [...c]);
  if (click.single) {
    const i = cells.findIndex(([p, c]) => p === click.part && c === click.column);
    if (i >= 0) cells.splice(i, 1);
    else if (!columns.has(click.column)) cells.push([click.part, click.column]);
    else {  // one part of a locked measure: the others stay locked
      columns.delete(click.column);
      const parts = measures()[click.column].querySelectorAll('g.staff').length;
      for (let p = 0; p < parts; p++) if (p !== click.part) cells.push([p, click.column]);
    }
  } else {
    const lo = Math.min(click.column, click.to ?? click.column), hi = Math.max(click.column, click.to ?? click.column);
    const lock = !columns.has(click.column);
    for (let c = lo; c <= hi; c++) { if (lock) columns.add(c); else columns.delete(c); }
    cells = cells.filter(([p, c]) => c < lo || c > hi);
  }
  return {columns: [...columns], cells};
}
function target(event) {
  // The area under the pointer, not the ink on top of it: a hairpin or a "cresc." line of the measure
  // before reaches into this one. Ink of the measure itself gives the part it is in.
  const hit = document.elementsFromPoint(event.clientX, event.clientY).find(e => e.matches('rect.hit') && view.contains(e));
  const measure = event.target.closest && event.target.closest('g.measure');
  const staff = event.target.closest && event.target.closest('g.staff');
  const part = staff ? Number(staff.getAttribute('data-n')) - 1 : 0;
  if (hit) {
    const column = Number(hit.getAttribute('data-column'));
    if (hit.hasAttribute('data-part')) return {column, part: Number(hit.getAttribute('data-part'))};
    return {column, part: measure && measures()[column] === measure ? part : 0};
  }
  if (measure) return {column: measures().indexOf(measure), part};
  return null;
}
let pressed = null, last = null;
view.addEventListener('pointerdown', (event) => { if (event.button === 0) pressed = target(event); });
view.addEventListener('pointerup', (event) => {
  // A click locks or unlocks a measure; Shift-click, or a drag across measures, a range of them;
  // Alt-click (or the single-part switch) one part's cell.
  const up = target(event), down = pressed;
  pressed = null;
  if (!up || !down) return;
  const single = event.altKey || Boolean(props.part_mode);
  const click = {column: up.column, part: up.part, single};
  if (!single && down.column !== up.column) { click.column = down.column; click.to = up.column; }
  else if (!single && event.shiftKey && last !== null) { click.to = last; }
  last = up.column;
  toggle(click);
});
function toggle(click) {
  const locks = expected(click);
  applyLocks(locks);
  document.dispatchEvent(new CustomEvent('score-click', {detail: {...click, locks}}));  // to CLICK_RELAY_JS
}
function follow(measure) {
  if (view.dataset.follow === 'off') return;
  const box = measure.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight || box.left < 0 || box.right > window.innerWidth) {
    measure.scrollIntoView({block: 'center', inline: 'center'});
  }
}
function highlight(audio) {
  const onsets = JSON.parse(audio.getAttribute('data-onsets') || '[]');
  const t = audio.currentTime * 1000 * Number(audio.getAttribute('data-tempo') || 1);
  let current = null;
  for (const [ms, id] of onsets) { if (ms <= t + 1) current = id; else break; }
  view.querySelectorAll('g.measure.playing').forEach(m => {
    if (m.id !== current) { m.classList.remove('playing'); m.querySelectorAll('rect.mark-playing').forEach(r => r.remove()); }
  });
  const m = current && view.querySelector('g.measure[id="' + current + '"]');
  if (m && !m.classList.contains('playing')) { m.classList.add('playing'); mark(m, 'playing'); follow(m); }
}
document.addEventListener('timeupdate', (event) => {
  if (event.target instanceof HTMLMediaElement && event.target.closest('#player')) highlight(event.target);
}, true);
document.addEventListener('keydown', (event) => {
  // MuseScore's keys: Space plays or pauses, Ctrl+Z undoes, Ctrl+Shift+Z (or Ctrl+Y) redoes; L locks or
  // unlocks the measure playing (or, with no audio, the one clicked last).
  if (event.target.closest && event.target.closest('input, textarea, select, [contenteditable="true"]')) return;
  const press = (id) => { const b = document.getElementById(id); if (b && !b.disabled) b.click(); };
  const key = event.key.toLowerCase();
  if (event.key === ' ' && !event.ctrlKey && !event.metaKey) {
    const audio = document.querySelector('#player audio');
    if (!audio) return;
    event.preventDefault();
    if (audio.paused) audio.play(); else audio.pause();
  } else if ((event.ctrlKey || event.metaKey) && key === 'z') {
    event.preventDefault();
    press(event.shiftKey ? 'redo' : 'undo');
  } else if ((event.ctrlKey || event.metaKey) && key === 'y') {
    event.preventDefault();
    press('redo');
  } else if (key === 'l' && !event.ctrlKey && !event.metaKey && !event.altKey) {
    const playing = view.querySelector('g.measure.playing');
    const column = playing ? measures().indexOf(playing) : last;
    if (column !== null && column >= 0) { event.preventDefault(); toggle({column, part: 0, single: false}); }
  }
});
document.addEventListener('score-locks', (event) => applyLocks(event.detail));
redraw();
watch(['value'], redraw);
"""


CLICK_RELAY_JS = "document.addEventListener('score-click', (event) => trigger('measure_toggle', event.detail));"
"""The script of a small hidden component whose `measure_toggle` event takes the view's clicks to Python:
Gradio copies the state of an event's component for each event, and the view's holds a long score's SVG
text (tens of ms before the click is drawn, and as much garbage to collect)."""


def score_html(engraving: Engraving) -> str:
    """All engraved pages, each scaled to the view's width, drawn with the page's `FONT_CSS`.

    Each page is as tall as its SVG at the view's width and zoom before it is drawn (`page_ratio`): the
    browser lays out and paints only the pages on screen (`content-visibility`), so a lock click on a
    long score repaints one page, not all of them, and scrolling keeps its positions."""
    pages = "".join(
        f'<div class="score-page" data-page="{i + 1}"{page_ratio(svg)}>{svg.replace(EMBEDDED_FONT, "", 1)}</div>'
        for i, svg in enumerate(engraving.pages)
    )
    return f'<div class="score">{pages}</div>'


def page_ratio(svg: str) -> str:
    """The page's shape as a style attribute: its SVG's viewBox, the height scaled by the view's zoom."""
    box = VIEW_BOX.search(svg)
    if box is None:
        return ""
    width, height = box.group(1), box.group(2)
    return f' style="aspect-ratio: {width} / calc({height} * var(--zoom, 1))"'


def unengraved_html(reason: str) -> str:
    """What the view shows for a version verovio could not engrave: why, and that nothing is lost."""
    return (f'<div class="score score-unavailable"><p>This version could not be engraved: {html.escape(reason)}. '
            "It stays in the history and can still be downloaded as MusicXML.</p></div>")


def locks_shown(locks: Locks) -> dict:
    """The locks as the view's script reads them (`score-locks`): fully locked columns, and single locked cells."""
    return {"columns": locks.full_columns(), "cells": [list(cell) for cell in locks.partial_cells()]}


def player_html(url: str, tempo: float, onsets: tuple[tuple[float, str], ...]) -> str:
    """An audio element the highlighter follows: `onsets` are the measure starts (ms at tempo 1, measure
    id) and `tempo` maps playback time to score time."""
    onsets_json = html.escape(json.dumps([[t, m] for t, m in onsets]), quote=True)
    return (
        f'<audio controls preload="auto" src="{html.escape(url, quote=True)}" '
        f'data-tempo="{tempo:g}" data-onsets="{onsets_json}"></audio>'
    )
