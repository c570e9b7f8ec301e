"""One shared list of test shapes per op: the real TiTok shapes plus unaligned and edge cases."""

# nearest_code: (M rows, N codes, D dims, l2_normalize)
NEAREST_CODE_TITOK = [(64 * 32, 4096, 12, True), (64 * 32, 8192, 64, False)]
NEAREST_CODE_UNALIGNED = [(1, 1000, 8, True), (17, 4097, 13, False), (1000, 1000, 200, True), (17, 1000, 13, True)]

# maskgit_step: batch B, tokens K, vocabulary V
MASKGIT_STEP_B = [1, 3, 8]
MASKGIT_STEP_K = [8, 32, 33, 128]
MASKGIT_STEP_V = [64, 1000, 4096]

# concat_attention: (B, H, d, shared_len, per_sample_len, shared_first)
CONCAT_ATTENTION = [
    (1, 16, 64, 257, 32, True),    # TiTok-L decoder, first layer
    (3, 16, 64, 257, 32, True),
    (1, 8, 64, 257, 128, True),    # TiTok-S-128 decoder
    (3, 16, 64, 32, 257, False),   # encoder order: 256 patches + cls per sample, then 32 shared latents
    (1, 4, 64, 1, 1, True),        # odd lengths
    (3, 4, 64, 17, 100, True),
    (3, 4, 32, 17, 100, False),    # d = 32
    (1, 2, 128, 17, 100, True),    # d = 128
    (3, 4, 64, 0, 100, True),      # empty shared segment: plain attention
]
