// avatarfleet.js: watch an AvatarFleet session in the browser. A small,
// dependency-free ES module served by the control plane at /avatarfleet.js
// (and /demo/avatarfleet.js).
//
//   import { AvatarViewer } from '/avatarfleet.js';
//   const v = new AvatarViewer({ sessionId, token, video: document.querySelector('video') });
//   v.addEventListener('moved', (e) => console.log('now on', e.detail.to));
//   v.start();
//   // ... later
//   v.close();
//
// It plays the session over WHEP (POST the offer to
// {base}/v1/sessions/{id}/whep with the viewer token, ICE servers from the
// answer's Link headers, DELETE the viewer resource on close) and follows
// the session when it moves to another worker: it reconnects, with
// exponential backoff and jitter, when the connection fails, stays
// disconnected, stops receiving media, or when the session's event stream
// (GET {base}/v1/sessions/{id}/events, viewer-token auth) says
// session.moved. It stops for good on session.ended / session.failed.
//
// Events (CustomEvent, details in the README, "Browser client"):
//   state        {state, previous}       idle → connecting → connected ⇄ reconnecting → ended | closed
//   connected    {connects, location, reconnect}
//   reconnecting {reason, attempt, delayMs}
//   moved        {from, to, reason, event}
//   ended        {state, reason, event}
//   error        {error, status, fatal}

const TERMINAL_EVENTS = new Set(['session.ended', 'session.failed']);

// Defaults of the options; every one may be given to the constructor.
export const defaults = Object.freeze({
  base: '', // the control plane's URL ('' = this page's origin)
  whepUrl: '', // default {base}/v1/sessions/{id}/whep
  iceServers: [], // used until the answer's Link headers name some
  followEvents: true, // open the session's event stream (EventSource)
  initialBackoffMs: 250, // first retry delay (the first reconnect is immediate)
  maxBackoffMs: 8000,
  jitter: 0.5, // each delay is scaled by a random factor in [1-jitter, 1]
  disconnectGraceMs: 2000, // 'disconnected' this long means reconnect
  stallMs: 3000, // no media bytes for this long while connected means reconnect (0: off)
  iceGatherTimeoutMs: 2000,
  requestTimeoutMs: 10000, // per WHEP POST
  maxNotFound: 3, // 404s in a row before the session counts as gone
  recentMs: 10000, // session.moved does not redo a reconnect made after a loss this recently
});

