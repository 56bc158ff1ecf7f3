"""Who this process is to the database, and how long its claims hold.

Each bot process names itself once (host, pid and a random part, so a restarted process
with a reused pid is still someone new); the name goes with every delivery it claims and
with its heartbeat row. A claim is a lease: it lasts LEASE_SECONDS from the last
heartbeat, so the deliveries of a process that died are taken over by another within
that time (issue 20: "within 60 s of a process's death by default").
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Final

#: This process, as the database knows it.
PROCESS_ID: Final = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

#: How long a claim or a heartbeat holds without being renewed ([storage] lease).
LEASE_SECONDS: Final = 60.0
