"""Running the ``hub`` command as a separate process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from hub.config import Settings


def hub_env(settings: Settings, db_url: str, **extra: str) -> dict[str, str]:
    t = settings.topics
    env = {**os.environ,
           "HUB_KAFKA_BOOTSTRAP": settings.bootstrap, "HUB_DATABASE_URL": db_url,
           **{f"HUB_TOPIC_{name.upper()}": topic for name, topic in t.model_dump().items()},
           "HUB_GROUP_PREFIX": settings.group_prefix,
           "HUB_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
           "HUB_CONSUMER_GROUPS": str(settings.consumer_groups).lower(),
           "HUB_DATA_DIR": str(settings.data_dir)}
    env.update(extra)
    return env


def hub(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hub.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
