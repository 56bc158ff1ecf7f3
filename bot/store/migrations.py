"""The SQLite schema, as numbered migrations.

The schema carries its version in `PRAGMA user_version` and grows only by appending to
MIGRATIONS, so a database written by any earlier version opens and is upgraded in place.
Another backend numbers its own migrations the same way, so "schema 5" means the same
tables everywhere.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the first schema.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        streamer_key TEXT,
        occurred_at TEXT NOT NULL,
        received_at TEXT NOT NULL,
        notified INTEGER NOT NULL,
        payload TEXT NOT NULL,
        raw BLOB,
        parent_id INTEGER REFERENCES events(id),
        UNIQUE (source, event_id)
    );
    CREATE INDEX events_by_streamer ON events (streamer_key, occurred_at);

    CREATE TABLE streams (
        streamer_key TEXT PRIMARY KEY,
        display_name TEXT,
        url TEXT,
        live INTEGER NOT NULL DEFAULT 0,
        info TEXT NOT NULL DEFAULT '{}',
        started_at TEXT,
        ended_at TEXT,
        state_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_row INTEGER NOT NULL REFERENCES events(id),
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL DEFAULT 'post',
        options TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT,
        message_id TEXT,
        UNIQUE (event_row, sink, target, action)
    );
    CREATE INDEX deliveries_due ON deliveries (sink, state, not_before);

    CREATE TABLE mutes (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        pattern TEXT NOT NULL,
        until REAL,
        created_by TEXT,
        created_at REAL NOT NULL,
        UNIQUE (sink, target, pattern)
    );

    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        pattern TEXT NOT NULL,
        created_by TEXT,
        created_at REAL NOT NULL,
        UNIQUE (sink, target, pattern)
    );
    """,
    # 2: each stream remembers the live_start event of its session, whose posted
    # messages are the "cards" later changes edit in place.
    """
    ALTER TABLE streams ADD COLUMN session_row INTEGER REFERENCES events(id);
    CREATE INDEX deliveries_by_event ON deliveries (event_row, sink, target, action);
    """,
    # 3: session cards beyond edits. A delayed end notice can be called off when the
    # stream comes back ('cancelled'; SQLite cannot alter a CHECK, so the table is
    # rebuilt the documented way), a card can be deleted ('delete' action, no schema
    # change), and each stream remembers its last live_end and its last posted change
    # notice (rejoin window, change cooldown).
    """
    CREATE TABLE deliveries_v3 (
        id INTEGER PRIMARY KEY,
        event_row INTEGER NOT NULL REFERENCES events(id),
        sink TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL DEFAULT 'post',
        options TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT,
        message_id TEXT,
        UNIQUE (event_row, sink, target, action)
    );
    INSERT INTO deliveries_v3 (id, event_row, sink, target, action, options, state, attempts,
                               not_before, created_at, updated_at, last_error, message_id)
        SELECT id, event_row, sink, target, action, options, state, attempts, not_before,
               created_at, updated_at, last_error, message_id FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v3 RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (sink, state, not_before);
    CREATE INDEX deliveries_by_event ON deliveries (event_row, sink, target, action);
    ALTER TABLE streams ADD COLUMN end_row INTEGER REFERENCES events(id);
    ALTER TABLE streams ADD COLUMN change_posted_at REAL;
    """,
    # 4: one row the bot rewrites to find out whether a database that refused writes
    # takes them again (Store.probe_write), when nothing else is waiting to be written.
    """
    CREATE TABLE write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
    INSERT INTO write_probe (id, at) VALUES (1, 0);
    """,
    # 5: ingest commits only the event; a dispatch stage applies it afterwards. Events of
    # earlier versions were dispatched as they were stored.
    """
    ALTER TABLE events ADD COLUMN dispatched INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX events_undispatched ON events (id) WHERE dispatched = 0;
    """,
    # 6: retention (Store.prune). Old events are found by when they arrived; an event's
    # derived events by their parent, which deleting a parent also has SQLite look up
    # (foreign keys; only derived events have one, hence partial); and the deliveries
    # still to go out, which must outlive any retention, without reading every sent one.
    """
    CREATE INDEX events_by_received ON events (received_at);
    CREATE INDEX events_by_parent ON events (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX deliveries_unfinished ON deliveries (state)
        WHERE state IN ('pending', 'sending');
    """,
    # 7: chats that were given a new id (a Telegram group upgraded to a supergroup), so a
    # move is followed once and a route naming the old id keeps reaching the chat.
    """
    CREATE TABLE target_moves (
        sink TEXT NOT NULL,
        old_target TEXT NOT NULL,
        new_target TEXT NOT NULL,
        moved_at REAL NOT NULL,
        PRIMARY KEY (sink, old_target)
    );
    """,
    # 8: what a source keeps between runs (Kick's public key, so a restart while Kick's
    # API is down still verifies; the streams a polling source last saw live).
    """
    CREATE TABLE source_state (
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (source, key)
    );
    """,
    # 9: several bot processes on one database (PostgreSQL). A claimed delivery is leased
    # to the process sending it until `lease_until` (renewed while it runs), so another
    # process takes it over only once that process is gone; each process writes a
    # heartbeat row, and the live ones share the platforms' global rate limits.
    """
    ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
    ALTER TABLE deliveries ADD COLUMN lease_until REAL;
    CREATE TABLE processes (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL
    );
    """,
    # 10: turns the processes on the database take one at a time, spaced (Discord allows
    # one IDENTIFY per 5 s per bucket for the whole bot token, not per process): `at` is
    # when the last turn was taken.
    """
    CREATE TABLE turns (
        name TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    """,
    # 11: what was sent to a chat lately, by any process (Store.sent_elsewhere): a
    # platform's per-chat limit (Telegram's 20 a minute in a group) counts every
    # process's messages, and a process that joins or restarts must know them. By chat:
    # a forum topic's target ("-100123/42") counts towards its group.
    """
    CREATE INDEX deliveries_sent_by_chat
        ON deliveries (sink, substr(target, 1, instr(target || '/', '/') - 1), updated_at)
        WHERE state = 'sent';
    """,
)


def statements(script: str) -> list[str]:
    """The statements of one migration script, in order."""
    return [part.strip() for part in script.split(";") if part.strip()]
