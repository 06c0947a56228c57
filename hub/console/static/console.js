// Draws each <canvas data-chart="id"> with Chart.js from the JSON in <script id="id">.
// The numbers are also in the page's tables: without script, nothing is lost.
"use strict";
(function () {
  const colours = ["#0b4f8a", "#b3261e", "#2e7d32", "#6a1b9a"];
  function draw(canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") return;
    const spec = JSON.parse(source.textContent);
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (d, i) {
          return { label: d.label, data: d.data, borderColor: colours[i % colours.length],
                   backgroundColor: colours[i % colours.length], tension: 0,
                   pointRadius: spec.type === "line" ? 0 : undefined };
        }),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: spec.stacked }, y: { stacked: spec.stacked, beginAtZero: true } },
      },
    });
  }
  document.querySelectorAll("canvas[data-chart]").forEach(draw);
})();
