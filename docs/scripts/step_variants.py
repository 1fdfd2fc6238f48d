"""50-step local training, variants of the step (docs/performance.md).

PFEDHN_DATA=<data root> python docs/scripts/step_variants.py base foreach clds foreach_clds
"""

import os
import statistics
import sys
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
images_cl = images.contiguous(memory_format=torch.channels_last)


def run(variant, steps=50):
    torch.manual_seed(0)
    model = TargetCNN(config.model_spec(cfg)).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    fe = "foreach" in variant
    opt = torch.optim.SGD(params, lr=5e-3, momentum=0.9, weight_decay=5e-5, foreach=fe)
    imgs = images_cl if "clds" in variant else images
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(steps):
        b = torch.randperm(len(labels), generator=g)[:64]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(normalize(imgs[b], norm.mean, norm.std)), labels[b])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 50.0, foreach=fe)
        opt.step()
        loss.item()
    return time.perf_counter() - t


variants = sys.argv[1:]
res = {v: [] for v in variants}
for v in variants:
    run(v)
for _ in range(12):
    for v in variants:
        res[v].append(run(v))
for v in variants:
    print(v, round(statistics.median(res[v]), 4), round(min(res[v]), 4))
