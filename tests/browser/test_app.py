"""The app in a real browser: open, see, lock, listen, undo, reload, download, bad uploads."""
from __future__ import annotations

from pathlib import Path

from engine.score.formats import read_score_file

MEASURES = "#score-view svg g.measure"


def open_example(page, title: str) -> None:
    page.locator("#example input").click()
    page.get_by_role("option", name=title).click()
    page.locator("#open-example").click()
    wait_for_status(page, title)
    page.wait_for_selector(MEASURES)


def wait_for_status(page, text: str) -> None:
    """Wait until the status line (present once the page has rendered) contains `text`."""
    page.wait_for_function(
        "(text) => { const s = document.querySelector('#status'); return s && s.innerText.includes(text); }", arg=text
    )


def upload(page, path) -> None:
    """Upload as a user does: click the button, pick the file in the chooser."""
    with page.expect_file_chooser() as chooser:
        page.locator("#upload").click()
    chooser.value.set_files(str(path))


def click_measure(page, column: int, staff: int | None = None, modifier: str | None = None) -> None:
    """Click the middle of a measure (or of one staff of it) on screen, as a user does, holding `modifier`
    ("Shift": a range from the measure clicked last; "Alt": one part only)."""
    target = page.locator(MEASURES).nth(column)
    if staff is not None:
        target = target.locator(f'g.staff[data-n="{staff}"]')
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    if modifier:
        page.keyboard.up(modifier)


def locked_columns(page) -> list[int]:
    return page.evaluate(
        f"() => [...document.querySelectorAll('{MEASURES}')].flatMap((m, i) => m.classList.contains('locked') ? [i] : [])"
    )


def wait_for_lock_summary(page, text: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#lock-summary').innerText.includes({text!r})")


def test_open_engrave_and_download(page, shot, tmp_path):
    open_example(page, "Bach - Chorale BWV 66.6")
    assert page.locator(MEASURES).count() == 10
    assert "4 parts, 10 measures" in page.locator("#status").inner_text()
    shot(page, "engraved")
    for fmt in ("musicxml", "mid", "abc"):
        with page.expect_download() as info:
            page.locator(f"#download-{fmt}").click()
        target = tmp_path / f"download.{fmt}"
        info.value.save_as(target)
        reread = read_score_file(target)  # the path an upload of the file takes
        assert reread.n_parts == 4, fmt
        # MIDI knows no pickup: the chorale's 1-beat pickup and short last bar regroup into 9 full bars
        assert reread.n_measures == (9 if fmt == "mid" else 10), fmt
        assert len(reread.score().recurse().notes) > 50, fmt
    with page.expect_download() as info:
        page.locator("#download-svg").click()
    assert info.value.suggested_filename.endswith(".svg")
    page.locator("#make-pdf").click()
    page.wait_for_function("() => !document.querySelector('#download-pdf').disabled")
    with page.expect_download() as info:
        page.locator("#download-pdf").click()
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF")


def test_click_measures_to_lock_and_unlock(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    click_measure(page, 2)
    wait_for_lock_summary(page, "1 measure locked")
    click_measure(page, 5)
    wait_for_lock_summary(page, "2 measures locked")
    assert locked_columns(page) == [2, 5]
    assert page.locator("#score-view rect.mark-locked").count() == 2
    shot(page, "two-locked")

    click_measure(page, 2)
    wait_for_lock_summary(page, "1 measure locked")
    assert locked_columns(page) == [5]

    click_measure(page, 7, staff=2, modifier="Alt")
    wait_for_lock_summary(page, "1 single-part cell locked")
    assert page.locator(f'{MEASURES} g.staff.locked[data-n="2"]').count() == 1

    page.locator("#invert-locks").click()
    wait_for_lock_summary(page, "8 measures locked, 3 single-part cells locked")
    page.locator("#unlock-all").click()
    wait_for_lock_summary(page, "no measures locked")
    assert locked_columns(page) == []
    page.locator("#lock-all").click()
    wait_for_lock_summary(page, "10 measures locked")
    shot(page, "all-locked")


def test_listen_with_moving_highlight(page, shot):
    open_example(page, "Bach - Chorale BWV 66.6")
    page.locator("#listen").click()
    audio = page.locator("#player audio")
    audio.wait_for(state="attached")
    src = audio.evaluate("a => a.src")  # absolute URL
    assert src.endswith(".ogg")
    assert page.request.get(src).body()[:4] == b"OggS"
    duration = page.wait_for_function(
        "() => { const a = document.querySelector('#player audio'); return a.duration > 0 ? a.duration : null; }"
    ).json_value()
    assert 10 < duration < 60  # ten bars of a chorale at a hymn tempo
    page.evaluate("() => { const a = document.querySelector('#player audio'); a.muted = true; return a.play(); }")
    first = page.wait_for_function(
        "() => { const m = document.querySelector('#score-view g.measure.playing'); return m && m.getAttribute('data-n'); }"
    ).json_value()
    shot(page, "playing")
    later = page.wait_for_function(
        f"""() => {{ const m = document.querySelector('#score-view g.measure.playing');
                    return m && m.getAttribute('data-n') !== {first!r} ? m.getAttribute('data-n') : null; }}""",
        timeout=30_000,
    ).json_value()
    assert int(later) > int(first)
    assert page.locator("#score-view g.measure.playing").count() == 1


def test_undo_redo_and_reload_restore(page, shot, browser, app_url):
    open_example(page, "Bach - Chorale BWV 66.6")
    open_example(page, "Schoenberg - Op. 19/2")
    assert page.locator(MEASURES).count() == 9
    click_measure(page, 3)
    wait_for_lock_summary(page, "1 measure locked")
    page.locator("#undo").click()
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 10")
    assert "BWV 66.6" in page.locator("#status").inner_text()
    page.locator("#redo").click()
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 9")
    shot(page, "redo")

    page.reload()
    page.wait_for_selector(MEASURES)
    wait_for_status(page, "restored")
    assert page.locator(MEASURES).count() == 9
    wait_for_lock_summary(page, "1 measure locked")
    assert locked_columns(page) == [3]
    shot(page, "reloaded")

    second_tab = page.context.new_page()  # a new tab starts from the newest work, then goes its own way
    second_tab.goto(app_url)
    wait_for_status(second_tab, "restored")
    assert second_tab.locator(MEASURES).count() == 9
    open_example(second_tab, "Bach - Chorale BWV 4.8")
    page.reload()  # the first tab keeps its own score
    wait_for_status(page, "restored")
    assert page.locator(MEASURES).count() == 9
    second_tab.reload()
    wait_for_status(second_tab, "BWV 4.8")

    other = browser.new_context().new_page()  # another visitor starts empty
    other.goto(app_url)
    other.wait_for_selector("#score-view .score-empty")
    other.context.close()


def test_corrupt_upload_keeps_score_and_history(page, shot, notagen_reference, tmp_path):
    source = notagen_reference / "preprocess" / "haydn_op74no1_mv1_m1-8" / "source.musicxml"
    upload(page, source)
    page.wait_for_selector(MEASURES)
    before = page.locator("#score-view").inner_html()

    broken = tmp_path / "broken.musicxml"
    broken.write_text(Path(source).read_text()[:3000])
    upload(page, broken)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Error')")
    status = page.locator("#status").inner_text()
    assert "broken.musicxml" in status and "not well-formed" in status
    assert page.locator("#score-view").inner_html() == before
    assert page.locator("#undo").is_disabled()  # no version was added
    shot(page, "corrupt-upload")
