"""The measure model of Yan & Duan, "Structured polyphonic music modeling via a measure model".

    representation  scores <-> grids of part-wise measures (voices of chord-duration tuples)
    model           chord / duration / voice / measure encoders and decoders, CSD and AR inter-measure models
    inpaint         CSD inpainting (Algorithm 1) and generation of new pieces

See docs/measure_model.md for the design and the formulas chosen where the paper's were lost.
"""
