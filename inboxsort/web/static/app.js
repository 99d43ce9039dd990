// inboxsort's pages: corrections in one click or key, bulk moves, confirmations, charts.
// No build step; uPlot (vendored beside this file) draws the charts from the JSON endpoints.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

function flash(text, bad) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = bad ? "error" : "ok";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// ---- review grid ---------------------------------------------------------------------------

function showLabel(tile, label) {
  tile.dataset.label = label;
  tile.querySelector(".label").textContent = label;
  tile.classList.add("corrected");
  const classes = document.getElementById("grid").dataset.classes.split(",");
  const actions = tile.querySelector(".actions");
  if (!actions) return;
  actions.querySelectorAll("form").forEach((form) => {
    const target = form.querySelector('input[name="label"]');
    form.hidden = target.value === label;
  });
  if (!classes.includes(label)) flash("unexpected label " + label, true);
}

async function relabel(tile, label) {
  try {
    const done = await post("/api/images/" + tile.dataset.id + "/label", {label: label});
    showLabel(tile, done.label);
    flash("image " + done.id + " is now " + done.label);
  } catch (err) {
    flash(err.message, true);
  }
}

function otherClass(tile) {
  const classes = document.getElementById("grid").dataset.classes.split(",");
  return classes.length === 2 ? classes.find((c) => c !== tile.dataset.label) : null;
}

function selected() {
  return [...document.querySelectorAll(".tile .pick:checked")].map((box) => box.closest(".tile"));
}

function updateCount() {
  const count = document.getElementById("selected-count");
  if (count) count.textContent = selected().length + " selected";
}

function setupGrid() {
  const grid = document.getElementById("grid");
  if (!grid) return;
  grid.querySelectorAll("form.relabel").forEach((form) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      relabel(form.closest(".tile"), form.querySelector('input[name="label"]').value);
    });
  });
  grid.querySelectorAll(".pick").forEach((box) => box.addEventListener("change", updateCount));
  document.querySelectorAll(".bulk-label").forEach((button) => {
    button.addEventListener("click", async () => {
      const tiles = selected();
      if (!tiles.length) return flash("select images first (space, or their boxes)", true);
      try {
        const result = await post("/api/images/label", {label: button.dataset.label, ids: tiles.map((t) => t.dataset.id)});
        result.done.forEach((d) => showLabel(grid.querySelector('[data-id="' + d.id + '"]'), d.label));
        tiles.forEach((t) => { t.querySelector(".pick").checked = false; });
        updateCount();
        const failed = result.errors.map((e) => e.id + ": " + e.error).join("; ");
        flash(result.done.length + " moved to " + button.dataset.label + (failed ? "; not moved: " + failed : ""), !!failed);
      } catch (err) {
        flash(err.message, true);
      }
    });
  });
  grid.addEventListener("keydown", (event) => onKey(event, grid));
}

function onKey(event, grid) {
  const tile = event.target.closest(".tile");
  if (!tile || event.target.tagName === "INPUT" || event.target.tagName === "BUTTON") return;
  const tiles = [...grid.querySelectorAll(".tile")];
  const index = tiles.indexOf(tile);
  const classes = grid.dataset.classes.split(",");
  if (event.key === "ArrowRight" || event.key === "j") tiles[Math.min(index + 1, tiles.length - 1)].focus();
  else if (event.key === "ArrowLeft" || event.key === "k") tiles[Math.max(index - 1, 0)].focus();
  else if (event.key === " ") {
    const box = tile.querySelector(".pick");
    if (box) { box.checked = !box.checked; updateCount(); }
  } else if (event.key === "x" && otherClass(tile) && tile.querySelector(".actions")) relabel(tile, otherClass(tile));
  else if (/^[1-9]$/.test(event.key) && classes[+event.key - 1] && tile.querySelector(".actions")) {
    relabel(tile, classes[+event.key - 1]);
  } else return;
  event.preventDefault();
}

// ---- confirmations (models, failed) --------------------------------------------------------

function setupConfirms() {
  document.querySelectorAll("form.confirm").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

// ---- charts --------------------------------------------------------------------------------

function draw(box, xs, ys, label, bars) {
  const opts = {
    width: Math.max(320, box.clientWidth || 640), height: 220,
    scales: {x: {time: !bars}},
    axes: [{}, {}],
    series: [{}, {label: label, stroke: "#2a6fdb", fill: "rgba(42,111,219,0.25)", width: 2,
      paths: bars ? uPlot.paths.bars({size: [0.8, 40]}) : undefined, points: {show: !!bars}}],
  };
  if (bars) {
    // Versions are whole numbers; accuracies sit near 1, so the scale starts a little below
    // the lowest instead of at 0, where every bar would look the same.
    const low = Math.max(0, Math.min(...ys) - 0.05);
    opts.scales.x.range = (u, min, max) => [min - 0.5, max + 0.5];
    opts.scales.y = {range: () => [low, 1]};
    opts.axes[0] = {incrs: [1], values: (u, splits) => splits.map((v) => "v" + v)};
  }
  box.dataset.points = String(ys.filter((y) => y !== null).length);
  new uPlot(opts, [xs, ys], box);
  box.classList.add("drawn");
}

async function setupCharts() {
  for (const box of document.querySelectorAll(".chart")) {
    try {
      const response = await fetch(box.dataset.source, {headers: {"Accept": "application/json"}});
      const data = await response.json();
      if (box.id === "accuracy-chart") {
        const versions = data.versions.filter((v) => v.test_accuracy !== null).reverse();
        draw(box, versions.map((v) => v.version), versions.map((v) => v.test_accuracy), "test accuracy", true);
      } else {
        draw(box, data[box.dataset.x], data[box.dataset.key], box.dataset.key.replaceAll("_", " "), false);
      }
    } catch (err) {
      box.textContent = "chart unavailable: " + err.message;
    }
  }
}

setupGrid();
setupConfirms();
setupCharts();
