// The moral graph of one context as an SVG: values as circles sized by score, arrows from a value to
// the one participants judged wiser (thicker with more votes, dashed when too little support to count).
// A small deterministic force layout, no library. Clicking a value (or Enter on it) loads its card
// into #card-panel with htmx, or opens the card page without it. All text goes in with textContent.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  // Fruchterman–Reingold style: repulsion between all pairs, springs along edges, a pull to the centre.
  function layout(nodes, edges, width, height) {
    var n = nodes.length, cx = width / 2, cy = height / 2;
    var k = Math.sqrt((width * height) / Math.max(n, 1)) * 0.6;
    nodes.forEach(function (node, i) {  // start on a circle, best scores first: deterministic
      var angle = (2 * Math.PI * i) / Math.max(n, 1);
      node.x = cx + Math.cos(angle) * width * 0.3;
      node.y = cy + Math.sin(angle) * height * 0.3;
    });
    var byId = {};
    nodes.forEach(function (node) { byId[node.id] = node; });
    var temperature = width / 8;
    for (var step = 0; step < 300; step++) {
      nodes.forEach(function (node) { node.dx = 0; node.dy = 0; });
      for (var i = 0; i < n; i++) {
        for (var j = i + 1; j < n; j++) {
          var a = nodes[i], b = nodes[j];
          var dx = a.x - b.x, dy = a.y - b.y;
          var d = Math.max(Math.sqrt(dx * dx + dy * dy), 0.01);
          var force = (k * k) / d + (a.r + b.r) * 2 / d;
          a.dx += (dx / d) * force; a.dy += (dy / d) * force;
          b.dx -= (dx / d) * force; b.dy -= (dy / d) * force;
        }
      }
      edges.forEach(function (edge) {
        var a = byId[edge.from], b = byId[edge.to];
        if (!a || !b) return;
        var dx = a.x - b.x, dy = a.y - b.y;
        var d = Math.max(Math.sqrt(dx * dx + dy * dy), 0.01);
        var force = (d * d) / k * (edge.kept ? 1 : 0.3);
        a.dx -= (dx / d) * force; a.dy -= (dy / d) * force;
        b.dx += (dx / d) * force; b.dy += (dy / d) * force;
      });
      nodes.forEach(function (node) {
        node.dx += (cx - node.x) * 0.05 * k / 10;
        node.dy += (cy - node.y) * 0.05 * k / 10;
        var d = Math.max(Math.sqrt(node.dx * node.dx + node.dy * node.dy), 0.01);
        node.x += (node.dx / d) * Math.min(d, temperature);
        node.y += (node.dy / d) * Math.min(d, temperature);
        var margin = node.r + 6;
        node.x = Math.min(width - margin, Math.max(margin, node.x));
        node.y = Math.min(height - margin - 16, Math.max(margin, node.y));
      });
      temperature *= 0.985;
    }
    fit(nodes, width, height);
  }

  // Stretch the layout to use the whole drawing (a few nodes otherwise huddle in the middle),
  // keeping room for each circle and the label under it.
  function fit(nodes, width, height) {
    if (nodes.length < 2) {
      nodes.forEach(function (node) { node.x = width / 2; node.y = height / 2; });
      return;
    }
    var pad = Math.max.apply(null, nodes.map(function (node) { return node.r; })) + 12;
    var minX = Math.min.apply(null, nodes.map(function (n) { return n.x; }));
    var maxX = Math.max.apply(null, nodes.map(function (n) { return n.x; }));
    var minY = Math.min.apply(null, nodes.map(function (n) { return n.y; }));
    var maxY = Math.max.apply(null, nodes.map(function (n) { return n.y; }));
    var spanX = Math.max(maxX - minX, 1), spanY = Math.max(maxY - minY, 1);
    var scale = Math.min((width - 2 * pad) / spanX, (height - 2 * pad - 18) / spanY);
    var offsetX = (width - spanX * scale) / 2, offsetY = (height - 18 - spanY * scale) / 2;
    nodes.forEach(function (node) {
      node.x = offsetX + (node.x - minX) * scale;
      node.y = offsetY + (node.y - minY) * scale;
    });
  }

  function cardUrl(svg, id) {
    return svg.getAttribute("data-card-url").replace(/0\/$/, id + "/");
  }

  function select(svg, group, node) {
    svg.querySelectorAll(".mg-node.selected").forEach(function (g) { g.classList.remove("selected"); });
    group.classList.add("selected");
    var url = cardUrl(svg, node.id);
    if (window.htmx) {
      window.htmx.ajax("GET", url, { target: "#card-panel", swap: "innerHTML" }).then(function () {
        // On a phone the panel is below the graph: bring the card into view.
        var panel = document.getElementById("card-panel");
        var box = panel && panel.getBoundingClientRect();
        if (box && (box.top > window.innerHeight || box.bottom < 0)) panel.scrollIntoView({ behavior: "smooth" });
      });
    } else {
      window.location.href = url;
    }
  }

  function draw(svg, data) {
    var width = Math.max(300, Math.round(svg.clientWidth || svg.parentNode.clientWidth || 800));
    var height = Math.round(Math.min(640, Math.max(340, width * 0.7)));
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var nodes = data.nodes.map(function (node) { return Object.assign({}, node); });
    if (!nodes.length) {
      var empty = el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: "#5b6475" }, svg);
      empty.textContent = "No values cards yet.";
      return;
    }
    var maxScore = Math.max.apply(null, nodes.map(function (node) { return node.score; })) || 1;
    var scale = Math.min(1, width / 700);
    nodes.forEach(function (node) { node.r = (14 + 30 * Math.sqrt(node.score / maxScore)) * (0.65 + 0.35 * scale); });
    nodes.sort(function (a, b) { return b.score - a.score || a.id - b.id; });
    layout(nodes, data.edges, width, height);
    var byId = {};
    nodes.forEach(function (node) { byId[node.id] = node; });

    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "mg-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "11",
      markerHeight: "11", orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#868e96" }, marker);

    var edgeLayer = el("g", { "aria-hidden": "true" }, svg);
    data.edges.forEach(function (edge) {
      var a = byId[edge.from], b = byId[edge.to];
      if (!a || !b) return;
      var dx = b.x - a.x, dy = b.y - a.y, d = Math.max(Math.sqrt(dx * dx + dy * dy), 0.01);
      var line = el("line", {
        x1: a.x + (dx / d) * a.r, y1: a.y + (dy / d) * a.r,
        x2: b.x - (dx / d) * (b.r + 1), y2: b.y - (dy / d) * (b.r + 1),
        "class": "mg-edge" + (edge.kept ? "" : " dropped"),
        "stroke-width": (1 + 1.2 * Math.sqrt(edge.total)).toFixed(2),
        "stroke-opacity": edge.kept ? (0.45 + 0.55 * Math.max(0, edge.likelihood)).toFixed(2) : "0.8",
        "marker-end": "url(#mg-arrow)"
      }, edgeLayer);
      var tip = el("title", {}, line);
      tip.textContent = a.title + " → " + b.title + ": " + edge.total + " vote" + (edge.total === 1 ? "" : "s") +
        ", wiser likelihood " + edge.likelihood.toFixed(2) + (edge.kept ? "" : " (not kept)");
    });

    var nodeLayer = el("g", {}, svg);
    var maxLabel = width < 500 ? 16 : 28;
    nodes.forEach(function (node) {
      var group = el("g", { "class": "mg-node", tabindex: "0", role: "button",
        transform: "translate(" + node.x.toFixed(1) + "," + node.y.toFixed(1) + ")" }, nodeLayer);
      group.setAttribute("aria-label", node.title + ", score " + node.score.toFixed(3));
      el("circle", { r: node.r.toFixed(1) }, group);
      var label = el("text", { y: (node.r + 13).toFixed(1), "text-anchor": "middle" }, group);
      label.textContent = shorten(node.title, maxLabel);
      var tip = el("title", {}, group);
      tip.textContent = node.title + " — " + node.description;
      group.addEventListener("click", function () { select(svg, group, node); });
      group.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(svg, group, node); }
      });
    });
  }

  function start() {
    var svg = document.getElementById("moral-graph");
    var source = document.getElementById("moral-graph-data");
    if (!svg || !source) return;
    var data = JSON.parse(source.textContent);
    draw(svg, data);
    var width = svg.clientWidth;
    window.addEventListener("resize", function () {
      if (Math.abs(svg.clientWidth - width) > 40) { width = svg.clientWidth; draw(svg, data); }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
