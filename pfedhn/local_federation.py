"""A SuperLink and N SuperNodes on this machine, for ``flwr run`` on Flower's Deployment Engine.

    python -m pfedhn.local_federation --nodes 2 --overrides "dataset=mnist num_clients=2 num_rounds=5 ..." \\
        --output-dir /abs/dir

starts ``flower-superlink`` and one ``flower-supernode`` per partition (node config
``partition-id=i num-partitions=N``) on free ports of 127.0.0.1, writes the
connection into ``$FLWR_HOME/config.toml`` (a fresh temporary FLWR_HOME unless one is
set), runs ``flwr run <app> local-federation --stream`` with the overrides, stops every
process it started (by process group, also on errors and Ctrl-C) and prints where each
message's time went (``message_timings`` of the run's ``results.json``). The same
commands, with addresses and TLS instead of ``--insecure``, span machines
(docs/deployment.md). Flower installs no dependencies here: the environment has them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pfedhn.message_timing import TIMING_KEYS as KEYS

BIN = Path(sys.executable).parent  # flwr's executables, beside this Python
CONNECTION = "local-federation"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process: ``FLWR_HOME``, this venv's executables first on
    ``PATH`` (Flower starts flower-superexec and flwr-clientapp by name), no dependency installs."""
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise RuntimeError naming ``log`` if
    ``process`` (the server that should listen there) exits first or ``timeout`` seconds pass.
    (A fixed pause was too short on a loaded machine: ``flwr run`` then found no SuperLink.)"""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    state = f"exited with {process.returncode}" if process.poll() is not None else f"not listening after {timeout:g} s"
    raise RuntimeError(f"the SuperLink on port {port} {state}; its log: {log}")


@contextmanager
def local_federation(home: Path, nodes: int, logs: Path) -> Iterator[dict[str, str]]:
    """Start a SuperLink and ``nodes`` SuperNodes; yield the env for ``flwr``; stop them all."""
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env, link = flower_env(home), free_port()
    home.joinpath("config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = (logs / f"{name}.log").open("w")
        command = [str(BIN / args[0]), *args[1:]]
        processes.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    try:
        start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link),
              "--disable-runtime-dependency-installation")  # fmt: skip
        wait_for_port(link, processes[0], logs / "superlink.log")
        for i in range(nodes):
            start(f"supernode-{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                  "--port", str(free_port()), "--node-config", f"partition-id={i} num-partitions={nodes}")  # fmt: skip
        yield env
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # a SuperNode's flower-superexec and clientapps too
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


def flwr_run(
    env: dict[str, str], app: Path, overrides: str, output_dir: Path, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """``flwr run <app> local-federation --stream`` with the run config's ``overrides`` and ``output-dir``."""
    run_config = f"overrides='{overrides}' output-dir='{output_dir}'"
    return subprocess.run(
        [str(BIN / "flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", run_config],
        env=env, cwd=app, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def timing_table(timings: list[dict[str, float]]) -> str:
    """Median (and max) seconds of each part of a message, per stage."""
    lines = ["| stage | messages | " + " | ".join(KEYS) + " | total |", "|---" * (len(KEYS) + 3) + "|"]
    for stage in sorted({t["stage"] for t in timings}):
        rows = [t for t in timings if t["stage"] == stage]
        cells = [f"{statistics.median(r[k] for r in rows):.2f} (max {max(r[k] for r in rows):.2f})" for k in KEYS]
        total = statistics.median(sum(r[k] for k in KEYS) for r in rows)
        lines.append(f"| {stage} | {len(rows)} | " + " | ".join(cells) + f" | {total:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True, help="SuperNodes = partitions = num_clients")
    parser.add_argument("--overrides", required=True, help="Hydra overrides of conf/, space-separated")
    parser.add_argument("--output-dir", type=Path, required=True, help="absolute directory for run-<id>/")
    parser.add_argument("--app", type=Path, default=Path(__file__).resolve().parent.parent, help="the Flower app")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("FLWR_HOME") or tempfile.mkdtemp(prefix="flwr-home-"))
    started = time.time()
    with local_federation(home, args.nodes, home / "logs") as env:
        done = flwr_run(env, args.app, args.overrides, args.output_dir.resolve())
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    runs = sorted(args.output_dir.resolve().glob("run-*/results.json"), key=lambda p: p.stat().st_mtime)
    if not runs or runs[-1].stat().st_mtime < started:
        print(f"no results.json written under {args.output_dir} (Flower logs: {home / 'logs'})", file=sys.stderr)
        return 1
    results = json.loads(runs[-1].read_text())
    print(f"{runs[-1]}: finished={results['finished']}, {time.time() - started:.1f} s in all")
    print(timing_table(results["message_timings"]))
    return 0 if results["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
