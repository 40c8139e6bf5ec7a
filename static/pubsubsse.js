/*! pubsubsse.js: browser client for pubsubsse (and the Go PubSub-SSE protocol). MIT licence. No dependencies.
 *
 *   const ps = new PubSubSSE({ baseUrl: "/sse" });
 *   ps.on("topics", (topics) => render(topics));        // Map id -> {id, type, subscribed}
 *   ps.on("update", (topicId, data) => show(topicId, data));
 *   ps.on("status", (status) => badge(status));          // connecting | open | reconnecting | closed | failed
 *   ps.on("sharing", (tabs) => note(tabs));              // how many tabs share this tab's connection
 *   ps.on("reset", () => refetch());                     // messages may have been missed: fetch the state
 *   ps.on("presence", (topicId, p) => who(p.users));     // topics with live presence: {users, connections,
 *                                                        //   joined, left}; ps.presence.get(topicId) too
 *   await ps.start();
 *   await ps.subscribe(topicId);
 *   await ps.subscribe(jobTopic, { since: "start" });    // with what the topic keeps: a job's output so far
 *   ps.on("history", (topicId, h) => clear(topicId));    // its values follow, as "update"s ({messages, complete})
 *   ps.on("closed", (topicId) => done(topicId));         // Topic.close(): the topic takes no more messages
 *
 * It registers a client (/add/user) once per tab, opens the EventSource, keeps the topic catalog and the
 * subscription state from the `sys` messages, resumes after network drops (EventSource sends Last-Event-ID),
 * and registers a new client, re-subscribing what it can, when the server no longer knows the old one.
 *
 * When the server makes the clients and signs stream tickets (docs/authorization.md), say how to get both:
 *
 *   const me = () => fetch("/me").then((r) => r.json());     // {client_id, stream_url}
 *   const ps = new PubSubSSE({
 *     baseUrl: "/sse",
 *     register: () => me().then((m) => m.client_id),         // instead of POST /add/user
 *     streamUrl: () => me().then((m) => m.stream_url),       // asked again before every (re)connection
 *   });
 *
 * A page rendered by the server can start the stream where the rendering stopped (render, then stream):
 *
 *   new PubSubSSE({ baseUrl: "/sse", clientId: "{{ live.client_id }}", lastEventId: "{{ live.last_event_id }}",
 *                   topics: {{ live.topics | tojson }} })   // subscribed again if the client is ever gone
 *
 * A refused stream is examined before anything is thrown away: an expired or bad ticket, a 503 or a 429
 * are retried with backoff and a fresh stream URL, resuming where the stream stopped; only "client not
 * found" registers a new client, at most `maxRegistrations` (3) times in `registrationWindow` (60 s),
 * with growing pauses; a server that keeps refusing leaves the client "failed" (call start() again).
 * Parameters go in the query string, so the client also works against the Go PubSub-SSE server.
 *
 * Tabs share one connection: the tabs of an origin elect a leader (Web Locks) that holds the only stream
 * (/event/shared) and relays each tab's events (BroadcastChannel); each tab keeps its own client, and when
 * the leader closes another tab takes over and resumes every client where it stopped. ps.on("sharing", n)
 * tells how many tabs share it. Off with `shareConnection: false`, with `streamUrl`, where the browser
 * lacks Web Locks (plain http:// other than localhost), and against a server without /event/shared (the
 * Go server): there every tab opens its own stream.
 */
