"""The demo app plus test-only control routes, for the browser tests."""

from __future__ import annotations

from flask import jsonify, request

from example.app import create_app, pubsub

app = create_app()
with app.app_context():
    service = pubsub.service

GO_CLIENT_PAGE = """<!doctype html><meta charset="utf-8"><title>go-shaped client</title>
<script>
// Written the way a client of the Go server is: /add/user, then EventSource, then onmessage.
window.log = [];
fetch('/add/user').then(r => r.json()).then(j => {
  window.clientId = j.client_id;
  const es = new EventSource('/event?client_id=' + j.client_id);
  es.onmessage = e => {
    const m = JSON.parse(e.data);
    if (m.sys) m.sys.forEach(s => window.log.push({sys: s.type, n: (s.list || []).length}));
    if (m.updates) m.updates.forEach(u => window.log.push({topic: u.topic, data: u.data}));
  };
});
</script>"""


@app.get("/test/ready")
def ready():
    return jsonify({"ok": True})


@app.post("/test/drop")
def drop_streams():
    service.close()
    return jsonify({"ok": True})


@app.post("/test/forget")
def forget_client():
    client = service.get_client_by_id(request.get_json()["client_id"])
    service.remove_client(client)
    return jsonify({"ok": True})


@app.post("/test/pub")
def pub():
    body = request.get_json()
    topic = service.get_public_topic_by_id(body["topic"])
    for item in body["data"]:
        topic.pub(item)
    return jsonify({"ok": True})


@app.get("/test/go-client.html")
def go_client():
    return GO_CLIENT_PAGE
