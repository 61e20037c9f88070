"""Fixtures for the LiveKit agent tests: the real embedded models, loaded once, and no LiveKit server.

The services are the process-wide ones of ``app.agents.runtime``, so plugins and sessions built with
no arguments use the same loaded models as those given ``services`` explicitly.
"""

from __future__ import annotations

import pytest
from helpers import QUESTION, TEST_VOICE

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
