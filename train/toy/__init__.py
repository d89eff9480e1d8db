"""Toy-scale proof that the Palette-Adapter training learns (issue 5): synthetic data, a small base model."""
