/* Chordline console: keeps a server-rendered page live from the /ws event stream.
 *
 * Every page embeds its data as JSON (#page-data) and the id of the newest event
 * when it was read (`since`). One Live connection subscribes from that id, so no
 * event between the render and the socket is missed; when the socket drops it
 * says "reconnecting", retries with backoff, resubscribes from the last event it
 * saw and asks the page to re-read its state. No polling loop: a page re-reads
 * the API only when an event says something changed. Text goes in with
 * textContent only: job parameters and errors are tenants' text.
 */
(function () {
  'use strict';

  var data = JSON.parse(document.getElementById('page-data').textContent);
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var canAct = document.body.dataset.canAct === 'true';
  var STEP_STATUS = {
    'job.queued': 'pending', 'job.started': 'running', 'job.progress': 'running',
    'job.retrying': 'pending', 'job.completed': 'completed', 'job.failed': 'failed',
    'job.cancelled': 'cancelled', 'job.skipped': 'skipped', 'step.compensated': 'compensated',
    'step.compensation_failed': 'compensation_failed'
  };

  // ---- small helpers ------------------------------------------------------

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'className') node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function byId(id) { return document.getElementById(id); }

  /* Event ids already shown: a page's embedded history and its live replay overlap
   * (the replay starts at an id read before the history was), so each shows once. */
  var seen = {};
  function fresh(event) {
    if (seen[event.id]) return false;
    seen[event.id] = true;
    return true;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function badge(status) { return el('span', {className: 'badge status-' + status, text: status}); }

  function setBadge(node, status) {
    if (!node) return;
    node.className = 'badge status-' + status;
    node.textContent = status;
  }

  function seconds(s) {
    if (s === null || s === undefined) return '—';
    return s < 60 ? s.toFixed(1) + ' s' : Math.round(s / 60) + ' min';
  }

  function mib(n) { return n === null || n === undefined ? '?' : (n / 1024).toFixed(1) + ' GB'; }

  function time(ts) { return ts ? new Date(ts).toLocaleTimeString() : ''; }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) return;
      timer = setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  /* Re-read `path` and apply the answer, unless a later read's answer is already applied:
   * two reads in flight may answer out of order, and a stale one must not win. */
  function reader(path, apply) {
    var asked = 0, shown = 0;
    return function () {
      var mine = ++asked;
      api('GET', path).then(function (json) {
        if (mine > shown) { shown = mine; apply(json); }
      });
    };
  }

  function notice(text, kind) {
    var box = byId('notice');
    box.textContent = text;
    box.className = 'notice ' + (kind || 'error');
    box.hidden = false;
    if (kind === 'ok') setTimeout(function () { box.hidden = true; }, 4000);
  }

  /* Read or act through the API itself, with the session cookie and its CSRF token. */
  function api(method, path, body) {
    return fetch(path, {
      method: method, credentials: 'same-origin',
      headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) {
          var error = (json && json.error) || {};
          throw new Error((error.code || response.status) + ': ' + (error.message || 'failed'));
        }
        return json;
      });
    });
  }

  function act(method, path, body, done) {
    return api(method, path, body).then(function (json) {
      notice(json.message || 'Done.', 'ok');
      if (done) done(json);
    }).catch(function (err) { notice(err.message); });
  }

  // ---- the live connection -------------------------------------------------

  function Live(subject, onEvent, onResync) {
    this.subject = subject;
    this.onEvent = onEvent;
    this.onResync = onResync || function () {};
    this.since = data.since || null;
    this.delay = 500;
    this.everOpen = false;
    this.connect();
  }

  Live.prototype.state = function (state, text) {
    var badgeNode = byId('live');
    badgeNode.dataset.state = state;
    badgeNode.textContent = text;
  };

  Live.prototype.connect = function () {
    var self = this;
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    var ws = new WebSocket(scheme + location.host + '/ws');
    ws.onopen = function () {
      var message = Object.assign({action: 'subscribe'}, self.subject);
      if (self.since) message.since = self.since;
      ws.send(JSON.stringify(message));
    };
    ws.onmessage = function (msg) {
      var event = JSON.parse(msg.data);
      if (event.type === 'subscribed') {
        self.delay = 500;
        self.state('live', 'live');
        if (self.everOpen) self.onResync();
        self.everOpen = true;
      } else if (event.type === 'error') {
        notice('Live events: ' + event.message);
      } else if (event.id) {
        self.since = event.id;
        if (fresh(event)) self.onEvent(event);
      }
    };
    ws.onclose = function () {
      self.state('reconnecting', 'reconnecting…');
      // A socket refused because the session ended (signed out elsewhere, expired,
      // key revoked) would retry for ever: ask once, and go to the sign-in page.
      fetch('/api/audit?limit=1', {credentials: 'same-origin'}).then(function (r) {
        if (r.status === 401) location.assign('/dashboard/login?next=' + encodeURIComponent(location.pathname));
      }).catch(function () {});
      setTimeout(function () { self.connect(); }, self.delay);
      self.delay = Math.min(self.delay * 2, 5000);
    };
  };

  // ---- pages ---------------------------------------------------------------

  function counts(node, entries) {
    clear(node);
    entries.forEach(function (pair) {
      node.appendChild(el('dt', {text: pair[0]}));
      node.appendChild(el('dd', {'data-count': pair[0], text: String(pair[1])}));
    });
  }

  function sparkline(svg, perMinute) {
    var ns = 'http://www.w3.org/2000/svg';
    clear(svg);
    svg.setAttribute('viewBox', '0 0 240 40');
    var top = Math.max(1, Math.max.apply(null, perMinute.map(function (m) {
      return (m.completed || 0) + (m.failed || 0);
    })));
    perMinute.forEach(function (m, i) {
      [['completed', 0], ['failed', m.completed || 0]].forEach(function (part) {
        var n = m[part[0]] || 0;
        if (!n) return;
        var rect = document.createElementNS(ns, 'rect');
        var h = 38 * n / top, below = 38 * part[1] / top;
        rect.setAttribute('x', i * 4); rect.setAttribute('width', 3);
        rect.setAttribute('y', 40 - below - h); rect.setAttribute('height', h);
        rect.setAttribute('class', part[0]);
        svg.appendChild(rect);
      });
    });
  }

  var pages = {};

  pages.overview = function () {
    function render(o) {
      counts(byId('job-counts'), Object.keys(o.jobs).map(function (k) { return [k, o.jobs[k]]; }));
      counts(byId('workflow-counts'), ['running', 'compensating', 'completed', 'failed',
        'compensated', 'compensation_failed'].map(function (k) { return [k, o.workflows[k] || 0]; }));
      counts(byId('machine-counts'), [['online', o.machines.online], ['draining', o.machines.draining],
        ['offline', o.machines.offline], ['GPUs', o.gpus]]);
      byId('hour-completed').textContent = o.last_hour.completed;
      byId('hour-failed').textContent = o.last_hour.failed;
      byId('hour-failure-rate').textContent = (100 * o.last_hour.failure_rate).toFixed(1) + '%';
      sparkline(byId('throughput'), o.last_hour.per_minute);
      var body = clear(byId('queues'));
      o.queues.forEach(function (q) {
        body.appendChild(el('tr', {'data-queue': q.queue},
          el('td', {}, el('code', {text: q.queue})), el('td', {text: q.job_type || '—'}),
          el('td', {text: q.model || '—'}), el('td', {text: q.gpu_memory ? q.gpu_memory + ' GB' : '—'}),
          el('td', {text: String(q.pending)}), el('td', {text: seconds(q.oldest_wait_seconds)}),
          el('td', {text: q.messages === null ? '—' : String(q.messages)})));
      });
    }
    render(data);
    var refresh = debounce(reader('/api/overview', render), 500);
    new Live({all: true}, refresh, refresh);
  };

  pages.machines = function () {
    function gpuRow(machine, gpu) {
      var used = gpu.memory_free_mb === null ? null : gpu.memory_total_mb - gpu.memory_free_mb;
      var pct = used === null ? 0 : Math.round(100 * used / gpu.memory_total_mb);
      return el('tr', {'data-gpu': machine.id + ':' + gpu.index},
        el('td', {text: String(gpu.index)}), el('td', {text: gpu.name}),
        el('td', {}, el('meter', {min: '0', max: '100', value: String(pct)}),
          ' ' + mib(used) + ' / ' + mib(gpu.memory_total_mb)),
        el('td', {text: gpu.utilization === null ? '—' : gpu.utilization + '%'}),
        el('td', {text: (gpu.models_loaded || []).join(', ') || '—'}),
        el('td', {text: (gpu.running_jobs || []).length ? gpu.running_jobs.join(', ') : 'idle'}));
    }
    function card(m) {
      var actions = null;
      if (canAct && m.status !== 'offline') {
        var drain = m.status === 'draining';
        actions = el('button', {className: drain ? '' : 'danger', 'data-action': drain ? 'resume' : 'drain',
          text: drain ? 'Resume' : 'Drain'});
        actions.onclick = function () {
          act('POST', '/api/machines/' + encodeURIComponent(m.id) + (drain ? '/resume' : '/drain'),
            undefined, refresh);
        };
      }
      var labels = Object.keys(m.labels).map(function (k) { return k + '=' + m.labels[k]; }).join(' ');
      var gpus = m.gpus.length ? el('table', {className: 'grid'},
        el('thead', {}, el('tr', {}, el('th', {text: 'GPU'}), el('th', {text: 'Name'}),
          el('th', {text: 'Memory'}), el('th', {text: 'Load'}), el('th', {text: 'Warm models'}),
          el('th', {text: 'Running'}))),
        el('tbody', {}, ...m.gpus.map(function (g) { return gpuRow(m, g); })))
        : el('p', {className: 'empty', text: 'CPU only · runs ' + (m.job_types.join(', ') || 'nothing') +
          ' · running ' + (m.running_jobs.length ? m.running_jobs.join(', ') : 'nothing')});
      return el('section', {className: 'machine card', 'data-machine': m.id},
        el('header', {}, el('h2', {text: m.id}), badge(m.status), el('span', {className: 'labels', text: labels}),
          el('span', {className: 'seen', text: 'seen ' + time(m.last_seen)}), actions),
        gpus);
    }
    function render(machines) {
      var box = clear(byId('machines'));
      machines.forEach(function (m) { box.appendChild(card(m)); });
      byId('no-machines').hidden = machines.length > 0;
    }
    render(data.machines);
    var refresh = debounce(reader('/api/machines', function (json) { render(json.machines); }), 400);
    new Live({all: true}, function (event) {
      if (/^(machine|worker)\./.test(event.type) || /^job\.(started|completed|failed|cancelled)$/.test(event.type)) refresh();
    }, refresh);
  };

  pages.jobs = function () {
    var params = new URLSearchParams(location.search);
    new Live({all: true}, function (event) {
      if (!event.job_id || !STEP_STATUS[event.type]) return;
      var row = document.querySelector('tr[data-job="' + CSS.escape(event.job_id) + '"]');
      if (row) {
        setBadge(row.querySelector('[data-field="status"]'), STEP_STATUS[event.type]);
        if (event.type === 'job.progress') row.querySelector('[data-field="progress"]').textContent = event.data.progress + '%';
        if (event.type === 'job.completed') row.querySelector('[data-field="progress"]').textContent = '100%';
      } else if (event.type === 'job.queued' && !params.get('status')) {
        byId('new-jobs').hidden = false;
      }
    });
  };

  pages.job = function () {
    var job = data.job;
    var timeline = byId('timeline');
    function outputs(result) {
      var box = clear(byId('outputs'));
      // Only our own artifact URLs: a result is data a handler wrote.
      var artifacts = ((result && result.artifacts) || []).filter(function (a) {
        return typeof a.url === 'string' && a.url.indexOf('/api/artifacts/') === 0;
      });
      artifacts.forEach(function (a) {
        box.appendChild(el('a', {href: a.url, target: '_blank', rel: 'noopener'},
          el('img', {src: a.url, alt: 'output ' + a.id, loading: 'lazy', width: '160'})));
      });
      if (!artifacts.length) box.appendChild(el('p', {className: 'empty', text: 'No image yet.'}));
    }
    function addEvent(event) {
      var detail = event.data && (event.data.error ? event.data.error.message :
        event.data.reason || (event.data.progress !== undefined ? event.data.progress + '%' : ''));
      timeline.appendChild(el('li', {'data-event': event.type}, el('time', {text: time(event.ts)}), ' ',
        el('strong', {text: event.type}), detail ? ' · ' + detail : '', event.worker ? ' · ' + event.worker : ''));
    }
    function showStatus(status) {
      setBadge(byId('job-status'), status);
      if (!canAct) return;
      if (job.workflow_id) {  // a step is cancelled with its workflow
        byId('cancel-job').hidden = byId('terminate-job').hidden = true;
        return;
      }
      byId('cancel-job').hidden = status !== 'pending' && status !== 'waiting';
      byId('terminate-job').hidden = status !== 'running';
    }
    function apply(event) {
      addEvent(event);
      var status = STEP_STATUS[event.type];
      if (status) showStatus(status);
      if (event.type === 'job.progress') byId('job-progress').textContent = event.data.progress + '%';
      if (event.type === 'job.completed') { byId('job-progress').textContent = '100%'; outputs(event.data.result); }
      if (event.data && event.data.error) {
        var box = byId('job-error');
        box.hidden = false;
        box.querySelector('pre').textContent = JSON.stringify(event.data.error, null, 2);
      }
    }
    data.events.filter(fresh).forEach(addEvent);
    outputs(job.result);
    showStatus(job.status);
    if (canAct) {
      byId('cancel-job').onclick = function () {
        act('POST', '/api/jobs/' + job.id + '/cancel', {reason: 'Cancelled from the console'});
      };
      byId('terminate-job').onclick = function () {
        act('POST', '/api/jobs/' + job.id + '/cancel', {reason: 'Terminated from the console', terminate: true});
      };
    }
    new Live({job_id: job.id}, apply, function () {
      api('GET', '/api/jobs/' + job.id + '/status').then(function (json) {
        showStatus(json.job.status);
        outputs(json.job.result);
      });
    });
  };

  pages.workflows = function () {
    var params = new URLSearchParams(location.search);
    var body = byId('workflows');
    function row(w) {
      return el('tr', {'data-workflow': w.id},
        el('td', {}, el('a', {href: '/dashboard/workflows/' + encodeURIComponent(w.id)}, el('code', {text: w.id.slice(0, 8)}))),
        el('td', {text: w.name}), el('td', {text: w.tenant || ''}), el('td', {}, badge(w.status)),
        el('td', {text: w.completed_steps + ' / ' + w.total_steps}), el('td', {}, el('time', {text: w.created_at})));
    }
    function upsert(w) {
      var old = body.querySelector('tr[data-workflow="' + CSS.escape(w.id) + '"]');
      if (old) { old.replaceWith(row(w)); return; }
      if (params.get('status') && params.get('status') !== w.status) return;
      body.insertBefore(row(w), body.firstChild);
    }
    data.workflows.forEach(function (w) { body.appendChild(row(w)); });
    var due = {}, readers = {};
    var refresh = debounce(function () {
      Object.keys(due).forEach(function (id) {
        var tenant = due[id];
        delete due[id];
        readers[id] = readers[id] || reader('/api/workflows/' + encodeURIComponent(id) + '/status',
          function (json) { upsert(Object.assign({tenant: tenant}, json.workflow)); });
        readers[id]();
      });
    }, 300);
    new Live({all: true}, function (event) {
      if (!event.workflow_id) return;
      if (params.get('tenant') && params.get('tenant') !== event.tenant) return;
      due[event.workflow_id] = event.tenant;
      refresh();
    }, function () { location.reload(); });
  };

  pages.workflow = function () {
    var wf = data.workflow;
    var svg = byId('dag');
    var sagaEvents = [];
    function nodes(steps) {
      return steps.map(function (s) {
        return {id: s.step_index, label: '#' + s.step_index + ' ' + (s.type || 'step'),
          sub: 'job ' + s.job_id.slice(0, 8), depends_on: s.depends_on};
      });
    }
    function statuses(steps) {
      var map = {};
      steps.forEach(function (s) { map[s.step_index] = s.status; });
      return map;
    }
    function stepRows(steps) {
      var tbody = clear(byId('steps'));
      steps.forEach(function (s) {
        var error = s.compensation_error || s.error;
        tbody.appendChild(el('tr', {'data-step': String(s.step_index)},
          el('td', {text: String(s.step_index)}), el('td', {text: s.type || ''}),
          el('td', {text: (s.depends_on || []).join(', ') || '—'}), el('td', {}, badge(s.status)),
          el('td', {text: String(s.attempts || 0)}), el('td', {text: error ? (error.code + ': ' + error.message) : ''}),
          el('td', {}, el('a', {href: '/dashboard/jobs/' + encodeURIComponent(s.job_id)}, el('code', {text: s.job_id.slice(0, 8)})))));
      });
    }
    var ACTIONS = {cancel: ['pending', 'running'], 'cancel-compensate': ['pending', 'running'],
      compensate: ['compensation_failed', 'cancelled']};
    function render(status) {
      var now = status.workflow.status;
      setBadge(byId('workflow-status'), now);
      document.querySelectorAll('[data-action]').forEach(function (button) {
        button.hidden = ACTIONS[button.dataset.action].indexOf(now) < 0;
      });
      byId('workflow-progress').textContent = status.workflow.completed_steps + ' / ' +
        status.workflow.total_steps + ' steps · ' + Math.round(status.workflow.progress_percentage) + '%';
      status.steps.forEach(function (s) { ChordlineDag.setStatus(svg, s.step_index, s.status); });
      stepRows(status.steps);
    }
    function sagaEntry(event) {
      var d = event.data || {};
      if (event.type === 'workflow.compensating') {
        return 'Compensation began: ' + ((d.error && d.error.message) || 'cancelled') +
          (d.restarted ? ' (retried by an operator)' : '');
      }
      if (event.type === 'step.compensated') return 'Step ' + event.step_index + ' compensated';
      if (event.type === 'step.compensation_failed') {
        return 'Step ' + event.step_index + ' compensation failed: ' + ((d.error && d.error.message) || '');
      }
      if (event.type === 'workflow.compensated') return 'All completed steps undone';
      if (event.type === 'workflow.compensation_failed') return 'Compensation failed for good: ' + ((d.error && d.error.message) || '');
      return null;
    }
    function addSaga(event) {
      var text = sagaEntry(event);
      if (!text) return;
      sagaEvents.push(event);
      byId('saga-state').hidden = true;
      byId('saga').appendChild(el('li', {'data-event': event.type, 'data-step': event.step_index === null ? '' : String(event.step_index)},
        el('time', {text: time(event.ts)}), ' ', text));
    }
    ChordlineDag.render(svg, nodes(data.steps), statuses(data.steps));
    render(data);
    data.events.filter(fresh).forEach(addSaga);
    var refresh = debounce(reader('/api/workflows/' + encodeURIComponent(wf.id) + '/status', render), 150);
    if (canAct) {
      var path = '/api/workflows/' + encodeURIComponent(wf.id);
      document.querySelectorAll('[data-action]').forEach(function (button) {
        button.onclick = function () {
          var action = button.dataset.action;
          if (action === 'compensate') act('POST', path + '/compensate', undefined, refresh);
          else act('POST', path + '/cancel', {reason: 'Cancelled from the console', compensate: action === 'cancel-compensate'}, refresh);
        };
      });
    }
    new Live({workflow_id: wf.id}, function (event) {
      if (event.step_index !== null && STEP_STATUS[event.type]) ChordlineDag.setStatus(svg, event.step_index, STEP_STATUS[event.type]);
      addSaga(event);
      refresh();
    }, refresh);
  };

  pages.events = function () {
    var f = data.filters;
    var body = byId('events');
    function matches(e) {
      return (!f.type || e.type.indexOf(f.type) === 0) && (!f.tenant || e.tenant === f.tenant) &&
        (!f.job_id || e.job_id === f.job_id) && (!f.workflow_id || e.workflow_id === f.workflow_id);
    }
    function add(e) {
      if (!matches(e)) return;
      var link = function (kind, id) {
        return id ? el('a', {href: '/dashboard/' + kind + '/' + encodeURIComponent(id)}, el('code', {text: id.slice(0, 8)})) : '';
      };
      body.insertBefore(el('tr', {'data-event': e.type},
        el('td', {}, el('time', {title: e.ts, text: time(e.ts)})), el('td', {text: e.type}),
        el('td', {text: e.tenant || ''}), el('td', {}, link('jobs', e.job_id)), el('td', {}, link('workflows', e.workflow_id)),
        el('td', {text: e.worker || ''}), el('td', {}, el('code', {text: JSON.stringify(e.data).slice(0, 160)}))), body.firstChild);
      while (body.children.length > 500) body.removeChild(body.lastChild);
    }
    data.events.filter(fresh).forEach(add);
    new Live({all: true}, add);
  };

  var page = pages[document.body.dataset.page];
  if (page) page();
  else byId('live').hidden = true;  // a page with nothing live (the audit log)
  window.chordlineConsole = {ready: true};
})();
