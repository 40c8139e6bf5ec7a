/*
 * pubsubsse-html.js: live HTML streams (htmx's SSE extension, Turbo) resume where the page is.
 *
 * EventSource reconnects by itself when a connection drops, sending Last-Event-ID. But when a
 * reconnect is answered with an error (a proxy's 502 while the app restarts, a 503), it gives up
 * for good ("closed"). Then:
 *
 * - htmx's SSE extension opens a new EventSource on the same URL, which forgets the id of the
 *   last event the page received: the stream would start again from the URL's position. Loaded
 *   after htmx (before or after the extension), this script notes the id of every event the
 *   page receives and opens each new stream of that URL with last_event_id set to it.
 * - Turbo's <turbo-stream-source> stays closed. Use <pubsubsse-stream-source src="...">
 *   instead: the same element, which opens the stream again (after 0.5 s, doubling up to 30 s
 *   while it fails) from the id of the last event the page received.
 *
 *   <script src="/sse/pubsubsse-html.js"></script>
 */
(function () {
  "use strict";
  var FIRST_DELAY = 500;
  var LONGEST_DELAY = 30000;

  function resumed(url, position) {
    if (position === undefined || position === "") {
      return url;
    }
    var target = new URL(url, document.baseURI);
    target.searchParams.set("last_event_id", position);
    return target.toString();
  }

  if (typeof htmx !== "undefined") {
    var positions = {}; // a stream URL as the page wrote it -> the id of the last event received on it
    var open = htmx.createEventSource || function (url) {
      return new EventSource(url, { withCredentials: true });
    };
    htmx.createEventSource = function (url) {
      var source = open(resumed(url, positions[url]));
      var listen = source.addEventListener.bind(source);
      var noted = {};
      function note(event) {
        if (event.lastEventId) {
          positions[url] = event.lastEventId;
        }
      }
      // One noting listener per event type the page listens to, ahead of the page's own.
      source.addEventListener = function (type, listener, options) {
        if (!noted[type]) {
          noted[type] = true;
          listen(type, note);
        }
        return listen(type, listener, options);
      };
      return source;
    };
  }

  if (window.customElements && !customElements.get("pubsubsse-stream-source")) {
    class StreamSource extends HTMLElement {
      connectedCallback() {
        this._delay = FIRST_DELAY;
        this._open(this.getAttribute("src") || "");
      }

      disconnectedCallback() {
        this._close();
      }

      _open(url) {
        var source = new EventSource(url);
        this._source = source;
        window.Turbo.connectStreamSource(source);
        source.addEventListener("open", () => {
          this._delay = FIRST_DELAY;
        });
        source.addEventListener("message", (event) => {
          if (event.lastEventId) {
            this._position = event.lastEventId;
          }
        });
        source.addEventListener("error", () => {
          if (source.readyState !== EventSource.CLOSED || this._source !== source) {
            return; // EventSource reconnects by itself
          }
          this._close();
          this._timer = setTimeout(() => {
            this._open(resumed(this.getAttribute("src") || "", this._position));
          }, this._delay);
          this._delay = Math.min(this._delay * 2, LONGEST_DELAY);
        });
      }

      _close() {
        clearTimeout(this._timer);
        if (this._source) {
          this._source.close();
          window.Turbo.disconnectStreamSource(this._source);
          this._source = null;
        }
      }
    }
    customElements.define("pubsubsse-stream-source", StreamSource);
  }
})();
