"""Music scoring: the M3 symbolic encoder of CLaMP 2, piece features, and the paper's evaluation metrics."""
