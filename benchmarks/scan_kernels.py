"""The GRU recurrence alone, forward + backward, for each way of running it: which one the model should use per device.

    python benchmarks/scan_kernels.py                      # CPU: T = 1024 and 4096, batch 8 (~10 min on 2 cores)
    python benchmarks/scan_kernels.py --quick
    python benchmarks/scan_kernels.py --device cuda

Widths are the size-matched models' (train_throughput.py): minGRU state 688, GRU state 336, input width 512.
`gru`: the reference autograd loop (`gru_recurrence`), torch.nn.GRU, the `gru_scan` custom op (hand-written backward)
and, on CUDA, cuDNN through `cudnn_gru`. `mingru` (h_t = a_t h_{t-1} + b_t): the reference autograd loop
(`linear_recurrence`), the `linear_scan` op with its sequential and chunked kernels, torch's associative_scan, and a
log-space scan (Heinsen, 2023; signed values as two logcumsumexp scans). Each is timed interleaved with the others
(median of `--reps`), with its max abs error against a float64 run of the reference on the same inputs.
"""

import torch
from common import base_parser, interleaved, markdown_table, median, print_header, setup, write_json
from torch import nn

from hf_gru.models.hybrid_gru.recurrence_hybrid_gru import (
    cudnn_gru,
    gru_recurrence,
    gru_scan,
    linear_recurrence,
    linear_scan,
    linear_scan_chunked,
    linear_scan_sequential,
)


