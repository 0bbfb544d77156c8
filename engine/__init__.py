"""Everything that is not UI: scores, conversions, models, rendering. Usable from a notebook or a CLI."""
