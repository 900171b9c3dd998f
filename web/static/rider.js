// The rider's page: price a trip, book it on that quote, watch the ride as the relay pushes
// its changes to the rider's own room, and the driver coming on a small map with the ETA
// (the relay's driver_position), cancel it before pickup, rate the driver once it is
// completed, and see the last rides taken.
import {
  $, ApiError, SignIn, call, clock, element, enterConsole, money, place, statusLabel,
} from "./console.js";
import { drawMap } from "./map.js";

const POLL_MS = 5000;       // Catches what a missed push would have said.
const HISTORY_LENGTH = 10;
const OPEN = new Set(["pending", "assigned", "accepted", "arrived", "in_progress"]);
// Before pickup a rider may cancel (a fee may apply once the grace period after assignment
// is over: the answer says).
const CANCELLABLE = new Set(["pending", "assigned", "accepted", "arrived"]);
// From acceptance to drop-off the relay sends the driver's position to the rider's room.
const TRACKED = new Set(["accepted", "arrived", "in_progress"]);
const WATCHED_KEY = "smartroute.rider.booking_id";
const ERRORS = {
  quote_expired: "This price has expired: get a new price, then book.",
  quote_used: "This price has already been booked: get a new price.",
  quote_not_found: "This price is unknown: get a new price.",
  quote_mismatch: "The trip changed since it was priced: get a new price.",
  already_rated: "You have already rated this ride.",
};

const signIn = new SignIn("rider");
let quote = null;  // The quote shown, with the trip it prices.
let ride = null;   // The booking watched, as last seen.
let driverSeen = null;  // The newest driver_position of the ride watched.
const sending = new Set();  // The buttons whose request is under way: one at a time each.

async function start() {
  $("#trip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(getQuote, "#rider-error", "#get-quote");
  });
  $("#book").addEventListener("click", () => attempt(book, "#rider-error", "#book"));
  $("#cancel-ride").addEventListener("click",
    () => attempt(cancel, "#ride-error", "#cancel-ride"));
  $("#rate").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(rate, "#ride-error", "#send-rating");
  });
  $("#new-trip").addEventListener("click", () => watch(null));
  // The ride watched belongs to the token that watched it.
  $("#sign-in").addEventListener("submit", () => sessionStorage.removeItem(WATCHED_KEY));
  $("#sign-out").addEventListener("click", () => sessionStorage.removeItem(WATCHED_KEY));
  setInterval(tick, 250);
  window.addEventListener("resize", showDriverPosition);
  await enterConsole(signIn, {
    panel: "#console", refresh, pollMs: POLL_MS, notYours: "That token is not a rider's.",
    events: { booking_updated: onBookingUpdated, driver_position: onDriverPosition },
  });
}

// The push carries the booking but not the driver's rating average: read it over HTTP.
function onBookingUpdated() {
  refresh().catch(() => {});
}

// Where the watched ride's driver is (at most one every two seconds). Positions carry no
// event_id: they are not replayed, the next one simply replaces the last.
function onDriverPosition(position) {
  if (!ride || position.booking_id !== ride.id || !TRACKED.has(position.status)) return;
  if (driverSeen?.booking_id === position.booking_id && position.at < driverSeen.at) return;
  driverSeen = position;
  showDriverPosition();
}

// The last rides, and the ride watched: the one this page booked or was shown, else the
// newest ride still open (a rider back on the page finds it again).
async function refresh() {
  // Rider-only: another role's token gets its 403 here, before anything is shown.
  const me = await call(signIn.token, "GET", "/v1/riders/me");
  const rated = me.rating ? ` · ${me.rating.average.toFixed(2)} ★` : "";
  $("#rider-id").textContent = `rider ${me.id}${rated}`;
  const history = await call(signIn.token, "GET", `/v1/me/bookings?limit=${HISTORY_LENGTH}`);
  showHistory(history.bookings);
  const watchedId = ride?.id ?? Number(sessionStorage.getItem(WATCHED_KEY));
  if (watchedId) {
    try {
      showRide(await call(signIn.token, "GET", `/v1/bookings/${watchedId}`));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      watch(null);  // Not this rider's (any longer): nothing to watch.
    }
  } else {
    const open = history.bookings.find((booking) => OPEN.has(booking.status));
    if (open) showRide(open);
  }
}

function trip() {
  const point = (prefix) => ({
    lat: Number($(`#${prefix}-lat`).value), lng: Number($(`#${prefix}-lng`).value),
  });
  return { pickup: point("pickup"), dropoff: point("dropoff") };
}

async function getQuote() {
  const asked = trip();
  quote = { ...(await call(signIn.token, "POST", "/v1/quotes", asked)), trip: asked };
  showQuote();
}

