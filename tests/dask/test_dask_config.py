"""``[executor]`` in the config file, the executor chooser and resource amounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from thotd.executor.choose import Executors, job_resources, load
from thotd.executor.local import LocalExecutor
from thotd.service.config import ConfigError, parse_config


def test_executor_defaults_to_local() -> None:
    config = parse_config({}, source="t")
    assert config.executor.for_project("/any") == {"kind": "local"}


def test_per_project_executor(tmp_path: Path) -> None:
    config = parse_config({"executor": {
        "kind": "dask", "scheduler": "tcp://h:8786",
        "projects": [{"root": "p", "kind": "local"},
                     {"root": "/q", "kind": "dask", "cluster": "slurm",
                      "cluster_options": {"queue": "short", "cores": 2}, "adapt_max": 8}]},
    }, source="t", base_dir=tmp_path)
    assert config.executor.for_project(str(tmp_path / "p")) == {"kind": "local"}
    q = config.executor.for_project("/q")
    assert q["cluster"] == "slurm" and q["cluster_options"] == {"queue": "short", "cores": 2}
    assert q["adapt_max"] == 8 and q["scheduler"] is None
    assert config.executor.for_project("/other")["scheduler"] == "tcp://h:8786"


@pytest.mark.parametrize("section, words", [
    ({"kind": "dask"}, "needs scheduler"),
    ({"kind": "dask", "scheduler": "tcp://h:1", "cluster": "slurm"}, "not both"),
    ({"kind": "remote"}, "executor.kind"),
    ({"kind": "dask", "cluster": "kubernetes"}, "executor.cluster"),
    ({"kind": "dask", "cluster": "slurm", "adapt_min": 5, "adapt_max": 2}, "adapt_min"),
    ({"shceduler": "tcp://h:1"}, "did you mean 'scheduler'"),
])
def test_bad_executor_sections_fail_loudly(section: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config({"executor": section}, source="t")


def test_empty_strings_mean_none() -> None:
    config = parse_config({"executor": {"scheduler": "", "cluster": ""}}, source="t")
    assert config.executor.scheduler is None and config.executor.cluster is None


def test_chooser() -> None:
    assert load("local") is LocalExecutor
    with pytest.raises(ValueError, match="unknown executor"):
        load("cloud")
    made = Executors(LocalExecutor)
    local = made.get({"kind": "local"})
    assert made.get({"kind": "local"}) is local
    assert made.pick({"kind": "dask", "scheduler": "tcp://x:1"}, {"executor": "local"}) is local
    assert made.status() == []
    made.close()


def test_resource_amounts() -> None:
    assert job_resources({"resources": {"GPU": 1, "memory": "8GB", "scratch": "2 GiB"}}) == {
        "GPU": 1.0, "memory": 8e9, "scratch": 2 * 1024.0**3}
    assert job_resources({"script": "x"}) == {} and job_resources(None) == {}
    with pytest.raises(ValueError, match="not a number"):
        job_resources({"resources": {"memory": "lots"}})
    with pytest.raises(ValueError, match="not an amount"):
        job_resources({"resources": {"GPU": True}})
