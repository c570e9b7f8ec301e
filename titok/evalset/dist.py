"""The processes of a run: one, or torchrun's (rank, world size, the device of each)."""
from __future__ import annotations

import dataclasses
import os

from titok.errors import TiTokInputError


@dataclasses.dataclass
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False
    store: object = None
    key: str = ""

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a no-op in one process)."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def add_done(self, n: int) -> int | None:
        """Add n to the job's count of samples made in this run; the count (None without a store)."""
        if self.store is None:
            return None
        try:
            return int(self.store.add(self.key, int(n)))
        except Exception:  # noqa: BLE001 - progress is best effort; the shard files are the truth
            self.store = None
            return None

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device_arg: str) -> tuple[DistContext, object]:
    """(context, device). Under torchrun (WORLD_SIZE > 1 in the environment) each process joins the job:
    NCCL for CUDA tensors and gloo for CPU ones (only small control messages cross processes: the
    images go through the shared output folder); each process takes cuda:LOCAL_RANK."""
    import torch

    from titok.cli import options

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext(), options.device(device_arg)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg in ("auto", "cuda") and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise TiTokInputError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA "
                                  "GPU(s): start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device_arg.startswith("cuda:"):
        raise TiTokInputError(f"--device {device_arg}: under torchrun each process takes cuda:LOCAL_RANK; "
                              "give --device cuda or auto")
    else:
        device = options.device(device_arg)
    import datetime

    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local, initialized=True)
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        ctx.store = _get_default_store()
        ctx.key = f"titok_sample/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/" \
                  f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/done"
    except Exception:  # noqa: BLE001 - no store: rank 0 counts shard files instead
        ctx.store = None
    return ctx, device
