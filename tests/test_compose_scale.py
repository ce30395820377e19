"""The scaled-out compose topology (docker-compose.scale.yml): validated offline by docker-compose itself,
and checked against what the scale-out design needs. The same commands (migrate, worker, API) run outside
containers in tests/app/jobs/test_scaleout.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT
from tests.s3 import SeaweedServer

COMPOSE = ROOT / "docker-compose.scale.yml"
ENV_EXAMPLE = ROOT / "deploy" / "scale.env.example"
needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed"
)


def compose(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *arguments], capture_output=True, text=True, timeout=60
    )


@needs_compose
def test_scaled_topology_validates_with_the_example_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "scale.env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("change-me", "s3cret-from-env-file"))
    checked = compose("--env-file", str(env_file), "config", "-q")
    assert checked.returncode == 0, checked.stderr
    resolved: dict[str, Any] = yaml.safe_load(compose("--env-file", str(env_file), "config").stdout)
    services = resolved["services"]
    assert sorted(services) == [
        "api-1",
        "api-2",
        "create-bucket",
        "migrate",
        "nginx",
        "postgres",
        "seaweedfs",
        "worker-1",
        "worker-2",
    ]
    url = "postgresql://stockcast:s3cret-from-env-file@postgres:5432/stockcast"
    for name in ("api-1", "api-2", "worker-1", "worker-2", "migrate"):
        service = services[name]
        assert service["environment"]["STOCKCAST_DATABASE_URL"] == url, name
        # One S3 store for every process, and no shared folder for models or datasets: only the keys file.
        assert service["environment"]["STOCKCAST_STORE_URL"] == "s3://stockcast/stockcast", name
        assert service["environment"]["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333", name
        assert service["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3cret-from-env-file", name
        assert [volume.split(":")[0] for volume in service["volumes"]] == ["keys"], name
    assert services["seaweedfs"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3cret-from-env-file"
    assert services["create-bucket"]["depends_on"] == {"seaweedfs": {"condition": "service_started"}}
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }
    for name in ("worker-1", "worker-2"):
        assert services[name]["build"]["target"] == "train", name
        assert services[name]["command"] == ["python", "-m", "app.worker"]
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    for name in ("api-1", "api-2"):
        # API replicas run the image without TensorFlow, on ONNX Runtime alone; workers train.
        assert services[name]["build"]["target"] == "serve", name
        assert services[name]["environment"]["STOCKCAST_INFERENCE_ENGINE"] == "onnx", name
        assert "ports" not in services[name]  # only the load balancer is published
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "s3cret-from-env-file"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(volume.startswith("pgdata:") for volume in postgres["volumes"])
    assert services["nginx"]["ports"] == [{"published": 8000, "target": 80}]
    upstreams = re.findall(r"server (api-\d):8000", (ROOT / "deploy" / "nginx.conf").read_text())
    assert upstreams == ["api-1", "api-2"]


@needs_compose
def test_scaled_topology_refuses_to_run_without_the_secret() -> None:
    checked = compose("config", "-q")
    assert checked.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/scale.env" in checked.stderr


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    assert "change-me" not in text
    assert re.findall(r"POSTGRES_PASSWORD: (\S+)", text) == ["${POSTGRES_PASSWORD:?set"]
    assert set(re.findall(r"AWS_SECRET_ACCESS_KEY: (\S+)", text)) == {"${S3_SECRET_KEY:?set"}


def test_the_bucket_step_runs_against_a_real_seaweedfs_on_the_first_start_and_every_later_one(
    seaweed: SeaweedServer,
) -> None:
    # The one-shot `create-bucket` command as the compose file has it, on loopback instead of the
    # compose network: on a restart the bucket exists, and `s3.bucket.create` alone fails there.
    command = yaml.safe_load(COMPOSE.read_text())["services"]["create-bucket"]["command"][0]
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")

    def on_loopback(bucket_command: str) -> str:
        return bucket_command.replace("seaweedfs:9333", seaweed.master).replace("weed shell", f"{weed} shell")

    # The bucket is renamed before the paths go in: a checkout's path may hold "stockcast" too.
    local, fresh = on_loopback(command), on_loopback(command.replace("stockcast", "fresh"))
    for script in (local, fresh, fresh):  # the bucket there already; created; there already
        finished = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert finished.returncode == 0, finished.stdout + finished.stderr
    with urllib.request.urlopen(f"{seaweed.endpoint}/fresh", timeout=5) as answer:
        assert answer.status == 200
