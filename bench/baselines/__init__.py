"""The models TiTok's speed is compared with in `bench/sampling.py --compare paper`.

- `dit`: DiT-XL/2 (diffusers' `DiTTransformer2DModel`) + the sd-vae-ft-ema `AutoencoderKL`
  decoder, 250 DDPM steps with classifier-free guidance as one doubled batch; its own runner
  (`DiTRunner`), with the interface the harness times (`titok_bench.harness.models`).
- `maskgit`: the MaskGIT baseline: the same MaskGIT-ViT generator as TiTok-L-32 over the
  2D MaskGIT-VQGAN codes (16x16 at 256px, 32x32 at 512px), decoded by the MaskGIT-VQGAN decoder:
  a `titok.pipeline.Pipeline` like TiTok's.

Both build random weights on the target device (no download): speed does not depend on weights.
"""
