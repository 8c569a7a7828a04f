"""Better Auth compatibility, proven with the stock client (issue 3, part 1).

`client-flow.mjs` drives better-auth 1.7.25's `createAuthClient` with `organizationClient()`
on the machine's Node.js against `igris serve`: sign-up, sign-in, get-session, create an
organization, set it active, invite, the invitee signs up and accepts, list members, sign
out, and get-session is null. Then the database must hold what that flow made, and the
organization's audit chain must verify.

The npm packages are installed here with `npm ci` from the committed package-lock.json
whenever node_modules is missing or was installed from another lock file. The server
commits for real (this is not a rolled-back test transaction), so names are unique per run
and nothing is cleaned up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from shared.audit import verify_chain
from shared.ids import new_id
from shared.models import AuditEvent, Invitation, Member, Organization, User
from shared.models import Session as UserSession
from tests.igris.test_cli import serving

HERE = Path(__file__).resolve().parent
LOCK = HERE / "package-lock.json"
STAMP = HERE / "node_modules" / ".igris-package-lock.sha256"
MIN_NODE_MAJOR = 18  # global fetch


def require_node() -> tuple[str, str]:
    """node and npm, or a failure that says what to install (never a skip)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "The Better Auth client test needs Node.js (>= 18) and npm on PATH: install them "
            "(e.g. `apt-get install nodejs npm`) and run the test again.",
            pytrace=False,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = re.match(r"v(\d+)", version.stdout.strip())
    if found is None or int(found.group(1)) < MIN_NODE_MAJOR:
        pytest.fail(f"Node.js {version.stdout.strip()} is too old (need >= 18)", pytrace=False)
    return node, npm


def install_client(npm: str) -> None:
    """`npm ci` when node_modules is missing or stale (installed from another lock file)."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == digest:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    STAMP.write_text(digest + "\n")


def run_client_flow(node: str, base_url: str, run_id: str) -> dict[str, Any]:
    env = {**os.environ, "BASE_URL": base_url, "RUN_ID": run_id}
    result = subprocess.run(
        [node, "client-flow.mjs"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"client-flow.mjs failed (exit {result.returncode}):\n{output}"
    lines = result.stdout.strip().splitlines()
    assert lines, output
    assert lines[-1] == "ALL OK", output
    [found] = [line for line in lines if line.startswith("RESULT ")]
    outcome: dict[str, Any] = json.loads(found.removeprefix("RESULT "))
    return outcome


def test_the_stock_better_auth_client_works_against_igris_serve(engine: Engine) -> None:
    node, npm = require_node()
    install_client(npm)
    run_id = new_id("request").removeprefix("req_").lower()
    with serving(os.environ.copy()) as base:
        outcome = run_client_flow(node, f"{base}/api/auth", run_id)

    with Session(engine) as db:
        users = {
            user.email: user
            for user in db.scalars(
                select(User).where(
                    col(User.email).in_([outcome["aliceEmail"], outcome["bobEmail"]])
                )
            )
        }
        assert set(users) == {outcome["aliceEmail"], outcome["bobEmail"]}
        alice, bob = users[outcome["aliceEmail"]], users[outcome["bobEmail"]]

        [organization] = db.scalars(
            select(Organization).where(col(Organization.slug) == outcome["slug"])
        ).all()
        assert organization.id == outcome["organizationId"]
        assert organization.metadata_ == {"plan": "pro"}

        members = db.scalars(
            select(Member).where(col(Member.organization_id) == organization.id)
        ).all()
        assert {(member.user_id, member.role) for member in members} == {
            (alice.id, "owner"),
            (bob.id, "developer"),
        }

        invitation = db.get(Invitation, outcome["invitationId"])
        assert invitation is not None
        assert (
            invitation.organization_id,
            invitation.email,
            invitation.role,
            invitation.status,
        ) == (
            organization.id,
            bob.email,
            "developer",
            "accepted",
        )

        assert db.get(UserSession, outcome["signedOutSessionId"]) is None
        bob_sessions = db.scalars(
            select(UserSession).where(col(UserSession.user_id) == bob.id)
        ).all()
        assert [s.active_organization_id for s in bob_sessions] == [organization.id]

        verification = verify_chain(db, organization.id)
        assert verification.intact, verification
        operations = db.scalars(
            select(col(AuditEvent.operation))
            .where(col(AuditEvent.chain_id) == organization.id)
            .order_by(col(AuditEvent.seq))
        ).all()
        for expected in (
            "organization.created",
            "invitation.created",
            "invitation.accepted",
            "member.added",
        ):
            assert expected in operations, operations
        assert verification.checked == db.scalar(
            select(func.count()).where(col(AuditEvent.chain_id) == organization.id)
        )


def test_without_node_the_test_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(HERE / "no-such-directory"))
    with pytest.raises(pytest.fail.Exception, match=r"needs Node\.js"):
        require_node()
