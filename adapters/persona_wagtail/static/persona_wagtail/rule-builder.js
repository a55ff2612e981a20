/* persona-sdk rule builder for the Wagtail admin (no build step, no dependencies).
 *
 * Enhances every [data-persona-rule-builder] (a textarea holding a rule in the JSON form)
 * into nested groups of condition rows, and every textarea[data-persona-rule] (a block's rule
 * field) with a live check. After each change the rule is sent to the check endpoint, which
 * compiles it on the server (the rule is never evaluated as code anywhere) and answers with
 * the error and where it is, or how many stored profiles match.
 */
(function () {
  "use strict";

  var GROUPS = [
    ["$and", "ALL of"],
    ["$or", "ANY of"],
    ["$nor", "NONE of"],
    ["$not", "NOT"],
  ];
  var OPERATORS = [
    ["$eq", "is", "any"],
    ["$ne", "is not", "any"],
    ["$gt", ">", "number"],
    ["$gte", "≥", "number"],
    ["$lt", "<", "number"],
    ["$lte", "≤", "number"],
    ["$in", "is one of", "list"],
    ["$nin", "is none of", "list"],
    ["$all", "contains all of", "list"],
    ["$size", "has length", "number"],
    ["$exists", "exists", "bool"],
    ["$regex", "matches (regex)", "string"],
  ];
  var KIND = {};
  OPERATORS.forEach(function (o) { KIND[o[0]] = o[2]; });
  var uid = 0;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

  // -- text <-> values ---------------------------------------------------------------------
  function looksLikeJson(text) {
    try { JSON.parse(text); return true; } catch (e) { return false; }
  }

  function valueToText(value, kind) {
    if (kind === "bool") return value === false ? "false" : "true";
    if (kind === "list" && Array.isArray(value) &&
        value.every(function (v) { return typeof v === "string" && !/[,"\[\]]/.test(v) && v.trim() === v && v !== "" && !looksLikeJson(v); })) {
      return value.join(", ");
    }
    if (kind === "string" && typeof value === "string") return value;
    if (typeof value === "string") return looksLikeJson(value) ? JSON.stringify(value) : value;
    return JSON.stringify(value);
  }

  /** [value, problem] for the text typed for an operator of `kind`. */
  function textToValue(text, kind) {
    var t = (text || "").trim();
    if (kind === "bool") return [t !== "false", null];
    if (kind === "string") return [text || "", text ? null : "enter a pattern"];
    if (t === "") return ["", "enter a value"];
    if (kind === "number") {
      var n = Number(t);
      return isFinite(n) ? [n, null] : [t, "“" + t + "” is not a number"];
    }
    if (kind === "list") {
      if (t.charAt(0) === "[") {
        try {
          var arr = JSON.parse(t);
          return Array.isArray(arr) ? [arr, null] : [t, "a list, e.g. a, b or [\"a\", 1]"];
        } catch (e) { return [t, "not a valid JSON list"]; }
      }
      return [t.split(",").map(function (s) { return s.trim(); }).filter(Boolean).map(function (s) {
        if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
        if (s === "true" || s === "false") return s === "true";
        return s;
      }), null];
    }
    try { return [JSON.parse(t), null]; } catch (e) { return [t, null]; }
  }

  // -- JSON -> model -----------------------------------------------------------------------
  function parseNode(obj) {
    if (!isObject(obj)) return { type: "raw", json: JSON.stringify(obj) };
    var keys = Object.keys(obj);
    if (keys.length === 0) return { type: "raw", json: "{}" };
    if (keys.length > 1) {
      return { type: "group", op: "$and", children: keys.map(function (k) {
        var one = {}; one[k] = obj[k]; return parseNode(one);
      }) };
    }
    var key = keys[0], val = obj[key];
    if (key === "$and" || key === "$or" || key === "$nor") {
      if (Array.isArray(val) && val.length) return { type: "group", op: key, children: val.map(parseNode) };
      return { type: "raw", json: JSON.stringify(obj) };
    }
    if (key === "$not") return { type: "group", op: "$not", children: [parseNode(val)] };
    if (key === "$segment" && typeof val === "string") return { type: "segment", name: val };
    if (key.charAt(0) === "$") return { type: "custom", name: key.slice(1), arg: JSON.stringify(val) };
    if (isObject(val)) {
      var ops = Object.keys(val);
      if (ops.length === 1 && KIND[ops[0]]) {
        return { type: "field", path: key, op: ops[0], text: valueToText(val[ops[0]], KIND[ops[0]]) };
      }
      return { type: "raw", json: JSON.stringify(obj) };
    }
    return { type: "field", path: key, op: "$eq", text: valueToText(val, "any") };
  }

  function parseRoot(spec) {
    if (isObject(spec) && Object.keys(spec).length === 0) return { type: "group", op: "$and", children: [] };
    var node = parseNode(spec);
    if (node.type === "group") return node;
    return { type: "group", op: "$and", children: [node] };
  }

  // -- model -> JSON (with the `where` of each node, as the server names places) -----------
  function serialize(node, where, out) {
    node.where = where;
    node.problem = null;
    if (node.type === "group") {
      if (!node.children.length) {
        node.problem = "add a condition to this group";
        out.problems++;
        return node.op === "$not" ? { "$not": {} } : (function () { var o = {}; o[node.op] = []; return o; })();
      }
      if (node.op === "$not") {
        var inner = node.children.length === 1
          ? serialize(node.children[0], where + ".$not", out)
          : { "$and": node.children.map(function (c, i) { return serialize(c, where + ".$not.$and[" + i + "]", out); }) };
        return { "$not": inner };
      }
      var o = {};
      o[node.op] = node.children.map(function (c, i) { return serialize(c, where + "." + node.op + "[" + i + "]", out); });
      return o;
    }
    if (node.type === "segment") {
      if (!node.name) { node.problem = "choose a segment"; out.problems++; }
      return { "$segment": node.name || "" };
    }
    if (node.type === "custom") {
      var arg;
      try { arg = JSON.parse(node.arg || "null"); } catch (e) {
        arg = node.arg; node.problem = "the argument is not valid JSON"; out.problems++;
      }
      var c = {}; c["$" + (node.name || "")] = arg; return c;
    }
    if (node.type === "raw") {
      try {
        var parsed = JSON.parse(node.json);
        if (!isObject(parsed)) throw new Error("not an object");
        return parsed;
      } catch (e) {
        node.problem = "not a JSON object"; out.problems++; out.invalid = true; return {};
      }
    }
    var path = (node.path || "").trim();
    node.where = where + "." + path;
    if (!path) { node.problem = "choose a field"; out.problems++; }
    else if (/<[^>]*>/.test(path)) { node.problem = "replace the <…> part of the path"; out.problems++; }
    var res = textToValue(node.text, KIND[node.op]);
    if (res[1]) { node.problem = res[1]; out.problems++; }
    var f = {};
    if (node.op === "$eq" && !Array.isArray(res[0]) && !isObject(res[0])) f[path] = res[0];
    else { var inner2 = {}; inner2[node.op] = res[0]; f[path] = inner2; }
    return f;
  }

  function toSpec(root, out) {
    if (root.op === "$and" && root.children.length === 0) { root.where = "rule"; root.problem = null; return {}; }
    return serialize(root, "rule", out);
  }

  // -- the builder -------------------------------------------------------------------------
  function Builder(container) {
    this.container = container;
    this.textarea = container.querySelector("textarea");
    this.tree = container.querySelector(".prb-tree");
    this.status = container.querySelector(".prb-status");
    this.details = container.querySelector(".prb-json");
    var data = container.querySelector('script[type="application/json"]');
    this.catalogue = data ? JSON.parse(data.textContent) : { paths: [], conditions: [], segments: [], namespaces: [] };
    this.checkUrl = container.getAttribute("data-check-url");
    this.form = container.closest("form");
    this.timer = null;
    this.seq = 0;
    this.listId = "prb-paths-" + (++uid);
    var self = this;
    var spec = {};
    try { spec = JSON.parse(this.textarea.value || "{}"); } catch (e) { spec = null; }
    this.root = spec === null ? { type: "group", op: "$and", children: [{ type: "raw", json: this.textarea.value }] } : parseRoot(spec);
    if (this.details) this.details.removeAttribute("open");
    this.textarea.addEventListener("input", function () {
      try {
        self.root = parseRoot(JSON.parse(self.textarea.value || "{}"));
        self.render(false);
      } catch (e) {
        self.show("error", "The JSON is not valid: " + e.message);
        return;
      }
      self.schedule();
    });
    var nameInput = this.form && this.form.querySelector('input[name="name"]');
    if (nameInput) nameInput.addEventListener("input", function () { self.schedule(); });
    this.paths = el("datalist", { id: this.listId }, this.catalogue.paths.map(function (p) {
      return el("option", { value: p.path, text: p.doc });
    }));
    container.appendChild(this.paths);
    container.classList.add("prb-ready");
    // the stored JSON is kept as it is until the editor changes something
    this.render(false);
    this.schedule();
  }

  Builder.prototype.changed = function () {
    this.render(true);
  };

  Builder.prototype.render = function (writeBack) {
    var out = { problems: 0, invalid: false };
    var spec = toSpec(this.root, out);
    if (writeBack) {
      if (!out.invalid) this.textarea.value = JSON.stringify(spec, null, 2);
      this.schedule();
    }
    this.out = out;
    var focused = document.activeElement;
    var focusKey = focused && focused.getAttribute && focused.getAttribute("data-prb-focus");
    var caret = focusKey && typeof focused.selectionStart === "number" ? focused.selectionStart : null;
    this.tree.textContent = "";
    this.tree.appendChild(this.renderGroup(this.root, null, "r"));
    if (focusKey) {
      var again = this.tree.querySelector('[data-prb-focus="' + focusKey + '"]');
      if (again) {
        again.focus();
        if (caret !== null && typeof again.setSelectionRange === "function") {
          try { again.setSelectionRange(caret, caret); } catch (e) { /* not a text input */ }
        }
      }
    }
    if (out.problems) this.show("error", out.problems === 1 ? "1 problem to fix (marked below)." : out.problems + " problems to fix (marked below).");
  };

  Builder.prototype.renderGroup = function (group, parent, key) {
    var self = this;
    var box = el("div", { className: "prb-group", "data-where": group.where || "" });
    var select = el("select", { "aria-label": "Match", className: "prb-group-op", "data-prb-focus": key + "-op" },
      GROUPS.map(function (g) { return el("option", { value: g[0], text: g[1] }); }));
    select.value = group.op;
    select.addEventListener("change", function () { group.op = select.value; self.changed(); });
    var head = el("div", { className: "prb-group-head" }, [
      select,
      el("span", { className: "prb-muted", text: parent ? "of these:" : "of these conditions:" }),
    ]);
    if (parent) {
      head.appendChild(this.removeButton(function () {
        parent.children.splice(parent.children.indexOf(group), 1);
        self.changed();
      }, "Remove group"));
    }
    box.appendChild(head);
    if (group.problem) box.appendChild(el("p", { className: "prb-problem", text: group.problem }));
    if (!parent && group.children.length === 0) {
      box.appendChild(el("p", { className: "prb-muted", text: "No conditions: everyone matches." }));
    }
    var list = el("div", { className: "prb-children" });
    group.children.forEach(function (child, i) {
      var k = key + "-" + i;
      list.appendChild(child.type === "group" ? self.renderGroup(child, group, k) : self.renderRow(child, group, k));
    });
    box.appendChild(list);
    var add = function (label, make) {
      var b = el("button", { type: "button", className: "button button-small button-secondary prb-add", text: label });
      b.addEventListener("click", function () { group.children.push(make()); self.changed(); });
      return b;
    };
    var actions = el("div", { className: "prb-actions" }, [
      add("+ Condition", function () { return { type: "field", path: "", op: "$eq", text: "" }; }),
      add("+ Segment", function () { return { type: "segment", name: "" }; }),
      this.catalogue.conditions.length ? add("+ Plugin condition", function () {
        return { type: "custom", name: self.catalogue.conditions[0].name, arg: "" };
      }) : null,
      add("+ Group", function () { return { type: "group", op: "$or", children: [] }; }),
      add("+ JSON", function () { return { type: "raw", json: "{}" }; }),
    ]);
    box.appendChild(actions);
    return box;
  };

  Builder.prototype.removeButton = function (onClick, label) {
    var b = el("button", { type: "button", className: "button button-small button-secondary no prb-remove", "aria-label": label, title: label, text: "×" });
    b.addEventListener("click", onClick);
    return b;
  };

  Builder.prototype.renderRow = function (node, parent, key) {
    var self = this;
    var row = el("div", { className: "prb-row prb-" + node.type, "data-where": node.where || "" });
    var remove = this.removeButton(function () {
      parent.children.splice(parent.children.indexOf(node), 1);
      self.changed();
    }, "Remove condition");
    var input = function (value, attrs, onInput) {
      var i = el("input", Object.assign({ type: "text", value: value || "" }, attrs));
      i.value = value || "";
      i.addEventListener("input", function () { onInput(i.value); self.changed(); });
      return i;
    };
    var doc = null;
    if (node.type === "field") {
      var path = input(node.path, { list: this.listId, className: "prb-path", placeholder: "field, e.g. behaviour.visits", "aria-label": "Field", "data-prb-focus": key + "-path" },
        function (v) { node.path = v; });
      var op = el("select", { className: "prb-op", "aria-label": "Operator", "data-prb-focus": key + "-op" },
        OPERATORS.map(function (o) { return el("option", { value: o[0], text: o[1] }); }));
      op.value = node.op;
      op.addEventListener("change", function () {
        var before = textToValue(node.text, KIND[node.op])[0];
        node.op = op.value;
        node.text = node.text === "" ? "" : valueToText(before, KIND[node.op]);
        if (KIND[node.op] === "bool" && node.text === "") node.text = "true";
        self.changed();
      });
      var value;
      if (KIND[node.op] === "bool") {
        value = el("select", { className: "prb-value", "aria-label": "Value", "data-prb-focus": key + "-value" },
          [el("option", { value: "true", text: "yes" }), el("option", { value: "false", text: "no" })]);
        value.value = node.text === "false" ? "false" : "true";
        value.addEventListener("change", function () { node.text = value.value; self.changed(); });
      } else {
        var hint = { number: "a number", list: "a, b, c", string: "pattern" }[KIND[node.op]] || "value";
        value = input(node.text, { className: "prb-value", placeholder: hint, "aria-label": "Value", "data-prb-focus": key + "-value" },
          function (v) { node.text = v; });
      }
      row.appendChild(path); row.appendChild(op); row.appendChild(value);
      var known = this.catalogue.paths.filter(function (p) { return p.path === node.path; })[0];
      if (known) doc = known.doc;
      else {
        var ns = this.catalogue.namespaces.filter(function (n) { return (node.path || "").split(".")[0] === n.name; })[0];
        if (ns) doc = ns.name + ": " + ns.doc;
      }
    } else if (node.type === "segment") {
      var seg = el("select", { className: "prb-segment", "aria-label": "Segment", "data-prb-focus": key + "-segment" },
        [el("option", { value: "", text: "— choose a segment —" })].concat(this.catalogue.segments.map(function (s) {
          return el("option", { value: s.name, text: s.name + " (" + s.source + ")" });
        })));
      if (node.name && !this.catalogue.segments.some(function (s) { return s.name === node.name; })) {
        seg.appendChild(el("option", { value: node.name, text: node.name + " (not defined)" }));
      }
      seg.value = node.name || "";
      seg.addEventListener("change", function () { node.name = seg.value; self.changed(); });
      row.appendChild(el("span", { className: "prb-label", text: "is in segment" }));
      row.appendChild(seg);
      var s = this.catalogue.segments.filter(function (x) { return x.name === node.name; })[0];
      if (s && s.description) doc = s.description;
    } else if (node.type === "custom") {
      var names = this.catalogue.conditions.map(function (c) { return c.name; });
      if (names.indexOf(node.name) < 0) names.push(node.name);
      var cond = el("select", { className: "prb-condition", "aria-label": "Condition type", "data-prb-focus": key + "-cond" },
        names.map(function (n) { return el("option", { value: n, text: "$" + n }); }));
      cond.value = node.name;
      cond.addEventListener("change", function () { node.name = cond.value; self.changed(); });
      row.appendChild(cond);
      row.appendChild(input(node.arg, { className: "prb-value prb-arg", placeholder: "argument (JSON)", "aria-label": "Argument", "data-prb-focus": key + "-arg" },
        function (v) { node.arg = v; }));
      var c = this.catalogue.conditions.filter(function (x) { return x.name === node.name; })[0];
      doc = c ? c.doc : "this condition type is not registered";
    } else {
      var ta = el("textarea", { className: "prb-raw", rows: "2", "aria-label": "Condition as JSON", "data-prb-focus": key + "-raw" });
      ta.value = node.json;
      ta.addEventListener("input", function () { node.json = ta.value; self.changed(); });
      row.appendChild(ta);
    }
    row.appendChild(remove);
    var wrap = el("div", { className: "prb-item" }, [row]);
    if (doc) wrap.appendChild(el("p", { className: "prb-doc", text: doc }));
    if (node.problem) {
      wrap.classList.add("prb-has-problem");
      wrap.appendChild(el("p", { className: "prb-problem", text: node.problem }));
    }
    wrap.setAttribute("data-where", node.where || "");
    return wrap;
  };

  Builder.prototype.show = function (state, text) {
    this.status.className = "prb-status prb-" + state;
    this.status.textContent = text;
  };

  Builder.prototype.schedule = function () {
    var self = this;
    if (!this.checkUrl) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.check(); }, 300);
  };

  Builder.prototype.mark = function (where) {
    var items = this.tree.querySelectorAll("[data-where]");
    var best = null;
    Array.prototype.forEach.call(items, function (item) {
      var w = item.getAttribute("data-where");
      item.classList.remove("prb-server-problem");
      if (w && (where === w || where.indexOf(w + ".") === 0 || where.indexOf(w + "[") === 0)) {
        if (!best || w.length >= best.getAttribute("data-where").length) best = item;
      }
    });
    if (best && best.getAttribute("data-where") !== "rule") best.classList.add("prb-server-problem");
  };

  Builder.prototype.check = function () {
    var self = this;
    if (this.out && this.out.problems) return;
    var body = { rule: null };
    try { body.rule = JSON.parse(this.textarea.value || "{}"); } catch (e) { return; }
    var name = this.form && this.form.querySelector('input[name="name"]');
    if (name && name.value) body.name = name.value;
    if (this.textarea.getAttribute("data-segment-pk")) body.pk = this.textarea.getAttribute("data-segment-pk");
    var seq = ++this.seq;
    this.show("checking", "Checking…");
    post(this.checkUrl, body, this.form).then(function (answer) {
      if (seq !== self.seq) return;
      self.mark("");
      if (!answer.ok) {
        self.show("error", answer.error);
        if (answer.where) self.mark(answer.where);
        self.container.setAttribute("data-state", "error");
        return;
      }
      self.container.setAttribute("data-state", "ok");
      self.show("ok", describe(answer.count));
    }).catch(function (err) {
      if (seq === self.seq) self.show("error", "Could not check the rule: " + err.message);
    });
  };

  function describe(count) {
    if (!count) return "The rule compiles.";
    var n = count.matched, text;
    if (count.complete) {
      text = "The rule compiles. " + n + " of " + count.total + " stored profile" + (count.total === 1 ? "" : "s") + " match" + (count.total === 1 && n === 1 ? "es" : "") + ".";
    } else {
      text = "The rule compiles. At least " + n + " stored profiles match (counted in the " + count.scanned + " most recent of " + count.total + ").";
    }
    if (count.reads_context) text += " It also depends on the request (device, campaign, time…), which stored profiles do not have: visitors may match when they browse.";
    return text;
  }

  function csrfToken(form) {
    var input = (form || document).querySelector('input[name="csrfmiddlewaretoken"]');
    if (input) return input.value;
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function post(url, body, form) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(form) },
      body: JSON.stringify(body),
    }).then(function (r) {
      if (!r.ok && r.status !== 400) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  // -- a block's rule field: a live check under the textarea --------------------------------
  function enhanceRuleField(textarea) {
    if (textarea.getAttribute("data-prb-ready")) return;
    textarea.setAttribute("data-prb-ready", "1");
    var url = window.PERSONA_CHECK_RULE_URL;
    if (!url) return;
    var status = el("p", { className: "prb-status", role: "status", "aria-live": "polite" });
    textarea.parentNode.insertBefore(status, textarea.nextSibling);
    var timer = null, seq = 0;
    var run = function () {
      var text = textarea.value.trim();
      if (!text) { status.textContent = ""; status.className = "prb-status"; return; }
      var rule;
      try { rule = JSON.parse(text); } catch (e) {
        status.className = "prb-status prb-error"; status.textContent = "Not valid JSON: " + e.message; return;
      }
      var mine = ++seq;
      post(url, { rule: rule }, textarea.closest("form")).then(function (answer) {
        if (mine !== seq) return;
        status.className = "prb-status prb-" + (answer.ok ? "ok" : "error");
        status.textContent = answer.ok ? describe(answer.count) : answer.error;
      }).catch(function () { /* the save still validates */ });
    };
    textarea.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(run, 300); });
    if (textarea.value.trim()) run();
  }

  function init(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("[data-persona-rule-builder]"), function (c) {
      if (!c.classList.contains("prb-ready")) {
        try { new Builder(c); } catch (e) { if (window.console) console.error("persona rule builder:", e); }
      }
    });
    Array.prototype.forEach.call((root || document).querySelectorAll("textarea[data-persona-rule]"), enhanceRuleField);
  }

  window.personaRuleBuilder = { init: init, parse: parseRoot, toSpec: toSpec };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
  if (window.MutationObserver) {
    new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        if (records[i].addedNodes.length) { init(); return; }
      }
    }).observe(document.documentElement, { childList: true, subtree: true });
  }
})();
