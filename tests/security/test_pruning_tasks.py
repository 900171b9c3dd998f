"""The prune tasks beat runs keep going batch by batch until the backlog is gone, up to
their bound per run, and keep what is still needed."""

from __future__ import annotations

from sqlalchemy import func, select, text

from dispatch.models import AccessToken, IdempotencyKey
from dispatch.users import ensure_bootstrap_admin
from tests import factories as make


def test_one_run_prunes_old_keys_in_batches_up_to_its_bound(
    worker_context, committed_sessions, monkeypatch, now
):
    from workers import tasks

    monkeypatch.setattr(tasks, "PRUNE_BATCH", 2)
    monkeypatch.setattr(tasks, "PRUNE_BATCHES_PER_RUN", 2)
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        for i in range(6):
            make.booking(s, rider, now=now, key=f"k{i}")
        s.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '2 days' "
                "WHERE key <> 'k5'"
            )
        )
    assert tasks.prune_idempotency_keys() == 4  # Two batches of two: the run's bound.
    assert tasks.prune_idempotency_keys() == 1  # The rest, in a short batch.
    with committed_sessions() as s:
        assert list(s.scalars(select(IdempotencyKey.key))) == ["k5"]


def test_the_token_prune_keeps_the_bootstrap_admins_token(
    worker_context, committed_sessions, settings
):
    from workers import tasks

    with committed_sessions.begin() as s:
        admin_id = ensure_bootstrap_admin(s, settings.admin_token)
        s.execute(
            text(
                "INSERT INTO access_tokens (user_id, token_hash, issued_at, session_started_at, "
                "expires_at) VALUES (:u, 'dead', now() - interval '40 days', "
                "now() - interval '40 days', now() - interval '30 days')"
            ),
            {"u": admin_id},
        )
    assert tasks.prune_access_tokens() == 1
    with committed_sessions() as s:
        assert s.scalar(select(func.count()).select_from(AccessToken)) == 1
        assert s.scalar(select(AccessToken.expires_at)) is None
