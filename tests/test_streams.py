"""The stream-state reducer on plain values: no database, no clock but the one passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.events import Event, LiveInfo
from bot.pipeline.clocks import SenderClocks
from bot.pipeline.streams import StreamReducer, heal, needs_session_start
from bot.store import SessionMarks, StreamState

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(kind: str, minutes: float, **live: object) -> Event:
    return Event(
        source="rec",
        event_id=f"{kind}-{minutes}",
        kind=kind,
        occurred_at=at(minutes),
        received_at=at(minutes),
        platform="twitch",
        channel="quinn",
        live=LiveInfo(**live) if live else None,  # type: ignore[arg-type]
    )


def reducer(rejoin: float = 0) -> StreamReducer:
    return StreamReducer(clocks=SenderClocks(), rejoin_window=timedelta(minutes=rejoin))


def kinds(reduction: object) -> list[str]:
    return [c.event.kind for c in reduction.candidates]  # type: ignore[attr-defined]


def test_a_first_live_start_makes_the_stream_live_since_then() -> None:
    start = event("live_start", 0, title="Painting")
    result = reducer().reduce(None, start, start.occurred_at)
    assert kinds(result) == ["live_start"]
    assert result.state is not None and result.state.live
    assert result.state.started_at == at(0) and result.state.info.title == "Painting"
    assert result.state.marks == SessionMarks()


def test_a_repeated_start_is_no_notice_but_its_new_title_is_a_change() -> None:
    r = reducer()
    first = r.reduce(None, event("live_start", 0, title="A"), at(0))
    again = r.reduce(first.state, event("live_start", 5, title="B"), at(5))
    assert kinds(again) == ["title_change"]
    change = again.candidates[0].event
    assert change.old_live is not None and change.old_live.title == "A"
    assert again.state is not None and again.state.info.title == "B"


def test_an_end_fills_in_the_start_and_an_older_event_changes_nothing() -> None:
    r = reducer()
    live = r.reduce(None, event("live_start", 0, title="A"), at(0)).state
    ended = r.reduce(live, event("live_end", 60), at(60))
    assert kinds(ended) == ["live_end"]
    assert ended.event.started_at == at(0) and ended.event.ended_at == at(60)
    assert ended.event.live is not None and ended.event.live.title == "A"  # filled from state
    late = r.reduce(ended.state, event("title_change", 30, title="Late"), at(30))
    assert late.candidates == () and late.state is None


def test_an_end_of_a_stream_never_seen_live_is_recorded_not_notified() -> None:
    # docs/troubleshooting.md: "an end while not live" is recorded, not notified; a
    # stream the bot never saw start (installed mid-stream) is not live to the bot.
    r = reducer()
    ended = r.reduce(None, event("live_end", 60, title="A"), at(60))
    assert ended.candidates == ()
    assert ended.state is not None and not ended.state.live
    assert ended.state.info.title == "A" and ended.state.ended_at == at(60)
    # ...and the next start is an ordinary first card.
    again = r.reduce(ended.state, event("live_start", 90, title="B"), at(90))
    assert kinds(again) == ["live_start"]


def test_a_comeback_within_the_rejoin_window_resumes_the_session() -> None:
    r = reducer(rejoin=5)
    live = r.reduce(None, event("live_start", 0, title="A"), at(0)).state
    assert live is not None
    with_session = StreamState(**{**_fields(live), "marks": SessionMarks(session_row=1)})
    ended = r.reduce(with_session, event("live_end", 60), at(60)).state
    back = r.reduce(ended, event("live_start", 62, title="A"), at(62))
    assert [c.resumed for c in back.candidates] == [True]
    assert back.event.started_at == at(0)  # the duration covers the whole stream
    later = r.reduce(ended, event("live_start", 70, title="A"), at(70))
    assert [c.resumed for c in later.candidates] == [False]


def test_a_state_saved_with_future_times_is_healed() -> None:
    saved = StreamState(
        streamer_key="twitch/quinn",
        display_name=None,
        url=None,
        live=True,
        info=LiveInfo(),
        started_at=datetime(2099, 1, 1, tzinfo=UTC),
        ended_at=None,
        state_at=datetime(2099, 1, 1, tzinfo=UTC),
        marks=SessionMarks(session_row=7),
    )
    now = event("title_change", 0, title="x")
    assert needs_session_start(saved, now)
    healed = heal(saved, now, event("live_start", -10))
    assert healed is not None
    assert healed.started_at == at(-10) and healed.state_at < now.received_at


def _fields(state: StreamState) -> dict[str, object]:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}
