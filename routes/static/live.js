/* The portal's live updates (progressive enhancement: without this script, or without EventSource, the pages
   are exactly as rendered and change on reload).

   The page names its stream in the live region's data-events (routes/templates/live.html); routes/events.py
   sends only changes of tickets this visitor may see, with what the page would show. On the list a changed
   row takes its new state and time, and the region offers to refresh for the new or updated tickets; on a
   ticket the state badge changes and new public replies join the thread. A ticket removed (deleted in
   Intercom) leaves the list, and its own page says it is gone. The region is aria-live="polite":
   screen readers hear each notice when they are idle. The browser resumes a dropped stream by itself,
   sending the last event's id (Last-Event-ID). Text goes in with textContent only, never as markup. */
(function () {
  "use strict";
  var region = document.querySelector("[data-events]");
  if (!region || !window.EventSource) {
    return;
  }
  var ticketId = region.getAttribute("data-ticket");
  var changed = {};
  var source = new EventSource(region.getAttribute("data-events"));

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function time(at, text, focusable) {
    var node = element("time", null, text);
    node.setAttribute("datetime", at.iso);
    node.title = at.exact;
    if (focusable) {
      node.tabIndex = 0;
    }
    return node;
  }

  function say(text, refresh) {
    region.textContent = text;
    if (refresh) {
      var link = element("a", null, "Refresh");
      link.href = window.location.href;
      region.appendChild(document.createTextNode(" "));
      region.appendChild(link);
    }
  }

  function setState(badge, data) {
    badge.className = "state state-" + data.category;
    badge.textContent = data.state;
  }

  function onList(data) {
    var row = document.querySelector('tr[data-ticket="' + CSS.escape(data.ticket) + '"]');
    if (data.kind === "removed") {
      if (row) {
        row.remove();
      }
      delete changed[data.ticket];
      say("Ticket #" + data.ticket + " was removed.", true);
      return;
    }
    if (row) {
      setState(row.querySelector(".col-state .state"), data);
      var cell = row.querySelector(".col-updated");
      cell.replaceChildren(time(data.updated, data.updated_ago));
    }
    changed[data.ticket] = true;
    var count = Object.keys(changed).length;
    say(count + (count === 1 ? " new or updated ticket." : " new or updated tickets."), true);
  }

  function part(reply) {
    var item = element("li", "message " + (reply.by_support ? "from-support" : "from-customer"));
    var avatar = element("span", "avatar", reply.initials);
    avatar.setAttribute("aria-hidden", "true");
    var bubble = element("div", "bubble");
    var meta = element("p", "meta");
    meta.appendChild(element("strong", null, reply.author));
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(element("span", "role", reply.by_support ? "Support" : "Customer"));
    meta.appendChild(document.createTextNode(" · "));
    meta.appendChild(time(reply.at, reply.ago, true));
    bubble.appendChild(meta);
    bubble.appendChild(element("p", "body", reply.body));
    item.appendChild(avatar);
    item.appendChild(bubble);
    return item;
  }

  function onTicket(data) {
    if (data.ticket !== ticketId) {
      return;
    }
    if (data.kind === "removed") {
      // Nothing more can come for a ticket that is gone.
      source.close();
      region.setAttribute("data-stream", "closed");
      say("This ticket was removed. It is no longer in your tickets.");
      return;
    }
    var badge = document.querySelector(".facts .state");
    var before = badge.textContent;
    setState(badge, data);
    var updated = document.querySelector(".facts .updated");
    var stamp = time(data.updated, data.updated.exact + " ");
    stamp.appendChild(element("span", "meta", "(" + data.updated_ago + ")"));
    updated.replaceChildren(stamp);
    if (data.parts) {
      var thread = document.querySelector(".conversation");
      if (!thread) {
        thread = element("ol", "conversation");
        var empty = document.querySelector(".ticket-body .empty");
        empty.replaceWith(thread);
      }
      var added = data.parts.slice(thread.children.length);
      added.forEach(function (reply) {
        thread.appendChild(part(reply));
      });
      if (added.length) {
        var last = added[added.length - 1];
        say(added.length === 1 ? "New reply from " + last.author + "." : added.length + " new replies.");
        return;
      }
    }
    if (before !== data.state) {
      say("State changed to " + data.state + ".");
    }
  }

  // The region says whether the stream is open (data-stream): for whoever needs to know that the page follows.
  source.addEventListener("open", function () {
    region.setAttribute("data-stream", "open");
  });
  source.addEventListener("error", function () {
    region.setAttribute("data-stream", source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  });
  source.addEventListener("ticket", function (event) {
    var data = JSON.parse(event.data);
    if (ticketId) {
      onTicket(data);
    } else {
      onList(data);
    }
  });
  // The stream missed changes it can no longer send, or what the visitor may see changed: the page as
  // rendered may be wrong, and only a new page is right.
  source.addEventListener("reload", function () {
    source.close();
    say("This page is out of date.", true);
  });
})();
