"""From a stored webhook event to outbox rows, one stage per job.

ingest.py     verify/parse happened in sources/; store the event (dedupe), answer 202
dispatch.py   the dispatch stage: consumes stored events in order, per transaction:
  streams.py    the pure stream-state reducer (live or not, session, derived changes)
  routing.py    routes from bot.toml and /subscribe -> targets with their plans
  muting.py     mutes mark or drop targets (and are consulted again at send time)
  cards.py      every session-card rule: post, edit, delete, end_grace, rejoin_window
clocks.py     sender clocks, for ordering events whose senders' clocks are wrong
"""
