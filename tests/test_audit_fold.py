"""Folding the audit log for people (issue 10, item 17): one line per client,
connection, outcome and minute, so a busy proxy does not bury a refusal."""

from __future__ import annotations

from broker.service.activity import Fold, describe, fold

#: The start of a minute (a multiple of 60 s since the epoch).
T = 1_700_000_040.0


def served(at: float, *, client: str = "Claude Code", pid: int = 7, connection: str = "github", **extra):
    return {"time": at, "connection": connection, "outcome": "served", "client": client, "pid": pid, **extra}


def test_repeats_in_one_minute_fold_into_one_counted_line():
    entries = [served(T + i, peer_pid=1000 + i) for i in range(42)]  # each `token` command is a new process
    folds = fold(entries)
    assert len(folds) == 1
    assert (folds[0].count, folds[0].first, folds[0].last) == (42, T, T + 41)
    assert folds[0].entry == entries[-1]
    assert describe(folds[0]) == "Claude Code (pid 7) got github's token ×42"


def test_a_single_line_has_no_count():
    assert describe(Fold(served(T), 1, T, T)) == "Claude Code (pid 7) got github's token"


def test_different_clients_connections_outcomes_details_and_minutes_stay_apart():
    entries = [
        served(T),
        served(T + 1, client="Cursor"),
        served(T + 2, pid=8),  # the same name, another process
        served(T + 3, connection="linear"),
        {**served(T + 4), "outcome": "denied"},
        {**served(T + 5), "outcome": "failed", "detail": "reauth_required"},
        {**served(T + 6), "outcome": "failed", "detail": "server_error"},
        served(T + 60),  # the next minute
    ]
    folds = fold(entries)
    assert [f.count for f in folds] == [1] * len(entries)
    assert [f.entry for f in folds] == entries
    # ...and each repeat joins its own group only.
    folds = fold(entries + entries)
    assert [(f.entry, f.count) for f in folds] == [(e, 2) for e in entries]


def test_minute_boundaries_split_groups():
    folds = fold([served(T - 0.001), served(T), served(T + 59.999)])
    assert [f.count for f in folds] == [1, 2]


def test_groups_are_ordered_by_their_last_time():
    a1, b, a2 = served(T), served(T + 1, client="Cursor"), served(T + 2)
    folds = fold([a1, b, a2])
    assert [f.entry["client"] for f in folds] == ["Cursor", "Claude Code"]
    assert [(f.count, f.first, f.last) for f in folds] == [(1, T + 1, T + 1), (2, T, T + 2)]


def test_every_outcome_reads_as_a_sentence():
    base = served(T)
    assert describe(Fold({**base, "outcome": "denied"}, 3, T, T)) == "Claude Code (pid 7) was refused github's token ×3"
    failed = {**base, "outcome": "failed", "detail": "settings_mismatch"}
    assert describe(Fold(failed, 1, T, T)) == "Claude Code (pid 7) could not get github's token (settings_mismatch)"
    answered = {**base, "outcome": "answered", "detail": "allow_once by desktop app", "answered_by": "desktop app"}
    assert describe(Fold(answered, 1, T, T)) == (
        "Claude Code (pid 7) asked for github's token: allow_once by desktop app"
    )
    refused = {**base, "outcome": "answer_refused", "detail": "wrong code; 2 tries left"}
    assert describe(Fold(refused, 1, T, T)) == (
        "Claude Code (pid 7) asked for github's token: an answer was refused (wrong code; 2 tries left)"
    )
    changed = {**base, "connection": None, "outcome": "identity_changed", "detail": "the process exec'd"}
    assert describe(Fold(changed, 2, T, T)) == "Claude Code (pid 7) was refused: the process exec'd ×2"
    odd = {"time": T, "outcome": "something_new"}
    assert describe(Fold(odd, 1, T, T)) == "? something new"
