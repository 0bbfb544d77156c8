"""The score document and every conversion (MusicXML, ABC, interleaved ABC, MIDI, measure grid)."""
