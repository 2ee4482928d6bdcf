"""A role that cannot be assumed: STS (moto with IAM enforcement on) answers AccessDenied; the task fails
at once with one clear line naming the role, never the external id, and nothing is written."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import SESSION_DIR
from tests.support.runs import logged_text, run
from tests.support.services import strict_sts_server
from tests.support.stack import DAYS, use_strict_sts


@pytest.fixture
def strict_sts():
    """A second moto with IAM enforced: user ``airflow`` may assume only ``role/allowed``."""
    with strict_sts_server(SESSION_DIR) as (url, key):
        yield url, key


def test_a_role_that_cannot_be_assumed_fails_clearly_and_writes_nothing(stack, strict_sts, monkeypatch, caplog, capfd):
    url, key = strict_sts
    use_strict_sts(monkeypatch, url, key)
    duckling = dataclasses.replace(stack.new_duckling(1, "denied"), catalog_conn_id="ducklake_strict",
                                   cross_account_role_arn="arn:aws:iam::123456789012:role/not-allowed")
    stack.use(duckling)

    assert run(1, DAYS[0]).state == "failed"
    text = logged_text(caplog, capfd)
    lines = [line for line in text.splitlines() if "event=task_failed" in line]
    assert lines and "retryable=false" in lines[0]
    assert "cannot assume role arn:aws:iam::123456789012:role/not-allowed for team 1: AccessDenied" in lines[0]
    assert duckling.cross_account_external_id not in text
    assert stack.keys(duckling.bucket) == []
