// The admin dashboard: counts, queues and the last minutes polled from /v1/admin/overview,
// drivers and open bookings on a tile-free map, every booking change pushed live by the
// relay to the admin_dashboard room, and drivers' positions as the relay sends them.
import {
  $, SignIn, call, clock, element, enterConsole, money, place, statusLabel,
} from "./console.js";
import { BOOKING_COLOURS, DRIVER_COLOURS, bookingAt, drawMap, prepareCanvas } from "./map.js";

const POLL_MS = 5000;
const FEED_LENGTH = 50;
const TABLE_LENGTH = 100;
const DRIVER_ROWS = 200;
const OPEN = new Set(["pending", "assigned", "accepted", "arrived", "in_progress"]);
const SETTLE_MS = 400;  // After a burst of pushes, refresh the counts and the map once.
// A live position not refreshed for this long is dropped: the driver went quiet, and the
// listed drivers' last-known positions from the API take over.
const LIVE_MS = 60000;

const signIn = new SignIn("admin");
const bookings = new Map();  // id -> the newest version of each booking seen
let drivers = [];
let settling = null;
// driver id -> { lat, lng, seen }: positions from the relay's driver_positions batches,
// newer than the API's last-known ones (written a flush behind).
const livePositions = new Map();
let mapDue = false;

async function start() {
  $("#close-log").addEventListener("click", () => { $("#dispatch-log").hidden = true; });
  $("#map").addEventListener("click", (event) => {
    const id = bookingAt($("#map"), event);
    if (id !== null) showDispatchLog(id);
  });
  window.addEventListener("resize", drawAll);
  drawLegend();
  await enterConsole(signIn, {
    panel: "#dashboard", refresh, pollMs: POLL_MS, notYours: "That token is not an admin's.",
    events: { booking_updated: onBookingUpdated, driver_positions: onDriverPositions },
    onResync: resync,
  });
}

// The relay could not replay what this page missed: a booking that closed meanwhile would
// stay in the table as it was, so the table is rebuilt from the API's open bookings.
async function resync() {
  bookings.clear();
  $("#feed").replaceChildren();
  await refresh();
}

async function refresh() {
  const token = signIn.token;
  const [overview, driverList, open] = await Promise.all([
    call(token, "GET", "/v1/admin/overview"),
    call(token, "GET", "/v1/admin/drivers"),
    call(token, "GET", "/v1/admin/bookings/open"),
  ]);
  drivers = driverList.drivers;
  // Closed bookings leave this list; their booking_updated push (live, or replayed on
  // reconnect) is what moves them on in the table.
  for (const booking of open.bookings) remember(booking);
  showOverview(overview);
  drawAll();
}

function onBookingUpdated(booking) {
  remember(booking);
  const item = element("li", { "data-event-id": booking.event_id, "data-booking-id": booking.id },
    element("time", {}, clock(booking.updated_at)), " ",
    element("b", {}, `#${booking.id}`), " ",
    statusPill(booking.status),
    booking.driver_id ? ` driver ${booking.driver_id}` : "");
  const feed = $("#feed");
  feed.prepend(item);
  while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
  drawAll();
  // The counts and the drivers come from the API: ask again once the burst has passed.
  clearTimeout(settling);
  settling = setTimeout(() => refresh().catch(() => {}), SETTLE_MS);
}

// One batch a relay flush: [id, lat, lng] for each driver that moved. Only the map is
// redrawn, once per animation frame however many batches come (one per relay).
function onDriverPositions({ drivers: moved }) {
  const seen = Date.now();
  for (const [id, lat, lng] of moved) livePositions.set(id, { lat, lng, seen });
  if (mapDue) return;
  mapDue = true;
  requestAnimationFrame(() => {
    mapDue = false;
    drawDriverMap();
  });
}

// The listed drivers at their live positions where there is one, and the drivers beyond
// the list (the API lists a page of them) that the relay reports, in a colour of no status.
function mapDrivers() {
  const now = Date.now();
  for (const [id, live] of livePositions) {
    if (now - live.seen > LIVE_MS) livePositions.delete(id);
  }
  const listed = new Set();
  const shown = drivers.map((d) => {
    listed.add(d.id);
    const live = livePositions.get(d.id);
    return live ? { ...d, location: { lat: live.lat, lng: live.lng } } : d;
  });
  for (const [id, live] of livePositions) {
    if (listed.has(id)) continue;
    shown.push({ id, status: "unlisted", location: { lat: live.lat, lng: live.lng } });
  }
  return shown;
}

