"""Random-weight ComfyUI models of each image family (SD1.5, SDXL, SD3, Flux), tiny or full-size.

Built from ComfyUI's own classes (``comfy.supported_models`` configs: real layer types, latent formats and
``model_sampling``) for the integration tests (tiny) and ``bench/bench_families.py`` (both sizes). Needs
ComfyUI loaded first (``comfyhost.load_comfyui``).
"""

from __future__ import annotations

import torch
from comfyhost import init_random_, sdxl_conditioning, sdxl_model_config, tiny_sdxl

FAMILY_NAMES = ["SD15", "SDXL", "SD3", "Flux"]
CFG = {"SD15": 4.0, "SDXL": 4.0, "SD3": 4.0, "Flux": 1.0}  # Flux dev/schnell are sampled at cfg 1

# Per family and size, what differs from ComfyUI's config: tiny keeps the layer types with few channels and
# blocks; full is the layout model_detection finds in the released checkpoints (SD3: medium).
SD15_UNET = {
    "tiny": {
        "model_channels": 32,
        "num_res_blocks": [1, 1],
        "channel_mult": [1, 2],
        "transformer_depth": [1, 1],
        "transformer_depth_output": [1, 1, 1, 1],
    },
    "full": {
        "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "num_heads": 8,
        "use_temporal_resblock": False,
    },
}
SD3_DEPTH = {"tiny": (2, 256, 16), "full": (24, 36864, 192)}  # depth (hidden size 64 * depth), patches, pos embed
FLUX_DIT = {
    "tiny": {
        "hidden_size": 64,
        "mlp_ratio": 2.0,
        "num_heads": 2,
        "depth": 1,
        "depth_single_blocks": 1,
        "axes_dim": [4, 14, 14],
    },
    "full": {
        "hidden_size": 3072,
        "mlp_ratio": 4.0,
        "num_heads": 24,
        "depth": 19,
        "depth_single_blocks": 38,
        "axes_dim": [16, 56, 56],
    },
}


def patcher(model):
    """``model`` as a ModelPatcher that loads and offloads on ComfyUI's torch device."""
    import comfy.model_management
    import comfy.model_patcher

    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def model_config(name: str, size: str):
    """ComfyUI's model config of family ``name`` at ``size`` ("tiny" or "full")."""
    import comfy.supported_models as sm

    if name == "SD15":
        config = dict(sm.SD15.unet_config)
        config.update(
            in_channels=4,
            out_channels=4,
            transformer_depth_middle=1,
            image_size=32,
            use_checkpoint=False,
            use_spatial_transformer=True,
            legacy=False,
            num_classes=None,
            **SD15_UNET[size],
        )
        return sm.SD15(config)
    if name == "SD3":
        depth, patches, pos_embed = SD3_DEPTH[size]
        return sm.SD3(
            {
                "in_channels": 16,
                "out_channels": 16,
                "patch_size": 2,
                "depth": depth,
                "input_size": None,
                "adm_in_channels": 2048,
                "context_embedder_config": {
                    "target": "torch.nn.Linear",
                    "params": {"in_features": 4096, "out_features": 64 * depth},
                },
                "num_patches": patches,
                "pos_embed_max_size": pos_embed,
                "pos_embed_scaling_factor": None,
                "x_block_self_attn_layers": [],
            }
        )
    if name == "Flux":
        return sm.Flux(
            {
                "image_model": "flux",
                "guidance_embed": True,
                "in_channels": 16,
                "out_channels": 16,
                "patch_size": 2,
                "vec_in_dim": 768,
                "context_in_dim": 4096,
                "theta": 10000,
                "qkv_bias": True,
                **FLUX_DIT[size],
            }
        )
    raise ValueError(f"no {size} config for family {name!r}; families: {FAMILY_NAMES}")


