"""Pure transforms: a Customer.io body into a RudderStack event, an event into warehouse rows."""

from loader.transform.event import Receipt, event_key, id_of_key, is_utf8, message_id, to_event, to_track
from loader.transform.rows import Discard, Rows, to_rows

__all__ = [
    "Discard",
    "Receipt",
    "Rows",
    "event_key",
    "id_of_key",
    "is_utf8",
    "message_id",
    "to_event",
    "to_rows",
    "to_track",
]
