// Self-checking test for app/console/static/dag.js: `node tests/console_js/dag.test.mjs`.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const Dag = require('../../app/console/static/dag.js');
let failures = 0;

function test(name, fn) {
  try { fn(); console.log('ok   ' + name); } catch (e) { failures++; console.log('FAIL ' + name + '\n     ' + e.message); }
}
const n = (id, deps = [], label = 'step ' + id) => ({ id, label, sub: 'txt2img', depends_on: deps });
const layers = (lay) => Object.fromEntries(Object.entries(lay.nodes).map(([k, v]) => [k, v.layer]));

function randomDag(count, seed = 42) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const nodes = [];
  for (let i = 0; i < count; i++) {
    const deps = [];
    for (let k = 0; k < 3 && i > 0; k++) if (rnd() < 0.7) deps.push(Math.floor(rnd() * i));
    nodes.push(n(i, deps));
  }
  return nodes;
}

function assertNoOverlap(lay) {
  const boxes = Object.values(lay.nodes);
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const apart = a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
      assert.ok(apart, `boxes ${i} and ${j} overlap`);
    }
  }
  for (const b of boxes) assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.w <= lay.width && b.y + b.h <= lay.height, 'box outside canvas');
}

function assertLeftToRight(lay) {
  for (const e of lay.edges) {
    const from = lay.nodes[e.from], to = lay.nodes[e.to];
    assert.ok(from.x + from.w <= to.x, `edge ${e.from}->${e.to} not left-to-right`);
    assert.deepEqual(e.points[0], [from.x + from.w, from.y + from.h / 2]);
    assert.deepEqual(e.points[e.points.length - 1], [to.x, to.y + to.h / 2]);
    for (let i = 1; i < e.points.length; i++) assert.ok(e.points[i][0] > e.points[i - 1][0], 'edge goes backwards');
  }
}

test('empty list and null', () => {
  assert.deepEqual(Dag.layout([]), { width: 0, height: 0, nodes: {}, edges: [] });
  assert.deepEqual(Dag.layout(null).edges, []);
});

test('one node', () => {
  const lay = Dag.layout([n(1)]);
  assert.deepEqual(Object.keys(lay.nodes), ['1']);
  assert.equal(lay.nodes[1].layer, 0);
  assert.equal(lay.nodes[1].order, 0);
  assert.ok(lay.width >= lay.nodes[1].w && lay.height >= lay.nodes[1].h);
});

test('diamond layers are 0,1,1,2', () => {
  const lay = Dag.layout([n(1), n(2, [1]), n(3, [1]), n(4, [2, 3])]);
  assert.deepEqual(layers(lay), { 1: 0, 2: 1, 3: 1, 4: 2 });
  assert.equal(lay.edges.length, 4);
  assertNoOverlap(lay);
  assertLeftToRight(lay);
});

test('chain of 50 has 50 layers', () => {
  const nodes = Array.from({ length: 50 }, (_, i) => n('s' + i, i ? ['s' + (i - 1)] : []));
  const lay = Dag.layout(nodes);
  const ls = Object.values(lay.nodes).map((b) => b.layer);
  assert.equal(new Set(ls).size, 50);
  assert.equal(Math.max(...ls), 49);
  assertLeftToRight(lay);
});

test('long edges are routed through dummies, not through nodes', () => {
  const lay = Dag.layout([n(1), n(2, [1]), n(3, [2]), n(4, [1, 3])]);
  const long = lay.edges.find((e) => e.from === 1 && e.to === 4);
  assert.equal(long.points.length, 6); // start, 2 per crossed layer, end
  const mid = long.points[1][1];
  for (const id of [2, 3]) {
    const b = lay.nodes[id];
    assert.ok(mid < b.y || mid > b.y + b.h, 'long edge runs through node ' + id);
  }
  assertLeftToRight(lay);
});

test('unknown, duplicate and cyclic dependencies are ignored', () => {
  const lay = Dag.layout([n(1, [99]), n(2, [1, 1, 'nope']), n(3, [2, 4]), n(4, [3]), n(2, [])]);
  assert.equal(Object.keys(lay.nodes).length, 4);
  assert.equal(lay.nodes[1].layer, 0);
  assert.equal(lay.nodes[2].layer, 1);
  assert.equal(lay.edges.filter((e) => e.from === 1 && e.to === 2).length, 1);
  assertNoOverlap(lay);
  assertLeftToRight(lay);
});

test('random 200-node DAG: no overlap, left-to-right, deterministic', () => {
  const nodes = randomDag(200);
  const a = Dag.layout(nodes), b = Dag.layout(JSON.parse(JSON.stringify(nodes)));
  assert.deepEqual(a, b);
  assert.equal(JSON.stringify(a), JSON.stringify(Dag.layout(nodes)));
  assertNoOverlap(a);
  assertLeftToRight(a);
  for (const node of nodes) {
    const deps = node.depends_on.map((d) => a.nodes[d].layer);
    assert.equal(a.nodes[node.id].layer, deps.length ? 1 + Math.max(...deps) : 0);
  }
});

