"""The measure model of Yan & Duan, "Structured polyphonic music modeling via a measure model".

    cells           the grid's types (MeasureScore, Cell, ChordEvent, ...) and beat/duration arithmetic
    measure_cells   one music21 measure <-> one Cell (the paper's preprocessing)
    representation  scores <-> grids of part-wise measures, on engine.score.grid's rows and columns
    model           chord / duration / voice / measure encoders and decoders, CSD and AR inter-measure models
    inpaint         CSD inpainting (Algorithm 1) from a window of columns, and generation of new pieces
    check_inpaint   the inpainting invariants on real scores (python -m engine.measure.check_inpaint --all)

See docs/measure_model.md for the design and the formulas chosen where the paper's were lost.
"""
