"""Fixtures for the LiveKit agent tests: the real embedded models, loaded once, and a real LiveKit server.

The services are the process-wide ones of ``app.agents.runtime``, so plugins and sessions built with
no arguments use the same loaded models as those given ``services`` explicitly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import QUESTION, TEST_VOICE

from app.agents.local_livekit import INSTALL_HINT, LocalLiveKit, find_binary
from app.agents.runtime import get_services
from app.config.settings import Settings
from app.services.container import Services


@pytest.fixture(scope="session")
async def services() -> Services:
    # Not the developer's .env: the tests are about the embedded models.
    return await get_services(Settings(app_env="test", _env_file=None, **TEST_VOICE))


@pytest.fixture(scope="session")
async def question_pcm(services) -> tuple[bytes, int]:
    """QUESTION spoken by the embedded TTS: PCM s16le mono and its sample rate."""
    return await services.tts.synthesize(QUESTION), services.tts.sample_rate


@pytest.fixture(scope="session")
def livekit_binary() -> Path:
    """The livekit-server that ``make livekit-server`` builds (or LIVEKIT_SERVER_BIN, or one on PATH)."""
    binary = find_binary(Settings(_env_file=None))
    if binary is None:
        pytest.fail(f"the LiveKit room tests need a livekit-server binary and none was found. {INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
async def livekit_server(livekit_binary) -> LocalLiveKit:
    """A real livekit-server on loopback, keys made for this run."""
    server = await LocalLiveKit.start(livekit_binary)
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def livekit_settings(livekit_server) -> Settings:
    """Settings that point at ``livekit_server``: what the API's token endpoint signs with."""
    return Settings(app_env="test", _env_file=None, livekit_url=livekit_server.url,
                    livekit_api_key=livekit_server.api_key, livekit_api_secret=livekit_server.api_secret)