def family_model(name: str, size: str = "tiny", dtype: torch.dtype = torch.float32, seed: int = 0, device=None):
    """A random-weight ComfyUI model of family ``name`` at ``size`` as a ModelPatcher (built on ``device``)."""
    if name == "SDXL":
        if size == "tiny" and device is None:
            return tiny_sdxl(seed=seed)
        config = sdxl_model_config(320 if size == "full" else 64, dtype)
    else:
        config = model_config(name, size)
        config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    init_random_(model.diffusion_model, seed)
    pos_embed = getattr(model.diffusion_model, "pos_embed", None)
    if isinstance(pos_embed, torch.Tensor) and not isinstance(pos_embed, torch.nn.Parameter):
        # SD3's MMDiT allocates its position table with torch.empty and fills it from the checkpoint: left as it
        # is, a random-weight model carries whatever that memory held, and tests' results hang on test order
        g = torch.Generator(device=pos_embed.device).manual_seed(seed)
        with torch.no_grad():
            pos_embed.copy_(0.02 * torch.randn(pos_embed.shape, generator=g, device=pos_embed.device))
    return patcher(model)


def conditioning(name: str, seed: int, batch: int = 1):
    """Random conditioning of the family's text-encoder shapes, in ComfyUI's format."""
    if name == "SDXL":
        return sdxl_conditioning(seed, batch)
    g = torch.Generator().manual_seed(seed)
    if name == "SD15":
        return [[torch.randn(batch, 77, 768, generator=g), {}]]
    pooled = 2048 if name == "SD3" else 768
    extra = {"pooled_output": torch.randn(batch, pooled, generator=g)}
    if name == "Flux":
        extra["guidance"] = 3.5
    return [[torch.randn(batch, 8, 4096, generator=g), extra]]


def run_sample(model, name: str, callback=None, seed: int = 0, steps: int = 2, side: int = 8):
    """Sample a ``side x side`` latent through ComfyUI's KSampler path; the VAE-space latent, as KSampler gives it."""
    import comfy.sample

    channels = model.get_model_object("latent_format").latent_channels
    latent = torch.zeros(1, channels, side, side)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        out = comfy.sample.sample(
            model,
            noise,
            steps,
            CFG[name],
            "euler",
            "normal",
            conditioning(name, 1),
            conditioning(name, 2),
            latent,
            seed=seed,
            callback=callback,
            disable_pbar=True,
        )
        return out.clone()


def tiny_vae(channels: int, seed: int = 3):
    """A small random-weight ComfyUI AutoencoderKL making ``channels``-channel latents, as a comfy.sd.VAE."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {
        "double_z": True,
        "z_channels": channels,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    with torch.inference_mode():
        ae = AutoencoderKL(ddconfig=ddconfig, embed_dim=channels)
        init_random_(ae, seed)
        vae = comfy.sd.VAE(sd=ae.state_dict(), config={"params": {"ddconfig": ddconfig, "embed_dim": channels}})
    # the explicit-config path keeps the default 4; ComfyUI's detecting path reads it from decoder.conv_in
    vae.latent_channels = channels
    return vae


class PreviewInverseAE(torch.nn.Module):
    """An autoencoder whose encoder inverts a latent format's preview map per 8x8 block (VAE space out)."""

    def __init__(self, fmt) -> None:
        super().__init__()
        self.fmt = fmt
        f = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32)
        bias = fmt.latent_rgb_factors_bias
        self.register_buffer("f", f)
        self.register_buffer("b", torch.tensor(bias if bias is not None else [0.0, 0.0, 0.0]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        rgb = torch.nn.functional.avg_pool2d(x, 8).movedim(1, -1)  # [-1, 1], as the previewer's output
        z = (rgb - self.b) @ torch.linalg.pinv(self.f)
        return self.fmt.process_out(z.movedim(-1, 1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        rgb = (self.fmt.process_in(z).movedim(1, -1) @ self.f + self.b).movedim(-1, 1)
        return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")


def preview_vae(model):
    """A comfy.sd.VAE (ComfyUI's encode/decode plumbing) with the preview-inverting network inside."""
    import comfy.model_patcher

    fmt = model.get_model_object("latent_format")
    vae = tiny_vae(fmt.latent_channels)
    with torch.inference_mode():
        vae.first_stage_model = PreviewInverseAE(fmt)
    vae.patcher = comfy.model_patcher.ModelPatcher(vae.first_stage_model, vae.device, vae.device)
    return vae
