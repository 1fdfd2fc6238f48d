"""Time of each phase of a local SGD step (docs/performance.md).

PFEDHN_DATA=<data root> python docs/scripts/step_phases.py
"""

import os
import statistics
import time

import torch
import torch.nn.functional as F

from pfedhn import config
from pfedhn.dataset import load_federated, normalize
from pfedhn.model import TargetCNN

torch.set_num_threads(2)
cfg = config.compose([f"dataset.root={os.environ.get('PFEDHN_DATA', '../pfedhn-data')}", "num_clients=50"])
data = load_federated(config.data_settings(cfg), 10)
images, labels = data.client_split(0, "train")
norm = config.normalization(cfg)
model = TargetCNN(config.model_spec(cfg)).to(memory_format=torch.channels_last)
params = list(model.parameters())
opt = torch.optim.SGD(params, lr=5e-3, momentum=0.9, weight_decay=5e-5)
g = torch.Generator().manual_seed(0)
T = {k: [] for k in ("batch", "forward", "backward", "clip+step")}
for i in range(300):
    t0 = time.perf_counter()
    b = torch.randperm(len(labels), generator=g)[:64]
    x = normalize(images[b], norm.mean, norm.std)
    y = labels[b]
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, 50.0)
    opt.step()
    loss.item()
    t4 = time.perf_counter()
    if i >= 50:
        for k, v in zip(T, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            T[k].append(v)
tot = sum(statistics.median(v) for v in T.values())
for k, v in T.items():
    print(f"{k:10s} {statistics.median(v) * 1000:.3f} ms  {statistics.median(v) / tot:.0%}")
print(f"step total {tot * 1000:.3f} ms -> 50 steps {tot * 50:.3f} s")