function showQuote() {
  $("#quote").hidden = !quote;
  if (!quote) return;
  const { fare } = quote;
  $("#quote").dataset.quoteId = quote.quote_id;
  $("#quote-amount").textContent = money(fare.amount, fare.currency);
  $("#quote-base").textContent = money(fare.base, fare.currency);
  $("#quote-distance").textContent =
    `${money(fare.distance, fare.currency)} · ${(fare.distance_m / 1000).toFixed(1)} km`;
  $("#quote-time").textContent =
    `${money(fare.time, fare.currency)} · ${duration(fare.duration_s)}`;
  $("#quote-surge").hidden = !(fare.surge_multiplier > 1);
  $("#quote-surge").textContent = `Surge ×${fare.surge_multiplier}`;
  $("#quote-eta").textContent = quote.pickup_eta_s === null
    ? "no driver nearby right now" : duration(quote.pickup_eta_s);
  tick();
}

async function book() {
  if (!quote) return;
  try {
    const booking = await call(signIn.token, "POST", "/v1/bookings",
      { ...quote.trip, quote_id: quote.quote_id });
    quote = null;
    showQuote();
    watch(booking);
  } catch (error) {
    if (error.code === "quote_expired" || error.code === "quote_used") {
      quote = null;
      showQuote();
    }
    throw error;
  }
}

function watch(booking) {
  ride = null;
  if (booking) {
    sessionStorage.setItem(WATCHED_KEY, String(booking.id));
    showRide(booking);
  } else {
    sessionStorage.removeItem(WATCHED_KEY);
    showRide(null);
  }
  refresh().catch(() => {});
}

// A booking from the API. Answers may come back out of order (a poll and a push's read
// overlap): the version decides, as on the driver console.
function showRide(booking) {
  if (!booking) {
    ride = null;
  } else if (!ride || ride.id !== booking.id || booking.version >= ride.version) {
    ride = booking;
  }
  const open = !!ride && OPEN.has(ride.status);
  $("#ride").hidden = !ride;
  $("#trip").hidden = open;
  if (!ride) return;
  $("#ride").dataset.bookingId = ride.id;
  $("#ride").dataset.status = ride.status;
  $("#ride-booking").textContent = `booking #${ride.id}`;
  const status = $("#ride-status");
  status.textContent = statusLabel(ride.status);
  status.className = `pill ${ride.status}`;
  $("#ride-pickup").textContent = `${place(ride.pickup)} at ${clock(ride.pickup_at)}`;
  $("#ride-dropoff").textContent = place(ride.dropoff);
  $("#ride-driver").textContent = driverText(ride);
  $("#ride-fare").textContent = fareText(ride);
  const fee = ride.cancellation_fee !== null && ride.cancellation_fee !== undefined;
  $("#ride-fee-label").hidden = $("#ride-fee").hidden = !fee;
  $("#ride-fee").textContent = fee ? money(ride.cancellation_fee, ride.fare?.currency) : "";
  $("#cancel").hidden = !CANCELLABLE.has(ride.status);
  const rated = ride.my_rating;
  $("#rate").hidden = ride.status !== "completed" || !!rated || rated === undefined;
  $("#my-rating").hidden = !rated;
  $("#my-rating").textContent = rated
    ? `You rated this ride ${"★".repeat(rated.stars)} (${rated.stars}/5)`
      + (rated.comment ? `: “${rated.comment}”` : "")
    : "";
  $("#new-trip").hidden = open;
  showDriverPosition();
}

// The driver's marker and where the ride heads next (the pickup, then the drop-off), with
// the ETA in words; before acceptance, a note; once the ride is over, nothing.
function showDriverPosition() {
  const box = $("#driver-position");
  const canvas = $("#driver-map");
  box.hidden = !ride || !OPEN.has(ride.status);
  if (box.hidden) return;
  // A ride handed back to matching and accepted again has a new driver: the old one's
  // position is not theirs.
  const seen = driverSeen?.booking_id === ride.id && driverSeen.driver_id === ride.driver_id
    && TRACKED.has(ride.status) ? driverSeen : null;
  box.dataset.state = seen ? "live" : "waiting";
  canvas.hidden = !seen;
  if (!seen) {
    $("#driver-eta").textContent = TRACKED.has(ride.status)
      ? "Waiting for your driver's position…"
      : "Your driver's position appears here once they accept the ride.";
    delete box.dataset.etaS;
    return;
  }
  box.dataset.etaS = seen.eta_s;
  $("#driver-eta").textContent = etaText(ride.status, seen);
  const underWay = seen.status === "in_progress";
  drawMap(canvas,
    [{ id: seen.driver_id, status: "busy", location: { lat: seen.lat, lng: seen.lng } }],
    [{ id: ride.id, status: seen.status, driver_id: seen.driver_id,
      pickup: underWay ? ride.dropoff : ride.pickup }]);
  canvas.setAttribute("aria-label",
    `Map of your driver and the ${underWay ? "drop-off" : "pickup"}`);
}

