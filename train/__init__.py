"""Standalone training of the Palette-Adapter on diffusers + accelerate (SPEC §8); never imported by ComfyUI."""
