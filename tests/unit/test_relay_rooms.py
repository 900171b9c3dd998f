"""The relay's room index answers exactly as python-socketio's own rooms do, and a client
leaving never reads the other clients' rooms."""

import itertools
from types import SimpleNamespace

import pytest
import socketio
from hypothesis import given, settings
from hypothesis import strategies as st

from web.relay_rooms import RoomIndex


class IndexedManager(RoomIndex, socketio.Manager):
    pass


NAMESPACES = ("/", "/admin")
ROOMS = ("driver_1", "driver_2", "rider_1", "admin_dashboard")

operation = st.one_of(
    st.tuples(st.just("connect"), st.integers(0, 5), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("enter"), st.integers(0, 5), st.sampled_from(ROOMS)),
    st.tuples(st.just("leave"), st.integers(0, 5), st.sampled_from(ROOMS)),
    st.tuples(st.just("close"), st.integers(0, 5), st.sampled_from(ROOMS)),
    st.tuples(st.just("disconnect"), st.integers(0, 5), st.none()),
)


def apply(manager: socketio.Manager, ops: list) -> list:
    """Run ``ops`` on ``manager``; the connected clients, as (sid, namespace)."""
    clients: list = []
    for name, which, arg in ops:
        if name == "connect":
            clients.append((manager.connect(f"eio{len(clients)}", arg), arg))
            continue
        if not clients:
            continue
        sid, namespace = clients[which % len(clients)]
        if name == "enter" and manager.is_connected(sid, namespace):
            manager.enter_room(sid, namespace, arg)
        elif name == "leave":
            manager.leave_room(sid, namespace, arg)
        elif name == "close":
            manager.close_room(arg, namespace)
        elif name == "disconnect":
            manager.disconnect(sid, namespace)
    return clients


def serve(manager: socketio.Manager) -> socketio.Manager:
    """Give ``manager`` the one thing it asks of its server here: new sids, s0, s1, …"""
    sids = (f"s{i}" for i in itertools.count())
    manager.server = SimpleNamespace(eio=SimpleNamespace(generate_id=sids.__next__))
    return manager


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=40))
def test_the_index_keeps_the_rooms_python_socketio_keeps(ops):
    plain, indexed = socketio.Manager(), IndexedManager()
    serve(plain)
    serve(indexed)
    clients = apply(plain, ops)
    apply(indexed, ops)
    assert indexed.rooms == plain.rooms
    for sid, namespace in clients:
        assert sorted(indexed.get_rooms(sid, namespace)) == sorted(plain.get_rooms(sid, namespace))
    # Nothing left behind for clients that have gone.
    for (namespace, sid), rooms in indexed.rooms_of.items():
        assert rooms and all(sid in indexed.rooms[namespace][room] for room in rooms)


class WatchedRooms(dict):
    """A namespace's rooms that fail the test when anything walks through all of them."""

    def _walked(self, *_args):
        raise AssertionError("walked every room of the namespace")

    copy = items = values = __iter__ = _walked  # type: ignore[assignment]


def test_a_client_leaving_touches_only_its_own_rooms():
    manager = serve(IndexedManager())
    sids = [manager.connect(f"eio{i}", "/") for i in range(50)]
    for i, sid in enumerate(sids):
        manager.enter_room(sid, "/", f"driver_{i}")
    manager.rooms["/"] = WatchedRooms(manager.rooms["/"])
    manager.disconnect(sids[7], "/")
    assert "driver_7" not in manager.rooms["/"]
    assert sorted(manager.get_rooms(sids[8], "/")) == sorted([sids[8], "driver_8"])
    # python-socketio's own manager does walk them: the watch above can catch it.
    plain = serve(socketio.Manager())
    sid = plain.connect("eio", "/")
    plain.rooms["/"] = WatchedRooms(plain.rooms["/"])
    with pytest.raises(AssertionError, match="walked every room"):
        plain.disconnect(sid, "/")
