/*
 * ChordlineDag: layered (Sugiyama-style) layout and SVG renderer for workflow DAGs.
 * Plain browser script (ES2019, no dependencies); defines the global `ChordlineDag`
 * and, under node, exports the same object (layout is pure and DOM-free).
 *
 * Algorithm
 *   1. Layering: longest path from the sources, left to right: a step's layer is
 *      1 + the max layer of its dependencies (memoised DFS). Unknown dependency
 *      ids, duplicate ids and edges closing a cycle are ignored.
 *   2. Edges spanning several layers are split by one dummy vertex per crossed
 *      layer, so edges never run through a node box.
 *   3. Ordering: start from input order, then SWEEPS down/up barycenter sweeps
 *      (stable sort); the ordering with the fewest crossings seen is kept.
 *   4. Coordinates: fixed-size boxes on a grid, column = layer, row = order,
 *      each layer centred vertically. Edges run from the right middle of the
 *      source to the left middle of the target, through their dummies.
 * Guarantees: deterministic for a given input; no two boxes overlap; every edge
 *   runs strictly left to right; crossings never exceed those of input order
 *   (minimisation is heuristic, not optimal).
 * Cost: O(V + E) layering, then O(SWEEPS * (V + E) log(V + E)) ordering, where
 *   V and E include the dummies (one per layer an edge crosses); a typical
 *   200-step workflow takes a few milliseconds.
 */
