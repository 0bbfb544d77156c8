"""The first vertical slice in a real browser: open, see, hear, download; bad uploads keep the score."""
from __future__ import annotations

from pathlib import Path

from engine.score.formats import read_score_file


def open_example(page, title: str) -> None:
    page.locator("#example input").click()
    page.get_by_role("option", name=title).click()
    page.locator("#open-example").click()


def upload(page, path) -> None:
    """Upload as a user does: click the button, pick the file in the chooser."""
    with page.expect_file_chooser() as chooser:
        page.locator("#upload").click()
    chooser.value.set_files(str(path))


def test_open_example_engrave_listen_download(page, shot, tmp_path):
    open_example(page, "Bach - Chorale BWV 66.6")
    page.wait_for_selector("#score-view svg g.measure")
    assert page.locator("#score-view svg g.measure").count() == 10
    assert "4 parts, 10 measures" in page.locator("#status").inner_text()
    shot(page, "engraved")

    page.locator("#listen").click()
    link = page.locator("#audio a[download]")
    link.wait_for(state="attached")
    href = link.get_attribute("href")
    assert href.endswith(".ogg")
    assert page.request.get(href).body()[:4] == b"OggS"
    duration = page.evaluate(
        """(href) => new Promise((resolve, reject) => {
            const probe = new Audio(href);
            probe.onloadedmetadata = () => resolve(probe.duration);
            probe.onerror = () => reject(new Error('the browser cannot decode the audio'));
        })""",
        href,
    )
    assert 10 < duration < 60  # ten bars of a chorale at a hymn tempo
    shot(page, "audio")

    for fmt, suffix in (("musicxml", ".musicxml"), ("mid", ".mid"), ("abc", ".abc")):
        with page.expect_download() as info:
            page.locator(f"#download-{fmt}").click()
        target = tmp_path / f"download{suffix}"
        info.value.save_as(target)
        reread = read_score_file(target)  # the path an upload of the file takes
        assert reread.n_parts == 4, fmt
        # MIDI knows no pickup: the chorale's 1-beat pickup and short last bar regroup into 9 full bars
        assert reread.n_measures == (9 if fmt == "mid" else 10), fmt
        assert len(reread.score().recurse().notes) > 50, fmt


def test_upload_then_corrupt_upload_keeps_score(page, shot, notagen_reference, tmp_path):
    source = notagen_reference / "preprocess" / "haydn_op74no1_mv1_m1-8" / "source.musicxml"
    upload(page, source)
    page.wait_for_selector("#score-view svg g.measure")
    before = page.locator("#score-view").inner_html()
    shot(page, "uploaded")

    broken = tmp_path / "broken.musicxml"
    broken.write_text(Path(source).read_text()[:3000])
    upload(page, broken)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Error')")
    status = page.locator("#status").inner_text()
    assert "broken.musicxml" in status and "not well-formed" in status
    assert page.locator("#score-view").inner_html() == before
    shot(page, "corrupt-upload")
