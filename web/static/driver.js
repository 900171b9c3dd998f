// The driver console: go online, share a location, get offers pushed by the relay to the
// driver's own room, and accept, decline, arrive, start and complete the ride, report a
// no-show or cancel it with a reason, over the same connection (through /v1 while it is
// down; the location too, once the driver has one). A ride the rider or dispatch cancels is pushed to the driver's room too: the card
// goes, and the console says why. While idle, rebalancing's suggestion of a zone to wait in
// (reposition) is shown with its reason until it lapses.
import {
  $, ApiError, SignIn, call, clock, element, enterConsole, money, place, statusLabel,
} from "./console.js";

const POLL_MS = 5000;        // Picks up what a push missed would have told the driver.
const KEEP_ALIVE_MS = 30000; // Under SMARTROUTE_DRIVER_STALE_S, so an idle driver stays on.
const SIMULATE_MS = 3000;
const ACTION_TIMEOUT_MS = 10000;
const NEXT_ACTION = {
  assigned: [["accept", "Accept"], ["decline", "Decline"]],
  accepted: [["arrive", "I have arrived"], ["start", "Start ride"], ["cancel", "Cancel ride"]],
  arrived: [["start", "Start ride"], ["no_show", "Rider did not come"], ["cancel", "Cancel ride"]],
  in_progress: [["complete", "Complete ride"]],
};
const TITLES = { assigned: "New ride offer", accepted: "Go to the pickup",
                 arrived: "Waiting at the pickup", in_progress: "Ride under way" };
// Before pickup a driver may cancel, saying why: the ride goes back to matching.
const CANCELLABLE = new Set(["accepted", "arrived"]);

const signIn = new SignIn("driver");
let me = null;
let ride = null;  // The booking this driver holds, as last seen.
let held = null;  // The last booking shown, kept once it ends: an older copy may not revive it.
let lastPing = 0;
let lastPushAt = 0;
let simulation = null;
let formFilled = false;
let relay = null;  // The Socket.IO connection, once live.

async function start() {
  $("#toggle-online").addEventListener("click", () => attempt(toggleOnline));
  $("#share-location").addEventListener("click", () => attempt(shareLocation));
  $("#use-device").addEventListener("click", useDeviceLocation);
  $("#simulate").addEventListener("change", (e) => simulate(e.target.checked));
  await enterConsole(signIn, {
    panel: "#console", refresh, pollMs: POLL_MS, notYours: "That token is not a driver's.",
    events: {
      new_assignment: onOffer, booking_updated: onRideTakenAway, reposition: onReposition,
    },
    onLive: (socket) => { relay = socket; setInterval(tick, 250); },
    // An offer the relay could not replay is in GET /v1/drivers/me, taken as the truth.
    onResync: () => { lastPushAt = 0; return refresh(); },
  });
}

function onOffer(booking) {
  // A replayed offer that has already lapsed is history, not something to answer.
  if (new Date(booking.offer_expires_at) <= Date.now()) return;
  lastPushAt = Date.now();
  showRide(booking);
}

// The relay sends a driver booking_updated only when a ride they hold is cancelled by its
// rider, an admin or beat. A replay of one already seen, or of another ride, is ignored.
function onRideTakenAway(booking) {
  if (booking.status !== "cancelled" || booking.id !== held?.id) return;
  if (booking.version <= held.version) return;
  lastPushAt = Date.now();
  showRide(booking);
  showOutcome(cancelledNote(booking));
}

// Rebalancing's advice while idle: a zone where bookings are expected, and why. It is
// advisory (the driver may stay put) and lapses at expires_at or when an offer comes.
let suggestion = null;

function onReposition(data) {
  suggestion = data;
  $("#reposition-zone").textContent = data.zone;
  $("#reposition-place").textContent = place(data);
  $("#reposition-until").textContent = clock(data.expires_at);
  $("#reposition-reason").textContent = data.reason;
  showSuggestion();
}

