// A map with no tiles: drivers and bookings drawn on a canvas, in a projection fitted to
// the points themselves, so it works offline and needs no map provider.

export const DRIVER_COLOURS = { available: "#1a9850", busy: "#f08c00", offline: "#9aa0a6" };
export const BOOKING_COLOURS = {
  pending: "#d7301f", assigned: "#7b3294", accepted: "#2166ac", arrived: "#4393c3",
  in_progress: "#018571",
};
const PADDING = 28;
const MIN_SPAN_DEG = 0.01;  // About a kilometre: one lone point still gets a sensible scale.
const KM_PER_DEG_LAT = 111.32;

// Equirectangular, with longitude shrunk by cos(latitude): true enough across a city.
export function fit(points, width, height) {
  const lats = points.map((p) => p.lat), lngs = points.map((p) => p.lng);
  let [south, north] = [Math.min(...lats), Math.max(...lats)];
  let [west, east] = [Math.min(...lngs), Math.max(...lngs)];
  if (!points.length) [south, north, west, east] = [0, 0, 0, 0];
  const midLat = (south + north) / 2;
  const shrink = Math.cos((midLat * Math.PI) / 180);
  const spanY = Math.max(north - south, MIN_SPAN_DEG);
  const spanX = Math.max((east - west) * shrink, MIN_SPAN_DEG);
  const scale = Math.min((width - 2 * PADDING) / spanX, (height - 2 * PADDING) / spanY);
  const centreX = ((west + east) / 2) * shrink, centreY = midLat;
  return {
    scale,
    x: (p) => width / 2 + (p.lng * shrink - centreX) * scale,
    y: (p) => height / 2 - (p.lat - centreY) * scale,
  };
}

// A canvas sized to its box on screen, sharp on high-density displays: draw in CSS pixels.
export function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  return { ctx, width, height };
}

export function drawMap(canvas, drivers, bookings) {
  const { ctx, width, height } = prepareCanvas(canvas);
  ctx.fillStyle = "#f4f6f8";
  ctx.fillRect(0, 0, width, height);

  const located = drivers.filter((d) => d.location);
  // What is drawn, for people using assistive technology and for the browser tests.
  canvas.dataset.drivers = located.length;
  canvas.dataset.bookings = bookings.length;
  canvas.setAttribute("aria-label",
    `Map of ${located.length} drivers and ${bookings.length} open bookings`);
  const points = [...located.map((d) => d.location), ...bookings.map((b) => b.pickup)];
  if (!points.length) {
    ctx.fillStyle = "#5f6368";
    ctx.font = "14px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("No drivers or open bookings to show yet", width / 2, height / 2);
    canvas.hits = [];
    return;
  }
  const view = fit(points, width, height);
  drawScale(ctx, view.scale, height);

  const byDriver = new Map(located.map((d) => [d.id, d]));
  ctx.lineWidth = 1.5;
  ctx.setLineDash([4, 3]);
  for (const b of bookings) {
    const driver = byDriver.get(b.driver_id);
    if (!driver) continue;
    ctx.strokeStyle = BOOKING_COLOURS[b.status] || "#555";
    ctx.beginPath();
    ctx.moveTo(view.x(driver.location), view.y(driver.location));
    ctx.lineTo(view.x(b.pickup), view.y(b.pickup));
    ctx.stroke();
  }
  ctx.setLineDash([]);

  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  canvas.hits = [];
  for (const b of bookings) {
    const x = view.x(b.pickup), y = view.y(b.pickup);
    ctx.fillStyle = BOOKING_COLOURS[b.status] || "#555";
    ctx.fillRect(x - 6, y - 6, 12, 12);
    ctx.fillStyle = "#202124";
    ctx.fillText(`#${b.id}`, x + 9, y + 4);
    canvas.hits.push({ x, y, id: b.id });
  }
  // Drivers last: a driver waiting at a pickup shows on top of its square.
  for (const d of located) {
    ctx.fillStyle = DRIVER_COLOURS[d.status] || "#555";
    ctx.beginPath();
    ctx.arc(view.x(d.location), view.y(d.location), 6, 0, 2 * Math.PI);
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

// The booking drawn nearest a click, if the click is on it.
export function bookingAt(canvas, event) {
  const box = canvas.getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  const near = (canvas.hits || []).filter((h) => Math.hypot(h.x - x, h.y - y) <= 10);
  return near.length ? near[0].id : null;
}

function drawScale(ctx, scale, height) {
  // A bar of a round number of kilometres, about 80 pixels long.
  const pxPerKm = scale / KM_PER_DEG_LAT;
  const km = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100].find((k) => k * pxPerKm >= 60) || 100;
  const length = km * pxPerKm;
  ctx.strokeStyle = ctx.fillStyle = "#5f6368";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(12, height - 14);
  ctx.lineTo(12 + length, height - 14);
  ctx.stroke();
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(`${km} km`, 12, height - 20);
}