// "Driver 3 min away", "Your driver is at the pickup", "Arriving in 6 min". The ETA is the
// position's, worked out for the status it was sent in: a ride seen further on since
// (the push and the position travel apart) says where it is without one until the next
// position comes.
function etaText(rideStatus, position) {
  const order = ["accepted", "arrived", "in_progress"];
  const status = order.indexOf(rideStatus) > order.indexOf(position.status)
    ? rideStatus : position.status;
  if (status === "arrived") return "Your driver is at the pickup";
  if (status !== position.status) return "On your way";
  const minutes = Math.round(position.eta_s / 60);
  if (status === "in_progress") {
    return minutes < 1 ? "Arriving in less than a minute" : `Arriving in ${minutes} min`;
  }
  return minutes < 1 ? "Driver less than a minute away" : `Driver ${minutes} min away`;
}

function driverText(booking) {
  if (booking.driver_id === null) {
    return OPEN.has(booking.status) ? "Finding you a driver…" : "–";
  }
  const rating = booking.driver_rating;
  const average = rating
    ? `★ ${rating.average.toFixed(2)} (${rating.count} rating${rating.count === 1 ? "" : "s"})`
    : "not rated yet";
  return `Driver #${booking.driver_id} · ${average}`;
}

// What the ride costs: the quote while it is open, the final fare once completed; a ride
// that ended otherwise charges at most its fee.
function fareText(booking) {
  const { fare } = booking;
  if (!fare) return "–";
  const amount = money(fare.amount, fare.currency);
  if (fare.final) return `${amount} (final)`;
  return OPEN.has(booking.status) ? `${amount} (quoted)` : `${amount} (quoted, not charged)`;
}

// A past ride's line: what was charged, the fare or a fee.
function chargedText(booking) {
  if (booking.cancellation_fee !== null && booking.cancellation_fee !== undefined) {
    return `${money(booking.cancellation_fee, booking.fare?.currency)} fee`;
  }
  if (!booking.fare || (!booking.fare.final && !OPEN.has(booking.status))) return "–";
  return money(booking.fare.amount, booking.fare.currency);
}

async function cancel() {
  const reason = $("#cancel-reason").value.trim();
  const booking = await call(signIn.token, "POST", `/v1/bookings/${ride.id}/cancel`,
    reason ? { reason } : undefined);
  $("#cancel-reason").value = "";
  showRide(booking);
  await refresh();
}

async function rate() {
  const stars = Number($("#rate input[name=stars]:checked")?.value);
  if (!stars) throw new Error("Choose from 1 to 5 stars.");
  const comment = $("#rate-comment").value.trim();
  try {
    await call(signIn.token, "POST", `/v1/bookings/${ride.id}/rating`,
      comment ? { stars, comment } : { stars });
    $("#rate-comment").value = "";
  } finally {
    // Rated now, or already rated elsewhere: the booking says so either way.
    await refresh();
  }
}

function showHistory(bookings) {
  $("#history-empty").hidden = bookings.length > 0;
  $("#history").replaceChildren(...bookings.map((booking) => {
    const row = element("tr", { "data-booking-id": booking.id, tabIndex: 0 },
      element("td", {}, `#${booking.id}`),
      element("td", {}, `${day(booking.created_at)} ${clock(booking.created_at)}`),
      element("td", { class: "status" },
        element("span", { class: `pill ${booking.status}` }, statusLabel(booking.status))),
      element("td", { class: "number" }, chargedText(booking)));
    row.addEventListener("click", () => watch(booking));
    return row;
  }));
}

// The quote's time left, and the Book button with it.
function tick() {
  const countdown = $("#quote-countdown");
  if (!quote) {
    countdown.textContent = "";
    return;
  }
  const left = Math.max(0, Math.ceil((new Date(quote.expires_at) - Date.now()) / 1000));
  countdown.textContent = left ? `Price held for ${left} s` : "Price expired: get a new one";
  countdown.classList.toggle("urgent", left <= 10);
  $("#book").disabled = left === 0 || sending.has("#book");
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function day(iso) {
  return iso ? new Date(iso).toLocaleDateString() : "";
}

// Runs a rider's action: its button is disabled until the answer comes (a double click
// books or cancels once), and any error is shown in words.
async function attempt(work, where, button) {
  if (sending.has(button)) return;
  sending.add(button);
  $(button).disabled = true;
  $("#rider-error").textContent = $("#ride-error").textContent = "";
  try {
    await work();
  } catch (error) {
    $(where).textContent = ERRORS[error.code] || error.message;
  } finally {
    sending.delete(button);
    $(button).disabled = false;
    tick();
  }
}

start();
