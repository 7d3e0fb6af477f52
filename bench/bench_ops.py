"""Why fewer ops: robustmo's fused RMSNorm and rotary embedding vs transformers' own, one op at a time.

    python bench/bench_ops.py [--repeats 300]

On a shape from a tiny-preset training batch (32 toy chats packed into 16 rows of 59
positions, hidden 128, 4 heads of 32), times forward + backward of:
1. transformers' `LlamaRMSNorm` vs robustmo's fused one (robustmo/core/fused.py);
2. transformers' `apply_rotary_pos_emb` (queries and keys) vs robustmo's;
3. one element-wise multiply of a hidden-sized activation, with 2 torch threads and with 1:
   the fixed cost of a parallel region of torch's OpenMP pool whose threads sleep between
   regions (`OMP_WAIT_POLICY=PASSIVE`, robustmo's and these benches' default).
Each is the median of `--repeats` timed calls after a warm-up, in this one process. Prints a
table with the ratios and writes bench/results/ops.json.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402

ROWS, WIDTH, HIDDEN, HEADS = 16, 59, 128, 4  # a packed tiny-preset batch


def median_us(fn, repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    # what a training step runs inside robustmo.core.fused.FusedOps, against what it replaces
    import torch
    from transformers.models.llama import modeling_llama

    from robustmo.core import fused

    machine = _common.machine()
    torch.manual_seed(0)
    x = torch.randn(ROWS, WIDTH, HIDDEN, requires_grad=True)
    grad = torch.randn(ROWS, WIDTH, HIDDEN)
    norm = modeling_llama.LlamaRMSNorm(HIDDEN)
    head = HIDDEN // HEADS
    qp, kp = torch.randn(ROWS, WIDTH, HIDDEN, requires_grad=True), torch.randn(ROWS, WIDTH, HIDDEN, requires_grad=True)
    cos, sin = torch.randn(ROWS, WIDTH, head), torch.randn(ROWS, WIDTH, head)

    def rotary(apply):
        def run():
            # queries and keys as the attention makes them: transposed views of the projections
            q, k = (t.view(ROWS, WIDTH, HEADS, head).transpose(1, 2) for t in (qp, kp))
            a, b = apply(q, k, cos, sin)
            torch.autograd.backward([a, b], [torch.ones_like(a), torch.ones_like(b)])
        return run

    rows = [
        ("RMSNorm, forward + backward", median_us(lambda: norm(x).backward(grad), args.repeats),
         median_us(lambda: fused._rms_norm_forward(norm, x).backward(grad), args.repeats)),
        ("rotary (queries and keys), forward + backward", median_us(rotary(modeling_llama.apply_rotary_pos_emb),
                                                                   args.repeats),
         median_us(rotary(functools.partial(fused._rotary_forward, modeling_llama.apply_rotary_pos_emb)),
                   args.repeats)),
    ]
    a, b = x.detach().clone(), grad.clone()
    threads = torch.get_num_threads()
    two = median_us(lambda: a * b, args.repeats)
    torch.set_num_threads(1)
    one = median_us(lambda: a * b, args.repeats)
    torch.set_num_threads(threads)

    print(f"{threads} threads, OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, shape {ROWS}x{WIDTH}x{HIDDEN}, "
          f"median of {args.repeats}, load average at start {machine['load_average_at_start']}")
    print(_common.table(["op", "transformers, us", "robustmo fused, us", "speed-up"],
                        [[name, f"{own:.0f}", f"{ours:.0f}", f"{own / ours:.2f}x"] for name, own, ours in rows]))
    print(_common.table(["one element-wise multiply", "us"],
                        [[f"{threads} threads", f"{two:.1f}"], ["1 thread", f"{one:.1f}"],
                         [f"cost of the parallel region ({threads} / 1 thread)", f"{two / one:.1f}x"]]))
    path = _common.write_json("ops.json", {
        "command": " ".join(["python", "bench/bench_ops.py", *sys.argv[1:]]), "machine": machine,
        "shape": [ROWS, WIDTH, HIDDEN], "heads": HEADS,
        "ops_us": {name: {"transformers": own, "fused": ours} for name, own, ours in rows},
        "multiply_us": {"threads": threads, "all_threads": two, "one_thread": one}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
