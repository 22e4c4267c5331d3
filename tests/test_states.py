"""One state vocabulary for every backend: each scheduler's words map to it through one table."""

import json

import pytest

from alpaca_jobs.backends.states import RECORD, SLURM, State, is_active, record_state, slurm_state


@pytest.mark.parametrize("word,state", [
    ("RUNNING", State.RUNNING), ("CANCELLED by 0", State.CANCELLED), ("TIMEOUT", State.FAILED),
    ("OUT_OF_MEMORY", State.FAILED), ("NODE_FAIL", State.FAILED), ("REQUEUED", State.REQUEUED),
    ("COMPLETING", State.RUNNING), ("CONFIGURING", State.PENDING), ("SOMETHING_NEW", State.UNKNOWN), ("", State.UNKNOWN),
])
def test_slurm_words_map_to_one_state(word, state):
    assert slurm_state(word) is state


def test_active_states_are_the_ones_that_change_by_themselves():
    assert {s for s in State if s.active} == {State.SUBMITTED, State.PENDING, State.RUNNING, State.REQUEUED,
                                              State.SUSPENDED}
    assert is_active("RUNNING") and is_active(State.SUBMITTED)
    assert not is_active("COMPLETED") and not is_active("UNKNOWN (connection refused)") and not is_active("DONE")
    # Every scheduler word still queued or running in Slurm's own terms is active here too.
    assert {w for w, s in SLURM.items() if s.active} >= {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED"}


def test_a_state_prints_compares_and_serializes_as_its_word():
    assert str(State.COMPLETED) == f"{State.COMPLETED}" == "COMPLETED" and State.FAILED == "FAILED"
    assert json.dumps({"status": State.CANCELLED}) == '{"status": "CANCELLED"}'
    assert f"{State.RUNNING:>9}" == "  RUNNING"


def test_every_record_status_has_a_state():
    assert record_state("stopped") is State.STOPPED and record_state("bogus") is State.UNKNOWN
    assert set(RECORD) == {"running", "completed", "failed", "interrupted", "stopped"}
