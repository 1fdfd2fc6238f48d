"""The experiment presets in conf/experiment/: each composes, passes validation, and holds the
protocol its paper or issue states (a preset edited by mistake fails here, not hours into a run)."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from pfedhn import config, validation


@pytest.mark.parametrize(
    ("preset", "dataset", "classes_per_client"), [("pfedla_cifar10", "cifar10", 4), ("pfedla_cifar100", "cifar100", 12)]
)
@pytest.mark.parametrize("method", ["pfedla", "heurpfedla"])
def test_pfedla_setting_presets_hold_the_re_implementations_protocol(
    preset: str, dataset: str, classes_per_client: int, method: str
) -> None:
    cfg = config.compose([f"+experiment={preset}", f"method={method}"])
    validation.validate(cfg)
    assert (cfg.dataset.name, cfg.dataset.classes_per_client) == (dataset, classes_per_client)
    assert (cfg.num_clients, cfg.clients_per_round, cfg.num_rounds) == (10, 10, 100)
    client = cfg.client
    assert (client.epochs, client.batch_size, client.lr, client.momentum, client.weight_decay) == (10, 32, 1e-2, 0, 0)
    assert cfg.method.name == method and cfg.method.server.lr == 0.25  # chosen by validation (docs/pfedla.md)


@pytest.mark.parametrize(
    ("preset", "grid"),
    [
        ("table1", {"dataset": "cifar10,cifar100", "num_clients": "10,50,100", "method": "pfedhn,pfedhn_pc"}),
        ("table1_mnist", {"dataset": "mnist", "num_clients": "10,50,100", "method": "pfedhn"}),
    ],
)
def test_table1_presets_sweep_the_papers_grid_at_its_protocol(preset: str, grid: dict[str, str]) -> None:
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {**grid, "seed": "42,1,2"}
    assert (cfg.num_rounds, cfg.clients_per_round, cfg.client.inner_steps) == (5000, 1, 50)


@pytest.mark.parametrize("method", ["local", "fedavg", "pfedme"])
def test_a_preset_key_the_method_does_not_read_is_refused_by_name(method: str) -> None:
    """A preset (here the command line's ``+``, as a preset would) may not hand a method a key it leaves unread."""
    from pfedhn.errors import ConfigError

    cfg = config.compose(["+experiment=pfedla_cifar10", f"method={method}", "+method.server.lr=0.25"])
    refused = rf"method.server.lr: method {method} does not read it; drop it \(~method.server\)"
    with pytest.raises(ConfigError, match=refused):
        validation.validate(cfg)
    validation.validate(config.compose(["+experiment=pfedla_cifar10", f"method={method}"]))


SETTING_ROWS = {
    "local", "fedavg", "fedavg_ft", "fedper", "lgfedavg", "perfedavg", "pfedme", "pfedhn", "pfedhn_pc", "fedfomo",
    "pfedla", "heurpfedla",
}  # fmt: skip
# FedAMP joins a column with the σ its validation chose (the job names it)
FEDAMP_SIGMA = {"cifar10": 100, "cifar100": 10}


def setting_rows(dataset: str) -> set[str]:
    """The row configs of ``conf/pfedla_<dataset>/``."""
    return SETTING_ROWS | ({"fedamp"} if dataset in FEDAMP_SIGMA else set())


def queued_setting_jobs() -> dict[str, list[str]]:
    """docs/scripts/queue.txt's pFedLA-setting jobs at seed 42: name → overrides (data root dropped)."""
    jobs = {}
    for line in (config.CONF_DIR.parent / "docs" / "scripts" / "queue.txt").read_text().splitlines():
        name, *overrides = line.split() or [""]
        if name.startswith("pfedla_setting_"):
            jobs[name] = [o for o in overrides if not o.startswith("dataset.root=")]
    return jobs


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_each_setting_row_is_the_config_its_queued_run_ran(dataset: str) -> None:
    """``+pfedla_<dataset>=<row>`` (what ``glob(*)`` sweeps) composes exactly the config of the queue's
    job for that row (``pfedla_setting_<dataset>_<row>_s42``; pFedLA's and HeurpFedLA's jobs carry the
    rate or the release in their names, FedAMP's its σ), so the sweep reproduces the table's runs."""
    group = config.CONF_DIR / f"pfedla_{dataset}"
    assert {path.stem for path in group.glob("*.yaml")} == setting_rows(dataset)
    jobs = queued_setting_jobs()
    suffix = {"pfedla": "_lr0.25", "heurpfedla": "_released"}
    if dataset in FEDAMP_SIGMA:
        suffix["fedamp"] = f"_sigma{FEDAMP_SIGMA[dataset]}"
    for row in sorted(setting_rows(dataset)):
        cfg = config.compose([f"+pfedla_{dataset}={row}"])
        validation.validate(cfg)
        queued = config.compose(jobs[f"pfedla_setting_{dataset}_{row}{suffix.get(row, '')}_s42"])
        assert cfg == queued, row
        assert cfg.dataset.classes_per_client == {"cifar10": 4, "cifar100": 12}[dataset]
        epochs = cfg.num_rounds * cfg.clients_per_round * cfg.client.epochs
        assert epochs == 10_000 or (row == "pfedme" and epochs == 2_000), row  # pFedMe: 6 gradients a batch


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_the_documented_setting_sweep_runs_every_row(dataset: str) -> None:
    """``--multirun '+pfedla_<dataset>=glob(*)'`` (conf/experiment/pfedla_<dataset>.yaml's command)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(config.CONF_DIR)))
    command = (config.CONF_DIR / "experiment" / f"pfedla_{dataset}.yaml").read_text()
    assert f"--multirun '+pfedla_{dataset}=glob(*)'" in command
    sweep = OverridesParser.create(config_loader=loader).parse_overrides([f"+pfedla_{dataset}=glob(*)"])[0]
    assert set(sweep.sweep_string_iterator()) == setting_rows(dataset)


def test_the_setting_sweep_gives_every_row_its_own_directory() -> None:
    """FedAvg and FedAvg+FT are both method fedavg: the default subdir would put them in one directory,
    where the second would resume (or skip) the first."""
    subdirs = set()
    for row in setting_rows("cifar10"):
        with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=[f"+pfedla_cifar10={row}"], return_hydra_config=True)
        subdirs.add(cfg.hydra.sweep.subdir)
    assert len(subdirs) == len(setting_rows("cifar10"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=pfedme", "client.lr=0.5"], "client.lr: method pfedme does not read it; drop it"),
        (["method=pfedme", "client.grad_clip=5"], "client.grad_clip: method pfedme does not read it"),
        (["method.sizes=[8,16]", "model.n_kernels=32"], "model.n_kernels: method pfedhn does not read it"),
        (["client.epochs=2", "client.inner_steps=10"], "client.inner_steps: a round is client.epochs passes"),
        (["+experiment=pfedla_cifar10", "client.inner_steps=10"], "client.inner_steps: a round is client.epochs"),
    ],
)
def test_an_override_the_run_does_not_read_is_refused_by_name(overrides: list[str], message: str) -> None:
    """Set by a preset or a default instead (not given), the same value stays, unused."""
    from pfedhn.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validation.validate(config.compose(overrides), config.given_keys(overrides))
    validation.validate(config.compose(overrides))


def test_in_a_sweep_an_override_a_cell_does_not_read_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """``method=fedavg,pfedme client.lr=0.05``: FedAvg's cell reads it, pFedMe's runs and says it does not."""
    overrides = ["method=pfedme", "client.lr=0.05"]
    with caplog.at_level("WARNING", logger="pfedhn"):
        validation.check_given_keys(config.compose(overrides), config.given_keys(overrides), refuse=False)
    assert "client.lr: method pfedme does not read it; the run goes on without it" in caplog.text


@pytest.mark.parametrize(
    "overrides",
    [
        ["client.lr=0.5", "client.grad_clip=5"],
        ["model.n_kernels=32"],
        ["client.inner_steps=10"],
        ["+experiment=pfedla_cifar10", "method=pfedme", "client.epochs=2"],  # a queued row
    ],
)
def test_the_same_overrides_pass_where_the_run_reads_them(overrides: list[str]) -> None:
    validation.validate(config.compose(overrides), config.given_keys(overrides))


def test_given_keys_are_the_keys_and_groups_overrides_set() -> None:
    given = config.given_keys(
        ["method=pfedme", "+experiment=pfedla_cifar10", "client.lr=0.5", "~method.server", "++seed=3"]
    )
    assert given == {"method", "experiment", "client.lr", "seed"}
    assert config.given_keys(["client={lr:0.5,optimizer:{name:sgd}}", "model={}"]) == {
        "client.lr",
        "client.optimizer.name",
        "model",
    }


def test_an_unread_key_given_inside_a_mapping_is_refused_by_name() -> None:
    from pfedhn.errors import ConfigError

    overrides = ["method=pfedme", "client={lr:0.5}"]
    with pytest.raises(ConfigError, match="client.lr: method pfedme does not read it"):
        validation.validate(config.compose(overrides), config.given_keys(overrides))


@pytest.mark.parametrize("method", ["pfedla", "fedper", "local"])
def test_novel_clients_are_refused_by_methods_without_a_novel_phase(method: str) -> None:
    from pfedhn.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"method.novel.clients: method {method} does not read it"):
        validation.validate(config.compose([f"method={method}", "+method.novel.clients=10", "+method.novel.rounds=5"]))
    validation.validate(config.compose(["method=pfedhn", "method.novel.clients=10", "method.novel.rounds=5"]))


@pytest.mark.parametrize("method", ["local", "fedavg", "fedper", "lgfedavg", "perfedavg", "pfedme", "pfedhn"])
def test_only_per_fedavg_steps_without_momentum_and_the_command_line_wins(method: str) -> None:
    """Per-FedAvg's paper steps plain SGD; every other row keeps the shared client optimizer."""
    shared = config.compose([])
    cfg = config.compose([f"method={method}"])
    assert cfg.client.momentum == (0.0 if method == "perfedavg" else 0.9)
    for key in ("lr", "weight_decay", "grad_clip", "batch_size", "inner_steps"):
        assert cfg.client[key] == shared.client[key], key
    assert config.compose([f"method={method}", "client.momentum=0.5"]).client.momentum == 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.novel.rounds=5"], "method.novel.rounds: must be a non-negative integer, 0 without novel clients"),
        (["method.novel.lr=0.1"], "method.novel.lr: must be null, or a positive number with novel clients"),
        (["seed=true"], "seed: must be a non-negative integer, got True"),
        (["checkpoint_every=true"], "checkpoint_every: must be a non-negative integer"),
        (["simulation.flower_log_level=LOUD"], "simulation.flower_log_level: must be one of DEBUG"),
        (["dataset.prob_high=high"], "dataset.prob_high: must be a positive number"),
        (["dataset.classes_per_client=11"], "dataset.classes_per_client: 11 classes per client, but the dataset"),
        (["method=pfedla", "model.n_kernels=a"], "model.n_kernels: must be a positive integer, got 'a'"),
    ],
)
def test_a_bad_value_is_refused_by_name_before_any_data_is_read(overrides: list[str], message: str) -> None:
    from pfedhn.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validation.validate(config.compose(overrides))


def test_flwr_run_refuses_resume_by_name() -> None:
    """Each flwr run is a new run: a resume= it cannot honour must not start a fresh run silently."""
    from pfedhn.errors import ConfigError

    validation.from_run_config({"overrides": "num_rounds=2"})
    with pytest.raises(ConfigError, match="resume: flwr run starts a new run each time"):
        validation.from_run_config({"overrides": "num_rounds=2 resume=/tmp/some-run"})


def test_flwr_run_refuses_an_override_its_run_does_not_read() -> None:
    from pfedhn.errors import ConfigError

    with pytest.raises(ConfigError, match="client.lr: method pfedme does not read it"):
        validation.from_run_config({"overrides": "method=pfedme client.lr=0.5"})