function drawDriverMap() {
  const open = [...bookings.values()].filter((b) => OPEN.has(b.status));
  drawMap($("#map"), mapDrivers(), open);
  // How many listed drivers are drawn where the relay last placed them (browser tests).
  $("#map").dataset.live = drivers.filter((d) => livePositions.has(d.id)).length;
}

// Keep the newest version of each booking: pushes and polls may arrive in either order.
function remember(booking) {
  const known = bookings.get(booking.id);
  if (!known || booking.version >= known.version) bookings.set(booking.id, booking);
}

function showOverview(overview) {
  for (const [status, count] of Object.entries(overview.open_by_status)) {
    $(`#count-${status}`).textContent = count;
  }
  $("#count-today").textContent = overview.today.total;
  $("#surge").textContent = surge(overview.surge || {});
  $("#batch-window").textContent = batchWindows(overview.batch_windows || {});
  const assign = overview.time_to_assign_last_hour;
  $("#assign-mean").textContent = seconds(assign.mean_s);
  $("#assign-p95").textContent = seconds(assign.p95_s);
  const queues = $("#queues");
  queues.replaceChildren(...Object.entries(overview.queue_depths).map(([name, depth]) =>
    element("tr", {}, element("td", {}, name), element("td", { class: "number" }, depth))));
  drawMinutes(overview.minutes);
}

// The highest region's multiplier and its name, e.g. "×1.50 lisbon"; "×1.00" when calm.
function surge(levels) {
  const [region, level] = Object.entries(levels)
    .reduce((top, entry) => (entry[1].multiplier > top[1].multiplier ? entry : top),
      ["", { multiplier: 1 }]);
  return `×${level.multiplier.toFixed(2)}${region && level.multiplier > 1 ? ` ${region}` : ""}`;
}

// Each region's batch window, e.g. "0.02 s lisbon · 1.00 s porto"; "–" before any batch.
function batchWindows(windows) {
  const known = Object.entries(windows).filter(([, value]) => value !== null);
  if (known.length === 0) return "–";
  if (known.length === 1) return `${known[0][1].toFixed(2)} s`;
  return known.map(([region, value]) => `${value.toFixed(2)} s ${region}`).join(" · ");
}

function seconds(value) {
  return value === null ? "–" : `${value.toFixed(1)} s`;
}

function statusPill(status) {
  return element("span", { class: `pill ${status}` }, statusLabel(status));
}

function drawAll() {
  const rows = [...bookings.values()].sort((a, b) => b.id - a.id).slice(0, TABLE_LENGTH);
  $("#bookings").replaceChildren(...rows.map((b) => {
    const row = element("tr", { "data-booking-id": b.id, tabIndex: 0 },
      element("td", {}, `#${b.id}`),
      element("td", { class: "status" }, statusPill(b.status), ...statusNote(b)),
      element("td", {}, b.driver_id ?? "–"),
      element("td", {}, place(b.pickup)),
      element("td", { class: "number fare" }, money(b.fare?.amount, b.fare?.currency)),
      element("td", {}, clock(b.updated_at)));
    row.addEventListener("click", () => showDispatchLog(b.id));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") showDispatchLog(b.id); });
    return row;
  }));
  drawDriverMap();
  drawDrivers();
}

function drawDrivers() {
  $("#drivers").replaceChildren(...drivers.slice(0, DRIVER_ROWS).map((d) =>
    element("tr", { "data-driver-id": d.id },
      element("td", {}, d.id),
      element("td", {}, element("span", { class: `pill driver-${d.status}` }, d.status)),
      element("td", { class: "rating" }, rating(d.rating)),
      element("td", {}, clock(d.last_seen_at)))));
}

// "4.50 ★ (12)": the riders' average and how many rated; "unrated" before the first.
function rating(summary) {
  return summary ? `${summary.average.toFixed(2)} ★ (${summary.count})` : "unrated";
}