function showSuggestion() {
  if (suggestion && (ride || new Date(suggestion.expires_at) <= Date.now())) suggestion = null;
  $("#reposition").hidden = !suggestion;
}

function cancelledNote(booking) {
  const who = { rider: "The rider cancelled", admin: "Dispatch cancelled the ride" }[
    booking.cancelled_by] || "The ride was cancelled";
  return booking.cancel_reason ? `${who}: ${booking.cancel_reason}` : `${who}.`;
}

// How a ride the driver ended by a no-show or a cancel came out, with the fee the answer
// reports (charged to the rider for a no-show).
function endedNote(action, booking) {
  const fee = booking.cancellation_fee;
  const charged = fee === null || fee === undefined ? "no fee is charged"
    : `a fee of ${money(fee, booking.fare?.currency)} is charged`;
  return action === "no_show" ? `No-show recorded: ${charged} to the rider.`
    : `You gave the ride back: ${charged}.`;
}

function showOutcome(text) {
  $("#ride-outcome").textContent = text;
}

async function refresh() {
  const asked = Date.now();
  const state = await call(signIn.token, "GET", "/v1/drivers/me");
  showMe(state);
  // An answer to a question asked before the latest push may not clear what it brought.
  showRide(state.current_booking, { authoritative: asked > lastPushAt });
  if (me.status !== "offline" && Date.now() - lastPing > KEEP_ALIVE_MS && me.location) {
    await shareLocation();
  }
}

function showMe(state) {
  me = state;
  $("#driver-id").textContent = `driver ${state.id}`;
  const status = $("#driver-status");
  status.textContent = state.status;
  status.className = `pill driver-${state.status}`;
  const toggle = $("#toggle-online");
  toggle.textContent = state.status === "offline" ? "Go online" : "Go offline";
  toggle.disabled = state.status === "busy";
  toggle.title = state.status === "busy" ? "Finish the current ride first" : "";
  if (!formFilled && state.location) {
    // Start from where SmartRoute last saw this driver, not from the form's example.
    formFilled = true;
    $("#lat").value = state.location.lat.toFixed(5);
    $("#lng").value = state.location.lng.toFixed(5);
    $("#location-note").textContent =
      `Last shared ${place(state.location)} at ${clock(state.last_seen_at)}`;
    lastPing = Date.parse(state.last_seen_at) || 0;
  }
  $("#idle-note").textContent = state.status === "offline"
    ? "Go online and share a location to receive offers."
    : "You are online: offers appear here as they come.";
}

// A booking from a push, an action's answer or GET /v1/drivers/me. A push may be older than
// what we know (it was replayed): the version decides. Only the API's own answer may clear it.
function showRide(booking, { authoritative = false } = {}) {
  if (!booking) {
    if (authoritative) ride = null;
  } else if (held?.id !== booking.id || booking.version >= held.version) {
    held = ride = booking;
  }
  if (ride && !(ride.status in NEXT_ACTION)) ride = null;
  $("#ride").hidden = !ride;
  $("#idle").hidden = !!ride;
  if (!ride) return;
  showOutcome("");
  $("#ride").dataset.bookingId = ride.id;
  $("#ride").dataset.status = ride.status;
  $("#ride-title").textContent = TITLES[ride.status];
  $("#ride-booking").textContent = `Booking #${ride.id} · ${statusLabel(ride.status)}`;
  $("#ride-pickup").textContent = `${place(ride.pickup)} at ${clock(ride.pickup_at)}`;
  $("#ride-dropoff").textContent = place(ride.dropoff);
  // The quoted fare until completion (an unpriced booking has none).
  $("#ride-fare").textContent = money(ride.fare?.amount, ride.fare?.currency);
  const actions = NEXT_ACTION[ride.status].map(([action, label]) => element("button",
    { class: action, onclick: () => attempt(() => act(ride.id, action)) }, label));
  $("#ride-actions").replaceChildren(...actions);
  $("#cancel").hidden = !CANCELLABLE.has(ride.status);
  tick();
}

