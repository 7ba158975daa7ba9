"""Device selection, autocast policy and the optional IPEX import."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest
import torch

from rho_core import devices
from rho_core.errors import ConfigError


def test_auto_matches_what_torch_reports() -> None:
    if torch.cuda.is_available():
        expected = "cuda"
    elif hasattr(torch, "xpu") and torch.xpu.is_available():
        expected = "xpu"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device("CPU") == torch.device("cpu")


def test_unknown_and_unavailable_devices() -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        devices.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="not available"):
            devices.resolve_device("cuda")


def test_autocast_policy_on_cpu() -> None:
    cpu = torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with devices.autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with devices.autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ConfigError, match="fp16"):
        devices.autocast(cpu, "fp16")
    with pytest.raises(ConfigError, match="precision"):
        devices.autocast(cpu, "int8")
    assert devices.autocast_dtype(torch.device("cuda"), "fp16") == torch.float16  # no GPU needed


def test_ipex_absent_is_one_info_line(caplog, monkeypatch) -> None:
    monkeypatch.setattr(devices, "_IPEX_CACHE", [])
    with caplog.at_level(logging.INFO, logger="rho_core.devices"):
        mod = devices.maybe_import_ipex()
        again = devices.maybe_import_ipex()  # cached: no second line
    installed = True
    try:
        importlib.metadata.version("intel_extension_for_pytorch")
    except importlib.metadata.PackageNotFoundError:
        installed = False
    if not installed:
        assert mod is None and again is None
        lines = [r for r in caplog.records if "Intel Extension" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.INFO


@pytest.mark.parametrize("fake_version", ["2.8.0", "same"])
def test_ipex_mismatch_or_broken_import_is_skipped(caplog, monkeypatch, fake_version) -> None:
    # IPEX cannot be installed beside torch 2.13, so its presence is faked through the package
    # metadata (the only thing faked): a mismatched version must not be imported; a matching one
    # whose import fails must be caught.
    version = torch.__version__ if fake_version == "same" else fake_version
    monkeypatch.setattr(devices, "_IPEX_CACHE", [])
    monkeypatch.setattr(devices.importlib.metadata, "version", lambda name: version)
    with caplog.at_level(logging.INFO, logger="rho_core.devices"):
        assert devices.maybe_import_ipex() is None
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert ("does not match" in msg) if fake_version != "same" else ("failed to import" in msg)
