// The usage page's charts: uPlot (vendored) draws the series the server put in #usage-data.
import uPlot from "../vendor/uplot/uPlot.esm.js";

const data = JSON.parse(document.getElementById("usage-data").textContent);
const COLOURS = ["#3558d6", "#d6573a", "#2e9e5b", "#a83fbf", "#c99a14", "#1c9bb0", "#6b6b75", "#d63a8c"];
const HEIGHT = 220;

function widthOf(element) {
  return Math.max(element.clientWidth, 280);
}

// A day's x value as its date, for the legend (null while the cursor is off the chart).
function dayLabel(u, t) {
  return t == null ? "" : new Date(t * 1000).toISOString().slice(0, 10);
}

function axisDays() {
  // Whole days, written as dates, in UTC like the rows.
  return {
    values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(5, 10)),
  };
}

// One line per name (a person or a model) of tokens per day.
function tokensChart(element, byName) {
  const names = Object.keys(byName);
  const series = [{ label: "day", value: dayLabel }];
  names.forEach((name, i) => {
    series.push({ label: name, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: true } });
  });
  return new uPlot(
    {
      width: widthOf(element),
      height: HEIGHT,
      series,
      scales: { x: { time: false } },
      axes: [axisDays(), { label: "tokens", size: 60 }],
    },
    [data.days, ...names.map((name) => byName[name])],
    element,
  );
}

// Answers per day (bars' worth of points, left axis) and the p95 time to first token (right).
function answersChart(element) {
  return new uPlot(
    {
      width: widthOf(element),
      height: HEIGHT,
      series: [
        { label: "day", value: dayLabel },
        { label: "answers", stroke: COLOURS[0], fill: "rgba(53, 88, 214, 0.12)", width: 2, scale: "answers" },
        { label: "p95 first token (ms)", stroke: COLOURS[1], width: 2, scale: "ms", spanGaps: true, points: { show: true } },
      ],
      scales: { x: { time: false }, answers: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [
        axisDays(),
        { scale: "answers", label: "answers", size: 50 },
        { scale: "ms", label: "ms", side: 1, size: 60, grid: { show: false } },
      ],
    },
    [data.days, data.answers, data.ttft_p95_ms],
    element,
  );
}

const charts = [];
for (const element of document.querySelectorAll("[data-chart]")) {
  const kind = element.dataset.chart;
  const chart = kind === "answers" ? answersChart(element) : tokensChart(element, data[kind]);
  charts.push([element, chart]);
}
document.body.dataset.chartsDrawn = String(charts.length);

window.addEventListener("resize", () => {
  for (const [element, chart] of charts) chart.setSize({ width: widthOf(element), height: HEIGHT });
});