// Why a booking ended as it did and the fee it carries, or that its ride runs past
// SMARTROUTE_MAX_RIDE_S.
function statusNote(b) {
  const fee = b.cancellation_fee ? `fee ${money(b.cancellation_fee, b.fare?.currency)}` : "";
  if (b.status === "cancelled" && b.cancelled_by) {
    const why = b.cancel_reason ? `: ${b.cancel_reason}` : "";
    return [element("small", { class: "note" }, ` by ${b.cancelled_by}${why}${fee && `, ${fee}`}`)];
  }
  if (b.status === "no_show" && fee) {
    return [element("small", { class: "note" }, ` ${fee}`)];
  }
  if (b.status === "in_progress" && b.overrun_at) {
    return [element("small", { class: "note urgent" }, ` overrunning since ${clock(b.overrun_at)}`)];
  }
  return [];
}

function drawMinutes(minutes) {
  const { ctx, width, height } = prepareCanvas($("#minutes"));
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(1, ...minutes.map((m) => m.created));
  const slot = width / minutes.length, bar = Math.max(2, slot / 2 - 2);
  minutes.forEach((m, i) => {
    const x = i * slot + 2;
    const h1 = ((height - 18) * m.created) / top, h2 = ((height - 18) * m.assigned) / top;
    ctx.fillStyle = "#9ecae1";
    ctx.fillRect(x, height - 14 - h1, bar, h1);
    ctx.fillStyle = "#1a9850";
    ctx.fillRect(x + bar + 1, height - 14 - h2, bar, h2);
  });
  // Mean time to assign, on its own scale: a line through the minutes that have one.
  const waits = minutes.map((m) => m.mean_time_to_assign_s);
  const slowest = Math.max(0.1, ...waits.filter((w) => w !== null));
  ctx.strokeStyle = ctx.fillStyle = "#f08c00";
  ctx.lineWidth = 2;
  ctx.beginPath();
  waits.forEach((w, i) => {
    if (w === null) return;
    const x = i * slot + slot / 2, y = height - 14 - ((height - 18) * w) / slowest;
    ctx.lineTo(x, y);
    ctx.fillRect(x - 2, y - 2, 4, 4);
  });
  ctx.stroke();
  ctx.fillStyle = "#5f6368";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(clock(minutes[0].minute).slice(0, 5), 0, height - 2);
  ctx.textAlign = "right";
  ctx.fillText("now", width, height - 2);
  $("#minutes-caption").textContent = `Bookings made each minute (blue, up to ${top}), those ` +
    `given a driver (green), and their mean time to assign (orange, up to ` +
    `${slowest.toFixed(1)} s).`;
}

function drawLegend() {
  const entries = [
    ...Object.entries(DRIVER_COLOURS).map(([s, c]) => ["dot", c, `driver ${s}`]),
    ...Object.entries(BOOKING_COLOURS).map(([s, c]) => ["square", c, statusLabel(s)]),
  ];
  $("#legend").replaceChildren(...entries.map(([shape, colour, label]) => {
    const mark = element("i", { class: shape });
    mark.style.background = colour;
    return element("li", {}, mark, label);
  }));
}

async function showDispatchLog(bookingId) {
  const panel = $("#dispatch-log");
  panel.hidden = false;
  $("#log-booking").textContent = `#${bookingId}`;
  const body = $("#log-body");
  body.replaceChildren(element("p", {}, "Loading…"));
  let log;
  try {
    log = await call(signIn.token, "GET", `/v1/bookings/${bookingId}/dispatch-log`);
  } catch (error) {
    body.replaceChildren(element("p", { class: "error" }, error.message));
    return;
  }
  if (!log.attempts.length) {
    body.replaceChildren(element("p", {}, `No matching attempt yet (status ${log.status}).`));
    return;
  }
  body.replaceChildren(...log.attempts.map((attempt) => element("div", { class: "attempt" },
    element("p", {}, element("b", {}, clock(attempt.at)),
      ` ${attempt.matcher} matcher, batch of ${attempt.batch_size}, radius ` +
      `${attempt.radius_km} km: ${attempt.outcome}`),
    candidatesTable(attempt.candidates))));
  panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function candidatesTable(candidates) {
  if (!candidates.length) return element("p", { class: "quiet" }, "No candidate in range.");
  return element("table", { class: "compact" },
    element("thead", {}, element("tr", {}, ...["Driver", "km", "ETA s", "Why"].map(
      (h) => element("th", {}, h)))),
    element("tbody", {}, ...candidates.map((c) => element("tr", { class: c.chosen ? "chosen" : "" },
      element("td", {}, c.driver_id), element("td", {}, c.distance_km),
      element("td", {}, c.eta_s ?? "–"), element("td", {}, c.reason)))));
}

start();