async function act(bookingId, action) {
  let reason;
  if (action === "cancel") {
    reason = $("#cancel-reason").value.trim();
    if (!reason) throw new Error("Say why you cancel this ride.");
  }
  try {
    const answer = await send(bookingId, action, reason);
    showRide(answer, { authoritative: true });
    if (action === "cancel") $("#cancel-reason").value = "";
    if (action === "cancel" || action === "no_show") showOutcome(endedNote(action, answer));
  } finally {
    await refresh();
  }
}

// The relay answers a driver_action with what POST /v1/bookings/<id>/<action> would (a
// no_show is /no-show there; a cancel carries its reason either way).
async function send(bookingId, action, reason) {
  if (!relay?.connected) {
    const path = `/v1/bookings/${bookingId}/${action.replace("_", "-")}`;
    return call(signIn.token, "POST", path, reason === undefined ? undefined : { reason });
  }
  const message = { booking_id: bookingId, action };
  if (reason !== undefined) message.reason = reason;
  const answer = await relay.timeout(ACTION_TIMEOUT_MS).emitWithAck("driver_action", message);
  if (answer.status !== 200) throw new ApiError(answer.status, answer);
  return answer.booking;
}

function tick() {
  showSuggestion();
  const countdown = $("#countdown");
  if (!ride || ride.status !== "assigned" || !ride.offer_expires_at) {
    countdown.textContent = "";
    return;
  }
  const left = Math.max(0, Math.ceil((new Date(ride.offer_expires_at) - Date.now()) / 1000));
  countdown.textContent = left ? `Offer ends in ${left} s` : "Offer lapsed";
  countdown.classList.toggle("urgent", left <= 5);
  for (const button of $("#ride-actions").children) button.disabled = left === 0;
}

async function toggleOnline() {
  const going = me.status === "offline" ? "available" : "offline";
  if (going === "available" && !me.location) await shareLocation();
  showMe(await call(signIn.token, "PUT", "/v1/drivers/me/status", { status: going }));
}

// Over the relay while it is live (answered at once, written behind); over HTTP while it is
// down, and for a first location, which going online needs to find in the database at once.
async function shareLocation() {
  const lat = Number($("#lat").value), lng = Number($("#lng").value);
  if (relay?.connected && me?.location) {
    const answer = await relay.timeout(ACTION_TIMEOUT_MS)
      .emitWithAck("location", { lat, lng, at: Date.now() / 1000 });
    if (answer.status !== 200) throw new ApiError(answer.status, answer);
    me = { ...me, location: { lat, lng } };
  } else {
    const state = await call(signIn.token, "PUT", "/v1/drivers/me/location", { lat, lng });
    me = { ...me, ...state };
  }
  lastPing = Date.now();
  formFilled = true;
  $("#location-note").textContent = `Shared ${lat.toFixed(4)}, ${lng.toFixed(4)} at ` +
    clock(new Date().toISOString());
}

function useDeviceLocation() {
  if (!navigator.geolocation) {
    $("#driver-error").textContent = "This browser cannot tell where it is.";
    return;
  }
  navigator.geolocation.getCurrentPosition((position) => {
    $("#lat").value = position.coords.latitude.toFixed(5);
    $("#lng").value = position.coords.longitude.toFixed(5);
    attempt(shareLocation);
  }, (error) => { $("#driver-error").textContent = error.message; });
}

// A short random walk, a few tens of metres a step, shared as it goes.
function simulate(on) {
  clearInterval(simulation);
  if (!on) return;
  simulation = setInterval(() => {
    $("#lat").value = (Number($("#lat").value) + (Math.random() - 0.5) * 0.0008).toFixed(5);
    $("#lng").value = (Number($("#lng").value) + (Math.random() - 0.5) * 0.0008).toFixed(5);
    attempt(shareLocation);
  }, SIMULATE_MS);
}

async function attempt(work) {
  $("#driver-error").textContent = "";
  try {
    await work();
  } catch (error) {
    $("#driver-error").textContent = error.message;
  }
}

start();