test('barycenter ordering untangles a crossed fan-in', () => {
  // input order puts a's child below b's child: one crossing unless reordered
  const lay = Dag.layout([n('a'), n('b'), n('cb', ['b']), n('ca', ['a'])]);
  assert.equal(lay.nodes.ca.order, lay.nodes.a.order);
  assert.equal(lay.nodes.cb.order, lay.nodes.b.order);
});

test('200 nodes lay out in under 200 ms', () => {
  const nodes = randomDag(200, 7);
  const t0 = performance.now();
  Dag.layout(nodes);
  const ms = performance.now() - t0;
  console.log(`     200 nodes: ${ms.toFixed(1)} ms`);
  assert.ok(ms < 200, `took ${ms} ms`);
});

/* ---- a minimal fake SVG DOM for render/setStatus ---- */
class FakeEl {
  constructor(doc, ns, tag) { Object.assign(this, { ownerDocument: doc, namespaceURI: ns, tagName: tag, attrs: {}, children: [], _text: '' }); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  appendChild(c) { c.parentNode = this; this.children.push(c); return c; }
  removeChild(c) { this.children.splice(this.children.indexOf(c), 1); return c; }
  get firstChild() { return this.children[0] || null; }
  set textContent(v) { this.children = []; this._text = String(v); }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(''); }
  set innerHTML(v) { throw new Error('innerHTML must not be used'); }
  matches(sel) {
    const [tag, cls] = sel.split('.');
    return (!tag || tag === this.tagName) && (!cls || (this.attrs.class || '').split(/\s+/).includes(cls));
  }
  querySelectorAll(sel) { return this.children.flatMap((c) => (c.matches(sel) ? [c] : []).concat(c.querySelectorAll(sel))); }
  querySelector(sel) { return this.querySelectorAll(sel)[0] || null; }
}
const fakeDoc = { createElementNS(ns, tag) { return new FakeEl(fakeDoc, ns, tag); } };
const newSvg = () => fakeDoc.createElementNS('http://www.w3.org/2000/svg', 'svg');

test('render draws nodes, edges, markers and status', () => {
  const svg = newSvg();
  const evil = '<img src=x onerror=alert(1)> a very long label that must be truncated';
  Dag.render(svg, [n(1, [], evil), n(2, [1]), n(3, [1]), n(4, [2, 3])], { 1: 'completed', 2: 'running' });
  assert.match(svg.getAttribute('viewBox'), /^0 0 \d+ \d+$/);
  assert.ok(svg.getAttribute('class').split(' ').includes('dag'));
  const groups = svg.querySelectorAll('g.dag-node');
  assert.equal(groups.length, 4);
  assert.equal(groups[0].getAttribute('class'), 'dag-node status-completed');
  assert.equal(groups[1].getAttribute('class'), 'dag-node status-running');
  assert.equal(groups[3].getAttribute('class'), 'dag-node status-waiting');
  assert.equal(groups[0].querySelector('title').textContent, evil + '\ntxt2img');
  const label = groups[0].querySelector('.dag-label').textContent;
  assert.ok(label.endsWith('\u2026') && label.length <= 21, 'label truncated: ' + label);
  assert.equal(groups[0].querySelector('.dag-status').textContent, 'completed');
  const edges = svg.querySelectorAll('path.dag-edge');
  assert.equal(edges.length, 4);
  const marker = svg.querySelector('marker');
  assert.equal(edges[0].getAttribute('marker-end'), `url(#${marker.getAttribute('id')})`);
  const other = newSvg();
  Dag.render(other, [n(1)], {});
  assert.notEqual(other.querySelector('marker').getAttribute('id'), marker.getAttribute('id'));
});

test('setStatus updates one node in place, keeps extra classes', () => {
  const svg = newSvg();
  Dag.render(svg, [n(1), n('x"y', [1])], new Map([[1, 'pending']]));
  const g = svg.querySelectorAll('g.dag-node')[0];
  g.setAttribute('class', g.getAttribute('class') + ' selected');
  assert.equal(Dag.setStatus(svg, 1, 'compensation_failed'), true);
  assert.equal(g.getAttribute('class'), 'dag-node selected status-compensation_failed');
  assert.equal(g.querySelector('.dag-status').textContent, 'compensation failed');
  assert.equal(Dag.setStatus(svg, 'x"y', 'failed'), true);
  assert.equal(Dag.setStatus(svg, 42, 'failed'), false);
  Dag.render(svg, [n(5)], {}); // re-render replaces the old drawing
  assert.equal(svg.querySelectorAll('g.dag-node').length, 1);
  assert.equal(svg.querySelectorAll('defs').length, 1);
});

if (failures) { console.log(`${failures} test(s) failed`); process.exit(1); }
console.log('all dag tests passed');
