"""Bodies of the stream routes; the frames themselves are encoded by `agent_api.bus.frame_text`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class StreamTicketRead(BaseModel):
    ticket: str
    expires_at: datetime
    expires_in: int
