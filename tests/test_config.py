"""The one configuration (rho_core.config): one set of defaults, one resolver, forms derived from
it, every shipped YAML through every front end, and the import graph's direction."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from rho_core.config import (
    ALIASES,
    EvalConfig,
    ModelOptions,
    TrainConfig,
    flat_overrides,
    resolve_config,
    resolve_section,
)
from rho_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_unet_option_is_a_model_option() -> None:
    """A network option is declared once, in ModelOptions; the store sets the rest."""
    from rho_core.unet import UNetConfig

    unet = {f.name for f in dataclasses.fields(UNetConfig)} - {"dims", "in_channels", "cond_dim"}
    opts = {f.name for f in dataclasses.fields(ModelOptions)}
    assert unet <= opts, f"add {sorted(unet - opts)} to rho_core.config.ModelOptions"
    for f in dataclasses.fields(ModelOptions):
        assert f.metadata.get("help"), f"ModelOptions.{f.name} has no help text"


def test_defaults_have_one_home() -> None:
    from rho_core.model import default_model_config

    cfg = default_model_config(3, 1, ("a",), (0.0,), (1.0,))
    d = ModelOptions()
    assert (cfg.prediction, cfg.schedule_shift, cfg.conditioning.kind) == (
        d.prediction,
        d.schedule_shift,
        d.conditioning,
    )
    assert cfg.unet.patch_size == 2 and cfg.unet.attention_levels == (2,)
    assert resolve_config().train == TrainConfig() and resolve_config().evaluate == EvalConfig()
    assert EvalConfig().clip_x0 is None  # no clipping unless asked


def test_resolver_layers_aliases_and_errors(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  patch_size: 4\n  attention: false\ntrain:\n  steps: 9\n"
                 "  ema_rampup_ratio: null\nevaluate:\n  n_conditions: 3\n")  # fmt: skip
    cfg = resolve_config(f, {"train.steps": None, "train.lr": 1e-3}, {"model": {"cond_dim": 8}})
    assert cfg.model.patch_size == 4 and cfg.model.attention_levels == ()
    assert cfg.model.cond_dim == 8 and cfg.train.steps == 9 and cfg.train.lr == 1e-3
    assert cfg.train.ema_rampup_ratio is None  # null in a file is a value ...
    assert cfg.evaluate.max_conditions == 3
    assert resolve_config(cfg, {"train.seed": None}) == cfg  # ... None in an override is unset
    with pytest.raises(ConfigError, match="'widht'"):
        resolve_config({"model": {"widht": 3}})
    with pytest.raises(ConfigError, match="section"):
        resolve_config({"modle": {}, "train": {}})
    with pytest.raises(ConfigError, match="train.steps"):
        resolve_config({"train": {"steps": 1.5}})
    with pytest.raises(ConfigError, match="device"):
        resolve_section("train", {"device": "gpu"})
    assert flat_overrides({"steps": 3, "conditioning": "hash"}) == {
        "train.steps": 3,
        "model.conditioning": "hash",
    }


def test_pydantic_forms_match_the_dataclasses() -> None:
    """flows/params.py derives its forms: same fields, same defaults, same help, same checks."""
    from flows.params import EvalParams, ModelParams, PipelineParams, TrainParams, preset_params

    for form, cls in ((ModelParams, ModelOptions), (TrainParams, TrainConfig),
                      (EvalParams, EvalConfig)):  # fmt: skip
        fields = {f.name: f for f in dataclasses.fields(cls)}
        aliases = set(ALIASES.get(form.section, {}))
        assert set(form.model_fields) - aliases == set(fields)
        for name, f in fields.items():
            assert form.model_fields[name].default == f.default, name
            assert form.model_fields[name].description == f.metadata["help"]
            assert "<" not in f.metadata["help"]  # Prefect strips <...> from descriptions as HTML
        assert form().to_config() == cls()
    with pytest.raises(ValueError, match="schedule_shift"):
        ModelParams(schedule_shift=3.0)
    schema = TrainParams.model_json_schema()["properties"]
    assert schema["device"]["enum"] == ["auto", "cpu", "cuda", "xpu", "mps"]
    # the form's defaults are the values the default (full) pipeline runs
    assert PipelineParams() == preset_params("spherical_harmonics", quick=False)
    assert PipelineParams().model.refine_channels == 8  # sh32-refine


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_yaml_works_with_train_pipeline_and_benchmarks(path, tmp_path) -> None:
    from flows.params import PipelineParams, resolve
    from rho_cli.pipeline import load_params
    from rho_core.model import DiffusionModel, build_model_config

    cfg = resolve_config(path)  # rho train --config (and the torchrun workers)
    built = []
    names = tuple(cfg.model.log_params) or ("a",)  # log_params name the recipe's own data
    low, high = (0.5,) * len(names), (2.0,) * len(names)
    for dims in (1, 2, 3):  # a recipe is for one dimensionality; it must build for some
        try:
            built.append(build_model_config(cfg.model, dims, 1, names, low, high))
        except ConfigError:
            continue
    assert built, f"{path.name} builds no model"
    assert DiffusionModel(built[0]).net.num_parameters() > 0
    p = resolve(PipelineParams.model_validate(load_params(str(path), None, None)), quick=False)
    assert p.model.to_config() == cfg.model  # rho pipeline --config runs the same model
    for key in ("steps", "lr", "batch_size"):
        assert getattr(p.train, key) == getattr(cfg.train, key)
    quality = _load_benchmark("quality")  # the benchmark's --set path goes through the resolver
    out = quality.resolved_config(str(path), ["train.lr=0.0005"], tmp_path)
    assert resolve_config(out).train.lr == 5e-4


def test_import_graph_goes_downhill() -> None:
    """rho_core imports nothing from rho_cli/tasks/flows; tasks nothing from flows; no cycles
    but the known ones (owners named in docs/internals.md, to be removed)."""
    spec = importlib.util.spec_from_file_location(
        "import_graph", ROOT / "scripts" / "import_graph.py"
    )
    ig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ig)
    g = ig.graph()
    uphill = [v for v in ig.violations(g) if not v.startswith("import cycle")]
    assert uphill == []
    known = {("rho_core.data.normalization", "rho_core.data.store")}
    cycles = {tuple(c) for c in ig.cycles(g)}
    assert cycles <= known, f"new import cycles: {sorted(cycles - known)}"
    assert not any(m.startswith("rho_core") for c in cycles for m in c if "bonsai" in m)


def test_max_minutes_stops_cleanly_with_a_checkpoint(tmp_path) -> None:
    """A budget stops the loop after the step that spent it, with a final checkpoint that
    resumes; the run folder has the one layout (rho_core.run)."""
    import json

    import numpy as np

    from rho_core.data.store import create_store
    from rho_core.run import resolve_for_store, train_run

    store = tmp_path / "s.zarr"
    w = create_store(store, kind="test", spatial_dims=1, param_names=["a"], field_shape=(1, 8),
                     provenance={})  # fmt: skip
    x = np.linspace(0, 1, 8, dtype=np.float32)
    w.append(np.stack([np.sin(6 * x * a)[None] for a in (1, 2, 3, 4)]), np.arange(4.0)[:, None])
    w.close()
    over = {"model": {"base_channels": 8, "channel_mult": [1], "cond_dim": 8, "num_heads": 1},
            "train": {"steps": 50, "batch_size": 2, "device": "cpu", "max_minutes": 1e-9,
                      "log_every": 1}}  # fmt: skip
    mc, cfg = resolve_for_store(store, None, over)
    res = train_run(store, tmp_path / "run", mc, cfg.train)
    assert res["stopped_by_budget"] and res["step"] == 1
    assert Path(res["checkpoint"]).name == "ckpt-00000001.pt"
    run = tmp_path / "run"
    for name in ("config.json", "train_log.jsonl", "history.json", "result.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "history.json").read_text())[0]["step"] == 1
    import dataclasses as dc

    more = train_run(store, run, mc, dc.replace(cfg.train, steps=3, max_minutes=0.0))
    assert more["start_step"] == 1 and more["step"] == 3 and not more["stopped_by_budget"]
    steps = [r["step"] for r in json.loads((run / "history.json").read_text())]
    assert steps == [1, 2, 3]

    # one evaluation: the Prefect tasks and `rho evaluate` give the same numbers
    from rho_core.evaluation import evaluate
    from tasks.sampling import evaluate_samples, sample_conditions

    ev = {"max_conditions": 3, "steps": 2, "sampler": "ddim", "device": "cpu", "seed": 4}
    npz = sample_conditions.fn(more["checkpoint"], str(store), str(tmp_path / "s.npz"), config=ev)
    by_task = evaluate_samples.fn(npz)
    direct = evaluate(more["checkpoint"], store, ev)
    assert by_task["n_conditions"] == direct["n_conditions"] == 3
    assert by_task["rel_l2_mean"] == pytest.approx(direct["rel_l2_mean"], rel=1e-6)
    assert by_task["condition_accuracy"] == direct["condition_accuracy"]
    assert direct["clip_x0"] is None and direct["score_set"] == "deterministic"


def test_score_set_follows_the_store_kind() -> None:
    import numpy as np

    from rho_core.evaluation import score_draws, score_set

    assert score_set("spherical_harmonics") == "deterministic"
    assert score_set("gaussian_random_field") == "distribution"
    rng = np.random.default_rng(0)
    true = rng.normal(size=(3, 1, 8)).astype(np.float32)
    draws = {"generated": true, "generated_norm": true, "true": true, "true_norm": true}
    draws.update(params=np.arange(3.0)[:, None], param_names=["a"], kind="hydrogen")
    s = score_draws(draws)
    assert s["score_set"] == "deterministic" and s["condition_accuracy"] == 1.0
    assert s["rel_l2_mean"] == 0.0 and s["leading"][0] == "rel_l2_mean"


def test_every_dataset_has_a_full_and_a_quick_preset() -> None:
    from flows.params import DATASETS, PipelineParams, preset_params, resolve

    for ds in DATASETS:
        if ds == "bonsai":
            continue  # needs the user's snapshots
        for quick in (False, True):
            p = preset_params(ds, quick)
            assert p.dataset == ds and p.model.to_config() and p.train.to_config()
    q = resolve({"dataset": "hydrogen", "train": {"steps": 7}}, quick=True)
    assert (q.hydrogen.size, q.train.steps, q.model.base_channels) == (16, 7, 16)
    full = resolve({"dataset": "gaussian_random_field"}, quick=False)
    assert full.model.patch_size == 2 and full.random_field.dims == 2  # configs/quality/grf64.yaml
    # a full preset runs its recipe file exactly as `rho train --config` would
    for ds, name in (("spherical_harmonics", "sh32-refine"), ("gaussian_random_field", "grf64"),
                     ("rotational_spectrum", "spectra8k")):  # fmt: skip
        recipe = resolve_config(ROOT / "configs" / "quality" / f"{name}.yaml")
        p = preset_params(ds, quick=False)
        assert p.model.to_config() == recipe.model and p.train.to_config() == recipe.train
    with pytest.raises(ValueError, match="bonsai"):
        PipelineParams.model_validate({"dataset": "bonsai"})


def test_task_run_names_use_only_their_parameters() -> None:
    """Prefect formats task_run_name with the call's parameters: a missing one fails the run."""
    import inspect

    from prefect.tasks import Task

    from tasks import data, sampling, training

    for mod in (data, sampling, training):
        for obj in vars(mod).values():
            if isinstance(obj, Task) and isinstance(obj.task_run_name, str):
                names = {p: {"points": 1} for p in inspect.signature(obj.fn).parameters}
                obj.task_run_name.format(**names)  # KeyError names the culprit
