// Pointsman dashboard: draws the charts from the JSON the server put in the page (page.py). Plain script, no build.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("pointsman-data").textContent);
  var palette = ["#2f6fdf", "#e0692c", "#2a9d5b", "#b03fb0", "#c9a227", "#3bb3c3", "#d6455d", "#6d6d6d", "#9aa3ad"];

  function stacked(id, block) {
    var names = Object.keys(block.series);
    new Chart(document.getElementById(id), {
      type: "bar",
      data: {
        labels: block.labels,
        datasets: names.map(function (name, i) {
          return { label: name, data: block.series[name], backgroundColor: palette[i % palette.length] };
        })
      },
      options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } } }
    });
  }

  ["model", "cohort", "team"].forEach(function (name) { stacked("chart-spend-" + name, data.spend[name]); });

  var mixLabels = data.mix.map(function (row) { return (row.tier || "(none)") + " / " + (row.model || "(none)"); });
  new Chart(document.getElementById("chart-mix"), {
    type: "bar",
    data: { labels: mixLabels, datasets: [{ label: "requests", data: data.mix.map(function (row) { return row.requests; }),
      backgroundColor: palette[0] }] },
    options: { animation: false, indexAxis: "y", plugins: { legend: { display: false } } }
  });

  function percent(values) { return values.map(function (v) { return 100 * v; }); }
  new Chart(document.getElementById("chart-rates"), {
    type: "line",
    data: { labels: data.daily.labels, datasets: [
      { label: "cache hit rate %", data: percent(data.daily.cache_hit_rate), borderColor: palette[2] },
      { label: "escalation share %", data: percent(data.daily.escalation_share), borderColor: palette[1] }
    ] },
    options: { animation: false, scales: { y: { min: 0, max: 100 } } }
  });
  document.body.setAttribute("data-charts", "drawn");
})();
