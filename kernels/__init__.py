"""Triton kernels for TiTok: one module per op, each with a validating launcher and a pure-torch reference.

    from kernels.nearest_code import nearest_code
    from kernels.maskgit_step import maskgit_step
    from kernels.concat_attention import concat_attention

Nothing is imported here, so `import kernels` never imports Triton or queries a device.
"""
