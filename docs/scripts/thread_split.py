"""Local training time with torch work on one thread or split over two (docs/performance.md).

PFEDHN_DATA=<data root> python docs/scripts/thread_split.py MODE THREADS
MODE: main (all on the main thread), thread (all on one secondary thread),
split (fit on a secondary thread), rsplit (fit on the main thread, server work on another).
"""

import os
import statistics
import sys
import threading
import time

import torch
from flwr.app import RecordDict

from pfedhn import config
from pfedhn.client_app import PersonalizedClient
from pfedhn.methods import build_strategy

cfg = config.compose([f"dataset.root={os.environ.get('PFEDHN_DATA', '../pfedhn-data')}", "num_clients=50"])
torch.set_num_threads(int(sys.argv[2]))
strategy = build_strategy(cfg, progress=False)
client = PersonalizedClient(0, cfg, RecordDict())


def rounds(n, out, update):
    torch.set_num_threads(int(sys.argv[2]))
    for r in range(n):
        message = strategy.message(0, r, training=True)
        t = time.perf_counter()
        delta = client.fit(*message)[0]
        out.append(time.perf_counter() - t)
        if update:
            strategy.apply_updates(r + 1, {0: strategy.named_update(0, delta)})


mode = sys.argv[1]
out = []
if mode == "main":
    rounds(40, out, True)
elif mode == "thread":
    th = threading.Thread(target=rounds, args=(40, out, True))
    th.start()
    th.join()
elif mode == "split":  # fit in a worker thread, update in the main thread, as in the simulation
    import queue

    q_in, q_out = queue.Queue(), queue.Queue()

    def worker():
        while True:
            item = q_in.get()
            if item is None:
                return
            r, message = item
            t = time.perf_counter()
            d = client.fit(*message)[0]
            out.append(time.perf_counter() - t)
            q_out.put(strategy.named_update(0, d))

    th = threading.Thread(target=worker)
    th.start()
    for r in range(40):
        q_in.put((r, strategy.message(0, r, training=True)))
        strategy.apply_updates(r + 1, {0: q_out.get()})
    q_in.put(None)
    th.join()
if mode == "rsplit":  # fit in the main thread, generate+update in a secondary thread
    import queue

    q_in, q_out = queue.Queue(), queue.Queue()

    def server():
        for r in range(40):
            q_in.put((r, strategy.message(0, r, training=True)))
            strategy.apply_updates(r + 1, {0: q_out.get()})
        q_in.put(None)

    th = threading.Thread(target=server)
    th.start()
    while (item := q_in.get()) is not None:
        r, message = item
        t = time.perf_counter()
        d = client.fit(*message)[0]
        out.append(time.perf_counter() - t)
        q_out.put(strategy.named_update(0, d))
    th.join()
print(mode, round(statistics.median(out[10:]), 4))
