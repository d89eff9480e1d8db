"""Toy-scale proof that the Palette-Adapter training learns: synthetic data, a small base model."""
