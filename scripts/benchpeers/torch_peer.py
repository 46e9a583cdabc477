"""PyTorch peer of scripts/benchpeers: trains the FedAvg paper's 2NN (mlp)
and CNN (cnn) with plain SGD, the same shapes as fedge's models, on
request. It reads lines "MODEL BATCH THREADS SECONDS" on stdin and answers
each with one line: the training samples per second (wall time) over at
least SECONDS and at least three steps, after three warm-up steps. Run by
the Go driver; needs Debian's python3-torch."""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def build(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                             nn.Linear(200, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, 10))
    raise ValueError("unknown model %r" % name)


def main():
    torch.manual_seed(1)
    models = {}
    blas = "BLAS " + ("OpenBLAS" if "openblas" in open("/proc/self/maps").read() else "unknown (reference?)")
    print("ready torch %s, oneDNN %s, %s" % (torch.__version__, torch.backends.mkldnn.is_available(), blas), flush=True)
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        try:
            name, batch, threads, seconds = f[0], int(f[1]), int(f[2]), float(f[3])
            if not (1 <= batch <= 4096 and 1 <= threads <= 64 and 0 < seconds <= 600):
                raise ValueError("out of range: %r" % line)
            if name not in models:
                m = build(name)
                models[name] = (m, torch.optim.SGD(m.parameters(), lr=0.01))
            m, opt = models[name]
            torch.set_num_threads(threads)
            x = torch.rand(batch, 1, 28, 28)
            y = torch.randint(0, 10, (batch,))

            def step():
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                opt.step()

            for _ in range(3):
                step()
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < seconds:
                step()
                n += 1
            print("%.3f" % (n * batch / (time.perf_counter() - t0)), flush=True)
        except Exception as e:  # answer, so the driver reports it
            print("error %s" % e, flush=True)


if __name__ == "__main__":
    main()
