/*!
 * persona.js — the browser side of persona-sdk's Django adapter. No dependencies.
 *
 * Include it with {% load persona %}{% persona_script %} (it reads its endpoints and the
 * edge timeout from the data-* attributes of its own <script> tag).
 *
 * Edge mode: every element <div data-persona-slot="hero" data-persona-state="pending"> (what
 * {% personalize "hero" edge %} renders) is decided with one request,
 * GET <decide-url>?slots=hero,banner (same-origin credentials, aborted after data-timeout ms);
 * the chosen <template data-persona-variant="key"> is swapped in and the state becomes
 * "done". On a timeout or an error the default stays and the state becomes "default".
 * Each slot element then fires a "persona:slot" event (detail: {slot, variant, default,
 * reason, state}).
 *
 * API (window.persona):
 *
 *   persona.consent.get()            → Promise of {purposes: {personalization: "granted" |
 *                                      "denied" | "unset", ...}, effective: {personalization:
 *                                      true, ...}, gpc: bool, mode: "opt-in" | "opt-out"}
 *   persona.consent.set({marketing: true, analytics: "denied"})
 *                                    → Promise of the same shape, after the choice is recorded
 *                                      (POST with the X-CSRFToken header); edge slots are
 *                                      decided again afterwards.
 *   persona.consent.onChange(fn)     → fn(state) after every change; returns an unsubscribe
 *                                      function.
 *   persona.track(event, properties) → Promise<boolean>: sends the event (sendBeacon, falling
 *                                      back to fetch keepalive) only when analytics consent is
 *                                      effective; resolves false when it was not sent.
 *   persona.page(name, properties)   → the same for a page view.
 *   persona.refresh()                → Promise: decide the edge slots again (e.g. after login).
 *   persona.ready                    → Promise resolved once the first edge pass is over.
 *
 * The CSRF token comes from the CSRF cookie (its name is data-csrf-cookie, default
 * "csrftoken"), else a data-csrf attribute on the script tag, else a csrfmiddlewaretoken
 * form field on the page. GET /persona/consent sets the cookie when it is missing.
 */
