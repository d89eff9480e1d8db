"""Build a random-weight full-size SDXL checkpoint with ComfyUI's own classes (for end-to-end API tests).

``python tests/random_sdxl.py OUT.safetensors`` with ComfyUI's Python and COMFYUI_PATH set. UNet, CLIP-L/G
and VAE are ComfyUI's modules, initialised explicitly (ComfyUI builds layers uninitialised) and saved
through the CheckpointSave path, so CheckpointLoaderSimple detects the file as SDXL. ~6.5 GB in fp16.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfyhost import init_random_, load_comfyui, sdxl_model_config  # noqa: E402

VAE_CONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def build(path: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint to ``path`` (skipped when it already exists) and return the path."""
    path = Path(path)
    if path.exists():
        return path
    load_comfyui()
    import comfy.ldm.models.autoencoder
    import comfy.sdxl_clip
    import comfy.utils
    import torch

    model_config = sdxl_model_config(320, torch.float16)
    model = model_config.get_model({})
    init_random_(model, seed)
    clip = comfy.sdxl_clip.SDXLClipModel(dtype=torch.float16)
    init_random_(clip, seed + 1)
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
    init_random_(vae, seed + 2)
    sd = model.state_dict_for_saving(clip.state_dict(), vae.state_dict())
    sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    comfy.utils.save_torch_file(sd, str(tmp))
    tmp.rename(path)
    return path


if __name__ == "__main__":
    print(build(sys.argv[1]))
