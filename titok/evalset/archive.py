"""The final archive: samples.npz streamed from the shards (the ADM evaluation suite's format), tokens.npy."""
from __future__ import annotations

from pathlib import Path

from titok.errors import TiTokInputError
from titok.evalset.plan import Layout


def write_npz_streaming(path: Path, arrays: list[tuple[str, object, tuple, object]]) -> None:
    """Write an uncompressed .npz whose arrays come in pieces: [(name, dtype, shape, iterable of C-ordered
    pieces)], without holding any array whole. Entries carry a fixed timestamp, so the same arrays give
    the same bytes. np.load and the evaluation suite's streaming reader read it as any np.savez file."""
    import zipfile

    import numpy as np

    from titok.outputs import atomic_write

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, dtype, shape, pieces in arrays:
                dtype = np.dtype(dtype)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                expected = int(np.prod(shape)) * dtype.itemsize
                written = 0
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                            "shape": tuple(int(s) for s in shape)})
                    for piece in pieces:
                        piece = np.ascontiguousarray(piece, dtype=dtype)
                        f.write(piece.data)
                        written += piece.nbytes
                if written != expected:
                    raise RuntimeError(f"{name}: wrote {written} bytes, expected {expected}")
    atomic_write(Path(path), write)


def assemble(layout: Layout, *, image_shape: tuple, seq_len: int, write_png=None) -> dict:
    """Rank 0, once every shard exists: samples.npz (streamed shard by shard) and tokens.npy; PNGs missing
    from samples/ are written from the shards (`write_png`). Returns what was written."""
    import numpy as np

    from titok.images import save_npy

    plan = layout.plan
    n = plan.num_samples
    labels = plan.labels()
    tokens = np.empty((n, seq_len), dtype=np.int64)

    def pieces():
        for j in range(plan.num_shards):
            start, stop = plan.shard_range(j)
            try:
                with np.load(layout.shard(j)) as z:
                    images, lab, tok = z["images"], z["labels"], z["tokens"]
            except (OSError, ValueError, KeyError) as exc:
                raise TiTokInputError(f"{layout.shard(j)} is unreadable ({type(exc).__name__}); delete it and run "
                                      "the same command again to remake it") from None
            if images.shape != (stop - start, *image_shape) or not np.array_equal(lab, labels[start:stop]):
                raise TiTokInputError(f"{layout.shard(j)} does not hold samples {start}..{stop - 1} of this run; "
                                      "delete it and run the same command again to remake it")
            tokens[start:stop] = tok
            if write_png is not None:
                for r in range(stop - start):
                    if not layout.png(start + r, int(lab[r])).is_file():
                        write_png(start + r, int(lab[r]), images[r])
            yield images

    write_npz_streaming(layout.npz, [("arr_0", np.uint8, (n, *image_shape), pieces()),
                                     ("labels", np.int64, (n,), [labels])])
    save_npy(layout.tokens, tokens)
    return {"npz": str(layout.npz), "tokens": str(layout.tokens)}


def read_npz_header(path: Path, name: str = "arr_0") -> tuple[tuple, object]:
    """(shape, dtype) of one array of an .npz, read from its header only (as the evaluation suite does)."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    return shape, dtype