def log_space_scan(decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = sum_s (prod_{s<r<=t} a_r) b_s in log space, b split into its positive and negative parts. (B, T, H)."""
    values = torch.cat([h0.unsqueeze(1), values], dim=1)
    log_gain = torch.cat([torch.zeros_like(h0).unsqueeze(1), torch.log(decay).cumsum(1)], dim=1)
    tiny = torch.finfo(values.dtype).tiny
    positive = torch.logcumsumexp(torch.log(values.clamp(min=0) + tiny) - log_gain, dim=1)
    negative = torch.logcumsumexp(torch.log((-values).clamp(min=0) + tiny) - log_gain, dim=1)
    return (torch.exp(log_gain + positive) - torch.exp(log_gain + negative))[:, 1:]


def associative(decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    from torch._higher_order_ops.associative_scan import associative_scan

    values = torch.cat([(decay[:, :1] * h0.unsqueeze(1) + values[:, :1]), values[:, 1:]], dim=1)
    combine = lambda left, right: (left[0] * right[0], right[0] * left[1] + right[1])  # noqa: E731
    return associative_scan(combine, (decay, values), dim=1, combine_mode="generic")[1]


class _Chunked(torch.autograd.Function):
    """The chunked kernel with the same backward as `linear_scan`, to time it on CPU too (the op picks it on GPUs)."""

    @staticmethod
    def forward(ctx, decay, values, h0, chunk):
        states = linear_scan_chunked(decay, values, h0, chunk)
        ctx.save_for_backward(decay, h0, states)
        ctx.chunk = chunk
        return states

    @staticmethod
    def backward(ctx, grad):
        decay, h0, states = ctx.saved_tensors
        shifted = torch.cat([decay[1:], torch.zeros_like(decay[:1])])
        zeros = torch.zeros_like(h0)
        if ctx.chunk:
            grad_states = linear_scan_chunked(shifted, grad.contiguous(), zeros, ctx.chunk, reverse=True)
        else:
            grad_states = linear_scan_sequential(shifted, grad.contiguous(), zeros, reverse=True)
        previous = torch.cat([h0.unsqueeze(0), states[:-1]])
        return grad_states * previous, grad_states, decay[0] * grad_states[0], None


class _Sequential(_Chunked):
    @staticmethod
    def forward(ctx, decay, values, h0, chunk):
        states = linear_scan_sequential(decay, values, h0)
        ctx.save_for_backward(decay, h0, states)
        ctx.chunk = 0  # sequential backward too
        return states


def time_major(fn):
    return lambda a, b, h: fn(a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous(), h).transpose(0, 1)


def mingru_candidates(device: str) -> dict:
    candidates = {
        "reference loop (autograd)": lambda a, b, h: linear_recurrence(a, b, h)[0],
        "linear_scan op (picks per device)": time_major(lambda a, b, h: linear_scan(a, b, h, False)),
        "sequential kernel": time_major(lambda a, b, h: _Sequential.apply(a, b, h, 0)),
        "chunked kernel, chunk 32": time_major(lambda a, b, h: _Chunked.apply(a, b, h, 32)),
        "chunked kernel, chunk 64": time_major(lambda a, b, h: _Chunked.apply(a, b, h, 64)),
        "torch associative_scan": associative,
        "log-space scan": log_space_scan,
    }
    return candidates


def gru_candidates(device: str, size: int, width: int) -> dict:
    input_proj, hidden_proj = nn.Linear(width, 3 * size).to(device), nn.Linear(size, 3 * size).to(device)
    module = nn.GRU(width, size, batch_first=True).to(device)
    with torch.no_grad():
        for mine, theirs in zip(
            (input_proj.weight, hidden_proj.weight, input_proj.bias, hidden_proj.bias),
            module.parameters(),
            strict=True,
        ):
            theirs.copy_(mine)
    candidates = {
        "reference loop (autograd)": lambda x, h: gru_recurrence(input_proj(x), h, hidden_proj)[0],
        "gru_scan op": lambda x, h: gru_scan(
            input_proj(x.transpose(0, 1)), h, hidden_proj.weight, hidden_proj.bias, None, None, True
        )[0].transpose(0, 1),
        "torch.nn.GRU": lambda x, h: module(x, h.unsqueeze(0))[0],
    }
    if device == "cuda":
        candidates["cudnn_gru (fp32)"] = lambda x, h: cudnn_gru(x, h, input_proj, hidden_proj)[0]
    return candidates, (input_proj, hidden_proj)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.lengths, args.batch = "256", 2
    info = print_header("GRU recurrences alone: forward + backward", args)
    rows, results = [], []
    for steps in (int(t) for t in args.lengths.split(",")):
        reps = args.reps or (2 if args.quick else 3)
        dev = args.device
        # minGRU: decays in (0, 1), values of either sign, as the model's gates give
        decay = torch.sigmoid(torch.randn(args.batch, steps, 688, device=dev))
        values, h0 = torch.randn(args.batch, steps, 688, device=dev), torch.randn(args.batch, 688, device=dev)
        weight = torch.randn_like(values)
        exact = linear_recurrence(decay.double(), values.double(), h0.double())[0]
        candidates = mingru_candidates(dev)
        if steps > 2048 and dev == "cpu":  # seconds per call and ~1e-4 error at 1024 already: skipped at this length
            candidates.pop("log-space scan")
        runs = {}
        for name, fn in candidates.items():
            inputs = [t.clone().requires_grad_() for t in (decay, values, h0)]
            runs[name] = lambda fn=fn, inputs=inputs, w=weight: (fn(*inputs) * w).sum().backward()
        times = interleaved(runs, reps, args.warmup, dev)
        for name, fn in candidates.items():
            with torch.no_grad():
                error = (fn(decay, values, h0).double() - exact).abs().max().item()
            rows.append(["mingru", steps, name, f"{median(times[name]) * 1e3:,.1f}", f"{error:.1e}"])
            results.append({"cell": "mingru", "steps": steps, "method": name, "s": times[name], "error": error})

        x, h = torch.randn(args.batch, steps, 512, device=dev), torch.randn(args.batch, 336, device=dev)
        candidates, (input_proj, hidden_proj) = gru_candidates(dev, 336, 512)
        weight = torch.randn(args.batch, steps, 336, device=dev)
        with torch.no_grad():
            exact = gru_recurrence(input_proj.double()(x.double()), h.double(), hidden_proj.double())[0]
            input_proj.float(), hidden_proj.float()
        if steps > 2048 and dev == "cpu":  # the autograd loop takes minutes at this length on 2 cores
            candidates.pop("reference loop (autograd)")
        runs = {
            name: (lambda fn=fn, x=x, h=h, w=weight: (fn(x, h) * w).sum().backward())
            for name, fn in candidates.items()
        }
        times = interleaved(runs, reps, args.warmup, dev)
        for name, fn in candidates.items():
            with torch.no_grad():
                error = (fn(x, h).double() - exact).abs().max().item()
            rows.append(["gru", steps, name, f"{median(times[name]) * 1e3:,.1f}", f"{error:.1e}"])
            results.append({"cell": "gru", "steps": steps, "method": name, "s": times[name], "error": error})
    print()
    print(markdown_table(["cell", "T", "method", "fwd+bwd ms (median)", "max abs error vs float64"], rows))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
