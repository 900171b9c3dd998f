"""Which rooms each client is in, so that a client leaving costs the relay its own rooms.

python-socketio keeps rooms as a map from room to clients, and finds a leaving client's
rooms by copying that map and looking for the client in every room of the namespace. A
relay gives every driver a room of their own, so with ten thousand drivers each
disconnect read some 30,000 rooms: about 7 ms, and ten thousand drivers leaving at once (a
relay's network blip, a deploy) kept the relay busy for over a minute, its memory held
until they were all gone. ``RoomIndex`` keeps the reverse map beside python-socketio's
and answers from it.
"""

from __future__ import annotations

from typing import Any


class RoomIndex:
    """A python-socketio manager mixin (list it before the manager class) keeping each
    client's rooms, for ``basic_disconnect`` and ``get_rooms``."""

    rooms: dict
    callbacks: dict
    pending_connect: dict
    pending_disconnect: dict

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rooms_of: dict[tuple[str, str], set[str | None]] = {}

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self.rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.rooms_of[(namespace, sid)]

    def get_rooms(self, sid, namespace):
        return [room for room in self.rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid, namespace, **kwargs):
        # python-socketio's (5.x), with the client's rooms read from the index.
        for room in list(self.rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            if sid in pending.get(namespace, ()):
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]
