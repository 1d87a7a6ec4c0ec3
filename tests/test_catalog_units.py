"""The provider catalogue is the one list of providers (issue 22): config accepts exactly its
names, the direct and checked sets and the conversation support are read off its specs, each
spec's builder (and probe) resolves, and a provider named anywhere else fails here."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from dragoman.api import direct
from dragoman.config import DirectProviderName, Settings
from dragoman.pipeline.providers.catalog import (
    CHECKED,
    DIRECT_PROVIDERS,
    PROVIDERS,
    conversation_unavailable_reason,
)

ROOT = Path(__file__).resolve().parent.parent


def test_config_accepts_exactly_the_catalogues_providers() -> None:
    assert get_args(Settings.model_fields["provider"].annotation) == tuple(PROVIDERS)
    assert get_args(Settings.model_fields["direct_provider"].annotation) == DIRECT_PROVIDERS
    for name in PROVIDERS:
        assert Settings(provider=name).provider == name
    for name in DIRECT_PROVIDERS:
        assert Settings(direct_provider=name).direct_provider == name


def test_an_unknown_provider_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as e:
        Settings(provider="opneai-translate")
    assert all(repr(name) in str(e.value) for name in PROVIDERS), e.value
    with pytest.raises(ValidationError) as e:
        Settings(direct_provider="local")  # a provider, but one without a direct mode
    assert all(repr(name) in str(e.value) for name in DIRECT_PROVIDERS), e.value


def test_the_direct_checked_and_conversation_sets_are_read_off_the_specs() -> None:
    assert tuple(n for n, s in PROVIDERS.items() if s.direct) == DIRECT_PROVIDERS
    assert tuple(n for n, s in PROVIDERS.items() if s.checkable) == CHECKED
    assert DIRECT_PROVIDERS and CHECKED  # something to derive: the sets are not empty
    assert direct.DIRECT_PROVIDERS is DIRECT_PROVIDERS  # the api's is the catalogue's
    for spec in PROVIDERS.values():
        assert (conversation_unavailable_reason(spec) is None) == spec.conversation
        assert not (spec.conversation and spec.kind == "speech-to-speech"), spec.name


def test_the_catalogue_refuses_config_names_that_differ() -> None:
    """Adding a spec without its name in config (or the other way) fails at import, not at
    the first call that names it. (In a fresh interpreter: a reload here would give the
    other tests a second ProviderSpec class.)"""
    script = (
        "import typing, dragoman.config as c\n"
        "c.DirectProviderName = typing.Literal['openai-translate']\n"
        "import dragoman.pipeline.providers.catalog\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode != 0
    assert "RuntimeError: config's ProviderName / DirectProviderName" in out.stderr, out.stderr
    assert get_args(DirectProviderName) == DIRECT_PROVIDERS  # and as the tree is, it imports


def test_each_spec_resolves_its_builder_and_the_checkable_ones_their_probe() -> None:
    settings = Settings(openai_api_key="sk-test", gemini_api_key="g-test")
    for spec in PROVIDERS.values():
        assert callable(spec.builder()), spec.name
        if spec.checkable:
            probe = spec.speech_provider(settings)
            assert probe.name == spec.name and probe.input_rate == spec.input_rate
        else:
            with pytest.raises(ValueError, match="no providers check probe"):
                spec.speech_provider(settings)


def test_a_ticket_for_an_unknown_provider_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dragoman token --providers``: checked against the list too (a typo would mint a
    ticket no call can use)."""
    from dragoman import cli

    monkeypatch.setenv("DRAGOMAN_CALL_TOKEN_SECRET", "s" * 32)
    with pytest.raises(SystemExit) as e:
        cli.main(["token", "--sub", "t", "--providers", "local,opneai-translate"])
    assert "opneai-translate" in str(e.value)
    assert all(name in str(e.value) for name in PROVIDERS), e.value
    assert cli.main(["token", "--sub", "t", "--providers", ",".join(PROVIDERS)]) == 0
    assert capsys.readouterr().out.count(".") == 2  # one JWT printed


# Where a provider's name may be written out as a string, and why: the list itself; each
# provider's own module naming itself; the benches, simulator and fakes choosing one to run
# (data, not a list of providers). And config's two Literals, checked against the list above
# (and by the catalogue at import), but nothing else in config.
NAMED_IN = {
    "dragoman/pipeline/providers/catalog.py",
    "dragoman/pipeline/providers/sdk_sessions.py",  # openai-translate's, gemini-live's names
    "dragoman/pipeline/providers/cascade_text.py",  # openai-cascade's name
}
CHOOSERS = ("dragoman/bench/", "dragoman/sim/", "dragoman/fakes/")
CONFIG_COPY = {"ProviderName", "DirectProviderName"}


def _config_copy(tree: ast.Module) -> set[int]:
    """The line numbers of config's ``ProviderName = Literal[...]`` copies."""
    return {
        node.lineno
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id in CONFIG_COPY for t in node.targets)
    }


def test_no_module_lists_providers_of_its_own() -> None:
    """A tuple, set or list of two or more provider names outside the catalogue (as the
    direct and checked lists once were), or a pattern of them (as config's were), is a second
    list that can fall behind: fail on it."""
    names = set(PROVIDERS)
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"(?:{alternatives})\|(?:{alternatives})")
    stray = []
    for path in sorted((ROOT / "dragoman").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in NAMED_IN or rel.startswith(CHOOSERS):
            continue
        tree = ast.parse(path.read_text(), rel)
        allowed = _config_copy(tree) if rel == "dragoman/config.py" else set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in allowed:
                continue
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                if len(listed) >= 2:
                    stray.append(f"{rel}:{node.lineno} {sorted(listed)}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and pattern.search(node.value)
            ):
                stray.append(f"{rel}:{node.lineno} {node.value[:60]!r}")
    assert not stray, "providers listed outside the catalogue:\n" + "\n".join(stray)
