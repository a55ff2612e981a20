// The shop's cookie banner, wired to persona-sdk's consent API (window.persona.consent).
// Any CMP can do the same: read the state, push the visitor's choice.
(function () {
  function boxes() { return document.querySelectorAll("#consent-banner input[type=checkbox]"); }
  function show() { document.getElementById("consent-banner").hidden = false; }
  function hide() { document.getElementById("consent-banner").hidden = true; }
  function save(choices) {
    window.persona.consent.set(choices).then(function () { hide(); window.location.reload(); });
  }
  function start() {
    if (!window.persona) { return; }
    window.persona.consent.get().then(function (state) {
      var unset = Object.keys(state.purposes).some(function (p) {
        return ["personalization", "analytics"].indexOf(p) >= 0 && state.purposes[p] === "unset";
      });
      if (unset) { show(); }
    });
    document.getElementById("consent-save").addEventListener("click", function () {
      var choices = {};
      boxes().forEach(function (b) { choices[b.name] = b.checked; });
      save(choices);
    });
    document.getElementById("consent-none").addEventListener("click", function () {
      save({personalization: false, analytics: false, marketing: false});
    });
    document.getElementById("privacy-settings").addEventListener("click", function (e) {
      e.preventDefault(); show();
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
