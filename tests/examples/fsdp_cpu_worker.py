"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on CPU with gloo: two ranks train a sharded HybridGRU, and each
rank also trains an unsharded copy on the full batch; rank 0 writes both loss curves and the weight difference.

    torchrun --nproc_per_node 2 tests/examples/fsdp_cpu_worker.py OUT.json
"""

import gc
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from hf_gru import HybridGRUConfig, HybridGRUForCausalLM


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = HybridGRUConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        block_pattern="GGA", gru_variant="gru",
    )  # fmt: skip
    sharded, reference = HybridGRUForCausalLM(config), HybridGRUForCausalLM(config)
    reference.load_state_dict(sharded.state_dict())
    full_shapes = {name: tuple(p.shape) for name, p in sharded.named_parameters()}
    for layer in sharded.model.layers:  # one FSDP unit per decoder layer, then the root (embeddings, head)
        fully_shard(layer)
    fully_shard(sharded)
    local_shapes = {name: tuple(p.to_local().shape) for name, p in sharded.named_parameters()}
    optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    losses, reference_losses = [], []
    per_rank = 2
    for _ in range(4):
        batch = torch.randint(0, 128, (per_rank * world, 16), generator=generator)
        mine = batch[rank * per_rank : (rank + 1) * per_rank]  # this rank's half of the global batch
        loss = sharded(input_ids=mine, labels=mine).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        reference_loss = reference(input_ids=batch, labels=batch).loss
        reference_loss.backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        reference_losses.append(reference_loss.item())
    full = {name: p.full_tensor() for name, p in sharded.named_parameters()}
    difference = max((full[n] - p).abs().max().item() for n, p in reference.named_parameters())
    if rank == 0:
        report = {
            "world": world, "losses": losses, "reference_losses": reference_losses,
            "max_weight_difference": difference, "full_shapes": full_shapes, "local_shapes": local_shapes,
        }  # fmt: skip
        with open(out_path, "w") as f:
            json.dump(report, f)
    dist.barrier()
    del sharded, optimizer, full  # drop every holder of the process group (FSDP's mesh) before destroying it
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