// parseLinkIceServers reads RFC 8288 Link headers with rel="ice-server"
// (WHEP's way to hand out STUN/TURN servers):
//   <turn:t.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"
export function parseLinkIceServers(header) {
  const out = [];
  if (!header) return out;
  for (const m of header.matchAll(/<([^>]*)>((?:\s*;\s*[^;,<]+(?:="[^"]*"|=[^;,]*)?)*)/g)) {
    const attrs = {};
    for (const a of m[2].matchAll(/;\s*([^=;,\s]+)\s*(?:=\s*(?:"([^"]*)"|([^;,]*)))?/g)) {
      attrs[a[1].toLowerCase()] = (a[2] !== undefined ? a[2] : (a[3] || '')).trim();
    }
    if (!(attrs.rel || '').split(/\s+/).includes('ice-server')) continue;
    const server = { urls: m[1] };
    if (attrs.username) server.username = attrs.username;
    if (attrs.credential) server.credential = attrs.credential;
    out.push(server);
  }
  return out;
}

// iceGatheringComplete resolves when gathering is done or after timeoutMs
// (non-trickle WHEP: the offer carries every candidate found by then).
export function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// deleteResource DELETEs a WHEP/WHIP resource; it resolves to the status
// (0 on a network error) and survives the page closing (keepalive).
export function deleteResource(url, token) {
  return fetch(url, { method: 'DELETE', headers: { Authorization: 'Bearer ' + token }, keepalive: true, cache: 'no-store' })
    .then((r) => r.status, () => 0);
}

// WHEPError is a refused WHEP request.
export class WHEPError extends Error {
  constructor(status, code, message) {
    super(`${status}${code ? ' ' + code : ''}: ${message}`);
    this.name = 'WHEPError';
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
  return new WHEPError(res.status, code, message);
}

// Worth retrying: network errors, 5xx, 409 session_not_ready, 429.
const retryable = (status) => status === 0 || status >= 500 || status === 409 || status === 429;

// AvatarViewer plays one session and follows it across workers.
export class AvatarViewer extends EventTarget {
  constructor(opts) {
    super();
    const o = Object.assign({}, defaults);
    for (const [k, v] of Object.entries(opts || {})) if (v !== undefined) o[k] = v;
    if (!o.sessionId) throw new TypeError('AvatarViewer: sessionId is required');
    if (!o.token) throw new TypeError('AvatarViewer: token (the session\'s viewer_token) is required');
    this.opts = o;
    this.base = String(o.base || '').replace(/\/+$/, '');
    this.sessionId = o.sessionId;
    this.token = o.token;
    this.video = o.video || null;
    const here = typeof document !== 'undefined' ? document.baseURI : undefined;
    this.whepUrl = new URL(o.whepUrl || `${this.base}/v1/sessions/${encodeURIComponent(o.sessionId)}/whep`, here).href;
    this.eventsUrl = new URL(`${this.base}/v1/sessions/${encodeURIComponent(o.sessionId)}/events`, here).href;
    this.iceServers = o.iceServers.slice();

    this.state = 'idle';
    this.pc = null; // the current RTCPeerConnection
    this.stream = null; // the MediaStream the video element plays
    this.location = ''; // the current WHEP resource (absolute URL)
    this.connects = 0; // connections that reached 'connected'
    this.attempt = 0; // failed attempts since the last good connection
    this.lastError = null;
    this.lastStatus = 0; // of the last WHEP POST (0: none yet, or a network error)
    this.lastEventId = '';
    this.workerId = ''; // from session.moved: where the session now runs

    this._gen = 0; // bumps on every (re)connect; stale callbacks check it
    this._timer = 0; // the pending reconnect
    this._graceTimer = 0;
    this._statsTimer = 0;
    this._notFound = 0;
    this._connectedAt = 0;
    this._connectedReason = '';
    this._es = null;
    this._esTimer = 0;
    this._esAttempt = 0;
    this._abort = null;
    this._onPageHide = () => this._dropResource();
  }

  // start connects and keeps the session playing until close() or its end.
  start() {
    if (this.state !== 'idle') return this;
    if (typeof window !== 'undefined') window.addEventListener('pagehide', this._onPageHide);
    if (this.opts.followEvents) this._openEvents();
    this._connect('start');
    return this;
  }

  // close stops for good: DELETE the viewer resource, close the connection
  // and the event stream.
  close() {
    if (this.state === 'closed' || this.state === 'ended') return;
    this._stop();
    this._setState('closed');
  }

  // ---- internals ---------------------------------------------------------------

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this._emit('state', { state, previous });
  }

  _done() { return this.state === 'closed' || this.state === 'ended'; }

  _stop() {
    this._gen++;
    clearTimeout(this._timer);
    clearTimeout(this._esTimer);
    if (this._abort) this._abort.abort();
    this._closePeer();
    if (this._es) this._es.close();
    this._es = null;
    if (typeof window !== 'undefined') window.removeEventListener('pagehide', this._onPageHide);
  }

  _end(reason, event) {
    if (this._done()) return;
    this._stop();
    this._setState('ended');
    this._emit('ended', { state: event && event.session ? event.session.state : 'ended', reason, event: event || null });
  }

  _fail(error, status, fatal) {
    this.lastError = error;
    this._emit('error', { error, status, fatal });
    if (fatal) {
      this._stop();
      this._setState('closed');
    }
  }

  _dropResource() {
    if (this.location) deleteResource(this.location, this.token);
    this.location = '';
  }

  _closePeer() {
    clearTimeout(this._graceTimer);
    clearInterval(this._statsTimer);
    this._dropResource();
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
  }

  // _reconnect schedules a new connection: the first after a good one at
  // once, then exponential backoff with jitter.
  _reconnect(reason) {
    if (this._done()) return;
    this._gen++; // callbacks of the old connection are stale from now
    clearTimeout(this._timer);
    if (this._abort) this._abort.abort();
    this._closePeer();
    const n = this.attempt++;
    let delayMs = 0;
    if (n > 0) {
      const o = this.opts;
      delayMs = Math.min(o.maxBackoffMs, o.initialBackoffMs * 2 ** (n - 1));
      delayMs = Math.round(delayMs * (1 - o.jitter * Math.random()));
    }
    this._setState('reconnecting');
    this._emit('reconnecting', { reason, attempt: n + 1, delayMs });
    this._timer = setTimeout(() => this._connect(reason), delayMs);
  }

  async _connect(reason) {
    if (this._done()) return;
    const gen = ++this._gen;
    const stale = () => gen !== this._gen || this._done();
    if (this.state === 'idle') this._setState('connecting');
    let status = 0;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    try {
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const stream = new MediaStream();
      pc.ontrack = (ev) => {
        if (stale()) return;
        stream.addTrack(ev.track);
        // Switch the picture only when the new connection has one: the
        // last frame of the old one stays up meanwhile.
        this.stream = stream;
        if (this.video && this.video.srcObject !== stream) {
          this.video.srcObject = stream;
          this._play();
        }
      };
      pc.onconnectionstatechange = () => { if (!stale()) this._onPeerState(pc, reason); };
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, this.opts.iceGatherTimeoutMs);
      if (stale()) return;
      const abort = new AbortController();
      this._abort = abort;
      const timer = setTimeout(() => abort.abort(), this.opts.requestTimeoutMs);
      let res;
      try {
        res = await fetch(this.whepUrl, {
          method: 'POST',
          headers: { Authorization: 'Bearer ' + this.token, 'Content-Type': 'application/sdp' },
          body: pc.localDescription.sdp,
          cache: 'no-store',
          signal: abort.signal,
        });
      } finally {
        clearTimeout(timer);
      }
      status = res.status;
      this.lastStatus = status;
      if (stale()) {
        const loc = res.headers.get('Location');
        if (res.status === 201 && loc) deleteResource(new URL(loc, this.whepUrl).href, this.token);
        return;
      }
      if (res.status !== 201) throw await errorOf(res);
      const answer = await res.text();
      const loc = res.headers.get('Location');
      this.location = loc ? new URL(loc, this.whepUrl).href : '';
      const ice = parseLinkIceServers(res.headers.get('Link'));
      if (ice.length) {
        this.iceServers = ice;
        try { pc.setConfiguration(Object.assign(pc.getConfiguration(), { iceServers: ice })); } catch (_) { /* keep */ }
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      this._notFound = 0;
    } catch (e) {
      if (stale()) return;
      status = status || e.status || 0;
      const err = e instanceof Error ? e : new Error(String(e));
      if (status === 404 && ++this._notFound >= this.opts.maxNotFound) {
        this._emit('error', { error: err, status, fatal: true });
        this._end('not_found', null);
        return;
      }
      if (status === 404 || retryable(status)) {
        this.lastError = err;
        this._emit('error', { error: err, status, fatal: false });
        this._reconnect('whep ' + (status || 'network error'));
      } else {
        this._fail(err, status, true);
      }
    }
  }

  _onPeerState(pc, reason) {
    const st = pc.connectionState;
    clearTimeout(this._graceTimer);
    if (st === 'connected') {
      this.attempt = 0;
      this.connects++;
      this._connectedAt = performance.now();
      this._connectedReason = reason;
      this._setState('connected');
      this._emit('connected', { connects: this.connects, location: this.location, reconnect: this.connects > 1, reason });
      this._watchMedia(pc);
    } else if (st === 'disconnected') {
      this._graceTimer = setTimeout(() => {
        if (this.pc === pc && pc.connectionState !== 'connected') this._reconnect('disconnected');
      }, this.opts.disconnectGraceMs);
    } else if (st === 'failed') {
      this._reconnect('ice failed');
    } else if (st === 'closed' && this.pc === pc) {
      this._reconnect('closed');
    }
  }

  // _watchMedia reconnects when no media bytes arrive for stallMs: a
  // worker killed without a word leaves ICE 'connected' for several seconds.
  _watchMedia(pc) {
    clearInterval(this._statsTimer);
    if (!this.opts.stallMs) return;
    let last = -1, lastAt = performance.now();
    this._statsTimer = setInterval(async () => {
      if (this.pc !== pc) return;
      let bytes = 0;
      try {
        (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') bytes += r.bytesReceived || 0; });
      } catch (_) { return; }
      const now = performance.now();
      if (bytes !== last) { last = bytes; lastAt = now; return; }
      if (this.pc === pc && now - lastAt >= this.opts.stallMs) this._reconnect('media stalled');
    }, Math.max(250, Math.min(1000, this.opts.stallMs / 3)));
  }

  _play() {
    const v = this.video;
    v.play().catch(() => {
      // No user gesture yet: autoplay allows only muted video.
      v.muted = true;
      v.play().catch(() => {});
    });
  }

  // ---- the session's event stream ------------------------------------------------

  _openEvents() {
    if (this._done() || typeof EventSource === 'undefined') return;
    const es = new EventSource(`${this.eventsUrl}?access_token=${encodeURIComponent(this.token)}`);
    this._es = es;
    const on = (type) => es.addEventListener(type, (m) => this._onEvent(type, m));
    for (const t of ['session.moved', 'session.ended', 'session.failed', 'message']) on(t);
    es.onopen = () => { this._esAttempt = 0; };
    es.onerror = () => {
      // EventSource retries by itself unless the server refused it (an
      // error status): then reopen with backoff.
      if (es.readyState !== EventSource.CLOSED || this._es !== es || this._done()) return;
      const n = this._esAttempt++;
      const delay = Math.min(30000, 1000 * 2 ** n) * (1 - this.opts.jitter * Math.random());
      this._esTimer = setTimeout(() => this._openEvents(), delay);
    };
  }

  _onEvent(type, m) {
    if (m.lastEventId) this.lastEventId = m.lastEventId;
    let e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    const t = e.type || type;
    if (e.session_id && e.session_id !== this.sessionId) return;
    if (TERMINAL_EVENTS.has(t)) {
      const s = e.session || {};
      this._end(s.end_reason || t.slice('session.'.length), e);
      return;
    }
    if (t !== 'session.moved') return;
    const s = e.session || {};
    const to = e.to_worker || s.worker_id || '';
    const from = e.from_worker || s.moved_from || '';
    if (to && to === this.workerId) return; // already followed
    this.workerId = to;
    this._emit('moved', { from, to, reason: e.reason || s.move_reason || '', event: e });
    // A connection made just now, after the old one was lost, is already
    // on the new worker (the old one cannot answer): keep it.
    if (this.state === 'connected' && !['start', 'moved'].includes(this._connectedReason) &&
        performance.now() - this._connectedAt < this.opts.recentMs) return;
    // The session is ready on its new worker: reconnect now, not after
    // ICE notices the old one is gone.
    this.attempt = 0;
    this._reconnect('moved');
  }
}

export default AvatarViewer;
