"""`rho generate`, `rho info`, `rho normalize`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from rho_cli.main import main
from rho_core.data.store import create_store, open_store


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_generate_sh_info_json_and_normalize(tmp_path, capsys):
    out = tmp_path / "sh.zarr"
    assert (
        main(["generate", "spherical-harmonics", "--out", str(out), "--size", "8", "--l-max", "2"])
        == 0
    )
    assert "wrote 9 volumes" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "spherical_harmonics" and info["n_samples"] == 9
    assert info["param_names"] == ["l", "m"] and info["param_ranges"]["m"] == [-2.0, 2.0]
    assert info["field_shape"] == [1, 8, 8, 8] and info["normalization"] is None
    assert main(["normalize", str(out), "--transform", "minmax"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "spherical_harmonics" in text and "samples      9" in text
    assert "normalisation minmax" in text and "l ∈ [0, 2]" in text
    s = open_store(out)
    assert s.normalization["min"] == pytest.approx(float(s.fields[:].min()))
    # regression: a --scale/--floor the transform does not use was silently ignored
    assert main(["normalize", str(out), "--transform", "minmax", "--scale", "3"]) == 2
    assert "--scale applies to --transform asinh only" in _err_line(capsys)
    # --append adds, paper convention with --lm
    assert (
        main(
            [
                "generate",
                "spherical-harmonics",
                "--out",
                str(out),
                "--size",
                "8",
                "--lm",
                "3,1",
                "--append",
            ]
        )
        == 0
    )
    assert open_store(out).n == 10


def test_progress_is_reported(tmp_path, caplog):
    import logging

    calls = []
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics

    generate_spherical_harmonics(
        tmp_path / "p.zarr", size=40, l_max=2, progress=lambda d, t: calls.append((d, t))
    )
    # 40³ holds 8 volumes per chunk: progress after each whole chunk, ending at the total
    assert calls == [(8, 9), (9, 9)]
    with caplog.at_level(logging.INFO, logger="rho.generate"):
        assert main(["generate", "hydrogen", "--out", str(tmp_path / "h.zarr"), "--size", "4"]) == 0
    assert "hydrogen orbitals: 14/14 volumes" in caplog.text


def test_generate_hydrogen(tmp_path, capsys):
    out = tmp_path / "h.zarr"
    assert main(["generate", "hydrogen", "--out", str(out), "--size", "8", "--n-max", "2"]) == 0
    s = open_store(out)
    assert s.kind == "hydrogen_orbital" and s.n == 5 and np.all(s.fields[:] >= 0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "spherical-harmonics", "--l-max", "-1"], "l_max must be ≥ 0"),
        (["generate", "spherical-harmonics", "--lm=-1,0"], "l must be ≥ 0"),
        (["generate", "spherical-harmonics", "--lm", "2,-3"], "|m| ≤ l"),
        (["generate", "spherical-harmonics", "--lm", "2,x"], "--lm takes"),
        (["generate", "spherical-harmonics", "--size", "1"], "size must be at least 2"),
        (["generate", "hydrogen", "--n-max", "0"], "n_max"),
        # regression: a MemoryError traceback halfway, leaving an empty store
        (["generate", "spherical-harmonics", "--size", "100000"], "use a smaller --size"),
        (["generate", "hydrogen", "--size", "100000"], "use a smaller --size"),
    ],
)
def test_bad_generate_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "x.zarr"
    assert main([*argv[:2], "--out", str(out), *argv[2:]]) == 2
    line = _err_line(capsys)
    assert line.startswith("rho generate: error:") and needle in line
    assert not out.exists()


def test_existing_store_needs_a_flag(tmp_path, capsys):
    out = tmp_path / "sh.zarr"
    argv = ["generate", "spherical-harmonics", "--out", str(out), "--size", "4", "--l-max", "1"]
    assert main(argv) == 0
    assert main(argv) == 2
    line = _err_line(capsys)
    assert "already exists" in line and "--overwrite" in line and "--append" in line
    assert main([*argv, "--overwrite"]) == 0 and open_store(out).n == 4


def test_append_adds_only_new_volumes_and_refuses_another_convention(tmp_path, capsys):
    out = tmp_path / "sh.zarr"
    argv = ["generate", "spherical-harmonics", "--out", str(out), "--size", "4"]
    assert main([*argv, "--l-max", "1"]) == 0
    assert main([*argv, "--l-max", "2", "--append"]) == 0  # adds l = 2 only
    assert "wrote 5 volumes" in capsys.readouterr().out
    p = open_store(out).params[:]
    assert len(p) == 9 and len({tuple(r) for r in p.tolist()}) == 9  # no duplicate (l, m)
    assert main([*argv, "--l-max", "1", "--append", "--convention", "paper"]) == 2
    line = _err_line(capsys)
    assert "convention 'real', not 'paper'" in line and open_store(out).n == 9
    h = tmp_path / "h.zarr"
    hy = ["generate", "hydrogen", "--out", str(h), "--size", "4", "--n-max", "1"]
    assert main(hy) == 0 and main([*hy, "--append", "--half-width", "9"]) == 2
    assert "half_width_rule" in _err_line(capsys) and open_store(h).n == 1


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "does not exist" in _err_line(capsys)
    (tmp_path / "dir").mkdir()
    assert main(["info", str(tmp_path / "dir")]) == 2
    assert "not a ρ-Diffusion store" in _err_line(capsys)
    path = tmp_path / "old.zarr"
    create_store(path, kind="t", spatial_dims=1, param_names=[], field_shape=(1, 4)).close()
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g.attrs["rho_diffusion"] = dict(g.attrs["rho_diffusion"], schema_version=7)
    assert main(["info", str(path)]) == 2
    assert "schema_version 7" in _err_line(capsys)


def test_nan_fields_error_and_subprocess_exit(tmp_path):
    """Through a real `rho` process: NaN fields are refused with one line and exit status 2."""
    path = tmp_path / "s.zarr"
    with create_store(path, kind="t", spatial_dims=1, param_names=[], field_shape=(1, 4)) as w:
        from rho_core.errors import DataError

        with pytest.raises(DataError, match="NaN"):
            w.append(np.full((1, 1, 4), np.nan), np.zeros((1, 0)))
    proc = subprocess.run(
        [sys.executable, "-m", "rho_cli.main", "normalize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no samples" in lines[0] and "Traceback" not in proc.stderr


def test_info_into_a_closed_pipe_has_no_traceback(tmp_path):
    """`rho info STORE | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    path = tmp_path / "s.zarr"
    create_store(
        path,
        kind="t",
        spatial_dims=1,
        param_names=[],
        field_shape=(1, 4),
        provenance={f"k{i}": "x" * 200 for i in range(400)},  # more than a pipe buffer
    ).close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rho_cli.main", "info", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith(b"store")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_dask_cluster_chatter_is_filtered_unless_verbose(monkeypatch):
    """Regression: `--workers 2` printed ~35 INFO lines of cluster start/stop around progress."""
    import argparse
    import io
    import logging

    from rho_cli.generate import quiet_dask

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    quiet_dask(argparse.Namespace(verbose=False))
    for name, level in [
        ("distributed.scheduler", logging.INFO),
        ("distributed.nanny", logging.WARNING),
        ("rho.ingest", logging.INFO),
    ]:
        handler.handle(logging.LogRecord(name, level, "", 0, f"from {name}", None, None))
    assert stream.getvalue().split() == ["from", "distributed.nanny", "from", "rho.ingest"]


def test_info_text_puts_nested_provenance_and_many_parameters_on_own_lines():
    from rho_cli.info import format_summary

    summary = {
        "path": "m.zarr",
        "kind": "galaxy_merger",
        "schema_version": 1,
        "n_samples": 2,
        "field_shape": [1, 8, 8],
        "spatial_dims": 2,
        "samples_per_chunk": 2,
        "bytes_uncompressed": 512,
        "param_ranges": {k: (0.0, 1.0) for k in ("a", "b", "c", "time")},
        "provenance": {"source": "x", "render": {"image_size": 8, "projection": "z"}},
    }
    lines = format_summary(summary).splitlines()
    assert "provenance   render.image_size: 8" in lines and "provenance   source: x" in lines
    assert "parameters   a ∈ [0, 1]," in lines and " " * 13 + "time ∈ [0, 1]" in lines


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "spherical-harmonics", "--out", "x", "--convention", "foo"], "choice"),
        (["simulate", "merger", "--out", "x", "--mass-ratio", "abc"], "comma-separated numbers"),
        (["info"], "required: STORE"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle):
    """Regression: argparse printed a multi-line usage block before the error."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "--help" in err[0]
