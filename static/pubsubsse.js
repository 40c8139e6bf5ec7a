/*! pubsubsse.js: browser client for pubsubsse (and the Go PubSub-SSE protocol). MIT licence. No dependencies.
 *
 *   const ps = new PubSubSSE({ baseUrl: "/sse" });
 *   ps.on("topics", (topics) => render(topics));        // Map id -> {id, type, subscribed}
 *   ps.on("update", (topicId, data) => show(topicId, data));
 *   ps.on("status", (status) => badge(status));          // connecting | open | reconnecting | closed | failed
 *   await ps.start();
 *   await ps.subscribe(topicId);
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
 * A refused stream is examined before anything is thrown away: an expired or bad ticket, a 503 or a 429
 * are retried with backoff and a fresh stream URL, resuming where the stream stopped; only "client not
 * found" registers a new client, at most `maxRegistrations` (3) times in `registrationWindow` (60 s),
 * with growing pauses; a server that keeps refusing leaves the client "failed" (call start() again).
 * Parameters go in the query string, so the client also works against the Go PubSub-SSE server.
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
    this.clientId = null;
    this.status = STATUS.CLOSED;
    this.lastEventId = null;
    /** Map of topic id -> {id, type, subscribed}; in the server's order (public, group, private). */
    this.topics = new Map();
    this._wanted = new Set(); // topics the app asked for, restored after re-registration
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

  /** Listen to "topics", "subscribed", "unsubscribed", "update", "status", "message" or "error". */
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
    return this._claim(stored).then(function (ownId) {
      return ownId ? ownId : self._register();
    }).then(function (id) {
      self._useClient(id);
      self._open(false);
      return id;
    });
  };

  /** Close the stream; the client stays registered on the server until it times out. */
  PubSubSSE.prototype.stop = function () {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._source) this._source.close();
    this._source = null;
    this._setStatus(STATUS.CLOSED);
  };

  PubSubSSE.prototype.subscribe = function (topicId) {
    this._wanted.add(topicId);
    return this._withClient("/sub", { topic: topicId });
  };

  PubSubSSE.prototype.unsubscribe = function (topicId) {
    this._wanted.delete(topicId);
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
        if (!self._stopped) self._open(false);
        return id;
      }).finally(function () { self._registering = null; });
    }
    return this._registering;
  };

  PubSubSSE.prototype._fail = function (error) {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._source) this._source.close();
    this._source = null;
    this._setStatus(STATUS.FAILED);
    this._emit("error", error);
  };

  PubSubSSE.prototype._open = function (resume) {
    var self = this;
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
    source.onmessage = function (event) {
      if (event.lastEventId) self.lastEventId = event.lastEventId;
      var message;
      try { message = JSON.parse(event.data); } catch (e) { self._emit("error", e); return; }
      self._handle(message);
    };
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
    var controller = typeof AbortController === "undefined" ? null : new AbortController();
    return this._streamUrl(true).then(function (url) {
      return fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "text/event-stream" },
        signal: controller ? controller.signal : undefined,
      });
    }).then(function (response) {
      if (response.ok) {
        if (controller) controller.abort();
        return null;
      }
      return response.json().catch(function () { return {}; }).then(function (json) {
        return json.error || ("HTTP " + response.status);
      });
    });
  };

  PubSubSSE.prototype._handle = function (message) {
    var self = this;
    var sys = message.sys || [];
    var kinds = sys.map(function (item) { return item.type; });
    var isInit = kinds.indexOf("topics") >= 0 && kinds.indexOf("subscribed") >= 0;
    var restore = [];
    sys.forEach(function (item) {
      var list = item.list || [];
      if (item.type === "topics") {
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
    (message.updates || []).forEach(function (update) {
      self._emit("update", update.topic, update.data);
    });
    this._emit("message", message);
  };

  if (typeof module === "object" && module.exports) module.exports = PubSubSSE;
  else root.PubSubSSE = PubSubSSE;
})(typeof self !== "undefined" ? self : this);
