// Linea Diretta console: small progressive enhancements; every page works without them.
(function () {
  "use strict";
  var csrf = function () {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  };

  // Live notifications: poll the unread count; new ones appear as toasts, no reload needed.
  function startNotifications() {
    var url = document.body.getAttribute("data-notifications");
    if (!url) return;
    var badge = document.getElementById("notif-count");
    var toasts = document.getElementById("toasts");
    var latest = null;
    function poll() {
      var q = latest === null ? "" : "?after=" + latest;
      fetch(url + q, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) return;
          if (badge) {
            badge.textContent = data.unread;
            badge.hidden = data.unread === 0;
          }
          if (latest !== null) {
            data.items.forEach(function (n) {
              var el = document.createElement(n.url ? "a" : "div");
              el.className = "toast";
              el.textContent = n.at + " · " + n.text;
              if (n.url) el.href = n.url;
              toasts.appendChild(el);
              setTimeout(function () { el.remove(); }, 30000);
            });
          }
          latest = data.latest;
        })
        .catch(function () { /* offline for a moment: try again at the next tick */ });
    }
    poll();
    var every = parseInt(document.body.getAttribute("data-poll-ms") || "5000", 10);
    setInterval(poll, every);
  }

  // Answer archive: picking an answer fills the reply box, for editing.
  function startAnswerPickers() {
    document.querySelectorAll("select.answer-pick").forEach(function (sel) {
      sel.addEventListener("change", function () {
        var opt = sel.options[sel.selectedIndex];
        var target = document.getElementById(sel.getAttribute("data-target"));
        if (!target || !opt || !opt.getAttribute("data-text")) return;
        target.value = opt.getAttribute("data-text");
        target.dispatchEvent(new Event("input"));
        target.focus();
      });
    });
  }

  // Segment counter: the server renders the real SMS (template + reply) and counts it.
  function startSegmentCounters() {
    document.querySelectorAll("output.segments").forEach(function (out) {
      var target = document.getElementById(out.getAttribute("for"));
      if (!target) return;
      var timer = null;
      function update() {
        var body = new FormData();
        body.append("csrf_token", csrf());
        body.append("step", out.getAttribute("data-step"));
        body.append("text", target.value);
        fetch(out.getAttribute("data-preview"), {
          method: "POST", body: body, credentials: "same-origin",
          headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
        })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) {
            if (!data) return;
            out.textContent = data.hint;
            out.setAttribute("data-segments", data.segments);
            out.classList.toggle("warn", data.segments > 2);
          })
          .catch(function () {});
      }
      target.addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(update, 250);
      });
      update();
    });
  }

  function startAutosubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  }

  // Keyboard: "/" search, then "g t" triage, "g m" my cases, "g n" notifications, "g o" office.
  function startShortcuts() {
    var pending = false;
    var go = { t: "/console/triage", m: "/console/mine", n: "/console/notifications",
               o: "/console/office", s: "/console/search", d: "/console/dashboard" };
    document.addEventListener("keydown", function (e) {
      var tag = (e.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        var q = document.getElementById("q-top");
        if (q) { e.preventDefault(); q.focus(); }
        return;
      }
      if (pending && go[e.key]) { window.location.href = go[e.key]; pending = false; return; }
      pending = e.key === "g";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    startNotifications();
    startAnswerPickers();
    startSegmentCounters();
    startAutosubmit();
    startShortcuts();
  });
})();
