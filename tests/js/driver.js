// A driver's app, as the official Socket.IO client sees it: connect with a token, print
// each event as one JSON line; when a new_assignment arrives, accept it over the same
// connection, print the relay's acknowledgement and exit 0 (2 on timeout). Told to
// resync_required on reconnect (the relay's replay cannot cover what it missed), it reloads
// its state over HTTP from the API at apiUrl and accepts the offer it finds there.
const { io } = require("socket.io-client");

const [url, token, lastEventId, apiUrl] = process.argv.slice(2);
const auth = { token };
if (lastEventId !== undefined && lastEventId !== "") auth.last_event_id = Number(lastEventId);
const socket = io(url, { auth, transports: ["websocket"], reconnection: false });
const say = (event, data) => console.log(JSON.stringify({ event, data }));
const timer = setTimeout(() => { say("timeout"); process.exit(2); }, 30000);

function accept(booking) {
  socket.emit("driver_action", { booking_id: booking.id, action: "accept" }, (answer) => {
    say("accepted", answer);
    clearTimeout(timer);
    socket.close();
    process.exit(0);
  });
}

socket.on("connect", () => say("connect"));
socket.on("connect_error", (err) => {
  say("connect_error", { message: err.message, data: err.data });
  process.exit(3);
});
socket.on("new_assignment", (data) => {
  say("new_assignment", data);
  accept(data);
});
socket.on("resync_required", async (data) => {
  say("resync_required", data);
  const response = await fetch(`${apiUrl}/v1/drivers/me`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const state = await response.json();
  say("reloaded", { status: response.status, current_booking: state.current_booking });
  if (state.current_booking?.status === "assigned") accept(state.current_booking);
});