var ChordlineDag = (function () {
  'use strict';
  var NODE_W = 168, NODE_H = 54, GAP_X = 56, GAP_Y = 18, PAD = 16, SWEEPS = 4;
  var LABEL_CHARS = 21, SUB_CHARS = 25;
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var markerSeq = 0;

  function key(id) { return String(id); }

  function uniqueNodes(nodes) {
    var byKey = new Map();
    (nodes || []).forEach(function (n) {
      if (n && n.id != null && !byKey.has(key(n.id))) byKey.set(key(n.id), n);
    });
    return byKey;
  }

  function depsOf(node) {
    var seen = new Set();
    return (node.depends_on || []).map(key).filter(function (k) {
      return seen.has(k) ? false : (seen.add(k), true);
    });
  }

  function assignLayers(byKey) {
    var layer = new Map(), visiting = new Set();
    function visit(k) {
      if (layer.has(k)) return layer.get(k);
      visiting.add(k);
      var l = 0;
      depsOf(byKey.get(k)).forEach(function (d) {
        if (byKey.has(d) && !visiting.has(d)) l = Math.max(l, visit(d) + 1);
      });
      visiting.delete(k);
      layer.set(k, l);
      return l;
    }
    byKey.forEach(function (n, k) { visit(k); });
    return layer;
  }

  // Kept edges [fromKey, toKey] in input order; a cycle-closing edge fails the test.
  function keptEdges(byKey, layer) {
    var edges = [];
    byKey.forEach(function (n, k) {
      depsOf(n).forEach(function (d) {
        if (byKey.has(d) && layer.get(d) < layer.get(k)) edges.push([d, k]);
      });
    });
    return edges;
  }

  function vertex(k, l) { return { key: k, layer: l, order: 0, preds: [], succs: [] }; }

  function buildGraph(byKey, layer, edges) {
    var layers = [], real = new Map();
    function place(v) { (layers[v.layer] = layers[v.layer] || []).push(v); return v; }
    byKey.forEach(function (n, k) { real.set(k, place(vertex(k, layer.get(k)))); });
    var chains = edges.map(function (e) {
      var chain = [real.get(e[0])], target = real.get(e[1]);
      for (var l = chain[0].layer + 1; l < target.layer; l++) chain.push(place(vertex(null, l)));
      chain.push(target);
      for (var i = 1; i < chain.length; i++) {
        chain[i - 1].succs.push(chain[i]);
        chain[i].preds.push(chain[i - 1]);
      }
      return { from: e[0], to: e[1], chain: chain };
    });
    return { layers: layers, real: real, chains: chains };
  }

  function renumber(layer) { layer.forEach(function (v, i) { v.order = i; }); }

  function sortByBarycenter(layer, side) {
    var bary = layer.map(function (v) {
      var ns = v[side];
      if (!ns.length) return v.order;
      return ns.reduce(function (s, n) { return s + n.order; }, 0) / ns.length;
    });
    var idx = layer.map(function (v, i) { return i; });
    idx.sort(function (a, b) { return bary[a] - bary[b] || a - b; });
    var sorted = idx.map(function (i) { return layer[i]; });
    sorted.forEach(function (v, i) { layer[i] = v; });
    renumber(layer);
  }

  // Crossings between two adjacent layers = inversions of target orders once edges
  // are sorted by (source, target) order; counted with a Fenwick tree in O(P log P).
  function crossingsBetween(upper, lowerSize) {
    var targets = [];
    upper.forEach(function (v) {
      v.succs.map(function (s) { return s.order; }).sort(function (a, b) { return a - b; })
        .forEach(function (t) { targets.push(t); });
    });
    var tree = new Array(lowerSize + 1).fill(0), total = 0;
    targets.forEach(function (t, seen) {
      var atMost = 0;
      for (var i = t + 1; i > 0; i -= i & -i) atMost += tree[i];
      total += seen - atMost;
      for (i = t + 1; i <= lowerSize; i += i & -i) tree[i]++;
    });
    return total;
  }

  function crossings(layers) {
    var total = 0;
    for (var l = 0; l + 1 < layers.length; l++) total += crossingsBetween(layers[l], layers[l + 1].length);
    return total;
  }

  function orderLayers(layers) {
    layers.forEach(renumber);
    var best = layers.map(function (l) { return l.slice(); }), bestCount = crossings(layers);
    for (var s = 0; s < SWEEPS && bestCount > 0; s++) {
      for (var l = 1; l < layers.length; l++) sortByBarycenter(layers[l], 'preds');
      for (l = layers.length - 2; l >= 0; l--) sortByBarycenter(layers[l], 'succs');
      var count = crossings(layers);
      if (count < bestCount) { bestCount = count; best = layers.map(function (x) { return x.slice(); }); }
    }
    best.forEach(function (l, i) { layers[i] = l; renumber(l); });
  }

  function assignCoordinates(layers) {
    var pitch = NODE_H + GAP_Y;
    var rows = Math.max.apply(null, layers.map(function (l) { return l.length; }));
    layers.forEach(function (layer, l) {
      var offset = Math.round(((rows - layer.length) * pitch) / 2);
      layer.forEach(function (v) {
        v.x = PAD + l * (NODE_W + GAP_X);
        v.y = PAD + offset + v.order * pitch;
      });
    });
    return { width: 2 * PAD + layers.length * (NODE_W + GAP_X) - GAP_X, height: 2 * PAD + rows * pitch - GAP_Y };
  }

  function edgePoints(chain) {
    var mid = NODE_H / 2, first = chain[0], last = chain[chain.length - 1];
    var points = [[first.x + NODE_W, first.y + mid]];
    chain.slice(1, -1).forEach(function (d) {
      points.push([d.x, d.y + mid], [d.x + NODE_W, d.y + mid]);
    });
    points.push([last.x, last.y + mid]);
    return points;
  }

  function layout(nodes) {
    var byKey = uniqueNodes(nodes);
    if (!byKey.size) return { width: 0, height: 0, nodes: {}, edges: [] };
    var layer = assignLayers(byKey);
    var g = buildGraph(byKey, layer, keptEdges(byKey, layer));
    orderLayers(g.layers);
    var size = assignCoordinates(g.layers), out = {};
    g.layers.forEach(function (l) {
      l.filter(function (v) { return v.key !== null; }).forEach(function (v, rank) {
        out[v.key] = { x: v.x, y: v.y, w: NODE_W, h: NODE_H, layer: v.layer, order: rank };
      });
    });
    var edges = g.chains.map(function (c) {
      return { from: byKey.get(c.from).id, to: byKey.get(c.to).id, points: edgePoints(c.chain) };
    });
    return { width: size.width, height: size.height, nodes: out, edges: edges };
  }

  /* ---------------- SVG rendering (text only via textContent) ---------------- */

  function el(doc, tag, attrs, text) {
    var node = doc.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (a) { node.setAttribute(a, String(attrs[a])); });
    if (text != null) node.textContent = String(text);
    return node;
  }

  function truncate(text, max) {
    return text.length <= max ? text : text.slice(0, max - 1) + '\u2026';
  }

  function statusToken(status) {
    return String(status || 'waiting').toLowerCase().replace(/[^a-z0-9_-]/g, '-');
  }

  function statusLabel(status) { return statusToken(status).replace(/_/g, ' '); }

  function withStatusClass(current, status) {
    var kept = String(current || '').split(/\s+/).filter(function (c) {
      return c && c !== 'dag-node' && c.indexOf('status-') !== 0;
    });
    return ['dag-node'].concat(kept, 'status-' + statusToken(status)).join(' ');
  }

  function statusOf(statuses, id) {
    if (!statuses) return 'waiting';
    var s = typeof statuses.get === 'function' ? statuses.get(id) : statuses[key(id)];
    return s || 'waiting';
  }

  function addArrowMarker(doc, svg) {
    var id = 'dag-arrow-' + (++markerSeq);
    var marker = el(doc, 'marker', {
      id: id, class: 'dag-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
      markerWidth: 8, markerHeight: 8, markerUnits: 'userSpaceOnUse', orient: 'auto'
    });
    marker.appendChild(el(doc, 'path', { d: 'M0,0 L10,5 L0,10 z' }));
    svg.appendChild(el(doc, 'defs')).appendChild(marker);
    return id;
  }

  function pathData(points) {
    var d = 'M' + points[0].join(',');
    for (var i = 1; i < points.length; i++) {
      var p = points[i - 1], q = points[i], mx = (p[0] + q[0]) / 2;
      d += p[1] === q[1] ? ' L' + q.join(',') : ' C' + mx + ',' + p[1] + ' ' + mx + ',' + q[1] + ' ' + q.join(',');
    }
    return d;
  }

  function nodeGroup(doc, node, box, status) {
    var label = String(node.label == null ? node.id : node.label);
    var sub = node.sub == null ? '' : String(node.sub);
    var g = el(doc, 'g', {
      class: withStatusClass('', status), 'data-step': key(node.id),
      transform: 'translate(' + box.x + ',' + box.y + ')'
    });
    g.appendChild(el(doc, 'title', {}, sub ? label + '\n' + sub : label));
    g.appendChild(el(doc, 'rect', { class: 'dag-box', width: box.w, height: box.h, rx: 6, ry: 6 }));
    g.appendChild(el(doc, 'text', { class: 'dag-label', x: 10, y: 19 }, truncate(label, LABEL_CHARS)));
    g.appendChild(el(doc, 'text', { class: 'dag-sub', x: 10, y: 34 }, truncate(sub, SUB_CHARS)));
    g.appendChild(el(doc, 'text', { class: 'dag-status', x: 10, y: 47 }, statusLabel(status)));
    return g;
  }

  function render(svg, nodes, statuses) {
    var doc = svg.ownerDocument, lay = layout(nodes);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute('viewBox', '0 0 ' + lay.width + ' ' + lay.height);
    svg.setAttribute('width', String(lay.width));
    svg.setAttribute('height', String(lay.height));
    var cls = String(svg.getAttribute('class') || '');
    if (!/(^|\s)dag(\s|$)/.test(cls)) svg.setAttribute('class', (cls + ' dag').trim());
    var markerId = addArrowMarker(doc, svg);
    var edgeLayer = svg.appendChild(el(doc, 'g', { class: 'dag-edges' }));
    var nodeLayer = svg.appendChild(el(doc, 'g', { class: 'dag-nodes' }));
    lay.edges.forEach(function (e) {
      edgeLayer.appendChild(el(doc, 'path', {
        class: 'dag-edge', d: pathData(e.points), 'marker-end': 'url(#' + markerId + ')',
        'data-from': key(e.from), 'data-to': key(e.to)
      }));
    });
    uniqueNodes(nodes).forEach(function (n, k) {
      nodeLayer.appendChild(nodeGroup(doc, n, lay.nodes[k], statusOf(statuses, n.id)));
    });
    return lay;
  }

  function findNode(svg, id) {
    var groups = svg.querySelectorAll('g.dag-node'), k = key(id);
    for (var i = 0; i < groups.length; i++) {
      if (groups[i].getAttribute('data-step') === k) return groups[i];
    }
    return null;
  }

  function setStatus(svg, id, status) {
    var g = findNode(svg, id);
    if (!g) return false;
    g.setAttribute('class', withStatusClass(g.getAttribute('class'), status));
    var text = g.querySelector('.dag-status');
    if (text) text.textContent = statusLabel(status);
    return true;
  }

  return { layout: layout, render: render, setStatus: setStatus };
})();

if (typeof module !== 'undefined' && module.exports) module.exports = ChordlineDag;
