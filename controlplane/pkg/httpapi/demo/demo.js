// AvatarFleet demo page: create a session, watch it over WHEP, make it speak,
// talk to it over WHIP, follow its lifecycle events. Plain browser JS, no
// build step. The API key lives in the closure below (and, if the operator
// asks, this tab's sessionStorage) and goes only to this page's origin:
// every API call uses a relative /v1 URL; WHEP uses the session's viewer
// token (subscribe only) and WHIP a publish token the page asks for with
// the key (POST /v1/sessions/{id}/tokens). Watching is the browser client's
// job (avatarfleet.js, README "Browser client"): it follows the session
// when it moves to another worker.
//
// window.avatarDemo exposes the page's state and actions for automation
// (see the README, "Demo page"); it is not an API for other sites.
import { AvatarViewer, parseLinkIceServers, iceGatheringComplete, deleteResource } from './avatarfleet.js';
import { Catalog, ensureOption } from './catalog.js';

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const STORE_KEY = 'avatarfleet.demo.key';
  const STORE_SESSION = 'avatarfleet.demo.session';
  const TERMINAL = new Set(['ended', 'failed']);
  const MAX_EVENTS = 500;
  const ICE_GATHER_TIMEOUT_MS = 3000;

  let apiKey = '';
  let pollTimer = 0;
  let statsTimer = 0;
  let micToken = ''; // the publish token the WHIP POST was authorised with

  const S = {
    session: null, // the last Session JSON read (GET, create or an event)
    get sessionId() { return S.session ? S.session.id : null; },
    get hasKey() { return apiKey !== ''; },
    serverStats: null, // the session's `stats` field, when the API has one
    viewer: null, // the AvatarViewer (avatarfleet.js) while watching
    get pc() { return S.viewer ? S.viewer.pc : null; }, // its current RTCPeerConnection
    wantWatch: false, // the operator asked to watch
    whep: { status: 0, location: '', error: '', workerId: '', connects: 0, moves: 0, state: '' },
    viewerEvents: [], // the viewer's events: {type, at (Date.now()), detail}, the last 200
    mic: { on: false, pc: null, stream: null, status: 0, location: '', error: '', deleteStatus: 0 },
    iceServers: [], // from Link: rel="ice-server" headers
    local: {}, // this browser's figures (getStats)
    events: [], // lifecycle events of the SSE stream (all the key may see)
    speaking: false, // the session's last speaking event was session.speaking_started
    sse: { connected: false, lastEventId: '', ctl: null },
    lastCreate: { status: 0 },
    lastSpeak: { status: 0 },
    lastInterrupt: { status: 0 },
    lastDelete: { status: 0 },
    // the avatars and voices offered (catalog.js): the lists as the API
    // sent them and the preview shown ({name, status, width, height})
    catalog: { loaded: false, error: '', avatars: [], voices: [], preview: null },
  };
  window.avatarDemo = S;

  // ---- logging -----------------------------------------------------------

  function logLine(text, cls) {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    const t = document.createElement('time');
    const now = new Date();
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString();
    li.append(t, document.createTextNode(' ' + text));
    const log = $('log');
    log.append(li);
    while (log.children.length > 300) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }
  const info = (text) => logLine(text, 'info');
  const fail = (text) => { logLine(text, 'error'); console.warn('avatarDemo:', text); };

  // ---- REST API (same origin only) ---------------------------------------

  class APIError extends Error {
    constructor(status, code, message) {
      super(`${status}${code ? ' ' + code : ''}: ${message}`);
      this.status = status;
      this.code = code;
    }
  }

  async function errorOf(res) {
    let code = '', message = res.statusText || 'request failed';
    try {
      const body = await res.json();
      if (body && body.error) ({ code, message } = body.error);
    } catch (_) { /* not JSON */ }
    return new APIError(res.status, code, message);
  }

  async function api(method, path, body) {
    if (!path.startsWith('/v1/')) throw new Error('api: not an API path');
    if (!apiKey) throw new APIError(0, 'unauthorized', 'enter the API key first');
    const headers = { Authorization: 'Bearer ' + apiKey };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (!res.ok) throw await errorOf(res);
    const text = res.status === 204 ? '' : await res.text();
    return { status: res.status, data: text ? JSON.parse(text) : null };
  }

  // fetchImage GETs an API image (a preview) with the key.
  async function fetchImage(path) {
    if (!path.startsWith('/v1/')) throw new Error('fetchImage: not an API path');
    return fetch(path, { headers: { Authorization: 'Bearer ' + apiKey }, cache: 'no-cache' });
  }

  let catalog = null; // the Catalog, once the page is wired

  const sessionPath = (id, suffix = '') => '/v1/sessions/' + encodeURIComponent(id) + suffix;

  // ---- key -----------------------------------------------------------------

  function setKey(key, remember) {
    apiKey = (key || '').trim();
    try {
      if (remember && apiKey) sessionStorage.setItem(STORE_KEY, apiKey);
      else sessionStorage.removeItem(STORE_KEY);
    } catch (_) { /* storage disabled */ }
    $('key').value = apiKey;
    $('remember').checked = !!remember && !!apiKey;
    startEvents();
    if (catalog && apiKey) catalog.load();
    render();
  }

  // ---- session ---------------------------------------------------------------

  function applySession(s) {
    if (!s || !s.id) return;
    const prev = S.session && S.session.id === s.id ? S.session : null;
    // States only move forward once terminal; an older event must not revive it.
    if (prev && TERMINAL.has(prev.state) && !TERMINAL.has(s.state)) return;
    const next = Object.assign({}, prev || {}, s);
    if (!s.viewer_token && prev) next.viewer_token = prev.viewer_token;
    if ('stats' in s) S.serverStats = s.stats;
    S.session = next;
    render();
    if (TERMINAL.has(next.state)) {
      S.speaking = false;
      if (!prev || !TERMINAL.has(prev.state)) {
        info(`session ${next.state}${next.end_reason ? ' (' + next.end_reason + ')' : ''}`);
      }
      stopPolling();
      stopWatching(false);
      micOff();
      return;
    }
  }

  async function refreshSession() {
    const { data } = await api('GET', sessionPath(S.sessionId));
    applySession(data);
    return S.session;
  }

  function useSession(s) {
    if (S.session && S.session.id !== s.id) {
      stopWatching(true);
      micOff();
      S.serverStats = null;
      S.local = {};
    }
    S.session = null;
    S.speaking = false;
    applySession(s);
    try { sessionStorage.setItem(STORE_SESSION, s.id); } catch (_) { /* ignore */ }
    for (const e of S.events) {
      if (!isOurs(e)) continue;
      showEvent(e);
      noteSpeaking(e);
    }
    render();
    startPolling();
  }

  async function createSession(avatar, voice) {
    const body = {};
    if (avatar) body.avatar = avatar;
    if (voice) body.voice = voice;
    try {
      const { status, data } = await api('POST', '/v1/sessions', body);
      S.lastCreate = { status };
      info(`created session ${data.id} on worker ${data.worker_id || '?'} (gpu ${data.gpu})`);
      useSession(data);
      if (params.get('watch') === '1') watch();
      return data;
    } catch (e) {
      S.lastCreate = { status: e.status || 0, error: e.message };
      fail('create session: ' + e.message);
      throw e;
    }
  }

  async function openSession(id) {
    try {
      const { data } = await api('GET', sessionPath(id));
      info(`opened session ${data.id} (${data.state})`);
      useSession(data);
      if (params.get('watch') === '1') watch();
      return data;
    } catch (e) {
      fail(`open session ${id}: ${e.message}`);
      throw e;
    }
  }

  async function deleteSession() {
    const id = S.sessionId;
    if (!id) return;
    stopWatching(true);
    micOff();
    try {
      const { status } = await api('DELETE', sessionPath(id));
      S.lastDelete = { status };
      info(`delete session: ${status}`);
      await refreshSession();
    } catch (e) {
      S.lastDelete = { status: e.status || 0, error: e.message };
      fail('delete session: ' + e.message);
    }
  }

  async function speak(text, interrupt) {
    if (!S.sessionId) return;
    try {
      const { status } = await api('POST', sessionPath(S.sessionId, '/speak'), { text, interrupt: !!interrupt });
      S.lastSpeak = { status, at: Date.now() };
      info(`speak${interrupt ? ' (interrupting)' : ''}: ${status} queued`);
    } catch (e) {
      S.lastSpeak = { status: e.status || 0, error: e.message, at: Date.now() };
      fail('speak: ' + e.message);
    }
  }

  async function interrupt() {
    if (!S.sessionId) return;
    try {
      const { status } = await api('POST', sessionPath(S.sessionId, '/interrupt'));
      S.lastInterrupt = { status, at: Date.now() };
      info(`interrupt: ${status}`);
    } catch (e) {
      S.lastInterrupt = { status: e.status || 0, error: e.message, at: Date.now() };
      fail('interrupt: ' + e.message);
    }
  }

  // Poll the session: state, placement and the worker's media stats.
  function startPolling() {
    stopPolling();
    const tick = async () => {
      if (!S.sessionId || TERMINAL.has(S.session.state)) return;
      try {
        await refreshSession();
      } catch (e) {
        if (e.status === 404) { fail('session not found'); stopPolling(); return; }
      }
      if (S.session && !TERMINAL.has(S.session.state)) pollTimer = setTimeout(tick, 2000);
    };
    pollTimer = setTimeout(tick, 1000);
  }
  function stopPolling() { clearTimeout(pollTimer); pollTimer = 0; }

  // ---- events: text/event-stream over fetch (EventSource cannot send Authorization) --

  function isOurs(e) {
    if (!S.session) return false;
    if (e.session_id) return e.session_id === S.session.id;
    return !!e.worker_id && e.worker_id === S.session.worker_id && e.type.startsWith('worker.');
  }

  function showEvent(e) {
    const s = e.session;
    let detail = '';
    if (s) detail = ` state=${s.state}${s.worker_id ? ' worker=' + s.worker_id : ''}${s.end_reason ? ' reason=' + s.end_reason : ''}`;
    else if (e.worker_id) detail = ` worker=${e.worker_id}`;
    if (e.media_time_ms != null) detail += ` media_time=${e.media_time_ms}ms`;
    logLine(`${e.type}${detail}`, 'event');
  }

  // noteSpeaking follows session.speaking_started / _ended; it reports
  // whether e was one.
  function noteSpeaking(e) {
    if (e.type === 'session.speaking_started') S.speaking = true;
    else if (e.type === 'session.speaking_ended') S.speaking = false;
    else return false;
    return true;
  }

  function onEvent(e) {
    S.events.push(e);
    if (S.events.length > MAX_EVENTS) S.events.splice(0, S.events.length - MAX_EVENTS);
    if (!isOurs(e)) return;
    showEvent(e);
    // Speaking events carry the record as the worker started it; they
    // change no state of the session, only whether it speaks.
    if (noteSpeaking(e)) render();
    else if (e.session) applySession(e.session);
  }

  function startEvents() {
    if (S.sse.ctl) S.sse.ctl.abort();
    S.sse.connected = false;
    if (!apiKey) return;
    const ctl = new AbortController();
    S.sse.ctl = ctl;
    runEvents(ctl.signal, apiKey);
  }

  async function runEvents(signal, key) {
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        const headers = { Authorization: 'Bearer ' + key, Accept: 'text/event-stream' };
        if (S.sse.lastEventId) headers['Last-Event-ID'] = S.sse.lastEventId;
        const res = await fetch('/v1/events', { headers, signal, cache: 'no-store' });
        if (!res.ok) {
          const err = await errorOf(res);
          fail('events: ' + err.message);
          if (res.status === 401 || res.status === 403) return;
          throw err;
        }
        S.sse.connected = true;
        render();
        backoff = 1000;
        await readEventStream(res.body, signal);
      } catch (e) {
        if (signal.aborted) return;
      }
      S.sse.connected = false;
      render();
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  async function readEventStream(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { id: null, type: '', data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || signal.aborted) return;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') { dispatch(ev); ev = { id: null, type: '', data: [] }; continue; }
          if (line.startsWith(':')) continue; // comment / keep-alive
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'data') ev.data.push(val);
          else if (field === 'event') ev.type = val;
          else if (field === 'id') ev.id = val;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  function dispatch(ev) {
    if (ev.id !== null) S.sse.lastEventId = ev.id;
    if (ev.data.length === 0) return;
    let e;
    try { e = JSON.parse(ev.data.join('\n')); } catch (_) { return; }
    if (!e.type) e.type = ev.type || 'message';
    e.seq = ev.id;
    onEvent(e);
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function postSDP(url, token, sdp) {
    return fetch(url, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/sdp' },
      body: sdp,
      cache: 'no-store',
    });
  }

  // ---- WHEP viewer (avatarfleet.js) -------------------------------------------

  async function watch() {
    if (!S.sessionId) return;
    S.wantWatch = true;
    render();
    let s = S.session;
    try {
      s = await refreshSession();
    } catch (e) {
      fail('watch: ' + e.message);
    }
    if (!S.wantWatch || !s || TERMINAL.has(s.state) || (S.viewer && S.viewer.sessionId === s.id)) return;
    startViewer(s);
  }

  function startViewer(s) {
    closeViewer();
    const v = new AvatarViewer({ sessionId: s.id, token: s.viewer_token, whepUrl: s.whep_url, video: $('video'), iceServers: S.iceServers });
    S.viewer = v;
    S.whep = { status: 0, location: '', error: '', workerId: s.worker_id, connects: 0, moves: 0, state: v.state };
    for (const type of ['state', 'connected', 'reconnecting', 'moved', 'ended', 'error']) {
      v.addEventListener(type, (ev) => {
        const d = Object.assign({}, ev.detail);
        if (d.error) d.error = d.error.message;
        if (d.event) d.event = d.event.id;
        S.viewerEvents.push({ type, at: Date.now(), detail: d });
        if (S.viewerEvents.length > 200) S.viewerEvents.shift();
      });
    }
    const mine = (f) => (ev) => { if (S.viewer === v) { f(ev.detail); render(); } };
    v.addEventListener('state', mine((d) => {
      S.whep.state = d.state;
      if (d.state !== 'connected') setMediaStatus(d.state === 'closed' || d.state === 'ended' ? 'not watching' : d.state);
    }));
    v.addEventListener('connected', mine((d) => {
      S.whep.status = v.lastStatus;
      S.whep.location = d.location;
      S.whep.connects = d.connects;
      S.whep.error = '';
      S.iceServers = v.iceServers;
      setMediaStatus('watching');
      info(`WHEP: viewer ${d.location.split('/').pop() || '?'} connected${d.reconnect ? ' again (' + d.reason + ')' : ''}`);
      if ($('video').muted && !$('video').controls) {
        $('video').controls = true;
        info('video muted (autoplay policy); unmute it with its controls');
      }
      startLocalStats();
    }));
    v.addEventListener('reconnecting', mine((d) => {
      setMediaStatus(`reconnecting (${d.reason})${d.delayMs ? ' in ' + (d.delayMs / 1000).toFixed(1) + ' s' : ''}`);
    }));
    v.addEventListener('moved', mine((d) => {
      S.whep.moves++;
      S.whep.workerId = d.to;
      info(`session moved ${d.from ? 'from ' + d.from + ' ' : ''}to worker ${d.to || '?'}${d.reason ? ' (' + d.reason + ')' : ''}; reconnecting`);
      refreshSession().catch(() => {});
    }));
    v.addEventListener('ended', mine((d) => {
      info(`viewer: the session has ended (${d.reason})`);
      stopWatching(true);
    }));
    v.addEventListener('error', mine((d) => {
      S.whep.status = d.status;
      S.whep.error = d.error.message;
      fail('watch: ' + d.error.message);
      if (d.fatal) stopWatching(true);
    }));
    v.start();
  }

  function closeViewer() {
    const v = S.viewer;
    S.viewer = null;
    if (v) S.whep.state = 'closed';
    if (v) v.close();
    $('video').srcObject = null;
  }

  function stopWatching(quiet) {
    const was = S.wantWatch || S.viewer;
    S.wantWatch = false;
    closeViewer();
    stopLocalStats();
    if (was && !quiet) info('stopped watching');
    setMediaStatus('not watching');
    render();
  }

  // ---- WHIP microphone -----------------------------------------------------------

  const whipURL = (s) => s.whep_url.replace(/\/whep$/, '/whip');

  async function micOn() {
    if (S.mic.on || !S.sessionId) return;
    S.mic = { on: true, pc: null, stream: null, status: 0, location: '', error: '', deleteStatus: 0 };
    render();
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error('the microphone needs a secure context (https or localhost)');
      }
      const s = await refreshSession();
      if (s.state !== 'ready') throw new Error(`session is ${s.state}, not ready`);
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false });
      S.mic.stream = stream;
      if (!S.mic.on) { stream.getTracks().forEach((t) => t.stop()); return; }
      const pc = new RTCPeerConnection({ iceServers: S.iceServers });
      S.mic.pc = pc;
      for (const track of stream.getAudioTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      pc.onconnectionstatechange = () => {
        if (S.mic.pc !== pc) return;
        if (pc.connectionState === 'failed') { fail('microphone connection failed'); micOff(); }
        render();
      };
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, ICE_GATHER_TIMEOUT_MS);
      const url = whipURL(s);
      // The viewer token only subscribes: publishing needs a token with the
      // publish grant, which only the session's owner (this key) may get.
      const tok = await api('POST', sessionPath(s.id, '/tokens'), { grants: ['publish'] });
      micToken = tok.data.token;
      const res = await postSDP(url, micToken, pc.localDescription.sdp);
      S.mic.status = res.status;
      if (res.status !== 201) throw await errorOf(res);
      const answer = await res.text();
      const loc = res.headers.get('Location');
      if (loc) S.mic.location = new URL(loc, url).href;
      const ice = parseLinkIceServers(res.headers.get('Link'));
      if (ice.length) S.iceServers = ice;
      if (S.mic.pc !== pc) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      info(`WHIP: microphone on (publisher ${S.mic.location.split('/').pop() || '?'})`);
    } catch (e) {
      S.mic.error = e.message;
      fail('microphone: ' + e.message);
      micOff();
    } finally {
      render();
    }
  }

  async function micOff() {
    const m = S.mic;
    if (!m.on) return;
    m.on = false;
    if (m.stream) m.stream.getTracks().forEach((t) => t.stop());
    if (m.pc) m.pc.close();
    m.pc = null;
    render();
    if (m.location && S.session) {
      const loc = m.location;
      m.location = '';
      m.deleteStatus = await deleteResource(loc, micToken);
      info(`WHIP: microphone off (${m.deleteStatus})`);
    }
  }

  function toggleMic() { return S.mic.on ? micOff() : micOn(); }

  // ---- local stats ------------------------------------------------------------------

  let prevVideo = null;
  function startLocalStats() {
    stopLocalStats();
    prevVideo = null;
    statsTimer = setInterval(sampleLocalStats, 1000);
  }
  function stopLocalStats() { clearInterval(statsTimer); statsTimer = 0; }

  async function sampleLocalStats() {
    const pc = S.pc;
    if (!pc) return;
    let v = null, a = null, pair = null;
    let report;
    try { report = await pc.getStats(); } catch (_) { return; } // closed meanwhile
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') v = r;
      else if (r.type === 'inbound-rtp' && r.kind === 'audio') a = r;
      else if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
    });
    const l = { connection: pc.connectionState, ice: pc.iceConnectionState };
    if (v) {
      l.framesDecoded = v.framesDecoded || 0;
      l.framesDropped = v.framesDropped || 0;
      l.resolution = v.frameWidth ? `${v.frameWidth}×${v.frameHeight}` : '–';
      if (prevVideo && v.timestamp > prevVideo.timestamp) {
        const dt = (v.timestamp - prevVideo.timestamp) / 1000;
        l.fps = +((l.framesDecoded - (prevVideo.framesDecoded || 0)) / dt).toFixed(1);
        l.videoKbps = +(((v.bytesReceived - prevVideo.bytesReceived) * 8) / dt / 1000).toFixed(0);
      }
      prevVideo = v;
    }
    if (a) {
      l.audioSamplesReceived = a.totalSamplesReceived || 0;
      l.audioConcealedSamples = a.concealedSamples || 0;
      l.audioPacketsReceived = a.packetsReceived || 0;
    }
    if (pair && pair.currentRoundTripTime !== undefined) l.rttMs = +(pair.currentRoundTripTime * 1000).toFixed(1);
    if (S.pc === pc) {
      S.local = l;
      renderLocalStats();
    }
  }

  // ---- rendering ----------------------------------------------------------------------

  function setMediaStatus(text) { $('media-status').textContent = text; }

  function fillFacts(dl, entries) {
    dl.replaceChildren();
    for (const [k, v] of entries) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v === undefined || v === null || v === '' ? '–' : String(v);
      dl.append(dt, dd);
    }
  }

  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === 'object' && out.length < 60) flatten(v, key, out);
      else if (out.length < 60) out.push([key, typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(1) : v]);
    }
    return out;
  }

  function renderLocalStats() {
    const l = S.local;
    fillFacts($('local-stats'), S.pc ? [
      ['connection', l.connection], ['frames decoded', l.framesDecoded], ['fps', l.fps],
      ['resolution', l.resolution], ['frames dropped', l.framesDropped], ['video kbit/s', l.videoKbps],
      ['audio samples', l.audioSamplesReceived], ['audio concealed', l.audioConcealedSamples],
      ['RTT ms', l.rttMs],
    ] : [['viewer', 'not watching']]);
  }

  function render() {
    const s = S.session;
    const live = !!s && !TERMINAL.has(s.state);
    $('s-id').textContent = s ? s.id : '–';
    $('s-state').textContent = s ? s.state : '–';
    $('s-worker').textContent = s && s.worker_id ? s.worker_id : '–';
    $('s-gpu').textContent = s && s.worker_id ? String(s.gpu) : '–';
    $('s-avatar').textContent = s ? `${s.avatar || '–'} / ${s.voice || '–'}` : '–';
    $('s-end').textContent = s && s.end_reason ? s.end_reason + (s.end_message ? ': ' + s.end_message : '') : '–';
    for (const id of ['delete', 'speak', 'interrupt', 'watch', 'mic']) $(id).disabled = !live;
    $('create').disabled = !apiKey;
    $('attach').disabled = !apiKey;
    $('watch').textContent = S.wantWatch ? 'Stop watching' : 'Watch';
    $('watch').setAttribute('aria-pressed', String(S.wantWatch));
    $('mic').textContent = S.mic.on ? 'Microphone on' : 'Microphone off';
    $('mic').setAttribute('aria-pressed', String(S.mic.on));
    $('speaking').textContent = live && S.speaking ? 'speaking' : 'silent';
    $('speaking').classList.toggle('speaking', live && S.speaking);
    fillFacts($('server-stats'), S.serverStats ? flatten(S.serverStats, '', []) : [['stats', 'not reported by this control plane']]);
    renderLocalStats();
  }

  // ---- wiring ---------------------------------------------------------------------------

  S.setKey = setKey;
  S.createSession = createSession;
  S.openSession = openSession;
  S.deleteSession = deleteSession;
  S.watch = watch;
  S.stopWatching = () => stopWatching(false);
  S.speak = speak;
  S.interrupt = interrupt;
  S.toggleMic = toggleMic;
  S.parseLinkIceServers = parseLinkIceServers;

  function init() {
    $('key-form').addEventListener('submit', (ev) => { ev.preventDefault(); setKey($('key').value, $('remember').checked); info(apiKey ? 'API key set' : 'API key cleared'); });
    $('create-form').addEventListener('submit', (ev) => { ev.preventDefault(); createSession($('avatar').value.trim(), $('voice').value.trim()).catch(() => {}); });
    $('attach-form').addEventListener('submit', (ev) => { ev.preventDefault(); const id = $('attach-id').value.trim(); if (id) openSession(id).catch(() => {}); });
    $('delete').addEventListener('click', () => deleteSession());
    $('watch').addEventListener('click', () => (S.wantWatch ? stopWatching(false) : watch()));
    $('mic').addEventListener('click', () => toggleMic());
    $('speak-form').addEventListener('submit', (ev) => { ev.preventDefault(); const text = $('text').value.trim(); if (text) speak(text, $('speak-interrupt').checked); });
    $('interrupt').addEventListener('click', () => interrupt());
    window.addEventListener('pagehide', () => {
      // Free the publisher at once rather than at ICE timeout (the viewer
      // frees its own).
      if (S.mic.location && S.session && micToken) deleteResource(S.mic.location, micToken);
    });

    // Query parameters (README, "Demo page").
    catalog = new Catalog({ avatarSelect: $('avatar'), voiceSelect: $('voice'), previewImg: $('avatar-preview'),
      api, fetchImage, state: S.catalog, onError: fail });
    S.loadCatalog = () => catalog.load();
    for (const p of ['avatar', 'voice']) {
      if (params.get(p)) ensureOption($(p), params.get(p));
    }
    if (params.has('text')) $('text').value = params.get('text');
    if (params.get('muted') === '1') $('video').muted = true;
    let key = params.get('key') || '';
    let remember = !!key;
    if (params.has('key')) {
      // Keep the key out of the address bar, history and bookmarks.
      const clean = new URL(location.href);
      clean.searchParams.delete('key');
      history.replaceState(null, '', clean.pathname + clean.search + clean.hash);
    }
    if (!key) {
      try { key = sessionStorage.getItem(STORE_KEY) || ''; remember = !!key; } catch (_) { /* ignore */ }
    }
    render();
    if (key) setKey(key, remember);
    if (!apiKey) { $('key').focus(); return; }
    let sid = params.get('session') || '';
    if (!sid && params.get('create') !== '1') {
      try { sid = sessionStorage.getItem(STORE_SESSION) || ''; } catch (_) { /* ignore */ }
    }
    if (sid) openSession(sid).catch(() => {});
    else if (params.get('create') === '1') createSession($('avatar').value.trim(), $('voice').value.trim()).catch(() => {});
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
