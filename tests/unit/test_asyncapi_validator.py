"""The official AsyncAPI CLI (@asyncapi/cli, pinned in package-lock.json) finds the committed
document valid: no error and no warning. ``ops/dev.sh test`` installs it (``npm ci``); without it
these tests fail, never skip, so the check cannot silently stop running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.asyncapi import COMMITTED, ValidatorMissing, document, validate


def _validated(path: Path):
    try:
        return validate(path)
    except ValidatorMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def test_the_official_validator_accepts_the_committed_document():
    result = _validated(COMMITTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_refuses_what_the_document_once_got_wrong(tmp_path: Path):
    # The committed document's first bug: deliveryMode in a message's bindings (it belongs to the
    # operation's). The validator must see it, or a passing run above proves nothing.
    broken = json.loads(json.dumps(document()))
    broken["components"]["messages"]["order.placed"]["bindings"]["amqp"]["deliveryMode"] = 2
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(broken))
    result = _validated(path)
    assert result.returncode != 0 and "deliveryMode" in result.stdout, result.stdout + result.stderr
