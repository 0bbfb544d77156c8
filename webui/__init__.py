"""Gradio front end: a thin layer over engine.service."""