(function () {
  "use strict";
  if (window.persona && window.persona.__persona) return;

  var script = document.currentScript || document.querySelector("script[data-persona]");
  var data = (script && script.dataset) || {};
  var cfg = {
    decideUrl: data.decideUrl || "/persona/decide",
    consentUrl: data.consentUrl || "/persona/consent",
    eventUrl: data.eventUrl || "/persona/event",
    timeout: parseInt(data.timeout, 10),
    csrfCookie: data.csrfCookie || "csrftoken",
  };
  if (!(cfg.timeout >= 0)) cfg.timeout = 800;
  var MAX_SLOTS = 20;

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var pair = parts[i].replace(/^\s+/, "");
      if (pair.slice(0, name.length + 1) === name + "=") {
        try { return decodeURIComponent(pair.slice(name.length + 1)); } catch (e) { return null; }
      }
    }
    return null;
  }

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return readCookie(cfg.csrfCookie) || data.csrf || (field && field.value) || "";
  }

  function fetchJSON(url, options, timeoutMs) {
    options = options || {};
    options.credentials = "same-origin";
    options.headers = options.headers || {};
    options.headers.Accept = "application/json";
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = null;
    if (controller) {
      options.signal = controller.signal;
      if (timeoutMs != null) timer = setTimeout(function () { controller.abort(); }, timeoutMs);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (timer) clearTimeout(timer);
        if (!response.ok) {
          var err = new Error((body && body.error) || "HTTP " + response.status);
          err.status = response.status;
          err.body = body;
          throw err;
        }
        return body;
      });
    }, function (err) {
      if (timer) clearTimeout(timer);
      throw err;
    });
  }

  // -- edge slots ---------------------------------------------------------------------------
  function slotElements() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-persona-slot]"));
  }

  function ownTemplates(el) {
    var out = [];
    for (var i = 0; i < el.children.length; i++) {
      var child = el.children[i];
      if (child.tagName === "TEMPLATE" && child.hasAttribute("data-persona-variant")) out.push(child);
    }
    return out;
  }

  // Keep the server-rendered default in a <template data-persona-default> so a later
  // decision (refresh, consent change) can put it back.
  function defaultTemplate(el) {
    var tpl = el.__personaDefault;
    if (!tpl) {
      tpl = document.createElement("template");
      var nodes = Array.prototype.slice.call(el.childNodes);
      for (var i = 0; i < nodes.length; i++) {
        var node = nodes[i];
        if (node.nodeType === 1 && node.tagName === "TEMPLATE") continue;
        tpl.content.appendChild(node.cloneNode(true));
      }
      el.__personaDefault = tpl;
    }
    return tpl;
  }

  function show(el, tpl) {
    defaultTemplate(el);
    var nodes = Array.prototype.slice.call(el.childNodes);
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (node.nodeType === 1 && node.tagName === "TEMPLATE") continue;
      el.removeChild(node);
    }
    el.appendChild(document.importNode(tpl.content, true));
  }

  function settle(el, state, decision) {
    var name = el.getAttribute("data-persona-slot");
    var chosen = null;
    if (decision && !decision["default"]) {
      var templates = ownTemplates(el);
      for (var i = 0; i < templates.length; i++) {
        if (templates[i].getAttribute("data-persona-variant") === decision.variant) chosen = templates[i];
      }
    }
    if (chosen) {
      show(el, chosen);
      el.setAttribute("data-persona-variant", decision.variant);
    } else {
      if (el.hasAttribute("data-persona-variant")) show(el, defaultTemplate(el));
      el.removeAttribute("data-persona-variant");
    }
    el.setAttribute("data-persona-state", state);
    var detail = {
      slot: name,
      variant: chosen ? decision.variant : null,
      "default": !chosen,
      reason: decision ? decision.reason : state,
      state: state,
    };
    try {
      el.dispatchEvent(new CustomEvent("persona:slot", { detail: detail, bubbles: true }));
    } catch (e) { /* very old browsers: no CustomEvent constructor */ }
  }

  function decideAll() {
    var elements = slotElements();
    if (!elements.length) return Promise.resolve({});
    var names = [];
    elements.forEach(function (el) {
      var name = el.getAttribute("data-persona-slot");
      if (name && names.indexOf(name) < 0) names.push(name);
    });
    var batches = [];
    for (var i = 0; i < names.length; i += MAX_SLOTS) batches.push(names.slice(i, i + MAX_SLOTS));
    return Promise.all(batches.map(function (batch) {
      var url = cfg.decideUrl + (cfg.decideUrl.indexOf("?") < 0 ? "?" : "&") +
        "slots=" + encodeURIComponent(batch.join(",")) +
        "&page=" + encodeURIComponent(location.pathname + location.search) +
        (document.referrer ? "&ref=" + encodeURIComponent(document.referrer) : "");
      return fetchJSON(url, { method: "GET" }, cfg.timeout).then(function (body) {
        return (body && body.slots) || {};
      }, function (err) {
        if (window.console && console.warn) console.warn("persona: showing defaults:", err && err.message);
        return null;
      });
    })).then(function (results) {
      var decided = {};
      batches.forEach(function (batch, i) {
        batch.forEach(function (name) { decided[name] = results[i] ? results[i][name] || null : undefined; });
      });
      elements.forEach(function (el) {
        var d = decided[el.getAttribute("data-persona-slot")];
        if (d === undefined || d === null) settle(el, "default", null);
        else settle(el, "done", d);
      });
      return decided;
    });
  }

  // -- consent ------------------------------------------------------------------------------
  var consentState = null;
  var listeners = [];

  function remember(state) {
    var before = consentState ? JSON.stringify(consentState) : null;
    consentState = state;
    if (before !== null && before !== JSON.stringify(state)) {
      listeners.slice().forEach(function (fn) {
        try { fn(state); } catch (e) { if (window.console) console.error(e); }
      });
    }
    return state;
  }

  var consent = {
    get: function () {
      return fetchJSON(cfg.consentUrl, { method: "GET" }).then(remember);
    },
    set: function (choices) {
      var send = function () {
        return fetchJSON(cfg.consentUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify(choices || {}),
        });
      };
      // No CSRF token yet: a GET sets the cookie first.
      var ready = csrfToken() ? Promise.resolve() : consent.get().catch(function () {});
      return ready.then(send).then(function (state) {
        if (consentState === null) consentState = {};
        remember(state);
        return refresh().then(function () { return state; });
      });
    },
    onChange: function (fn) {
      listeners.push(fn);
      return function () {
        var i = listeners.indexOf(fn);
        if (i >= 0) listeners.splice(i, 1);
      };
    },
  };

  // -- events -------------------------------------------------------------------------------
  function knownConsent() {
    return consentState ? Promise.resolve(consentState) : consent.get();
  }

  function send(payload) {
    return knownConsent().then(function (state) {
      if (!state || !state.effective || !state.effective.analytics) return false;
      var body = JSON.stringify(payload);
      try {
        if (navigator.sendBeacon &&
            navigator.sendBeacon(cfg.eventUrl, new Blob([body], { type: "application/json" }))) {
          return true;
        }
      } catch (e) { /* fall through to fetch */ }
      return fetch(cfg.eventUrl, {
        method: "POST",
        credentials: "same-origin",
        keepalive: true,
        headers: { "Content-Type": "application/json" },
        body: body,
      }).then(function (r) { return r.ok; }, function () { return false; });
    }, function () { return false; });
  }

  function track(eventName, properties) {
    var payload = { event: String(eventName) };
    if (properties != null) payload.properties = properties;
    return send(payload);
  }

  function page(name, properties) {
    var payload = { type: "page" };
    if (name != null) payload.name = String(name);
    if (properties != null) payload.properties = properties;
    return send(payload);
  }

  function refresh() {
    return decideAll();
  }

  var api = {
    __persona: true,
    consent: consent,
    track: track,
    page: page,
    refresh: refresh,
    config: cfg,
  };
  window.persona = api;

  api.ready = new Promise(function (resolve) {
    var go = function () { resolve(decideAll().catch(function () { return {}; })); };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", go);
    else go();
  });
})();
