// A driver's app, as the official Socket.IO client sees it: connect with a token, print
// each event as one JSON line; when a new_assignment arrives, accept it over the same
// connection, print the relay's acknowledgement and exit 0 (2 on timeout).
const { io } = require("socket.io-client");

const [url, token, lastEventId] = process.argv.slice(2);
const auth = { token };
if (lastEventId !== undefined) auth.last_event_id = Number(lastEventId);
const socket = io(url, { auth, transports: ["websocket"], reconnection: false });
const say = (event, data) => console.log(JSON.stringify({ event, data }));
const timer = setTimeout(() => { say("timeout"); process.exit(2); }, 30000);

socket.on("connect", () => say("connect"));
socket.on("connect_error", (err) => { say("connect_error", err.message); process.exit(3); });
socket.on("new_assignment", (data) => {
  say("new_assignment", data);
  socket.emit("driver_action", { booking_id: data.id, action: "accept" }, (answer) => {
    say("accepted", answer);
    clearTimeout(timer);
    socket.close();
    process.exit(0);
  });
});
