/* The demo page: renders what pubsubsse.js reports. */
(function () {
  "use strict";
  var ps = new PubSubSSE({ baseUrl: "" });
  var names = {};
  var tickerId = document.body.dataset.ticker;
  var chatId = document.body.dataset.chat;
  var initial = JSON.parse(document.getElementById("initial").textContent);
  var history = [];
  var inGroup = false;
  var events = 0;
  var $ = function (id) { return document.getElementById(id); };

  function short(id) { return id ? id.slice(0, 10) + "…" : "…"; }
  function nameOf(id) { return names[id] || short(id); }

  function post(path, params) {
    return ps.call(path, Object.assign({ client_id: ps.clientId }, params || {}));
  }

  function refreshNames() {
    return fetch("/demo/names?client_id=" + encodeURIComponent(ps.clientId))
      .then(function (r) { return r.ok ? r.json() : {}; })
      .then(function (map) {
        names = Object.assign(names, map);
        render();
      });
  }

  // Until the stream's first message, the topics the server said a new tab will see.
  var shown = new Map();
  initial.topics.forEach(function (t) { names[t.id] = t.name; shown.set(t.id, t); });

  function render() {
    var topics = ps.topics.size ? ps.topics : shown;
    var list = $("topic-list");
    list.textContent = "";
    var select = $("publish-topic");
    var chosen = select.value;
    select.textContent = "";
    topics.forEach(function (topic) {
      var li = document.createElement("li");
      li.dataset.topic = topic.id;
      li.dataset.testid = "topic";
      li.setAttribute("data-testid", "topic");
      li.setAttribute("data-name", nameOf(topic.id));
      li.className = topic.subscribed ? "subscribed" : "";
      var type = document.createElement("span");
      type.className = "type type-" + topic.type;
      type.textContent = topic.type;
      var name = document.createElement("span");
      name.className = "name";
      name.textContent = nameOf(topic.id);
      name.title = topic.id;
      var toggle = document.createElement("button");
      toggle.className = topic.subscribed ? "on" : "";
      toggle.textContent = topic.subscribed ? "Subscribed" : "Subscribe";
      toggle.setAttribute("data-testid", "toggle");
      toggle.onclick = function () {
        (topic.subscribed ? ps.unsubscribe(topic.id) : ps.subscribe(topic.id)).catch(showError);
      };
      li.append(type, name, toggle);
      if ((topic.type === "public" && topic.id !== tickerId) || topic.type === "private") {
        var remove = document.createElement("button");
        remove.className = "ghost";
        remove.textContent = "✕";
        remove.title = "Remove topic";
        remove.setAttribute("data-testid", "remove");
        remove.onclick = function () {
          var done = topic.type === "public"
            ? post("/demo/topic/public/remove", { topic: topic.id }) : ps.removePrivateTopic(topic.id);
          done.catch(showError);
        };
        li.append(remove);
      }
      list.append(li);
      // The chat box offers the topics this tab hears (a message sent elsewhere would not show
      // here), never the ticker (the server's feed).
      if (topic.id === tickerId || !topic.subscribed) return;
      var option = document.createElement("option");
      option.value = topic.id;
      option.textContent = nameOf(topic.id) + " (" + topic.type + ")";
      select.append(option);
    });
    var offered = function (id) { return Array.prototype.some.call(select.options, function (o) { return o.value === id; }); };
    if (chosen && offered(chosen)) select.value = chosen;
    else if (offered(chatId)) select.value = chatId;
    if (!select.options.length) {
      var none = document.createElement("option");
      none.textContent = "subscribe to a topic to chat";
      none.value = "";
      select.append(none);
    }
    select.disabled = $("publish-send").disabled = !select.value;
    $("no-topics").hidden = topics.size > 0;
    var groupVisible = false;
    topics.forEach(function (t) { if (t.type === "group") groupVisible = true; });
    inGroup = groupVisible;
    $("group-toggle").textContent = inGroup ? "Leave the lobby group" : "Join the lobby group";
  }

  function addFeed(topicId, text, cls) {
    var li = document.createElement("li");
    li.className = cls || "";
    li.setAttribute("data-testid", "feed-item");
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = nameOf(topicId) + " · " + new Date().toLocaleTimeString();
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    li.append(meta, body);
    var feed = $("feed");
    feed.prepend(li);
    while (feed.children.length > 60) feed.lastChild.remove();
  }

  function showTicker(data) {
    var previous = history.length ? history[history.length - 1] : data.value;
    history.push(data.value);
    if (history.length > 60) history.shift();
    $("ticker-value").textContent = data.value.toFixed(2);
    $("ticker-n").textContent = data.n;
    var delta = data.value - previous;
    $("ticker-delta").textContent = (delta >= 0 ? "▲ " : "▼ ") + Math.abs(delta).toFixed(2);
    $("ticker-delta").className = "delta " + (delta >= 0 ? "up" : "down");
    var min = Math.min.apply(null, history), max = Math.max.apply(null, history);
    var span = max - min || 1;
    $("spark").setAttribute("points", history.map(function (v, i) {
      return (i * 300 / Math.max(history.length - 1, 1)).toFixed(1) + "," + (56 - (v - min) / span * 52).toFixed(1);
    }).join(" "));
  }

  function showError(error) { addFeed(null, "⚠ " + error.message, "sys"); }

  // The first connection takes a moment: "connecting" shows only if it takes more than a second
  // (a pill that flashes by says nothing), any other status at once.
  var showStatus = function () { $("status").style.visibility = "visible"; };
  var slowStart = setTimeout(showStatus, 1000);
  ps.on("status", function (status) {
    $("status").textContent = status;
    $("status").className = "pill pill-" + status;
    if (status !== "connecting") { clearTimeout(slowStart); showStatus(); }
  });
  ps.on("sharing", function (tabs) {
    $("sharing").textContent = tabs > 1 ? "sharing a connection with " + tabs + " tabs" : "own connection";
  });
  ps.on("registered", function (id) { $("client-id").textContent = short(id); });
  ps.on("topics", function (topics) {
    var unknown = false;
    topics.forEach(function (t) { if (!(t.id in names)) unknown = true; });
    if (unknown) refreshNames(); else render();
  });
  ps.on("presence", function (topicId, presence) {
    if (topicId !== chatId) return;
    $("in-chat").textContent = presence.users.join(", ") || "nobody yet";
    $("chat-tabs").textContent = "(" + presence.connections + (presence.connections === 1 ? " tab)" : " tabs)");
  });
  ps.on("message", function () { events += 1; $("event-count").textContent = events; });
  ps.on("update", function (topicId, data) {
    if (topicId === tickerId && data && typeof data.value === "number") { showTicker(data); return; }
    var text = data && typeof data === "object" && "text" in data ? data.from + ": " + data.text : JSON.stringify(data);
    addFeed(topicId, text);
  });

  $("new-topic").onsubmit = function (event) {
    event.preventDefault();
    post("/demo/topic/public", { name: $("topic-name").value }).then(function () { $("topic-name").value = ""; })
      .catch(showError);
  };
  $("create-private").onclick = function () {
    post("/demo/topic/private", { name: $("topic-name").value }).then(function () { $("topic-name").value = ""; })
      .catch(showError);
  };
  $("group-toggle").onclick = function () {
    post("/demo/group/" + (inGroup ? "leave" : "join")).catch(showError);
  };
  $("publish").onsubmit = function (event) {
    event.preventDefault();
    var text = $("publish-text").value;
    if (!text) return;
    post("/demo/publish", { topic: $("publish-topic").value, text: text })
      .then(function () { $("publish-text").value = ""; }).catch(showError);
  };

  initial.ticks.forEach(showTicker);
  render();
  ps.start().then(function (id) { $("client-id").textContent = short(id); }).catch(showError);
  window.demo = ps;
})();
