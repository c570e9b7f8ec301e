"""Triton kernels for TiTok: one module per op, each with a validating launcher and a pure-torch reference.

    from titok_kernels.nearest_code import nearest_code
    from titok_kernels.maskgit_step import maskgit_step
    from titok_kernels.concat_attention import concat_attention

Nothing is imported here, so `import titok_kernels` never imports Triton or queries a device.
"""
