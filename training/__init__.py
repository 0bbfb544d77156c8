"""Dataset building and model training scripts."""