(function (root) {
  "use strict";

  var STATUS = {
    CONNECTING: "connecting", OPEN: "open", RECONNECTING: "reconnecting", CLOSED: "closed", FAILED: "failed",
  };

  function PubSubSSE(options) {
    options = options || {};
    this.baseUrl = (options.baseUrl || "").replace(/\/+$/, "");
    this.storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    this.storageKey = "pubsubsse:client:" + (this.baseUrl || "/");
    this.resubscribe = options.resubscribe !== false;
    this.maxBackoff = options.maxBackoff || 30000;
    this.maxRegistrations = options.maxRegistrations || 3;
    this.registrationWindow = options.registrationWindow || 60000;
    this._registrations = []; // when this client registered anew after a refusal (ms)
    this._registerFn = options.register || null;
    this._streamUrlFn = options.streamUrl || null;
    // One connection for every tab of this origin, unless stream URLs are the app's own (signed tickets).
    this.shareConnection = options.shareConnection !== false && !this._streamUrlFn && canShare();
    this._share = null;
    this.clientId = null;
    this.status = STATUS.CLOSED;
    // A page rendered by the server may hand over its client and the position it rendered at
    // (render, then stream): the stream then starts right after that position.
    this._givenClient = options.clientId || null;
    this.lastEventId = options.lastEventId != null ? String(options.lastEventId) : null;
    /** Map of topic id -> {id, type, subscribed}; in the server's order (public, group, private). */
    this.topics = new Map();
    /** Map of topic id -> {users: [sorted names], connections}, for subscribed topics with live presence. */
    this.presence = new Map();
    this._wanted = new Set(options.topics || []); // topics the app asked for, restored after re-registration
    this._fromStart = new Set(); // topics subscribed with {since: "start"} whose history has not come yet
    this._startTopics = new Set(); // every topic subscribed with {since: "start"}: asked again after a reset
    this._openWaiters = [];
    this._listeners = {};
    this._source = null;
    this._stopped = true;
    this._backoff = 500;
    this._timer = null;
    this._opening = 0; // counts _open calls, so that a slow streamUrl cannot open a stale stream
  }

  function safeSessionStorage() {
    try { return root.sessionStorage; } catch (e) { return null; }
  }

  PubSubSSE.STATUS = STATUS;

  /**
   * Listen to "topics", "subscribed", "unsubscribed", "update", "status", "message", "error", or "reset":
   * messages may have been missed (a resume the server could not serve, a new client registered after the
   * old one was gone), so what the page shows from the stream must be fetched again.
   */
  PubSubSSE.prototype.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return this;
  };

  PubSubSSE.prototype.off = function (event, fn) {
    var list = this._listeners[event] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  PubSubSSE.prototype._emit = function (event) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this._listeners[event] || []).slice().forEach(function (fn) {
      try { fn.apply(null, args); } catch (e) { if (root.console) root.console.error(e); }
    });
  };

  PubSubSSE.prototype._setStatus = function (status) {
    if (this.status !== status) {
      this.status = status;
      this._emit("status", status);
    }
    if (status === STATUS.OPEN) this._openWaiters.splice(0).forEach(function (resolve) { resolve(); });
  };

  // Resolves once a stream is open: what the server sends from then on reaches this page.
  PubSubSSE.prototype._whenOpen = function () {
    var self = this;
    if (this.status === STATUS.OPEN) return Promise.resolve();
    return new Promise(function (resolve) { self._openWaiters.push(resolve); });
  };

  /**
   * POST to `path` below baseUrl with `params` as a form body (for the app's own routes too); resolves
   * with the JSON answer, rejects with an Error carrying .status and .body.
   */
  PubSubSSE.prototype.call = function (path, params) {
    return this._post(this.baseUrl + path, { body: new URLSearchParams(params || {}) });
  };

  // The protocol's endpoints get their parameters in the query string, which every server reads (the Go
  // server reads nothing else).
  PubSubSSE.prototype._endpoint = function (path, params) {
    var query = new URLSearchParams(params || {}).toString();
    return this._post(this.baseUrl + path + (query ? "?" + query : ""), {});
  };

  PubSubSSE.prototype._post = function (url, init) {
    return fetch(url, Object.assign({ method: "POST", credentials: "same-origin" }, init))
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (json) {
          if (response.ok && json.ok === "true") return json;
          var error = new Error(json.error || ("HTTP " + response.status));
          error.status = response.status;
          error.body = json;
          throw error;
        });
      });
  };

  /** Register (or reuse this tab's client) and open the stream. Resolves once registered. */
  PubSubSSE.prototype.start = function () {
    var self = this;
    this._stopped = false;
    this._registrations = [];
    this._setStatus(STATUS.CONNECTING);
    var stored = this.storage ? this.storage.getItem(this.storageKey) : null;
    var given = this._givenClient;
    this._givenClient = null; // once: a later start() reuses or registers as usual
    return (given ? Promise.resolve(given) : this._claim(stored)).then(function (ownId) {
      return ownId ? ownId : self._register();
    }).then(function (id) {
      self._useClient(id);
      if (self.shareConnection && !self._share) {
        self._share = new Share(self);
        self._share.start();
      } else {
        self._open(!!self.lastEventId);
      }
      return id;
    });
  };

  /** Close the stream; the client stays registered on the server until it times out. */
  PubSubSSE.prototype.stop = function () {
    this._halt(STATUS.CLOSED);
  };

  // Stop everything: timers, this tab's stream, its part in the shared one.
  PubSubSSE.prototype._halt = function (status) {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._source) this._source.close();
    this._source = null;
    if (this._share) this._share.close();
    this._share = null;
    this._setStatus(status);
  };

  PubSubSSE.prototype.subscribe = function (topicId, options) {
    var self = this;
    this._wanted.add(topicId);
    if (!(options && options.since === "start")) return this._withClient("/sub", { topic: topicId });
    // The message that confirms the subscription holds every value the topic keeps; until it
    // comes, the topic's live values are among them, so they are not emitted twice. It is asked
    // for once a stream is open, which it must reach (a stream opened later starts after it).
    this._fromStart.add(topicId);
    this._startTopics.add(topicId);
    return this._whenOpen().then(function () {
      return self._withClient("/sub", { topic: topicId, since: "start" });
    }).catch(function (error) {
      self._fromStart.delete(topicId);
      throw error;
    });
  };

  PubSubSSE.prototype.unsubscribe = function (topicId) {
    this._wanted.delete(topicId);
    this._startTopics.delete(topicId);
    this._fromStart.delete(topicId);
    return this._withClient("/unsub", { topic: topicId });
  };

  PubSubSSE.prototype.createPrivateTopic = function () {
    return this._withClient("/add/topic/private/", {}).then(function (json) { return json.topic_id; });
  };

  PubSubSSE.prototype.removePrivateTopic = function (topicId) {
    return this._withClient("/remove/topic/private/", { topic: topicId });
  };

  PubSubSSE.prototype._withClient = function (path, params) {
    var self = this;
    var attempt = function () {
      return self._endpoint(path, Object.assign({ client_id: self.clientId }, params));
    };
    return attempt().catch(function (error) {
      if (error.status === 400 && error.body && error.body.error === "client not found") {
        return self._reRegister().then(attempt);
      }
      throw error;
    });
  };

  // A duplicated tab inherits sessionStorage: ask the other tabs whether the stored id is in use.
  PubSubSSE.prototype._claim = function (id) {
    var self = this;
    if (!id || typeof BroadcastChannel === "undefined") return Promise.resolve(id);
    if (!this._channel) {
      this._channel = new BroadcastChannel("pubsubsse");
      this._channel.onmessage = function (event) {
        var message = event.data || {};
        if (message.who && message.who === self.clientId) self._channel.postMessage({ mine: message.who });
      };
    }
    return new Promise(function (resolve) {
      var taken = false;
      var listener = function (event) { if (event.data && event.data.mine === id) taken = true; };
      self._channel.addEventListener("message", listener);
      self._channel.postMessage({ who: id });
      setTimeout(function () {
        self._channel.removeEventListener("message", listener);
        resolve(taken ? null : id);
      }, 80);
    });
  };

  PubSubSSE.prototype._register = function () {
    if (this._registerFn) return Promise.resolve(this._registerFn());
    return this._endpoint("/add/user").then(function (json) { return json.client_id; });
  };

  /** The stream URL for the current client, resuming after the last event seen if `resume`. */
  PubSubSSE.prototype._streamUrl = function (resume) {
    var self = this;
    var base = this._streamUrlFn
      ? Promise.resolve(this._streamUrlFn(this.clientId))
      : Promise.resolve(this.baseUrl + "/event?client_id=" + encodeURIComponent(this.clientId));
    return base.then(function (url) {
      if (resume && self.lastEventId) {
        url += (url.indexOf("?") >= 0 ? "&" : "?") + "last_event_id=" + encodeURIComponent(self.lastEventId);
      }
      return url;
    });
  };

  PubSubSSE.prototype._useClient = function (id) {
    this.clientId = id;
    if (this.storage) this.storage.setItem(this.storageKey, id);
  };

  // A server that keeps refusing new clients (or refuses for a reason this client misreads) must not get
  // a new client per refusal: at most `maxRegistrations` within `registrationWindow` ms, spaced by a
  // growing pause; beyond that the client stops with the status "failed" until start() is called again.
  PubSubSSE.prototype._reRegister = function () {
    var self = this;
    if (!this._registering) {
      var now = Date.now();
      var span = this.registrationWindow;
      this._registrations = this._registrations.filter(function (t) { return now - t < span; });
      if (this._registrations.length >= this.maxRegistrations) {
        this._fail(new Error("the server refused " + this._registrations.length + " new clients in a row: stopped"));
        return Promise.reject(new Error("registration stopped"));
      }
      var pause = this._registrations.length ? Math.min(1000 * Math.pow(2, this._registrations.length - 1), this.maxBackoff) : 0;
      this._registrations.push(now);
      this._registering = new Promise(function (resolve) { setTimeout(resolve, pause); }).then(function () {
        if (self._stopped) throw new Error("stopped");
        return self._register();
      }).then(function (id) {
        self._useClient(id);
        self.lastEventId = null;
        self._emit("registered", id);
        self._emit("reset");
        if (!self._stopped) self._open(false);
        return id;
      }).finally(function () { self._registering = null; });
    }
    return this._registering;
  };

  PubSubSSE.prototype._fail = function (error) {
    this._halt(STATUS.FAILED);
    this._emit("error", error);
  };

  PubSubSSE.prototype._open = function (resume) {
    var self = this;
    if (this._share && !this._share.solo) {
      this._share.join(resume);
      return Promise.resolve();
    }
    var attempt = ++this._opening;
    if (this._source) this._source.close();
    this._source = null;
    return this._streamUrl(resume).then(function (url) {
      if (self._stopped || attempt !== self._opening) return;
      self._connect(url);
    }, function (error) {
      self._emit("error", error);
      self._scheduleRecovery();
    });
  };

  PubSubSSE.prototype._connect = function (url) {
    var self = this;
    var source = new EventSource(url);
    this._source = source;
    source.onopen = function () {
      self._backoff = 500;
      self._setStatus(STATUS.OPEN);
    };
    source.onmessage = function (event) { self._deliver(event.lastEventId, event.data); };
    source.onerror = function () {
      if (self._stopped || self._source !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        self._setStatus(STATUS.RECONNECTING); // the browser resumes by itself with Last-Event-ID
        return;
      }
      // CLOSED: the server refused the stream. EventSource does not say why; recovery asks.
      source.close();
      self._source = null;
      self._setStatus(STATUS.RECONNECTING);
      self._scheduleRecovery();
    };
  };

  // Ask the server why the stream is refused (a GET of a fresh stream URL, dropped as soon as its answer
  // starts): a new client only if the old one is gone; otherwise resume with a fresh URL after a backoff.
  PubSubSSE.prototype._scheduleRecovery = function () {
    var self = this;
    clearTimeout(this._timer);
    this._timer = setTimeout(function () {
      if (self._stopped) return;
      self._refusal().then(function (reason) {
        if (self._stopped) return;
        if (reason === "client not found") return self._reRegister();
        if (reason) throw new Error("stream refused: " + reason);
        return self._open(true);
      }).catch(function (error) {
        self._emit("error", error);
        self._backoff = Math.min(self._backoff * 2, self.maxBackoff);
        self._scheduleRecovery();
      });
    }, this._backoff);
  };

  /** Resolves with the error the server gives for a stream of this client now, or null if it would open. */
  PubSubSSE.prototype._refusal = function () {
    return this._streamUrl(true).then(refusalOf);
  };

  // Resolves with the error the server gives for a stream at `url` now (a GET, dropped as soon as its
  // answer starts), or null if it would open. EventSource does not say why a stream was refused.
  function refusalOf(url) {
    var controller = typeof AbortController === "undefined" ? null : new AbortController();
    return fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "text/event-stream" },
      signal: controller ? controller.signal : undefined,
    }).then(function (response) {
      if (response.ok) {
        if (controller) controller.abort();
        return null;
      }
      if (response.status === 404) return "not found";
      return response.json().catch(function () { return {}; }).then(function (json) {
        return json.error || ("HTTP " + response.status);
      });
    });
  }

  /** One event of this client's stream (its own, or relayed by the tab that holds the shared one). */
  PubSubSSE.prototype._deliver = function (id, data) {
    if (id) this.lastEventId = id;
    var message;
    try { message = JSON.parse(data); } catch (e) { this._emit("error", e); return; }
    this._handle(message);
  };

  /** The shared connection no longer carries this client: register anew if it is gone, else rejoin. */
  PubSubSSE.prototype._ended = function (reason) {
    var self = this;
    if (this._stopped) return;
    if (reason === "removed" || reason === "client not found") {
      this._reRegister().catch(function (error) { self._emit("error", error); });
      return;
    }
    clearTimeout(this._timer);
    this._timer = setTimeout(function () { if (!self._stopped) self._open(true); }, this._backoff);
    this._backoff = Math.min(this._backoff * 2, this.maxBackoff);
  };

  PubSubSSE.prototype._handle = function (message) {
    var self = this;
    var sys = message.sys || [];
    var kinds = sys.map(function (item) { return item.type; });
    var isInit = kinds.indexOf("topics") >= 0 && kinds.indexOf("subscribed") >= 0;
    var reset = kinds.indexOf("reset") >= 0;
    var restore = [];
    var closed = [];
    if (isInit) this.presence = new Map(); // the init message lists the presence of every subscribed topic
    sys.forEach(function (item) {
      var list = item.list || [];
      if (item.type === "presence") {
        self._presence(item);
      } else if (item.type === "history") {
        self._fromStart.delete(item.topic);
        self._emit("history", item.topic, { messages: item.messages, complete: item.complete });
      } else if (item.type === "closed") {
        closed.push(item.topic); // after this message's values: a history ends with its closing
      } else if (item.type === "topics") {
        var next = new Map();
        list.forEach(function (t) {
          var old = self.topics.get(t.id);
          next.set(t.id, { id: t.id, type: t.type, subscribed: old ? old.subscribed && !isInit : false });
        });
        self.topics = next;
        self._emit("topics", self.topics);
      } else if (item.type === "subscribed" || item.type === "unsubscribed") {
        var on = item.type === "subscribed";
        list.forEach(function (t) {
          var topic = self.topics.get(t.id);
          if (topic) topic.subscribed = on;
          // Remember what this client should be subscribed to, so a re-registered client can restore it.
          // An "unsubscribed" for a topic that vanished (removed topic or client) keeps the wish.
          if (on) self._wanted.add(t.id);
          else if (topic) self._wanted.delete(t.id);
          if (!on) self.presence.delete(t.id);
        });
        self._emit(item.type, list.map(function (t) { return t.id; }));
        self._emit("topics", self.topics);
      }
    });
    if (isInit && this.resubscribe) {
      this._wanted.forEach(function (id) {
        var topic = self.topics.get(id);
        if (!topic) self._wanted.delete(id);
        else if (!topic.subscribed) restore.push(id);
      });
      restore.forEach(function (id) { self.subscribe(id).catch(function (e) { self._emit("error", e); }); });
    }
    if (reset) {
      // Messages may have been missed: the topics read from the start are read from the start again.
      this._startTopics.forEach(function (id) {
        if (self.topics.has(id)) self.subscribe(id, { since: "start" }).catch(function (e) { self._emit("error", e); });
      });
      this._emit("reset");
    }
    (message.updates || []).forEach(function (update) {
      if (!self._fromStart.has(update.topic)) self._emit("update", update.topic, update.data);
    });
    closed.forEach(function (id) { self._emit("closed", id); });
    this._emit("message", message);
  };

  // A full list (on subscription, in an init message) replaces what the page knew; a report applies changes.
  PubSubSSE.prototype._presence = function (item) {
    var known = this.presence.get(item.topic);
    var users = new Set(item.users || (known ? known.users : []));
    (item.joined || []).forEach(function (user) { users.add(user); });
    (item.left || []).forEach(function (user) { users.delete(user); });
    var state = { users: Array.from(users).sort(), connections: item.connections };
    this.presence.set(item.topic, state);
    this._emit("presence", item.topic, {
      users: state.users, connections: state.connections, joined: item.joined || [], left: item.left || [],
    });
  };

  // ---- One connection for every tab ---------------------------------------------------------------------
  //
  // The tabs of one origin (and baseUrl) elect a leader with the Web Locks API: the tab holding the lock
  // "<scope>:leader" holds the only stream, /event/shared, which carries every tab's client; it relays each
  // tab's events over a BroadcastChannel. Every tab keeps its own client, subscriptions and last event id.
  // A tab holds the lock "<scope>:tab:<id>" for its lifetime, so the leader learns when a tab closes or
  // crashes (its request for that lock is granted). When the leader goes, the browser grants the leader
  // lock to the next tab, which greets the others; each answers with its client and the id of the last
  // event it handled, and the new stream resumes every client from there: nothing lost, nothing twice.
  // A server without /event/shared (404: the Go server, an older pubsubsse) makes every tab open its own.

  var MAX_SHARED = 32; // clients per shared stream, as the server allows

  function canShare() {
    return typeof BroadcastChannel !== "undefined" && typeof EventSource !== "undefined" &&
      typeof navigator !== "undefined" && !!navigator.locks && typeof navigator.locks.request === "function";
  }

  function randomId() {
    return Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
  }

  function Share(ps) {
    var self = this;
    this.ps = ps;
    this.tab = randomId();
    this.scope = "pubsubsse:" + (ps.baseUrl || "/");
    this.channel = new BroadcastChannel(this.scope + ":share");
    this.channel.onmessage = function (event) { self._onMessage(event.data || {}); };
    this.leaderTab = null; // the tab whose relayed events this tab takes
    this.leader = null; // a Leader while this tab leads
    this.solo = false; // the server has no shared streams: this tab opens its own
    this.closed = false;
    this._abort = typeof AbortController === "undefined" ? null : new AbortController();
    this._release = null;
    this._resign = null;
  }

  Share.prototype._lock = function (name, callback) {
    var options = this._abort ? { signal: this._abort.signal } : {};
    return navigator.locks.request(this.scope + name, options, callback).catch(function () {});
  };

  Share.prototype.start = function () {
    var self = this;
    new Promise(function (granted) {
      self._lock(":tab:" + self.tab, function () {
        granted();
        return new Promise(function (release) { self._release = release; });
      });
    }).then(function () {
      if (self.closed) return;
      self._lock(":leader", function () {
        if (self.closed) return null;
        return new Promise(function (resign) {
          self._resign = resign;
          self.leaderTab = self.tab;
          self.leader = new Leader(self);
        });
      });
      self.join(false);
    });
  };

  /** Tell the leader (this tab's own, if it leads) which client this tab has and where it stands. */
  Share.prototype.join = function () {
    if (this.closed || this.solo || !this.ps.clientId) return;
    var me = { t: "join", tab: this.tab, client: this.ps.clientId, last: this.ps.lastEventId };
    if (this.leader) this.leader.onMessage(me);
    else this.channel.postMessage(me);
  };

  Share.prototype._onMessage = function (m) {
    if (this.closed) return;
    if (this.leader) { this.leader.onMessage(m); return; }
    var ps = this.ps;
    if (m.t === "hello") { // a new leader: take its events only, and tell it where this tab stands
      this.leaderTab = m.leader;
      this.join();
    } else if (m.t === "welcome" && m.tab === this.tab) {
      this.leaderTab = m.leader;
    } else if (m.t === "solo" && (!m.tab || m.tab === this.tab)) {
      this._goSolo(); // from any leader: it is about the server
    } else if (m.leader !== this.leaderTab) {
      return; // a former leader's late messages: the new one resumes from what this tab has handled
    } else if (m.t === "ev" && m.client === ps.clientId) {
      ps._deliver(m.id, m.data);
    } else if (m.t === "state") {
      ps._setStatus(m.status);
      ps._emit("sharing", m.tabs);
    } else if (m.t === "end" && m.client === ps.clientId) {
      ps._ended(m.reason);
    }
  };

  Share.prototype._goSolo = function () {
    if (this.solo) return;
    this.solo = true;
    this.ps._emit("sharing", 1);
    if (!this.ps._stopped) this.ps._open(!!this.ps.lastEventId);
  };

  Share.prototype.close = function () {
    if (this.closed) return;
    this.closed = true;
    if (this.leader) this.leader.close();
    else this.channel.postMessage({ t: "leave", tab: this.tab });
    if (this._abort) this._abort.abort();
    if (this._resign) this._resign();
    if (this._release) this._release();
    this.channel.close();
  };

  function Leader(share) {
    this.share = share;
    this.ps = share.ps;
    this.members = new Map(); // tab -> {client, last}
    this.watched = new Set();
    this.source = null;
    this.order = []; // the current stream's clients: [{tab, client}], by position
    this.status = STATUS.CONNECTING;
    this.backoff = 500;
    this.timer = null;
    this.solo = false;
    this.post({ t: "hello", leader: share.tab });
    this.onMessage({ t: "join", tab: share.tab, client: this.ps.clientId, last: this.ps.lastEventId });
    this.schedule(100); // the other tabs' answers arrive meanwhile
  }

  Leader.prototype.post = function (message) {
    message.leader = this.share.tab;
    this.share.channel.postMessage(message);
  };

  Leader.prototype.onMessage = function (m) {
    if (m.t === "join") {
      var own = m.tab === this.share.tab;
      if (this.solo) { if (!own) this.post({ t: "solo", tab: m.tab }); return; }
      if (!own) this.post({ t: "welcome", tab: m.tab });
      var known = this.members.get(m.tab);
      // A repeated join of the same client keeps the leader's position, which may be ahead of the tab's
      // (events relayed and not yet handled there).
      if (known && known.client === m.client) return;
      this.members.set(m.tab, { client: m.client, last: m.last || null });
      if (!own) this.watch(m.tab);
      this.schedule(30);
    } else if (m.t === "leave") {
      this.drop(m.tab);
    }
  };

  Leader.prototype.watch = function (tab) {
    var self = this;
    if (this.watched.has(tab)) return;
    this.watched.add(tab);
    this.share._lock(":tab:" + tab, function () { // granted once that tab is gone
      self.watched.delete(tab);
      self.drop(tab);
    });
  };

  Leader.prototype.drop = function (tab) {
    if (this.members.delete(tab)) this.schedule(30);
  };

  Leader.prototype.schedule = function (ms) {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.open(); }, ms);
  };

  Leader.prototype.setState = function (status) {
    if (status) this.status = status;
    this.post({ t: "state", status: this.status, tabs: this.members.size });
    this.ps._setStatus(this.status);
    this.ps._emit("sharing", this.members.size);
  };

  Leader.prototype.open = function () {
    var self = this;
    if (this.source) this.source.close();
    this.source = null;
    if (this.share.closed || this.solo) return;
    var order = [];
    var entries = [];
    this.members.forEach(function (member, tab) {
      if (order.length >= MAX_SHARED) { // beyond what one stream carries: that tab opens its own
        self.members.delete(tab);
        self.post({ t: "solo", tab: tab });
        return;
      }
      order.push({ tab: tab, client: member.client });
      entries.push(member.client + (member.last ? ":" + member.last : ""));
    });
    this.order = order;
    if (!order.length) return;
    var url = this.ps.baseUrl + "/event/shared?clients=" + encodeURIComponent(entries.join(","));
    var source = new EventSource(url);
    var opened = false;
    this.source = source;
    source.onopen = function () {
      opened = true;
      self.backoff = 500;
      self.setState(STATUS.OPEN);
    };
    order.forEach(function (entry, i) {
      source.addEventListener("c" + i, function (event) { self.relay(source, entry, event); });
    });
    source.addEventListener("end", function (event) {
      var notice;
      try { notice = JSON.parse(event.data); } catch (e) { return; }
      var entry = order[notice.client];
      var member = entry && self.members.get(entry.tab);
      if (source !== self.source || !member || member.client !== entry.client) return;
      self.members.delete(entry.tab); // the stream goes on without it; the tab joins again when ready
      self.tell(entry, { t: "end", client: entry.client, reason: notice.reason });
      self.setState();
    });
    source.onerror = function () {
      if (self.source !== source) return;
      // Never let EventSource reconnect by itself: its URL holds the positions of when it opened.
      source.close();
      self.source = null;
      self.setState(STATUS.RECONNECTING);
      if (opened) self.retry();
      else self.probe(url);
    };
  };

  Leader.prototype.relay = function (source, entry, event) {
    var member = this.members.get(entry.tab);
    if (source !== this.source || !member || member.client !== entry.client) return;
    if (event.lastEventId) member.last = event.lastEventId;
    this.tell(entry, { t: "ev", client: entry.client, id: event.lastEventId, data: event.data });
  };

  Leader.prototype.tell = function (entry, message) {
    if (entry.tab !== this.share.tab) { this.post(message); return; }
    if (message.t === "ev") this.ps._deliver(message.id, message.data);
    else this.ps._ended(message.reason);
  };

  Leader.prototype.retry = function () {
    this.schedule(this.backoff);
    this.backoff = Math.min(this.backoff * 2, this.ps.maxBackoff);
  };

  // The stream was refused before it opened: ask why.
  Leader.prototype.probe = function (url) {
    var self = this;
    refusalOf(url).then(function (reason) {
      if (self.share.closed) return;
      if (reason === "not found") { // no shared streams here (the Go server): every tab opens its own
        self.solo = true;
        self.post({ t: "solo" });
        self.share._goSolo();
        return;
      }
      if (reason === "client not found") { // none of the clients exists any more
        self.order.forEach(function (entry) {
          self.members.delete(entry.tab);
          self.tell(entry, { t: "end", client: entry.client, reason: reason });
        });
        return;
      }
      if (reason) self.ps._emit("error", new Error("shared stream refused: " + reason));
      self.retry();
    }, function (error) {
      self.ps._emit("error", error);
      self.retry();
    });
  };

  Leader.prototype.close = function () {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.post({ t: "leave", tab: this.share.tab });
  };

  if (typeof module === "object" && module.exports) module.exports = PubSubSSE;
  else root.PubSubSSE = PubSubSSE;
})(typeof self !== "undefined" ? self : this);
