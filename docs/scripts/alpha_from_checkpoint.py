"""Add pFedLA's alpha and the clients' classes to a results.json written before they were recorded.

python docs/scripts/alpha_from_checkpoint.py RUN_DIR RESULTS_JSON

Rebuilds the run's strategy from the config in RUN_DIR/checkpoint.pt, loads the
checkpoint's server state (the last round's, for a finished run) and writes
``method_report`` (the strategy's ``report()``) and ``client_classes`` (the
partition of that config) into RESULTS_JSON, with ``method_report_source``
saying where they came from.
"""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pfedhn import config
from pfedhn.checkpoint import Checkpoint
from pfedhn.dataset import load_federated
from pfedhn.methods import build_strategy

run_dir, results_path = Path(sys.argv[1]), Path(sys.argv[2])
checkpoint = Checkpoint.load(run_dir / "checkpoint.pt")
cfg = OmegaConf.create(checkpoint.config)
strategy = build_strategy(cfg, progress=False)
strategy.load_server_state(checkpoint.server)
results = json.loads(results_path.read_text())
results["client_classes"] = load_federated(config.data_settings(cfg), cfg.dataset.num_classes).client_classes()
results["method_report"] = strategy.report()
results["method_report_source"] = (
    f"not recorded by the run: computed from its checkpoint after round {checkpoint.round} "
    "with docs/scripts/alpha_from_checkpoint.py"
)
results_path.write_text(json.dumps(results, indent=1))
