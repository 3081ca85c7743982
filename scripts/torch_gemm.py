"""GEMM timing server for `npm run bench:gemm`: PyTorch's matmul (OpenBLAS sgemm on Debian's torch).

Started once per thread count with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS set (torch.set_num_threads too).
Reads one JSON shape per line from stdin, {"batch", "M", "K", "N", "transA", "transB", "accumulate",
"rounds"}, and answers one JSON line {"s": best seconds per call}: the best of `rounds` rounds, each
calling for at least 30 ms. A transposed operand is a transposed view (BLAS transposes it, no copy); a
batch over one B is torch.matmul of [batch, M, K] by [K, N] (which folds the batch into M).
"""

import json
import sys
import time

import torch


def main() -> None:
    threads = int(sys.argv[1])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        s = json.loads(line)
        b, m, k, n = s["batch"], s["M"], s["K"], s["N"]
        a = torch.randn(k, m).t() if s["transA"] else torch.randn(m, k)
        if b > 1:
            a = torch.randn(b, m, k)
        w = torch.randn(n, k).t() if s["transB"] else torch.randn(k, n)
        c = torch.zeros(b, m, n) if b > 1 else torch.zeros(m, n)
        if s["accumulate"]:
            def call():
                c.addmm_(a, w)
        else:
            def call():
                torch.matmul(a, w, out=c)
        call()
        best = float("inf")
        for _ in range(s["rounds"]):
            calls = 0
            t0 = time.perf_counter()
            while True:
                call()
                calls += 1
                t = time.perf_counter() - t0
                if t >= 0.03:
                    break
            best = min(best, t / calls)
        print(json.dumps({"s": best}), flush=True)


if __name__ == "__main__":
    main()
