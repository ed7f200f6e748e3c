"""Where the graph's downloads come from: the pinned sources, and the XPORTRAIT_DOWNLOAD_SOURCES
override (a mirror keeps the pinned digest and size; another build must bring its own digest)."""
from __future__ import annotations

import json

import pytest

from xportrait_core.download import KNOWN_FILES, SOURCES_ENV, ByteSize, DownloadError, source_of

NAME = "model_state-415001.th"
MIRROR = "http://mirror.local/x/" + NAME
OTHER_SHA = "ab" * 32


def env(entries) -> dict[str, str]:
    return {SOURCES_ENV: json.dumps(entries)}


def test_without_the_variable_the_pinned_source_is_used():
    assert SOURCES_ENV == "XPORTRAIT_DOWNLOAD_SOURCES"
    assert source_of(NAME, {}) is KNOWN_FILES[NAME]
    assert source_of(NAME, {SOURCES_ENV: "  "}) is KNOWN_FILES[NAME]
    assert source_of("xportrait_temporal.safetensors", {}) is None  # no source: never downloaded


def test_a_mirror_keeps_the_pinned_digest_and_size():
    known = KNOWN_FILES[NAME]
    mirror = source_of(NAME, env({NAME: {"url": MIRROR}}))
    assert mirror.url == MIRROR and mirror.sha256 == known.sha256 and mirror.size == known.size
    assert KNOWN_FILES[NAME] is known and known.url.startswith("https://huggingface.co/")  # the table is untouched


def test_another_build_brings_its_own_digest_and_exact_size():
    build = source_of(NAME, env({NAME: {"url": MIRROR, "sha256": OTHER_SHA.upper(), "bytes": 1234}}))
    assert build.sha256 == OTHER_SHA and build.size == ByteSize(1234, 1234) and build.approx_bytes == 1234
    no_size = source_of(NAME, env({NAME: {"url": MIRROR, "sha256": OTHER_SHA}}))
    assert no_size.sha256 == OTHER_SHA and no_size.size is None


@pytest.mark.parametrize("value, complaint", [
    ("{not json", "not valid JSON"),
    (json.dumps([MIRROR]), "must be a JSON object"),
    (json.dumps({"evil.th": {"url": MIRROR}}), "only these files can be downloaded"),
    (json.dumps({NAME: {"url": "file:///etc/passwd"}}), "needs an http(s)"),
    (json.dumps({NAME: {"url": MIRROR, "bytes": 10}}), "only together with its \"sha256\""),
    (json.dumps({NAME: {"url": MIRROR, "sha256": "xyz"}}), "64 hexadecimal digits"),
    (json.dumps({NAME: {"url": MIRROR, "sha256": OTHER_SHA, "bytes": -1}}), "positive whole number"),
])
def test_malformed_overrides_are_refused_with_the_variable_named(value, complaint):
    with pytest.raises(DownloadError) as caught:
        source_of(NAME, {SOURCES_ENV: value})
    assert complaint in str(caught.value) and SOURCES_ENV in str(caught.value)
