"""The composing page as a new user meets it (issue #19): reach, locks, stop, playback, progress, reload."""
from __future__ import annotations

import pytest

from engine.score.splice import measure_texts

from tests.browser.conftest import ARTIFACTS

from tests.browser.test_app import MEASURES, click_measure, locked_columns, open_example, upload, wait_for_lock_summary, wait_for_status
from tests.browser.test_compose import RECORD_STATUSES, generate_then_stop

CONTROLS = ["upload", "example", "open-example", "undo", "redo", "versions", "period", "composer", "instrumentation",
            "max-bars", "seed", "generate", "stop", "continue-bars", "continue", "regenerate-from", "tempo", "listen",
            "follow", "download-musicxml", "download-mid", "download-abc", "download-svg", "download-ogg",
            "download-wav", "make-pdf", "download-pdf", "part-mode", "zoom", "lock-all", "unlock-all",
            "invert-locks", "sweeps", "inpaint"]


@pytest.mark.parametrize("size", [(1280, 720), (1400, 900), (1920, 1080)])
def test_every_control_is_reachable(page, shot, size):
    """Each control scrolls into view, lies inside the window and is the element a click there hits."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    open_example(page, "Bach - Chorale BWV 66.6")
    shot(page, "page")
    for control in CONTROLS:
        element = page.locator(f"#{control}")
        element.scroll_into_view_if_needed()
        box = element.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0, control
        assert 0 <= box["x"] and box["x"] + box["width"] <= size[0] + 1, (control, box)
        assert 0 <= box["y"] and box["y"] + box["height"] <= size[1] + 1, (control, box)
        hit = page.evaluate(
            "([id, x, y]) => document.getElementById(id).contains(document.elementFromPoint(x, y))",
            [control, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert hit, control
    page.locator("#download-pdf").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"reach-{size[0]}x{size[1]}.png"))


def test_a_new_score_starts_unlocked(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    click_measure(page, 2)
    wait_for_lock_summary(page, "1 measure locked")
    shot(page, "locked")
    open_example(page, "Bach - Chorale BWV 4.8")
    wait_for_lock_summary(page, "no measures locked")
    assert locked_columns(page) == []
    shot(page, "new-score")
    page.locator("#undo").click()  # back to the first score: a version of it, not a new score
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 10")


def test_lock_click_shows_at_once_and_stays_in_its_measure(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    click_measure(page, 8)  # measure 8 has a tie into measure 9
    wait_for_lock_summary(page, "1 measure locked")
    ms = page.evaluate("""() => new Promise(resolve => {
        const start = performance.now();
        const m = document.querySelectorAll('#score-view svg g.measure')[5];
        const hit = document.querySelector('#score-view rect.hit[data-column="5"]:not([data-part])');
        const box = hit.getBoundingClientRect();
        const at = {clientX: box.x + box.width / 2, clientY: box.y + 5, bubbles: true, button: 0};
        const target = document.elementFromPoint(at.clientX, at.clientY);
        target.dispatchEvent(new PointerEvent('pointerdown', at));
        target.dispatchEvent(new PointerEvent('pointerup', at));
        resolve(m.classList.contains('locked') ? performance.now() - start : null);
    })""")
    assert ms is not None and ms < 200
    wait_for_lock_summary(page, "2 measures locked")
    shot(page, "locked")
    boxes = page.evaluate("""() => [...document.querySelectorAll('#score-view g.measure')].map(m => {
        const r = m.querySelector(':scope > rect.mark-locked');
        return r ? r.getBoundingClientRect().toJSON() : null; })""")
    hits = page.evaluate("""() => [...document.querySelectorAll('#score-view rect.hit:not([data-part])')]
        .map(r => r.getBoundingClientRect().toJSON())""")
    for column in (5, 8):
        mark = boxes[column]
        for other in (column - 1, column + 1):
            neighbour = hits[other]
            same_row = neighbour["top"] < mark["bottom"] and mark["top"] < neighbour["bottom"]
            overlap = min(mark["right"], neighbour["right"]) - max(mark["left"], neighbour["left"])
            assert not same_row or overlap <= 2, (column, other, overlap)


def test_shift_click_or_drag_locks_a_range_and_keys_undo(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    click_measure(page, 1)
    click_measure(page, 4, modifier="Shift")
    wait_for_lock_summary(page, "4 measures locked")
    assert locked_columns(page) == [1, 2, 3, 4]
    hits = page.locator('#score-view rect.hit:not([data-part])')
    start, end = hits.nth(6).bounding_box(), hits.nth(8).bounding_box()
    page.mouse.move(start["x"] + 5, start["y"] + 5)
    page.mouse.down()
    page.mouse.move(end["x"] + 5, end["y"] + 5, steps=4)
    page.mouse.up()
    wait_for_lock_summary(page, "7 measures locked")
    assert locked_columns(page) == [1, 2, 3, 4, 6, 7, 8]
    shot(page, "ranges")
    page.locator("#zoom input[type=number]").fill("150")
    page.locator("#zoom input[type=number]").press("Enter")
    page.wait_for_function("() => document.querySelector('#score-view').style.getPropertyValue('--zoom') === '1.5'")
    shot(page, "zoomed")

    open_example(page, "Schoenberg - Op. 19/2")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+z")
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 10")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 9")


def test_playback_follows_the_music_over_locks(page, shot):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_example(page, "Bach - Chorale BWV 66.6")
    page.locator("#lock-all").click()
    wait_for_lock_summary(page, "10 measures locked")
    page.locator("#listen").click()
    page.locator("#player audio").wait_for(state="attached")
    page.wait_for_function("() => document.querySelector('#player audio').duration > 0")
    page.evaluate("() => { window.scrollTo(0, 0); const a = document.querySelector('#player audio');"
                  " a.muted = true; a.currentTime = a.duration * 0.85; return a.play(); }")
    page.wait_for_function("() => document.querySelector('#score-view g.measure.playing')")
    shot(page, "playing-late")
    box = page.evaluate("() => document.querySelector('#score-view g.measure.playing').getBoundingClientRect().toJSON()")
    assert 0 <= box["top"] and box["bottom"] <= 720, box
    order = page.evaluate("""() => [...document.querySelector('#score-view g.measure.playing').children]
        .filter(n => n.matches('rect.mark')).map(n => n.getAttribute('class'))""")
    assert order == ["mark mark-locked", "mark mark-playing"]  # drawn over the lock
    page.evaluate("() => document.querySelector('#player audio').pause()")
    page.locator("body").press("l")  # the key that locks or unlocks the measure playing
    wait_for_lock_summary(page, "9 measures locked")


def test_regenerate_from_names_its_measure(page, shot, tmp_path):
    """A click picks the measure to regenerate from and toggles its lock: a measure the click leaves
    locked is kept (the button says so and starts after it), a lock further on refuses the action, and
    the downloaded MusicXML keeps every measure before the start exactly."""
    page.set_viewport_size({"width": 1400, "height": 900})
    open_example(page, "Bach - Chorale BWV 66.6")
    original = download_musicxml(page, tmp_path / "original.musicxml")
    number = [page.locator(MEASURES).nth(c).get_attribute("data-n") for c in range(10)]
    label = lambda text: page.wait_for_function(
        "(t) => document.querySelector('#regenerate-from').innerText.includes(t)", arg=text)
    click_measure(page, 3)
    label(f"Regenerate from measure {number[4]} (keeps measure {number[3]}, locked)")
    shot(page, "locked-start")
    click_measure(page, 6)
    click_measure(page, 3)  # unlocks it: the start is the clicked measure, but measure 6 is locked
    label(f"Regenerate from measure {number[3]} (clicked last)")
    page.locator("#regenerate-from").click()
    wait_for_status(page, f"measure {number[6]} locked after measure {number[3]}")
    assert page.locator(MEASURES).count() == 10 and locked_columns(page) == [6]
    shot(page, "refused")
    click_measure(page, 6)
    click_measure(page, 3)
    label(f"Regenerate from measure {number[4]} (keeps measure {number[3]}, locked)")
    page.locator("#regenerate-from").click()
    wait_for_status(page, "Done in")
    shot(page, "regenerated")
    assert locked_columns(page) == [3]
    regenerated = download_musicxml(page, tmp_path / "regenerated.musicxml")
    for old, new in zip(measure_texts(original), measure_texts(regenerated), strict=True):
        assert new[:4] == old[:4]


def download_musicxml(page, target) -> str:
    with page.expect_download() as info:
        page.locator("#download-musicxml").click()
    info.value.save_as(target)
    return target.read_bytes().decode("utf-8")


def test_inpainting_asks_first_and_shows_progress(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#inpaint").click()
    wait_for_status(page, "Nothing was regenerated")
    click_measure(page, 2)
    wait_for_lock_summary(page, "1 measure locked")
    page.evaluate(RECORD_STATUSES)
    page.locator("#seed input").fill("3")
    page.locator("#inpaint").click()
    page.wait_for_function(
        "() => (document.querySelector('#versions input')?.value ?? '').includes('Regenerated unlocked')", timeout=180_000)
    statuses = page.evaluate("() => window.statuses")
    assert any("Regenerating: " in s and " / 36 measures" in s for s in statuses), statuses
    shot(page, "inpainted")


def test_reload_keeps_redo_and_the_prompt_fields(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    open_example(page, "Schoenberg - Op. 19/2")
    page.locator("#undo").click()
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 10")
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    page.locator("#period input").click()
    page.get_by_role("option", name="Romantic", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== 'Bach, Johann Sebastian'")
    composer = page.locator("#composer input").input_value()
    page.locator("#seed input").fill("7")
    page.locator("#max-bars input").fill("12")
    page.locator("#max-bars input").press("Tab")
    page.reload()
    wait_for_status(page, "restored")
    assert page.locator(MEASURES).count() == 10
    assert not page.locator("#redo").is_disabled()
    page.wait_for_function("(c) => (document.querySelector('#composer input')?.value ?? '') === c", arg=composer)
    assert page.locator("#period input").input_value() == "Romantic"
    assert page.locator("#seed input").input_value() == "7" and page.locator("#max-bars input").input_value() == "12"
    shot(page, "reloaded")
    page.locator("#redo").click()
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 9")


def test_first_look_and_a_fake_mxl(page, shot, tmp_path):
    assert "Generate" in page.locator("#score-view .score-empty").inner_text()
    color = page.evaluate("() => getComputedStyle(document.querySelector('#stop')).backgroundColor")
    red, green, blue = (int(x) for x in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
    assert not (red > 180 and green < 120 and blue < 120), color  # not a bright red while nothing runs
    shot(page, "empty")
    fake = tmp_path / "notes.mxl"
    fake.write_text("just some text, not a score")
    upload(page, fake)
    wait_for_status(page, "Error")
    assert "not an .mxl (zip) archive" in page.locator("#status").inner_text()


def test_stop_keeps_every_bar_under_the_pieces_title(page, shot):
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    page.locator("#seed input").fill("0")
    page.locator("#max-bars input").fill("128")
    generate_then_stop(page)
    shot(page, "stopped")
    statuses = page.evaluate("() => window.statuses")
    statuses = statuses[: max(i for i, s in enumerate(statuses) if "Stopped" in s)]
    bars = int([s for s in statuses if s.startswith("Generating: ")][-1].split()[1])
    assert page.locator(MEASURES).count() >= bars, statuses[-5:]  # every bar made before Stop is kept
    with page.expect_download() as info:
        page.locator("#download-musicxml").click()
    assert not info.value.suggested_filename.startswith("preview"), info.value.suggested_filename


def test_lyrics_of_two_verses_do_not_collide(page, shot, shared_dir):
    """In Chromium as it draws them: the syllables of a verse line do not overlap one another (they ran
    together: "binichein"), nor do the lines of two verses."""
    page.set_viewport_size({"width": 1400, "height": 900})
    song = shared_dir / "corpora" / "openscore-lieder" / "scores" / "Schubert_Franz__Winterreise_D_911_6_Wasserfluth__lc5016512.mxl"
    upload(page, song)
    wait_for_status(page, "Wasserfluth")
    page.wait_for_selector(MEASURES)
    page.evaluate("() => document.fonts.ready")
    page.locator(MEASURES).nth(8).scroll_into_view_if_needed()
    shot(page, "song")
    found = page.evaluate("""() => {
        const boxes = [...document.querySelectorAll('#score-view g.syl text')].map(t => t.getBoundingClientRect())
            .filter(b => b.width > 0).map(b => ({left: b.left, right: b.right, top: b.top, bottom: b.bottom}));
        const overlaps = [];
        for (const a of boxes) for (const b of boxes) {
            const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
            const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
            if (a !== b && x > 0.5 && y > 0.5) overlaps.push([a, b]);
        }
        return {count: boxes.length, overlaps: overlaps.slice(0, 3)};
    }""")
    assert found["count"] > 100 and not found["overlaps"], found
