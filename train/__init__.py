"""Standalone training of the Palette-Adapter with diffusers + accelerate (docs/design.md §8), outside ComfyUI."""
