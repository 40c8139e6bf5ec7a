"""The demo's views: a page that listens to the "news" topic, and a form that publishes to it."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from pubsubsse.django import publish

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>pubsubsse on Django</title>
<h1>News</h1>
<form id="say"><input name="text" maxlength="200" autofocus> <button>Publish</button></form>
<ul id="feed"></ul>
<script src="/sse/pubsubsse.js"></script>
<script>
  const ps = new PubSubSSE({ baseUrl: "/sse" });
  ps.on("update", (topicId, data) => {
    const item = document.createElement("li");
    item.textContent = data.text;
    document.getElementById("feed").prepend(item);
  });
  ps.start()
    .then(() => ps.subscribe("T-news"))  // declared at startup: demo/apps.py
    .catch((error) => document.getElementById("feed").prepend("pubsubsse: " + error.message));
  document.getElementById("say").addEventListener("submit", (event) => {
    event.preventDefault();
    fetch("/say", { method: "POST", body: new FormData(event.target), headers: { "X-CSRFToken": "%(csrf)s" } });
    event.target.reset();
  });
</script>
"""


def index(request: HttpRequest) -> HttpResponse:
    """The page, which subscribes to "news" (T-news)."""
    from django.middleware.csrf import get_token

    return HttpResponse(PAGE % {"csrf": get_token(request)})


@require_POST
def say(request: HttpRequest) -> JsonResponse:
    """Publish the form's text to "news"."""
    text = request.POST.get("text", "").strip()[:200]
    if not text:
        return JsonResponse({"error": "empty"}, status=400)
    publish("news", {"text": text})
    return JsonResponse({"ok": True})
