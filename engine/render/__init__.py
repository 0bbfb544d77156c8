"""Engraving (verovio SVG), MIDI and audio (FluidSynth)."""
